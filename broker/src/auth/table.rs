//! The one table that maps every request of the protocol to what it needs: the (resource,
//! operation) pairs a principal must be allowed, or a list whose answer is filtered to what the
//! principal may describe. The matches are exhaustive, so a new request kind does not compile
//! until it has an entry here; the transport checks every request through [`access`].
//!
//! Setting up something that later writes on the principal's behalf (a binding, an alternate
//! topic, a dead-letter policy) needs `produce` on where it writes, so no one can make the broker
//! write where they could not themselves.

use std::borrow::Cow;

use quiver_proto::auth::{Operation, ResourceKind};
use quiver_proto::groups::{GroupRequest, QueueRequest};
use quiver_proto::messages::{AdminRequest, ErrorPolicy, FetchRequest, ProduceRequest};

use Operation as Op;
use ResourceKind as Res;

/// One request, of any stream kind.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Produce(&'a ProduceRequest),
    Fetch(&'a FetchRequest),
    Admin(&'a AdminRequest),
    Group(&'a GroupRequest),
    Queue(&'a QueueRequest),
}

/// A permission a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need<'a> {
    pub resource: ResourceKind,
    pub name: Cow<'a, str>,
    pub op: Operation,
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<'a> {
    /// Every one of these.
    All(Vec<Need<'a>>),
    /// A list: allowed to anyone authenticated, the answer keeps only the resources of this kind
    /// the principal may describe.
    Filtered(ResourceKind),
    /// Only being authenticated (a producer id is not a resource; what it produces is checked).
    Authenticated,
}

fn need(resource: ResourceKind, name: &str, op: Operation) -> Need<'_> {
    Need {
        resource,
        name: Cow::Borrowed(name),
        op,
    }
}

fn one(resource: ResourceKind, name: &str, op: Operation) -> Access<'_> {
    Access::All(vec![need(resource, name, op)])
}

/// What `request` needs. `delayed_topic` finds the topic a held record goes to.
pub fn access<'a>(
    request: Request<'a>,
    delayed_topic: &dyn Fn(u64) -> Option<String>,
) -> Access<'a> {
    match request {
        Request::Produce(p) if p.exchange => one(Res::Exchange, &p.topic, Op::Produce),
        Request::Produce(p) => one(Res::Topic, &p.topic, Op::Produce),
        Request::Fetch(f) => one(Res::Topic, &f.topic, Op::Consume),
        Request::Admin(a) => admin(a, delayed_topic),
        Request::Group(g) => group(g),
        Request::Queue(q) => queue(q),
    }
}

/// A plugin's base name: ACLs name plugins, not their versions.
fn plugin_name(reference: &str) -> &str {
    reference
        .split_once('@')
        .map_or(reference, |(name, _)| name)
}

fn admin<'a>(req: &'a AdminRequest, delayed_topic: &dyn Fn(u64) -> Option<String>) -> Access<'a> {
    use AdminRequest as A;
    match req {
        A::CreateTopic { name, .. } => one(Res::Topic, name, Op::Create),
        A::DeleteTopic { name } => one(Res::Topic, name, Op::Delete),
        A::ListTopics | A::Metadata => Access::Filtered(Res::Topic),
        A::DescribeTopic { name } => one(Res::Topic, name, Op::Describe),
        A::AddPartitions { name, .. } => one(Res::Topic, name, Op::Alter),
        A::DeployPlugin { name, .. } => one(Res::Plugin, name, Op::Deploy),
        A::ListPlugins => Access::Filtered(Res::Plugin),
        A::DescribePlugin { name } => one(Res::Plugin, plugin_name(name), Op::Describe),
        A::ListPluginLogs { name, .. } => one(Res::Plugin, plugin_name(name), Op::Describe),
        A::RemovePlugin { name } => one(Res::Plugin, plugin_name(name), Op::Delete),
        A::AttachPlugin { topic, options } => {
            let mut needs = vec![
                need(Res::Topic, topic, Op::Alter),
                need(Res::Plugin, plugin_name(&options.plugin), Op::Describe),
            ];
            if options.on_error == ErrorPolicy::DeadLetter {
                needs.push(Need {
                    resource: Res::Topic,
                    name: Cow::Owned(format!("{topic}.dlq")),
                    op: Op::Produce,
                });
            }
            Access::All(needs)
        }
        A::DetachPlugin { topic, .. } => one(Res::Topic, topic, Op::Alter),
        A::InitProducer { .. } => Access::Authenticated,
        A::CreateExchange {
            name, alternate, ..
        } => {
            let mut needs = vec![need(Res::Exchange, name, Op::Create)];
            if let Some(alt) = alternate {
                needs.push(need(Res::Topic, alt, Op::Produce));
            }
            Access::All(needs)
        }
        A::BindExchange { exchange, binding } => Access::All(vec![
            need(Res::Exchange, exchange, Op::Alter),
            need(Res::Topic, &binding.topic, Op::Produce),
        ]),
        A::ListExchanges => Access::Filtered(Res::Exchange),
        A::DeleteExchange { name } => one(Res::Exchange, name, Op::Delete),
        A::AttachExchangeRouter { exchange, options } => Access::All(vec![
            need(Res::Exchange, exchange, Op::Alter),
            need(Res::Plugin, plugin_name(&options.plugin), Op::Describe),
        ]),
        A::DetachExchangeRouter { exchange } => one(Res::Exchange, exchange, Op::Alter),
        A::CancelDelayed { id } => match delayed_topic(*id) {
            Some(topic) => Access::All(vec![Need {
                resource: Res::Delay,
                name: Cow::Owned(topic),
                op: Op::Delete,
            }]),
            // Nothing held under that id: the service answers UnknownDelayed to anyone.
            None => Access::Authenticated,
        },
        A::CreateUser { .. }
        | A::DeleteUser { .. }
        | A::ListUsers
        | A::AddAcl { .. }
        | A::ListAcls
        | A::RemoveAcl { .. }
        | A::SetQuota { .. }
        | A::ListQuotas
        | A::RemoveQuota { .. }
        // Mirrors carry credentials for another broker and read every topic they forward.
        | A::AddMirror { .. }
        | A::ListMirrors
        | A::DescribeMirror { .. }
        | A::RemoveMirror { .. } => one(Res::Cluster, "*", Op::Admin),
        A::WhoAmI => Access::Authenticated,
        A::ClusterStatus => one(Res::Cluster, "*", Op::Describe),
    }
}

fn group(req: &GroupRequest) -> Access<'_> {
    use GroupRequest as G;
    match req {
        G::Heartbeat { group, topics, .. } => {
            let mut needs = vec![need(Res::Group, group, Op::Consume)];
            needs.extend(topics.iter().map(|t| need(Res::Topic, t, Op::Consume)));
            Access::All(needs)
        }
        G::Leave { group, .. } => one(Res::Group, group, Op::Consume),
        G::Commit { group, offsets, .. } => {
            let mut needs = vec![need(Res::Group, group, Op::Commit)];
            needs.extend(
                offsets
                    .iter()
                    .map(|o| need(Res::Topic, &o.topic, Op::Consume)),
            );
            Access::All(needs)
        }
        G::FetchOffsets { group, partitions } => {
            let mut needs = vec![need(Res::Group, group, Op::Describe)];
            needs.extend(
                partitions
                    .iter()
                    .map(|p| need(Res::Topic, &p.topic, Op::Describe)),
            );
            Access::All(needs)
        }
        G::List => Access::Filtered(Res::Group),
        G::Describe { group } => one(Res::Group, group, Op::Describe),
        G::Reset { group, topic, .. } => Access::All(vec![
            need(Res::Group, group, Op::Alter),
            need(Res::Topic, topic, Op::Consume),
        ]),
    }
}

fn queue(req: &QueueRequest) -> Access<'_> {
    use QueueRequest as Q;
    let (group, topic, op) = match req {
        Q::Poll { group, topic, .. } => (group, topic, Op::Consume),
        Q::Ack { group, topic, .. }
        | Q::Nack { group, topic, .. }
        | Q::Release { group, topic, .. } => (group, topic, Op::Commit),
    };
    Access::All(vec![
        need(Res::Group, group, op),
        need(Res::Topic, topic, Op::Consume),
    ])
}
