//! The `quiver` command line: `serve` runs the broker; `topic`, `produce`, `consume`, `plugin`,
//! `group`, `exchange`, `delay`, `user`, `acl`, `quota`, `mirror`, `cluster` and `whoami` are clients; `cert` signs client
//! certificates offline.
//! The command names and flags are a contract used by scripts outside the project: add, never change.

mod acl;
mod args;
mod cache;
mod cert;
mod cluster;
mod consume;
mod delay;
mod exchange;
mod group;
mod mirror;
mod plugin;
mod produce;
mod progress;
mod quota;
mod serve;
mod topic;
mod user;

use clap::{Parser, Subcommand};
use quiver_broker::config::LogFormat;

#[derive(Parser)]
#[command(
    name = "quiver",
    version,
    about = "Quiver: an event and message broker over QUIC, extensible with WebAssembly"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (creates the data dir, dev TLS certificate and metadata on first start).
    Serve(serve::ServeArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Send standard input to a topic, one record per line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(consume::ConsumeArgs),
    /// Deploy, list, describe and remove WebAssembly plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// List, describe and reset consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Create, bind, list and delete exchanges (routing to topics); attach router plugins.
    #[command(subcommand)]
    Exchange(exchange::ExchangeCommand),
    /// Manage records held for delayed delivery (`produce --delay-ms|--deliver-at`).
    #[command(subcommand)]
    Delay(delay::DelayCommand),
    /// Create, list and delete token users (a broker started with --auth).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Add, list and remove ACL rules (a broker started with --auth).
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Set, list and remove byte-rate and connection quotas per principal.
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// Forward this (edge) broker's topics to a core broker: add, list, describe, remove.
    #[command(subcommand)]
    Mirror(mirror::MirrorCommand),
    /// Show a cluster's members, its Raft leader and term, as the node named by --server sees it.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Show the principal the broker sees for these credentials.
    Whoami(args::ConnectArgs),
    /// Sign client certificates with the dev CA (mTLS).
    #[command(subcommand)]
    Cert(cert::CertCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `serve` starts its log once its configuration (which picks the format) is read.
    if !matches!(cli.command, Command::Serve(_)) {
        init_tracing(false, LogFormat::Text);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Topic(c) => topic::run(c).await,
            Command::Produce(a) => produce::run(a).await,
            Command::Consume(a) => consume::run(a).await,
            Command::Plugin(c) => plugin::run(c).await,
            Command::Group(c) => group::run(c).await,
            Command::Exchange(c) => exchange::run(c).await,
            Command::Delay(c) => delay::run(c).await,
            Command::User(c) => user::run(c).await,
            Command::Acl(c) => acl::run(c).await,
            Command::Whoami(a) => user::whoami(a).await,
            Command::Quota(c) => quota::run(c).await,
            Command::Mirror(c) => mirror::run(c).await,
            Command::Cluster(c) => cluster::run(c).await,
            Command::Cert(c) => cert::run(c),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so that `consume` output on stdout stays clean; `RUST_LOG` overrides the
/// level. JSON: one object per line (`timestamp`, `level`, `target`, `fields`), every target
/// alike (the audit log `quiver::audit` included), never coloured.
pub fn init_tracing(server: bool, format: LogFormat) {
    let default = if server { "info" } else { "warn" };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // openraft narrates every election and append at info; its warnings are what an operator
    // needs (RUST_LOG naming openraft still wins).
    let names_openraft = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("openraft"));
    if !names_openraft {
        if let Ok(d) = "openraft=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn delay_flags_exclude_each_other() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(["quiver", "produce", "t"].iter().chain(args));
        assert!(parse(&["--delay-ms", "5000"]).is_ok());
        assert!(parse(&["--deliver-at", "1700000000000"]).is_ok());
        assert!(parse(&["--delay-ms", "5", "--deliver-at", "6"]).is_err());
        assert!(parse(&["--delay-ms", "-5"]).is_err());
    }

    #[test]
    fn exchange_router_and_delay_commands_parse() {
        let attach = [
            "quiver",
            "exchange",
            "attach",
            "orders",
            "json-router@2",
            "--config",
            "field=region",
            "--config",
            "prefix=orders.",
            "--on-error",
            "skip",
            "--timeout-ms",
            "50",
            "--memory-mb",
            "32",
        ];
        assert!(Cli::try_parse_from(attach).is_ok());
        assert!(Cli::try_parse_from(["quiver", "exchange", "detach", "orders"]).is_ok());
        assert!(Cli::try_parse_from(["quiver", "delay", "cancel", "17"]).is_ok());
        assert!(Cli::try_parse_from(["quiver", "delay", "cancel", "x"]).is_err());
    }
}
