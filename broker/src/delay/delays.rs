//! What the services call for delayed records: the node's own delay store, and on a cluster the
//! replicated delay shards (`shards.rs`) for every topic created through the metadata group.
//! Ids tell the two apart: a shard's ids carry its number above the offset bits.

use std::sync::{Arc, OnceLock, Weak};

use prometheus_client::metrics::histogram::Histogram;
use quiver_proto::Batch;

use super::shards::{split_id, Shards};
use super::{DelayError, DelayStore, Held};
use crate::storage::{Durability, TopicStore};

#[derive(Debug)]
pub struct Delays {
    local: Arc<DelayStore>,
    shards: OnceLock<Arc<Shards>>,
}

impl Delays {
    pub fn new(local: DelayStore) -> Delays {
        Delays {
            local: Arc::new(local),
            shards: OnceLock::new(),
        }
    }

    /// A cluster node's shards (set once, when it joins).
    pub fn set_shards(&self, shards: Arc<Shards>) {
        let _ = self.shards.set(shards);
    }

    /// The shards, if this node is in a cluster.
    pub fn shards(&self) -> Option<&Arc<Shards>> {
        self.shards.get()
    }

    fn shards_for(&self, topic: &str) -> Option<&Arc<Shards>> {
        self.shards.get().filter(|s| s.covers(topic))
    }

    /// Holds the records of `batch` that carry a due time (see [`DelayStore::hold`]); on a
    /// cluster in the destination's shard. Blocking.
    pub fn hold(
        &self,
        topic: &str,
        partition: u32,
        batch: Batch,
        acks: Durability,
    ) -> Result<Held, DelayError> {
        match self.shards_for(topic) {
            Some(s) => s.hold(topic, partition, batch, acks),
            None => self.local.hold(topic, partition, batch, acks),
        }
    }

    /// The destination topic of pending record `id` when this node can tell without asking
    /// another (the ACL check of a cancel; on a cluster [`Delays::topic_of`] asks).
    pub fn pending_topic(&self, id: u64) -> Option<String> {
        match split_id(id) {
            Some(_) => self.shards.get()?.pending_topic_here(id),
            None => self.local.pending_topic(id),
        }
    }

    /// The destination topic of pending record `id`, asking its shard's leader if need be.
    pub async fn topic_of(&self, id: u64) -> Result<Option<String>, DelayError> {
        match (split_id(id), self.shards.get()) {
            (Some(_), Some(s)) => s.topic_of(id).await,
            _ => Ok(self.local.pending_topic(id)),
        }
    }

    /// Cancels pending record `id`; its destination topic. Blocking. A shard's record only
    /// where the shard is led, the one place [`Delays::pending_topic`] could name its topic to
    /// the ACL check (elsewhere see [`Delays::cancel_authorized`]).
    pub fn cancel(&self, id: u64) -> Result<String, DelayError> {
        match (split_id(id), self.shards.get()) {
            (Some(_), Some(s)) => match s.pending_topic_here(id) {
                Some(topic) => s.cancel(id, &topic),
                None => Err(DelayError::UnknownId(id)),
            },
            (Some(_), None) => Err(DelayError::UnknownId(id)),
            (None, _) => self.local.cancel(id),
        }
    }

    /// Cancels pending record `id` if it is bound for `topic`, the topic its canceller was
    /// authorized for ([`Delays::topic_of`] named it); at its shard's leader. Blocking.
    pub fn cancel_authorized(&self, id: u64, topic: &str) -> Result<String, DelayError> {
        match (split_id(id), self.shards.get()) {
            (Some(_), Some(s)) => s.cancel(id, topic),
            _ => self.local.cancel(id),
        }
    }

    /// Drops the records held for a deleted topic (here, and in the shards this node leads).
    pub fn purge_topic(&self, topic: &str) -> Result<u64, DelayError> {
        let mut dropped = self.local.purge_topic(topic)?;
        if let Some(s) = self.shards.get() {
            dropped += s.purge_topic(topic)?;
        }
        Ok(dropped)
    }

    /// Records held for `topic` by this node (its own store and the shards it leads): what its
    /// metrics report.
    pub fn pending_here(&self, topic: &str) -> u64 {
        let shards = self.shards.get().map_or(0, |s| s.pending_here(Some(topic)));
        self.local.pending_for(topic) + shards
    }

    /// Records held for `topic` in the whole cluster (each shard counted by its leader), or by
    /// this broker. Blocking.
    pub fn pending_for(&self, topic: &str) -> u64 {
        match self.shards_for(topic) {
            Some(s) => self.local.pending_for(topic) + s.pending_everywhere(topic),
            None => self.local.pending_for(topic),
        }
    }

    /// Records held by this node for every topic.
    pub fn pending_total(&self) -> u64 {
        let shards = self.shards.get().map_or(0, |s| s.pending_here(None));
        self.local.pending_total() + shards
    }

    /// How late delayed records reach their topic (the node's store and its shards share it).
    pub fn lateness(&self) -> &Histogram {
        self.local.lateness()
    }

    /// Starts the node's own delivery thread (the shards' start as this node comes to lead
    /// them).
    pub fn start(&self, topics: Weak<TopicStore>) -> std::io::Result<()> {
        self.local.start(topics)
    }

    /// Stops every delivery thread.
    pub fn stop(&self) {
        self.local.stop();
        if let Some(s) = self.shards.get() {
            s.stop();
        }
    }

    /// Stops delivery and fsyncs the delay logs.
    pub fn close(&self) -> Result<(), DelayError> {
        self.stop();
        if let Some(s) = self.shards.get() {
            s.close_logs()?;
        }
        self.local.close()
    }

    /// Sets how the node's own store delivers on a cluster (see [`DelayStore::on_deliver`]).
    pub fn on_deliver(&self, hook: super::DeliverHook) {
        self.local.on_deliver(hook);
    }
}
