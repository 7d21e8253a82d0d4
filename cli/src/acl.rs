//! `quiver acl add|list|remove`: the ACL rules of a broker started with `--auth`
//! (docs/security.md). Deny wins over allow; `*` as principal means every authenticated one.

use clap::{ArgGroup, Args, Subcommand};
use quiver::{AclSpec, Operation, ResourceKind};

use crate::args::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Add a rule: `--principal alice --topic 'orders.*' --op produce,describe`.
    Add(AddArgs),
    /// List every rule with its id.
    List {
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Remove a rule by id (from `acl list`).
    Remove {
        id: u64,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("resource").required(true).args(["topic", "group", "exchange", "plugin", "delay", "cluster"])))]
pub struct AddArgs {
    /// A user or certificate name, or `*` for every authenticated principal.
    #[arg(long)]
    principal: String,
    /// Topics: a name, `*`, or a prefix ending in `*` (`orders.*`).
    #[arg(long, value_name = "PATTERN")]
    topic: Option<String>,
    /// Consumer groups and queue groups.
    #[arg(long, value_name = "PATTERN")]
    group: Option<String>,
    #[arg(long, value_name = "PATTERN")]
    exchange: Option<String>,
    /// Plugins, by name (every version).
    #[arg(long, value_name = "PATTERN")]
    plugin: Option<String>,
    /// Records held for delayed delivery, by the topic they go to.
    #[arg(long, value_name = "PATTERN")]
    delay: Option<String>,
    /// The cluster itself (`--op admin` makes a superuser: users, ACLs, everything).
    #[arg(long)]
    cluster: bool,
    /// produce, consume, create, delete, alter, describe, commit, deploy, admin.
    #[arg(long = "op", required = true, value_delimiter = ',')]
    ops: Vec<Operation>,
    /// A deny rule (deny wins over any allow).
    #[arg(long)]
    deny: bool,
    #[command(flatten)]
    conn: ConnectArgs,
}

impl AddArgs {
    fn spec(&self) -> AclSpec {
        let (resource, pattern) = match (
            &self.topic,
            &self.group,
            &self.exchange,
            &self.plugin,
            &self.delay,
        ) {
            (Some(p), ..) => (ResourceKind::Topic, p.clone()),
            (_, Some(p), ..) => (ResourceKind::Group, p.clone()),
            (_, _, Some(p), ..) => (ResourceKind::Exchange, p.clone()),
            (_, _, _, Some(p), _) => (ResourceKind::Plugin, p.clone()),
            (_, _, _, _, Some(p)) => (ResourceKind::Delay, p.clone()),
            _ => (ResourceKind::Cluster, "*".to_owned()),
        };
        AclSpec {
            principal: self.principal.clone(),
            resource,
            pattern,
            operations: self.ops.clone(),
            deny: self.deny,
        }
    }
}

pub async fn run(cmd: AclCommand) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Add(args) => {
            let client = args.conn.connect().await?;
            let rule = client.admin().add_acl(args.spec()).await?;
            println!("{}\t{}", rule.id, rule.spec);
            client.close().await;
        }
        AclCommand::List { conn } => {
            let client = conn.connect().await?;
            for rule in client.admin().list_acls().await? {
                println!("{}\t{}", rule.id, rule.spec);
            }
            client.close().await;
        }
        AclCommand::Remove { id, conn } => {
            let client = conn.connect().await?;
            client.admin().remove_acl(id).await?;
            println!("removed ACL rule {id}");
            client.close().await;
        }
    }
    Ok(())
}
