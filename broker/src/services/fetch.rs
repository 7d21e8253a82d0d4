//! The fetch service: reads from a partition by offset, time, `earliest` or `latest`, long-polls
//! until `min_bytes` are there or `max_wait` passes (woken by appends, no timer in the path), and
//! applies the native filter and a read-filter plugin. The next offset always moves past every
//! record read, matching or not. A [`FetchSession`] keeps one stream's read-filter instance.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::messages::{FetchRequest, FetchResponse, OffsetSpec, PluginRef};
use quiver_proto::Batch;

use crate::error::BrokerError;
use crate::filter::Filter;
use crate::offload;
use crate::plugins::{Pipelines, ReadFilter};
use crate::replication::Replication;
use crate::storage::{ReadResult, StorageError, TopicStore};

/// Longest a fetch may ask to wait.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);

/// Longest a fetch spends running a read-filter plugin over its batches (at least one batch runs).
const READ_FILTER_BUDGET: Duration = Duration::from_millis(500);

/// Where a fetch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
}

/// A fetch: long-polls until `min_bytes` are available or `max_wait` passes.
#[derive(Debug, Clone)]
pub struct FetchParams {
    pub start: StartAt,
    pub max_bytes: usize,
    pub min_bytes: usize,
    pub max_wait: Duration,
    /// Only records matching this are returned; the position still moves past the others.
    pub filter: Option<Arc<Filter>>,
    /// A filter plugin applied after `filter`, with the same position rule.
    pub plugin: Option<Arc<ReadFilter>>,
}

#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Whole batches; the first may begin before `offset`.
    pub bytes: Bytes,
    /// The offset the fetch resolved to.
    pub offset: u64,
    /// Where the next fetch continues.
    pub next_offset: u64,
    /// Records in `bytes` at or after `offset`.
    pub records: u32,
    pub log_start: u64,
    pub log_end: u64,
}

#[derive(Debug)]
pub struct FetchService {
    topics: Arc<TopicStore>,
    pipelines: Arc<Pipelines>,
    replication: Arc<Replication>,
    /// Largest answer a fetch may produce (half a frame: the header needs room too).
    max_bytes: usize,
}

impl FetchService {
    pub fn new(
        topics: Arc<TopicStore>,
        pipelines: Arc<Pipelines>,
        replication: Arc<Replication>,
        max_frame: usize,
    ) -> Self {
        FetchService {
            topics,
            pipelines,
            replication,
            max_bytes: (max_frame / 2).max(1),
        }
    }

    /// A session for one fetch stream.
    pub fn session(self: &Arc<Self>) -> FetchSession {
        FetchSession {
            service: self.clone(),
            current: None,
        }
    }

    /// Reads from a partition, waiting up to `max_wait` for at least `min_bytes`.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        params: FetchParams,
    ) -> Result<Fetched, BrokerError> {
        let log = self.topics.partition(topic, partition)?;
        // On a cluster, only the partition's leader answers (reads stop at its high watermark).
        self.replication.check_fetch(topic, partition)?;
        let offset = match params.start {
            StartAt::Earliest => log.stats().log_start,
            StartAt::Latest => log.visible_end(),
            StartAt::Offset(o) => o,
            StartAt::Timestamp(ts) => log.offset_for_timestamp(ts)?,
        };
        let deadline = tokio::time::Instant::now() + params.max_wait;
        let mut end_rx = log.subscribe_end();
        loop {
            // Mark the current end as seen before reading, so an append after the read wakes us.
            end_rx.borrow_and_update();
            let res = log.read(offset, params.max_bytes)?;
            let enough = res.bytes.len() >= params.min_bytes.max(1);
            if enough || tokio::time::Instant::now() >= deadline {
                return shape_off_worker(res, offset, &params).await;
            }
            match tokio::time::timeout_at(deadline, end_rx.changed()).await {
                // New data, or the wait timed out and the next pass returns what there is.
                Ok(Ok(())) | Err(_) => continue,
                // The partition was closed under us: its topic was deleted.
                Ok(Err(_)) => return Err(StorageError::UnknownTopic(topic.to_owned()).into()),
            }
        }
    }
}

/// One fetch stream: keeps its read-filter plugin instance while the requests name the same
/// plugin and configuration (a fetch stream reads one partition, usually with one filter).
pub struct FetchSession {
    service: Arc<FetchService>,
    current: Option<(PluginRef, Arc<ReadFilter>)>,
}

impl FetchSession {
    /// One fetch request: resolve the start, long-poll, filter.
    pub async fn fetch(
        &mut self,
        req: &FetchRequest,
    ) -> Result<(FetchResponse, Bytes), BrokerError> {
        let filter = match req.filter.as_deref().map(Filter::parse).transpose() {
            Ok(f) => f.map(Arc::new),
            Err(e) => return Err(BrokerError::InvalidRequest(e.to_string())),
        };
        let plugin = self.read_filter(req.plugin.as_ref()).await?;
        let params = FetchParams {
            start: match req.offset {
                OffsetSpec::Earliest => StartAt::Earliest,
                OffsetSpec::Latest => StartAt::Latest,
                OffsetSpec::At(o) => StartAt::Offset(o),
                OffsetSpec::Timestamp(ts) => StartAt::Timestamp(ts),
            },
            max_bytes: (req.max_bytes as usize).clamp(1, self.service.max_bytes),
            min_bytes: req.min_bytes as usize,
            max_wait: Duration::from_millis(req.max_wait_ms as u64).min(MAX_FETCH_WAIT),
            filter,
            plugin,
        };
        let f = self
            .service
            .fetch(&req.topic, req.partition, params)
            .await?;
        let resp = FetchResponse {
            request_id: req.request_id,
            partition: req.partition,
            log_start: f.log_start,
            log_end: f.log_end,
            next_offset: f.next_offset,
            records: f.records,
            offset: f.offset,
            throttle_ms: 0,
        };
        Ok((resp, f.bytes))
    }

    async fn read_filter(
        &mut self,
        wanted: Option<&PluginRef>,
    ) -> Result<Option<Arc<ReadFilter>>, BrokerError> {
        let Some(wanted) = wanted else {
            return Ok(None);
        };
        if let Some((r, f)) = &self.current {
            if r == wanted {
                return Ok(Some(f.clone()));
            }
        }
        let (pipelines, w) = (self.service.pipelines.clone(), wanted.clone());
        // Instantiating runs the plugin's `init`.
        let filter =
            offload::blocking(move || Ok(pipelines.read_filter(&w.name, w.config)?)).await?;
        let filter = Arc::new(filter);
        self.current = Some((wanted.clone(), filter.clone()));
        Ok(Some(filter))
    }
}

/// Shapes a read; with a plugin filter that runs on the blocking pool (plugins may use their whole
/// time limit, which must not stall an async worker).
async fn shape_off_worker(
    res: ReadResult,
    offset: u64,
    params: &FetchParams,
) -> Result<Fetched, BrokerError> {
    let (filter, plugin) = (params.filter.clone(), params.plugin.clone());
    if plugin.is_none() {
        return shape(res, offset, filter.as_deref(), None);
    }
    offload::blocking(move || shape(res, offset, filter.as_deref(), plugin.as_deref())).await
}

/// Turns a log read into a fetch result: where the next fetch continues (past every record read,
/// matching or not), and with filters only the matching records at or after `offset`.
fn shape(
    res: ReadResult,
    offset: u64,
    filter: Option<&Filter>,
    plugin: Option<&ReadFilter>,
) -> Result<Fetched, BrokerError> {
    if filter.is_none() && plugin.is_none() {
        // The log validated these batches when they were appended: only their boundaries are
        // needed here, so neither the CRC nor the records are read again (the client checks both).
        let next_offset = quiver_proto::batch::headers(&res.bytes)
            .last()
            .map_or(offset, |h| h.next_offset());
        return Ok(Fetched {
            bytes: res.bytes,
            offset,
            next_offset,
            records: next_offset.saturating_sub(offset) as u32,
            log_start: res.log_start,
            log_end: res.log_end,
        });
    }
    shape_filtered(res, offset, filter, plugin)
}

/// [`shape`] with a filter: only the matching records at or after `offset` are kept.
fn shape_filtered(
    res: ReadResult,
    offset: u64,
    filter: Option<&Filter>,
    plugin: Option<&ReadFilter>,
) -> Result<Fetched, BrokerError> {
    let batches: Vec<Batch> = quiver_proto::Batches::new(res.bytes.clone())
        .filter_map(Result::ok)
        .collect();
    let mut next_offset = batches.last().map_or(offset, |b| b.header().next_offset());
    let started = std::time::Instant::now();
    let mut out = bytes::BytesMut::new();
    let mut records = 0u32;
    for (i, b) in batches.iter().enumerate() {
        // A plugin may use its whole time limit per batch: bound the fetch as a whole, and
        // let the next fetch continue after the last batch filtered.
        if plugin.is_some() && i > 0 && started.elapsed() > READ_FILTER_BUDGET {
            next_offset = batches[i - 1].header().next_offset();
            break;
        }
        let Some(sel) = filter_batch(b, offset, filter, plugin)? else {
            continue;
        };
        records += sel.record_count();
        out.extend_from_slice(sel.bytes());
    }
    Ok(Fetched {
        bytes: out.freeze(),
        offset,
        next_offset,
        records,
        log_start: res.log_start,
        log_end: res.log_end,
    })
}

/// The records of one batch at or after `offset` that pass the native filter, then the plugin.
fn filter_batch(
    b: &Batch,
    offset: u64,
    filter: Option<&Filter>,
    plugin: Option<&ReadFilter>,
) -> Result<Option<Batch>, BrokerError> {
    let native = match filter {
        None => Some(b.clone()),
        Some(f) => {
            let keep = |r: &quiver_proto::RecordRef<'_>| r.offset >= offset && f.matches(r);
            quiver_proto::batch::select(b, keep)
                .map(Batch::parse)
                .transpose()?
        }
    };
    match (native, plugin) {
        (None, _) => Ok(None),
        (Some(n), None) => Ok(Some(n)),
        (Some(n), Some(p)) => Ok(p.apply(&n, offset)?.map(Batch::parse).transpose()?),
    }
}
