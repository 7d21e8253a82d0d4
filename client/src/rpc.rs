//! Request/reply over topics. A request carries two headers: `quiver-reply-to` (the topic to answer
//! on) and `quiver-correlation-id` (unique per request); a reply carries the request's correlation id.
//!
//! A [`Requester`] owns a reply topic (by default a private one, `quiver.reply.<16 hex>` with one
//! partition, deleted by [`Requester::close`]) which a background task reads from its end, routing
//! each reply to the request waiting for its correlation id; replies nobody waits for any more
//! (timed out, or another requester's on a shared reply topic) are skipped.
//!
//! Responders read the request topic with a queue consumer (many responders share even one
//! partition; a request whose responder dies is delivered again) and answer with [`reply_to`];
//! [`Responder`] / [`serve`] do both.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use quiver_proto::{ErrorCode, Record};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::NewTopic;
use crate::client::Client;
use crate::consumer::{Consumer, ConsumerConfig, SeekTo};
use crate::error::ClientError;
use crate::producer::{Producer, ProducerConfig, ProducerRecord};
use crate::queue::{QueueConfig, QueueConsumer, QueuedRecord};

/// The header naming the topic a reply goes to.
pub const REPLY_TO_HEADER: &str = quiver_proto::headers::REPLY_TO;
/// The header pairing a reply with its request.
pub const CORRELATION_ID_HEADER: &str = quiver_proto::headers::CORRELATION_ID;

/// How a requester sends requests and reads replies.
#[derive(Debug, Clone, Default)]
pub struct RequesterConfig {
    /// An existing topic to receive replies on (read from its end); `None`: a private topic is
    /// created now and deleted by [`Requester::close`].
    pub reply_topic: Option<String>,
    pub producer: ProducerConfig,
    /// How the reply topic is read.
    pub consumer: ConsumerConfig,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Record>>>>;

/// Sends requests and waits for their replies. Requests may be sent concurrently from many tasks.
/// Dropping it without [`Requester::close`] stops reading replies but leaves a reply topic it
/// created behind.
pub struct Requester {
    client: Client,
    producer: Producer,
    reply_topic: String,
    /// Whether `reply_topic` was created here (and is deleted by `close`).
    created: bool,
    /// Makes correlation ids unique across requesters sharing a reply topic.
    prefix: String,
    next_id: AtomicU64,
    pending: Pending,
    listener: JoinHandle<()>,
}

impl Drop for Requester {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Requester {
    /// Sets up the reply topic and starts reading it; replies produced from now on are seen.
    pub async fn new(client: Client, config: RequesterConfig) -> Result<Requester, ClientError> {
        let prefix = crate::ids::random_hex16();
        let (reply_topic, created) = match config.reply_topic {
            Some(topic) => (topic, false),
            None => {
                let topic = format!("quiver.reply.{prefix}");
                client
                    .admin()
                    .create_topic(NewTopic::new(&topic, 1))
                    .await?;
                (topic, true)
            }
        };
        let consumer = match listen_from_end(&client, &reply_topic, config.consumer).await {
            Ok(c) => c,
            Err(e) => {
                if created {
                    let _ = client.admin().delete_topic(&reply_topic).await;
                }
                return Err(e);
            }
        };
        let pending = Pending::default();
        let listener = tokio::spawn(listen(consumer, pending.clone()));
        Ok(Requester {
            producer: Producer::new(client.clone(), config.producer),
            client,
            reply_topic,
            created,
            prefix,
            next_id: AtomicU64::new(1),
            pending,
            listener,
        })
    }

    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }

    /// Sends `value` to `topic` as a request and waits up to `timeout` for the reply.
    pub async fn request(
        &self,
        topic: &str,
        value: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Record, ClientError> {
        self.request_record(ProducerRecord::new(topic, value), timeout)
            .await
    }

    /// Sends `record` (its key, headers and partition kept) as a request and waits up to
    /// `timeout` for the reply: [`ClientError::NoReply`] when none came.
    pub async fn request_record(
        &self,
        record: ProducerRecord,
        timeout: Duration,
    ) -> Result<Record, ClientError> {
        let id = format!(
            "{}-{}",
            self.prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let topic = record.topic.clone();
        let record = stamp_request(record, &self.reply_topic, &id);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id.clone(), tx);
        // Removes the waiter however this ends (reply, timeout, error, or the caller giving up).
        let _waiting = Waiting {
            pending: &self.pending,
            id: &id,
        };
        let exchange = async {
            let delivery = self.producer.send_now(record).await?;
            delivery.wait().await.map_err(ClientError::Delivery)?;
            rx.await.map_err(|_| ClientError::Closed)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(reply) => reply,
            Err(_) => Err(ClientError::NoReply {
                topic,
                correlation_id: id.clone(),
                timeout,
            }),
        }
    }

    /// Stops reading replies and deletes the reply topic if it was created here.
    pub async fn close(self) -> Result<(), ClientError> {
        self.listener.abort();
        if let Err(e) = self.producer.flush().await {
            tracing::debug!(error = %e, "requests unsent at close");
        }
        if self.created {
            self.client.admin().delete_topic(&self.reply_topic).await?;
        }
        Ok(())
    }
}

/// Forgets a request's waiter when dropped.
struct Waiting<'a> {
    pending: &'a Pending,
    id: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(self.id);
    }
}

/// `record` with the request headers (replacing any it had).
fn stamp_request(mut record: ProducerRecord, reply_topic: &str, id: &str) -> ProducerRecord {
    record
        .headers
        .retain(|(n, _)| n != REPLY_TO_HEADER && n != CORRELATION_ID_HEADER);
    record
        .header(
            REPLY_TO_HEADER,
            Bytes::copy_from_slice(reply_topic.as_bytes()),
        )
        .header(CORRELATION_ID_HEADER, Bytes::copy_from_slice(id.as_bytes()))
}

/// A consumer of every partition of `topic` from its current end.
async fn listen_from_end(
    client: &Client,
    topic: &str,
    config: ConsumerConfig,
) -> Result<Consumer, ClientError> {
    // Resolving the end here (not with `SeekTo::Latest` in the fetch task) means a reply produced
    // right after `new` returns cannot slip in before the first fetch.
    let desc = client.admin().describe_topic(topic).await?;
    let mut consumer = Consumer::new(client.clone(), topic, config);
    for p in &desc.partitions {
        consumer.assign(&[p.partition], SeekTo::Offset(p.log_end));
    }
    Ok(consumer)
}

/// Routes replies to their waiting requests until the connection is gone.
async fn listen(mut consumer: Consumer, pending: Pending) {
    loop {
        match consumer.next().await {
            Ok(r) => deliver(&pending, r.record),
            Err(e @ (ClientError::Connection(_) | ClientError::Closed)) => {
                tracing::debug!(error = %e, "reply listener stopped");
                break;
            }
            Err(e) => {
                // A partition's fetch ended with this error: read everything again from where it was.
                tracing::warn!(topic = consumer.topic(), error = %e, "reading replies failed; restarting");
                tokio::time::sleep(Duration::from_millis(200)).await;
                for p in consumer.assignment() {
                    let at = consumer.position(p).map_or(SeekTo::Latest, SeekTo::Offset);
                    consumer.seek(p, at);
                }
            }
        }
    }
    // Waiting requests learn at once that no reply will come.
    pending.lock().clear();
}

/// Hands a reply to the request waiting for it, if any.
fn deliver(pending: &Pending, reply: Record) {
    let Some(id) = reply
        .header(CORRELATION_ID_HEADER)
        .and_then(|v| std::str::from_utf8(v).ok())
    else {
        return;
    };
    let waiter = pending.lock().remove(id);
    if let Some(tx) = waiter {
        let _ = tx.send(reply);
    }
}

/// The reply to `request` carrying `value`: to its reply-to topic, with its correlation id.
/// `None` when the request lacks either header (it expects no reply).
pub fn reply_to(request: &Record, value: impl Into<Bytes>) -> Option<ProducerRecord> {
    let topic = std::str::from_utf8(request.header(REPLY_TO_HEADER)?).ok()?;
    let id = request.header(CORRELATION_ID_HEADER)?;
    Some(ProducerRecord::new(topic, value).header(CORRELATION_ID_HEADER, id.clone()))
}

/// Answers the requests of a topic: leases them with a queue consumer, calls a handler for each,
/// sends its replies and acknowledges the requests once the replies are stored. A responder that
/// dies mid-way leaves its requests to be delivered again to another.
pub struct Responder {
    queue: QueueConsumer,
    producer: Producer,
}

impl Responder {
    pub fn new(
        client: Client,
        group: impl Into<String>,
        topic: impl Into<String>,
        config: QueueConfig,
    ) -> Responder {
        Responder {
            producer: Producer::new(client.clone(), ProducerConfig::default()),
            queue: QueueConsumer::new(client, group, topic, config),
        }
    }

    pub fn queue(&self) -> &QueueConsumer {
        &self.queue
    }

    /// Answers requests with `handler`'s values until an error.
    pub async fn serve<F, Fut>(&self, mut handler: F) -> Result<(), ClientError>
    where
        F: FnMut(Record) -> Fut,
        Fut: Future<Output = Bytes>,
    {
        loop {
            self.serve_once(&mut handler).await?;
        }
    }

    /// One poll's worth of requests; returns how many were answered. Requests without the request
    /// headers, or whose reply topic is gone (the requester closed), are acknowledged unanswered.
    /// On an error the poll's requests are released, to be delivered again.
    pub async fn serve_once<F, Fut>(&self, handler: &mut F) -> Result<usize, ClientError>
    where
        F: FnMut(Record) -> Fut,
        Fut: Future<Output = Bytes>,
    {
        let requests = self.queue.poll().await?;
        match self.answer(&requests, handler).await {
            Ok(answered) => {
                self.queue.ack(&requests).await?;
                Ok(answered)
            }
            Err(e) => {
                if let Err(release) = self.queue.release(&requests).await {
                    tracing::debug!(error = %release, "cannot release requests; their leases run out");
                }
                Err(e)
            }
        }
    }

    async fn answer<F, Fut>(
        &self,
        requests: &[QueuedRecord],
        handler: &mut F,
    ) -> Result<usize, ClientError>
    where
        F: FnMut(Record) -> Fut,
        Fut: Future<Output = Bytes>,
    {
        let mut deliveries = Vec::with_capacity(requests.len());
        for req in requests {
            let value = handler(req.record.clone()).await;
            let Some(reply) = reply_to(&req.record, value) else {
                tracing::warn!(
                    topic = self.queue.topic(),
                    partition = req.partition,
                    offset = req.record.offset,
                    "request without reply-to and correlation headers; not answered"
                );
                continue;
            };
            match self.producer.send_now(reply).await {
                Ok(d) => deliveries.push(d),
                Err(e) if requester_gone(&e) => tracing::debug!(error = %e, "reply topic gone"),
                Err(e) => return Err(e),
            }
        }
        let mut answered = 0;
        for d in deliveries {
            match d.wait().await.map_err(ClientError::Delivery) {
                Ok(_) => answered += 1,
                Err(e) if requester_gone(&e) => tracing::debug!(error = %e, "reply topic gone"),
                Err(e) => return Err(e),
            }
        }
        Ok(answered)
    }
}

/// The reply topic no longer exists: its requester closed, and nobody waits for the reply.
fn requester_gone(e: &ClientError) -> bool {
    e.code() == Some(ErrorCode::UnknownTopic)
}

/// Serves the requests of `topic` under the share group `group` with `handler` until an error.
pub async fn serve<F, Fut>(
    client: Client,
    topic: &str,
    group: &str,
    handler: F,
) -> Result<(), ClientError>
where
    F: FnMut(Record) -> Fut,
    Fut: Future<Output = Bytes>,
{
    Responder::new(client, group, topic, QueueConfig::default())
        .serve(handler)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record a responder reads for a request sent as `rec`.
    fn as_consumed(rec: &ProducerRecord) -> Record {
        Record {
            value: rec.value.clone(),
            headers: rec.headers.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn requests_carry_both_headers_once() {
        let rec = ProducerRecord::new("rpc", "hi")
            .header("trace", "1")
            .header(CORRELATION_ID_HEADER, "stale");
        let req = as_consumed(&stamp_request(rec, "quiver.reply.ab", "ab-1"));
        assert_eq!(req.header("trace").unwrap(), "1");
        assert_eq!(req.header(REPLY_TO_HEADER).unwrap(), "quiver.reply.ab");
        assert_eq!(req.header(CORRELATION_ID_HEADER).unwrap(), "ab-1");
        let ids = req
            .headers
            .iter()
            .filter(|(n, _)| n == CORRELATION_ID_HEADER);
        assert_eq!(ids.count(), 1);
    }

    #[test]
    fn a_reply_goes_to_the_reply_topic_with_the_correlation_id() {
        let req = as_consumed(&stamp_request(
            ProducerRecord::new("rpc", "hi"),
            "replies",
            "x-7",
        ));
        let reply = reply_to(&req, "HI").unwrap();
        assert_eq!(reply.topic, "replies");
        assert_eq!(reply.value, "HI");
        let reply = as_consumed(&reply);
        assert_eq!(reply.header(CORRELATION_ID_HEADER).unwrap(), "x-7");
        assert!(reply.header(REPLY_TO_HEADER).is_none());
        assert!(reply_to(&as_consumed(&ProducerRecord::new("rpc", "hi")), "x").is_none());
    }

    #[test]
    fn replies_reach_only_their_waiter() {
        let pending = Pending::default();
        let (tx, mut rx) = oneshot::channel();
        pending.lock().insert("a-1".into(), tx);
        let reply = |id: &str| Record {
            headers: vec![(
                CORRELATION_ID_HEADER.into(),
                Bytes::copy_from_slice(id.as_bytes()),
            )],
            ..Default::default()
        };
        deliver(&pending, reply("b-1")); // another requester's
        deliver(&pending, Record::default()); // no header at all
        assert!(rx.try_recv().is_err());
        deliver(&pending, reply("a-1"));
        assert_eq!(rx.try_recv().unwrap(), reply("a-1"));
        assert!(pending.lock().is_empty());
    }
}
