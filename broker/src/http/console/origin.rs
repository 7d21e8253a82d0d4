//! Where a request comes from, as far as a browser tells: the defences that do not rest on a token.
//! [`same_origin`] refuses state-changing requests (sign-in, sign-out, console actions) that a page
//! of another site made the browser send — login CSRF plants the attacker's token in the victim's
//! cookie, which SameSite cannot stop because the cookie is being *set*, not sent. [`local_host`]
//! refuses DNS rebinding while authentication is off: a page whose own name was rebound to
//! 127.0.0.1 is same-origin with it and could read everything, but its requests still name the
//! attacker's host.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, Uri};

/// `Sec-Fetch-Site` values of requests a page of this origin (or the user, by typing the address)
/// started.
const OWN_SITES: [&str; 2] = ["same-origin", "none"];

/// Whether a browser says the request came from a page of this listener. Requests without any
/// browser marker (curl, scripts, Prometheus) pass: they carry their own token and no ambient
/// cookie a forger could use. `Sec-Fetch-Site` is trusted when present (every current browser sends
/// it); otherwise `Origin`'s authority must be this request's `Host`.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.to_str().is_ok_and(|s| OWN_SITES.contains(&s));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let origin = origin.to_str().ok().and_then(|o| o.parse::<Uri>().ok());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.as_ref().and_then(Uri::authority), host) {
        (Some(a), Some(h)) => a.as_str().eq_ignore_ascii_case(h),
        // "null" (a sandboxed or file: page), or a request without a Host: not this origin.
        _ => false,
    }
}

/// Whether the request addresses the listener by an IP address or a `localhost` name, the only
/// names no other site can rebind to it. A request naming no host (not a browser) passes.
pub fn local_host(uri: &Uri, headers: &HeaderMap) -> bool {
    let named = uri
        .host()
        .map(str::to_owned)
        .or_else(|| host_header(headers));
    let Some(name) = named else {
        return !headers.contains_key(header::HOST);
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok() || name == "localhost" || name.ends_with(".localhost")
}

/// The host part of the `Host` header (no port); `None` when it is not a valid authority.
fn host_header(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::HOST)?.to_str().ok()?;
    let uri = format!("http://{value}/").parse::<Uri>().ok()?;
    uri.host().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "none")])));
        for site in ["cross-site", "same-site", "junk"] {
            let h = headers(&[
                ("sec-fetch-site", site),
                ("origin", "http://a:1"),
                ("host", "a:1"),
            ]);
            assert!(!same_origin(&h), "{site}");
        }
    }

    #[test]
    fn otherwise_the_origin_must_name_the_host() {
        assert!(
            same_origin(&headers(&[])),
            "no browser marker: not a browser"
        );
        let own = headers(&[
            ("origin", "http://127.0.0.1:7448"),
            ("host", "127.0.0.1:7448"),
        ]);
        assert!(same_origin(&own));
        let other = headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:7448"),
        ]);
        assert!(!same_origin(&other));
        let port = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:7448"),
        ]);
        assert!(!same_origin(&port));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "a")])));
        assert!(!same_origin(&headers(&[("origin", "http://a")])));
    }

    #[test]
    fn only_addresses_and_localhost_are_local_names() {
        let uri = Uri::from_static("/api/topics");
        for host in [
            "127.0.0.1:7448",
            "[::1]:7448",
            "10.0.0.5",
            "localhost:1",
            "LOCALHOST",
            "a.localhost",
        ] {
            let h = headers(&[("host", host)]);
            assert!(local_host(&uri, &h), "{host}");
        }
        for host in [
            "evil.example:7448",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "",
            "a b",
        ] {
            let h = headers(&[("host", host)]);
            assert!(!local_host(&uri, &h), "{host:?}");
        }
        assert!(
            local_host(&uri, &headers(&[])),
            "no host named: not a browser"
        );
        let absolute = Uri::from_static("http://evil.example/api/topics");
        assert!(!local_host(&absolute, &headers(&[("host", "127.0.0.1")])));
    }
}
