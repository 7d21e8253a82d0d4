//! `quiver exchange create|bind|list|delete|attach|detach`: exchanges route produced records to the
//! topics bound to them, or to those a router plugin attached to them picks (docs/routing.md).

use clap::Subcommand;
use quiver::{Binding, ExchangeInfo, ExchangeKind, HeaderMatch};

use crate::args::ConnectArgs;
use crate::plugin::StageArgs;

#[derive(Subcommand, Debug)]
pub enum ExchangeCommand {
    /// Create an exchange.
    Create {
        name: String,
        #[arg(long, value_parser = parse_kind)]
        kind: ExchangeKind,
        /// A topic for records that match no binding (default: such a produce fails).
        #[arg(long)]
        alternate: Option<String>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Bind a topic to an exchange.
    Bind {
        name: String,
        topic: String,
        /// direct: the routing key; topic: a pattern (`*` one word, `#` zero or more).
        #[arg(long, default_value = "")]
        key: String,
        /// headers: a condition K=V on the record's headers (repeatable).
        #[arg(long = "header", value_parser = crate::produce::parse_header)]
        headers: Vec<(String, String)>,
        /// headers: whether all conditions or any must hold.
        #[arg(long = "match", default_value = "all", value_parser = ["all", "any"])]
        header_match: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// List exchanges with their router plugin and bindings.
    List {
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Delete an exchange (its topics stay).
    Delete {
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Attach a router plugin (world `router`) to an exchange, replacing any router it had: the
    /// plugin, not the bindings, then picks each record's topics.
    Attach {
        name: String,
        // The PLUGIN argument (after NAME) and the stage flags.
        #[command(flatten)]
        stage: StageArgs,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Detach the exchange's router plugin: its bindings route again.
    Detach {
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

fn parse_kind(s: &str) -> Result<ExchangeKind, String> {
    s.parse()
}

pub async fn run(cmd: ExchangeCommand) -> anyhow::Result<()> {
    match cmd {
        ExchangeCommand::Create {
            name,
            kind,
            alternate,
            conn,
        } => {
            let client = conn.connect().await?;
            let e = client
                .admin()
                .create_exchange(&name, kind, alternate)
                .await?;
            print_exchange(&e);
            client.close().await;
        }
        ExchangeCommand::Bind {
            name,
            topic,
            key,
            headers,
            header_match,
            conn,
        } => {
            let client = conn.connect().await?;
            let binding = Binding {
                topic,
                key,
                headers,
                header_match: if header_match == "any" {
                    HeaderMatch::Any
                } else {
                    HeaderMatch::All
                },
            };
            let e = client.admin().bind_exchange(&name, binding).await?;
            print_exchange(&e);
            client.close().await;
        }
        ExchangeCommand::List { conn } => {
            let client = conn.connect().await?;
            for e in client.admin().list_exchanges().await? {
                print_exchange(&e);
            }
            client.close().await;
        }
        ExchangeCommand::Delete { name, conn } => {
            let client = conn.connect().await?;
            client.admin().delete_exchange(&name).await?;
            client.close().await;
        }
        ExchangeCommand::Attach { name, stage, conn } => {
            let options = stage.try_into()?;
            let client = conn.connect().await?;
            let e = client
                .admin()
                .attach_exchange_router(&name, options)
                .await?;
            print_exchange(&e);
            client.close().await;
        }
        ExchangeCommand::Detach { name, conn } => {
            let client = conn.connect().await?;
            let e = client.admin().detach_exchange_router(&name).await?;
            print_exchange(&e);
            client.close().await;
        }
    }
    Ok(())
}

/// `NAME KIND [alternate=T]`, then an indented line for the router plugin, if any, and one per
/// binding.
fn print_exchange(e: &ExchangeInfo) {
    let alternate = e
        .alternate
        .as_ref()
        .map(|a| format!(" alternate={a}"))
        .unwrap_or_default();
    println!("{}\t{}{alternate}", e.name, e.kind.as_str());
    if let Some(r) = &e.router {
        let config: Vec<String> = r.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  router {}@{} {} calls={} failures={} on_error={} timeout_ms={} memory_mb={} config={}",
            r.plugin,
            r.version,
            if r.healthy { "healthy" } else { "UNHEALTHY" },
            r.calls,
            r.failures,
            r.on_error.as_str(),
            r.timeout_ms,
            r.memory_mb,
            config.join(",")
        );
        if let Some(err) = &r.last_error {
            println!("    last error: {err}");
        }
    }
    for b in &e.bindings {
        let mut rule = match e.kind {
            ExchangeKind::Headers => {
                let conds: Vec<String> =
                    b.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let how = if b.header_match == HeaderMatch::Any {
                    "any"
                } else {
                    "all"
                };
                format!("{how}({})", conds.join(","))
            }
            ExchangeKind::Fanout => "*".to_string(),
            _ => format!("key={}", b.key),
        };
        rule.insert(0, ' ');
        println!("  -> {}{rule}", b.topic);
    }
}
