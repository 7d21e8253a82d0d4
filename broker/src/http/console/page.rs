//! Bounds on what one API answer carries, so a broker with thousands of topics, groups or
//! partitions answers a poll in bounded time and size: lists are paged (`?offset=N&limit=M`, at
//! most [`MAX_LIMIT`] items), and the partitions listed per item are cut at [`MAX_ROWS`] (totals
//! still cover all of them).

use super::error::ConsoleError;

/// Items per page when the query does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// The most items one answer carries.
pub const MAX_LIMIT: usize = 500;
/// The most partitions (or bindings, attachments) listed inside one item.
pub const MAX_ROWS: usize = 256;
/// The most recent log lines shown per plugin.
pub const MAX_LOG_LINES: usize = 20;

/// A page of a list, from the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// `offset` and `limit` from a raw query (others ignored); a limit above the cap is cut.
    pub fn from_query(query: Option<&str>) -> Result<Page, ConsoleError> {
        let mut page = Page {
            offset: 0,
            limit: DEFAULT_LIMIT,
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let number = || {
                v.parse::<usize>()
                    .map_err(|_| ConsoleError::BadRequest(format!("{k} must be a number")))
            };
            match k.as_ref() {
                "offset" => page.offset = number()?,
                "limit" => page.limit = number()?.clamp(1, MAX_LIMIT),
                _ => {}
            }
        }
        Ok(page)
    }

    /// This page of `items`.
    pub fn of<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect()
    }
}

/// The first [`MAX_ROWS`] of `rows`.
pub fn capped<T>(mut rows: Vec<T>) -> Vec<T> {
    rows.truncate(MAX_ROWS);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded_and_checked() {
        assert_eq!(
            Page::from_query(None).ok(),
            Some(Page {
                offset: 0,
                limit: DEFAULT_LIMIT
            })
        );
        let p = Page::from_query(Some("offset=2&limit=999999&x=y")).ok();
        assert_eq!(
            p,
            Some(Page {
                offset: 2,
                limit: MAX_LIMIT
            })
        );
        assert!(Page::from_query(Some("offset=-1")).is_err());
        let page = Page {
            offset: 1,
            limit: 2,
        };
        assert_eq!(page.of(vec![1, 2, 3, 4]), vec![2, 3]);
    }
}
