//! The Prometheus metrics of `/metrics`, in the OpenMetrics text format of `prometheus-client`.
//! They are read from the broker at each scrape (a registered collector): gauges from the state
//! itself, counters and histograms from their owners (a partition's traffic counters, a plugin
//! stage's call timings, the store's fsync histogram, the transport's request latencies), which
//! bump them once per batch or request. Series are bounded: per partition, per plugin stage, per
//! group and partition it reads, a few per process; no label carries a client id, a key or any
//! other unbounded value.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::telemetry::ACKS;
use crate::Broker;

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric name starts with this (`quiver_…`).
const PREFIX: &str = "quiver";

type Labels = Vec<(&'static str, String)>;

/// One of a partition's traffic counters.
type TrafficField = fn(&crate::storage::Traffic) -> u64;

/// The broker's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(broker: Arc<Broker>) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(BrokerCollector { broker }));
        Metrics { registry }
    }

    /// One scrape, as text. Reads partition stats and plugin stages: call it off the async
    /// workers.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[derive(Debug)]
struct BrokerCollector {
    broker: Arc<Broker>,
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.partitions(&mut encoder)?;
        self.plugins(&mut encoder)?;
        self.groups(&mut encoder)?;
        self.delays(&mut encoder)?;
        self.mirrors(&mut encoder)?;
        self.cluster(&mut encoder)?;
        self.requests(&mut encoder)?;
        process(&mut encoder)
    }
}

impl BrokerCollector {
    /// Offsets and sizes per partition (one series each per partition).
    fn partitions(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut stats = Vec::new();
        for topic in self.broker.topics().list() {
            for (p, log) in topic.partitions().iter().enumerate() {
                let labels = vec![("topic", topic.name.clone()), ("partition", p.to_string())];
                stats.push((labels, log.stats()));
            }
        }
        let of = |f: fn(&crate::storage::PartitionStats) -> u64| {
            stats.iter().map(move |(l, s)| (l.clone(), f(s) as i64))
        };
        gauges(
            encoder,
            "partition_log_start_offset",
            "First offset still in the partition's log",
            of(|s| s.log_start),
        )?;
        gauges(
            encoder,
            "partition_log_end_offset",
            "Offset the next appended record gets (records appended since creation)",
            of(|s| s.log_end),
        )?;
        gauges(
            encoder,
            "partition_size_bytes",
            "Bytes of the partition's segments on disk",
            of(|s| s.size_bytes),
        )?;
        gauges(
            encoder,
            "partition_segments",
            "Segment files of the partition",
            of(|s| s.segments as u64),
        )?;
        let traffic = |f: TrafficField| stats.iter().map(move |(l, s)| (l.clone(), f(&s.traffic)));
        let counted: [(&str, &str, TrafficField); 4] = [
            (
                "partition_records_in",
                "Records appended to the partition",
                |t| t.records_in,
            ),
            (
                "partition_bytes_in",
                "Bytes of batches appended to the partition",
                |t| t.bytes_in,
            ),
            (
                "partition_records_out",
                "Records handed to readers (fetches and queue leases)",
                |t| t.records_out,
            ),
            (
                "partition_bytes_out",
                "Bytes of batches handed to readers",
                |t| t.bytes_out,
            ),
        ];
        for (name, help, f) in counted {
            counters(encoder, name, help, traffic(f))?;
        }
        Ok(())
    }

    /// Calls, failures, health and memory per plugin stage (topic stages and exchange routers),
    /// and all plugins' memory against the broker-wide budget.
    fn plugins(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let stages: Vec<(Labels, _)> = self
            .broker
            .pipelines()
            .all_attachments()
            .into_iter()
            .map(|a| (stage_labels(&a), a))
            .collect();
        let calls = stages.iter().map(|(l, a)| (l.clone(), a.calls));
        counters(
            encoder,
            "plugin_calls",
            "Batches passed to the plugin stage",
            calls,
        )?;
        let failures = stages.iter().map(|(l, a)| (l.clone(), a.failures));
        counters(
            encoder,
            "plugin_failures",
            "Batches the plugin stage failed on (any kind)",
            failures,
        )?;
        let healthy = stages.iter().map(|(l, a)| (l.clone(), a.healthy as i64));
        gauges(
            encoder,
            "plugin_healthy",
            "1 while the stage is healthy, 0 while it cools down or cannot load",
            healthy,
        )?;
        let memory = stages
            .iter()
            .map(|(l, a)| (l.clone(), a.memory_in_use_bytes as i64));
        gauges(
            encoder,
            "plugin_memory_bytes",
            "Linear memory the stage's live instance holds",
            memory,
        )?;
        let timings: Vec<(Labels, _)> = self
            .broker
            .pipelines()
            .all_timings()
            .into_iter()
            .map(|t| (stage_labels(&t.info), t))
            .collect();
        let timeouts = timings.iter().map(|(l, t)| (l.clone(), t.timeouts));
        counters(
            encoder,
            "plugin_timeouts",
            "Batches the plugin stage ran out of time on",
            timeouts,
        )?;
        let durations = timings.iter().map(|(l, t)| (l.clone(), &t.call_seconds));
        histograms(
            encoder,
            "plugin_call_duration",
            "Duration of one call of the plugin stage (one batch)",
            durations,
        )?;
        let budget = self.broker.plugin_registry().engine().budget();
        let total = [(Labels::new(), budget.used() as i64)];
        gauges(
            encoder,
            "plugin_memory_in_use_bytes",
            "Linear memory of all plugin instances (stages and read filters) together",
            total,
        )?;
        let limit = [(Labels::new(), budget.limit() as i64)];
        gauges(
            encoder,
            "plugin_memory_budget_bytes",
            "The broker-wide plugin memory budget (plugins.max_total_memory_mb)",
            limit,
        )
    }

    /// Consumer groups: members, and per partition read the lag and committed offset; queue-mode
    /// groups: records leased, waiting and dead-lettered per partition. One series per group and
    /// partition it reads (groups are named by operators' applications, partitions are bounded).
    fn groups(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let state = self.broker.groups().state();
        let summaries = state.list().unwrap_or_default();
        let described: Vec<_> = summaries
            .iter()
            .filter_map(|g| state.describe(&g.name, self.broker.topics()).ok())
            .collect();
        let members = summaries
            .iter()
            .map(|g| (vec![("group", g.name.clone())], g.members as i64));
        gauges(
            encoder,
            "group_members",
            "Live members of the consumer group",
            members,
        )?;
        let lags: Vec<(Labels, &quiver_proto::groups::PartitionLag)> = described
            .iter()
            .flat_map(|d| {
                d.partitions
                    .iter()
                    .map(move |p| (group_labels(&d.name, &p.topic, p.partition), p))
            })
            .collect();
        let lag = lags.iter().map(|(l, p)| (l.clone(), p.lag as i64));
        gauges(encoder, "group_lag", "Records after the group's committed offset (from the log start when nothing is committed)", lag)?;
        let committed = lags
            .iter()
            .filter_map(|(l, p)| Some((l.clone(), p.committed? as i64)));
        gauges(
            encoder,
            "group_committed_offset",
            "The group's committed offset",
            committed,
        )?;
        let queues: Vec<(Labels, &quiver_proto::groups::QueuePartitionState)> = described
            .iter()
            .flat_map(|d| {
                d.queues
                    .iter()
                    .map(move |q| (group_labels(&d.name, &q.topic, q.partition), q))
            })
            .collect();
        let leased = queues.iter().map(|(l, q)| (l.clone(), q.leased as i64));
        gauges(
            encoder,
            "queue_leased",
            "Queue-mode records leased to a consumer now",
            leased,
        )?;
        let available = queues.iter().map(|(l, q)| (l.clone(), q.available as i64));
        gauges(
            encoder,
            "queue_available",
            "Queue-mode records waiting for (re)delivery",
            available,
        )?;
        let dead = queues.iter().map(|(l, q)| (l.clone(), q.dead_lettered));
        counters(
            encoder,
            "queue_dead_lettered",
            "Queue-mode records sent to <topic>.dlq since the broker started",
            dead,
        )?;
        let again = queues.iter().map(|(l, q)| (l.clone(), q.redelivered));
        counters(
            encoder,
            "queue_redelivered",
            "Queue-mode records leased again after an earlier delivery (nack, expired lease)",
            again,
        )
    }

    /// Delayed records held, per destination topic.
    fn delays(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let delays = self.broker.delays();
        let pending = self.broker.topics().list().into_iter().map(|t| {
            let n = delays.pending_here(&t.name);
            (vec![("topic", t.name.clone())], n as i64)
        });
        gauges(
            encoder,
            "delayed_pending",
            "Delayed records held for the topic, not yet delivered (on a cluster: in the delay shards this node leads)",
            pending,
        )?;
        histograms(
            encoder,
            "delayed_delivery_lateness",
            "How long after its due time a run of delayed records reached its topic",
            [(Labels::new(), delays.lateness())],
        )
    }

    /// A cluster node's view of the metadata Raft group (nothing on a single broker).
    fn cluster(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let Some(cluster) = self.broker.cluster() else {
            return Ok(());
        };
        let s = cluster.status();
        let one = |v: i64| [(Labels::new(), v)];
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauges(
            encoder,
            "cluster_leader",
            "The Raft leader this node knows of (its node id; 0 while there is none)",
            one(as_i64(s.leader.unwrap_or(0))),
        )?;
        gauges(
            encoder,
            "cluster_is_leader",
            "1 while this node is the Raft leader",
            one(i64::from(s.leader == Some(s.node_id))),
        )?;
        gauges(
            encoder,
            "cluster_term",
            "The Raft term this node is in",
            one(as_i64(s.term)),
        )?;
        gauges(
            encoder,
            "cluster_applied_index",
            "The last metadata log index applied on this node",
            one(as_i64(s.applied)),
        )?;
        let matched = s.nodes.iter().filter_map(|n| {
            let m = n.matched?;
            Some((vec![("node", n.id.to_string())], as_i64(m)))
        });
        gauges(
            encoder,
            "cluster_member_matched_index",
            "On the leader: the last metadata log index each member is known to have",
            matched,
        )
    }

    /// Edge mirrors: link state per mirror; lag, throughput and retention losses per forwarded
    /// partition.
    fn mirrors(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mirrors = self
            .broker
            .admin()
            .mirror_service
            .describe_all()
            .unwrap_or_default();
        let connected = mirrors.iter().map(|m| {
            let up = matches!(m.state, quiver_proto::mirror::MirrorState::Connected { .. });
            (vec![("mirror", m.name.clone())], i64::from(up))
        });
        gauges(
            encoder,
            "mirror_connected",
            "1 while the mirror has a session with its core broker",
            connected,
        )?;
        let sessions = mirrors
            .iter()
            .map(|m| (vec![("mirror", m.name.clone())], m.sessions));
        counters(
            encoder,
            "mirror_sessions",
            "Sessions the mirror started with its core (reconnects + 1)",
            sessions,
        )?;
        let parts: Vec<_> = mirrors
            .iter()
            .flat_map(|m| m.partitions.iter().map(move |p| (m, p)))
            .map(|(m, p)| {
                let labels = vec![
                    ("mirror", m.name.clone()),
                    ("topic", p.topic.clone()),
                    ("partition", p.partition.to_string()),
                ];
                (labels, p)
            })
            .collect();
        type Field = fn(&quiver_proto::mirror::MirrorPartition) -> u64;
        let of = |f: Field| parts.iter().map(move |(l, p)| (l.clone(), f(p)));
        let lag: [(&str, &str, Field); 2] = [
            (
                "mirror_lag_records",
                "Records on the edge not yet acknowledged by the core",
                |p| p.lag_records,
            ),
            (
                "mirror_lag_milliseconds",
                "Age of the oldest record not yet acknowledged by the core",
                |p| p.lag_ms,
            ),
        ];
        for (name, help, f) in lag {
            gauges(encoder, name, help, of(f).map(|(l, v)| (l, v as i64)))?;
        }
        let counted: [(&str, &str, Field); 3] = [
            (
                "mirror_forwarded_records",
                "Records the core acknowledged, since the broker started",
                |p| p.forwarded_records,
            ),
            (
                "mirror_forwarded_bytes",
                "Value bytes of the records the core acknowledged, since the broker started",
                |p| p.forwarded_bytes,
            ),
            (
                "mirror_dropped_records",
                "Records retention removed on the edge before they were forwarded",
                |p| p.dropped_by_retention,
            ),
        ];
        for (name, help, f) in counted {
            counters(encoder, name, help, of(f))?;
        }
        Ok(())
    }

    /// Produce and fetch latency, fsyncs, open connections and streams.
    fn requests(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let t = self.broker.telemetry();
        let produce = ACKS
            .iter()
            .map(|(acks, name)| (vec![("acks", name.to_string())], t.produce_latency(*acks)));
        histograms(
            encoder,
            "produce_request_duration",
            "Produce requests from arrival to answer (before any quota wait), by acks level",
            produce,
        )?;
        let (data, empty) = t.fetch_latency();
        let fetch = [
            (vec![("result", "data".to_owned())], data),
            (vec![("result", "empty".to_owned())], empty),
        ];
        histograms(
            encoder,
            "fetch_request_duration",
            "Fetch requests from arrival to answer (empty: a long poll that found nothing)",
            fetch,
        )?;
        histograms(
            encoder,
            "fsync_duration",
            "Duration of each fsync of partition data (group commits; its count is the fsyncs)",
            [(Labels::new(), self.broker.topics().fsync_histogram())],
        )?;
        let (connections, streams, accepted) = t.open();
        let open = [(Labels::new(), connections)];
        gauges(encoder, "connections_open", "Open client connections", open)?;
        let open = [(Labels::new(), streams)];
        gauges(encoder, "streams_open", "Open request streams", open)?;
        let accepted = [(Labels::new(), accepted)];
        counters(
            encoder,
            "connections_accepted",
            "Client connections that completed the handshake since the broker started",
            accepted,
        )
    }
}

fn stage_labels(a: &quiver_proto::plugins::AttachmentInfo) -> Labels {
    let attachment = match a.exchange {
        true => format!("exchange:{}", a.topic),
        false => a.topic.clone(),
    };
    vec![
        ("attachment", attachment),
        ("plugin", a.plugin.clone()),
        ("version", a.version.clone()),
    ]
}

/// One histogram family in seconds (the name gets `_seconds`), each series a histogram its owner
/// keeps.
fn histograms<'h>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, &'h Histogram)>,
) -> fmt::Result {
    let unit = Unit::Seconds;
    let mut family = encoder.encode_descriptor(name, help, Some(&unit), MetricType::Histogram)?;
    for (labels, h) in values {
        h.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn group_labels(group: &str, topic: &str, partition: u32) -> Labels {
    vec![
        ("group", group.to_owned()),
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ]
}

/// The broker process: resident memory and open file descriptors (Linux `/proc`; absent elsewhere).
fn process(encoder: &mut DescriptorEncoder) -> fmt::Result {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        });
    if let Some(kib) = rss {
        gauges(
            encoder,
            "process_resident_memory_bytes",
            "Resident memory of the broker process",
            [(Labels::new(), kib * 1024)],
        )?;
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let open = [(Labels::new(), fds.count() as i64)];
        gauges(
            encoder,
            "process_open_fds",
            "Open file descriptors of the broker process",
            open,
        )?;
    }
    Ok(())
}

/// One gauge family, built for this scrape.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, i64)>,
) -> fmt::Result {
    family(encoder, name, help, values, |g: &Gauge, v| {
        g.set(v);
    })
}

/// One counter family (values kept by the broker, reported as they are), built for this scrape.
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    family(encoder, name, help, values, |c: &Counter, v| {
        c.inc_by(v);
    })
}

/// A family of metrics `M`, one per label set, each given its value by `set`, then encoded.
fn family<M, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, V)>,
    set: impl Fn(&M, V),
) -> fmt::Result
where
    M: EncodeMetric + TypedMetric + Default,
{
    let family = Family::<Labels, M>::default();
    for (labels, v) in values {
        set(&family.get_or_create(&labels), v);
    }
    family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)
}
