//! The console's read API (JSON), polled by the page every second: `/api/session` (who is looking,
//! what they may do), `/api/topics`, `/api/groups`, `/api/plugins`, `/api/exchanges`. Each answer
//! is built from the same admin and group requests the command line sends (see `calls`), so it
//! shows what `topic describe`, `group describe` and friends show, and only what the viewer may
//! describe. Lists are paged and rows capped (see `page`). Rates are the browser's business: it
//! differentiates the offsets and counters between polls.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use quiver_proto::groups::{
    GroupDescription, GroupRequest, GroupResponse, MemberDescription, PartitionLag,
    QueuePartitionState,
};
use quiver_proto::messages::{
    AdminRequest, AdminResponse, AttachmentInfo, PartitionDescription, PluginMemory,
    PluginVersionInfo, TopicDescription,
};
use quiver_proto::routing::ExchangeInfo;
use serde::Serialize;

use super::access::Viewer;
use super::calls::{self, unexpected};
use super::error::ConsoleError;
use super::page::{capped, Page, MAX_LIMIT, MAX_LOG_LINES, MAX_ROWS};
use crate::auth::Principal;
use crate::error::BrokerError;
use crate::http::Shared;
use crate::storage::Topic;
use crate::{offload, Broker};

/// A page of some list, with how many there are in all.
#[derive(Debug, Serialize)]
struct Listing<T> {
    total: usize,
    offset: usize,
    limit: usize,
    items: Vec<T>,
}

impl<T> Listing<T> {
    /// `items` as the page `page` of a list of `total`.
    fn new(total: usize, page: Page, items: Vec<T>) -> Listing<T> {
        Listing {
            total,
            offset: page.offset,
            limit: page.limit,
            items,
        }
    }
}

/// `Ok(value)` as a JSON answer.
fn json<T: Serialize>(value: &T) -> Result<Response, ConsoleError> {
    let body = serde_json::to_vec(value).map_err(|e| BrokerError::Internal(e.to_string()))?;
    let kind = HeaderValue::from_static("application/json");
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

/// Runs `build` for a page on the blocking pool (it reads partition stats and takes locks) and
/// answers its result as JSON.
async fn paged<T, F>(s: Shared, viewer: Viewer, query: Option<String>, build: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Broker, &Principal, Page) -> Result<Listing<T>, BrokerError> + Send + 'static,
{
    let answer = async {
        let page = Page::from_query(query.as_deref())?;
        let broker: Arc<Broker> = s.broker.clone();
        let listing = offload::blocking(move || build(&broker, &viewer.principal, page)).await?;
        json(&listing)
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Serialize)]
struct Session {
    auth: bool,
    principal: String,
    /// The console shows write actions (authentication on, `admin` on the cluster).
    admin: bool,
    broker_id: String,
    version: &'static str,
    max_limit: usize,
    max_rows: usize,
}

/// `GET /api/session`.
pub async fn session(State(s): State<Shared>, Extension(v): Extension<Viewer>) -> Response {
    let session = Session {
        auth: v.authenticated,
        principal: v.principal.name().to_owned(),
        admin: v.authenticated && v.admin,
        broker_id: s.broker.id().to_owned(),
        version: env!("CARGO_PKG_VERSION"),
        max_limit: MAX_LIMIT,
        max_rows: MAX_ROWS,
    };
    json(&session).unwrap_or_else(IntoResponse::into_response)
}

/// A topic: totals over every partition, the first [`MAX_ROWS`] partitions listed.
#[derive(Debug, Serialize)]
struct TopicView {
    name: String,
    partition_count: usize,
    /// Sum of the partitions' log end offsets: records appended since creation.
    log_end_total: u64,
    size_bytes_total: u64,
    /// Records and bytes handed to readers (fetches, queue leases) since the broker started: the
    /// browser's out-rate. Records in are `log_end_total`'s growth.
    records_out_total: u64,
    bytes_in_total: u64,
    bytes_out_total: u64,
    pending_delayed: u64,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    created_ms: i64,
    pipeline: Vec<AttachmentInfo>,
    partitions: Vec<PartitionDescription>,
}

impl From<TopicDescription> for TopicView {
    fn from(d: TopicDescription) -> TopicView {
        TopicView {
            partition_count: d.partitions.len(),
            log_end_total: d.partitions.iter().map(|p| p.log_end).sum(),
            size_bytes_total: d.partitions.iter().map(|p| p.size_bytes).sum(),
            // Filled in by `with_traffic` (a describe answer does not carry it).
            records_out_total: 0,
            bytes_in_total: 0,
            bytes_out_total: 0,
            name: d.name,
            pending_delayed: d.pending_delayed,
            retention_ms: d.retention_ms,
            retention_bytes: d.retention_bytes,
            created_ms: d.created_ms,
            pipeline: capped(d.pipeline),
            partitions: capped(d.partitions),
        }
    }
}

impl TopicView {
    /// Adds the partitions' traffic counters, summed.
    fn with_traffic(mut self, topic: Option<Arc<Topic>>) -> TopicView {
        let logs = topic.iter().flat_map(|t| t.partitions().iter());
        for traffic in logs.map(|log| log.stats().traffic) {
            self.records_out_total += traffic.records_out;
            self.bytes_in_total += traffic.bytes_in;
            self.bytes_out_total += traffic.bytes_out;
        }
        self
    }
}

/// `GET /api/topics?offset=&limit=`.
pub async fn topics(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    RawQuery(q): RawQuery,
) -> Response {
    paged(s, v, q, topic_page).await
}

fn topic_page(b: &Broker, p: &Principal, page: Page) -> Result<Listing<TopicView>, BrokerError> {
    let AdminResponse::Topics { topics } = calls::admin(b, p, AdminRequest::ListTopics)? else {
        return Err(unexpected("ListTopics"));
    };
    let total = topics.len();
    let items = page
        .of(topics)
        .into_iter()
        // A topic deleted since the list is left out, not an error.
        .filter_map(|t| {
            let topic = b.topics().get(&t.name).ok();
            match calls::admin(b, p, AdminRequest::DescribeTopic { name: t.name }) {
                Ok(AdminResponse::Topic(d)) => Some(TopicView::from(d).with_traffic(topic)),
                _ => None,
            }
        })
        .collect();
    Ok(Listing::new(total, page, items))
}

/// A group: members, lag and queue state, rows capped, totals over all of them.
#[derive(Debug, Serialize)]
struct GroupView {
    name: String,
    epoch: u64,
    member_count: usize,
    members: Vec<MemberDescription>,
    partition_count: usize,
    lag_total: u64,
    partitions: Vec<PartitionLag>,
    queue_count: usize,
    queues: Vec<QueuePartitionState>,
}

impl From<GroupDescription> for GroupView {
    fn from(d: GroupDescription) -> GroupView {
        GroupView {
            member_count: d.members.len(),
            partition_count: d.partitions.len(),
            lag_total: d.partitions.iter().map(|p| p.lag).sum(),
            queue_count: d.queues.len(),
            name: d.name,
            epoch: d.epoch,
            members: capped(d.members),
            partitions: capped(d.partitions),
            queues: capped(d.queues),
        }
    }
}

/// `GET /api/groups?offset=&limit=`: consumer groups and queue-mode groups alike.
pub async fn groups(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    RawQuery(q): RawQuery,
) -> Response {
    paged(s, v, q, group_page).await
}

fn group_page(b: &Broker, p: &Principal, page: Page) -> Result<Listing<GroupView>, BrokerError> {
    let GroupResponse::Groups { groups } = calls::group(b, p, GroupRequest::List)? else {
        return Err(unexpected("group List"));
    };
    let total = groups.len();
    let items = page
        .of(groups)
        .into_iter()
        .filter_map(
            |g| match calls::group(b, p, GroupRequest::Describe { group: g.name }) {
                Ok(GroupResponse::Group(d)) => Some(GroupView::from(d)),
                _ => None,
            },
        )
        .collect();
    Ok(Listing::new(total, page, items))
}

/// A plugin: its versions, where it is attached (with health), its latest log lines.
#[derive(Debug, Serialize)]
struct PluginView {
    name: String,
    versions: Vec<PluginVersionInfo>,
    attachments: Vec<AttachmentInfo>,
    logs: Vec<String>,
    memory: PluginMemory,
}

/// `GET /api/plugins?offset=&limit=` (paged by plugin name).
pub async fn plugins(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    RawQuery(q): RawQuery,
) -> Response {
    paged(s, v, q, plugin_page).await
}

fn plugin_page(b: &Broker, p: &Principal, page: Page) -> Result<Listing<PluginView>, BrokerError> {
    let AdminResponse::Plugins { plugins } = calls::admin(b, p, AdminRequest::ListPlugins)? else {
        return Err(unexpected("ListPlugins"));
    };
    let mut names: Vec<String> = plugins.into_iter().map(|v| v.name).collect();
    names.sort();
    names.dedup();
    let total = names.len();
    let items = page
        .of(names)
        .into_iter()
        .filter_map(|name| plugin_view(b, p, name))
        .collect();
    Ok(Listing::new(total, page, items))
}

fn plugin_view(b: &Broker, p: &Principal, name: String) -> Option<PluginView> {
    let req = AdminRequest::DescribePlugin { name: name.clone() };
    let AdminResponse::Plugin {
        versions,
        attachments,
        mut logs,
        memory,
    } = calls::admin(b, p, req).ok()?
    else {
        return None;
    };
    logs.drain(..logs.len().saturating_sub(MAX_LOG_LINES));
    Some(PluginView {
        name,
        versions: capped(versions),
        attachments: capped(attachments),
        logs,
        memory,
    })
}

/// `GET /api/exchanges?offset=&limit=`: exchanges with their bindings (capped) and router.
pub async fn exchanges(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    RawQuery(q): RawQuery,
) -> Response {
    paged(s, v, q, exchange_page).await
}

fn exchange_page(
    b: &Broker,
    p: &Principal,
    page: Page,
) -> Result<Listing<ExchangeInfo>, BrokerError> {
    let AdminResponse::Exchanges { exchanges } = calls::admin(b, p, AdminRequest::ListExchanges)?
    else {
        return Err(unexpected("ListExchanges"));
    };
    let total = exchanges.len();
    let items = page
        .of(exchanges)
        .into_iter()
        .map(|mut e| {
            e.bindings.truncate(MAX_ROWS);
            e
        })
        .collect();
    Ok(Listing::new(total, page, items))
}
