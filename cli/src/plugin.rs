//! `quiver plugin new|build|test|deploy|list|describe|logs|remove` and the plugin parts of
//! `topic attach|detach`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use quiver::{AttachOptions, AttachmentInfo, PluginVersionInfo};

use crate::args::ConnectArgs;

#[path = "plugin_build.rs"]
mod build;
#[path = "plugin_test.rs"]
mod local_test;
#[path = "plugin_logs.rs"]
mod logs;
#[path = "plugin_new.rs"]
mod new;
#[path = "plugin_project.rs"]
mod project;

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Create a plugin project (sources, a unit test, a sample input, the WIT, a README) in
    /// JavaScript, Python or Rust, for one world; build it with `quiver plugin build`.
    New(new::NewArgs),
    /// Build a project made by `plugin new` into DIR/NAME.wasm with its language's toolchain
    /// (cargo, componentize-js, componentize-py; installs the JS and Python tools when missing).
    Build(build::BuildArgs),
    /// Deploy a WebAssembly component (world `filter`, `transform`, `router` or `scheduler` of
    /// quiver:plugin@0.1.0).
    Deploy {
        name: String,
        file: std::path::PathBuf,
        /// Version label; by default one more than the highest numeric version (1 at first).
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// List deployed plugin versions.
    List {
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Show a plugin's versions, where it is attached (topics, and exchanges as
    /// `exchange:NAME`), and the health of each attachment.
    Describe {
        /// NAME or NAME@VERSION.
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Print the lines a plugin logged (the broker keeps the last 512 per plugin since it
    /// started); with --follow, keep printing new ones as they are logged until Ctrl-C.
    Logs {
        /// NAME or NAME@VERSION.
        name: String,
        /// Only the lines of this version (default: every version).
        #[arg(long)]
        version: Option<String>,
        /// Keep waiting for new lines (a long-poll) and print them as they come.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Remove every version of a plugin, or one NAME@VERSION (refused while attached).
    Remove {
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Run a component over sample records on this machine (no broker), in the broker's sandbox
    /// and limits, and print what the broker would do with each batch. Fails when the plugin does.
    Test(local_test::TestArgs),
}

pub async fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    match cmd {
        PluginCommand::Deploy {
            name,
            file,
            version,
            conn,
        } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let client = conn.connect().await?;
            let d = client
                .admin()
                .deploy_plugin(&name, version.as_deref(), wasm.into())
                .await?;
            let how = if d.cached {
                "compiled code from cache".to_owned()
            } else {
                format!("compiled in {} ms", d.compile_ms)
            };
            let p = &d.plugin;
            println!(
                "deployed {}@{} ({} world, {} bytes, sha256 {}, {how})",
                p.name, p.version, p.world, p.size_bytes, p.sha256
            );
            client.close().await;
        }
        PluginCommand::List { conn } => {
            let client = conn.connect().await?;
            println!("name\tversion\tworld\tsize_bytes\tsha256");
            for p in client.admin().list_plugins().await? {
                print_version(&p);
            }
            client.close().await;
        }
        PluginCommand::Describe { name, conn } => {
            let client = conn.connect().await?;
            let d = client.admin().plugin_description(&name).await?;
            println!("name\tversion\tworld\tsize_bytes\tsha256");
            d.versions.iter().for_each(print_version);
            if d.attachments.is_empty() {
                println!("not attached to any topic");
            } else {
                print_stages(&d.attachments);
            }
            if !d.logs.is_empty() {
                println!("recent log lines:");
                d.logs.iter().for_each(|l| println!("\t{l}"));
            }
            println!(
                "memory of all plugins: {} of {} (plugins.max_total_memory_mb)",
                mib(d.memory.in_use_bytes),
                mib(d.memory.budget_bytes)
            );
            client.close().await;
        }
        PluginCommand::Logs {
            name,
            version,
            follow,
            conn,
        } => {
            let client = conn.connect().await?;
            let admin = client.admin();
            let result = if follow {
                tokio::select! {
                    r = logs::follow(&admin, &name, version.as_deref()) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            } else {
                logs::print_buffered(&admin, &name, version.as_deref())
                    .await
                    .map(drop)
            };
            client.close().await;
            result?;
        }
        // Plugins run on a blocking thread, as in the broker: WASI output blocks on the runtime.
        PluginCommand::New(args) => new::run(args)?,
        PluginCommand::Build(args) => {
            tokio::task::spawn_blocking(move || build::run(args)).await??
        }
        PluginCommand::Test(args) => {
            tokio::task::spawn_blocking(move || local_test::run(args)).await??
        }
        PluginCommand::Remove { name, conn } => {
            let client = conn.connect().await?;
            let versions = client.admin().remove_plugin(&name).await?;
            println!("removed {name} (versions {})", versions.join(", "));
            client.close().await;
        }
    }
    Ok(())
}

/// Bytes as MiB with one decimal, e.g. `1.4 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn print_version(p: &PluginVersionInfo) {
    println!(
        "{}\t{}\t{}\t{}\t{}",
        p.name, p.version, p.world, p.size_bytes, p.sha256
    );
}

/// Prints pipeline stages with their health, one per line. A router attached to an exchange shows
/// as topic `exchange:NAME`, stage `router`.
pub fn print_stages(stages: &[AttachmentInfo]) {
    println!("topic\tstage\tplugin\tworld\ton_error\ttimeout_ms\tmemory_mb\tmemory_in_use\thealth\tcalls\tfailures\tconfig");
    for (i, s) in stages.iter().enumerate() {
        let config: Vec<String> = s.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let (topic, stage) = if s.exchange {
            (format!("exchange:{}", s.topic), "router".to_owned())
        } else {
            (s.topic.clone(), i.to_string())
        };
        println!(
            "{}\t{}\t{}@{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            topic,
            stage,
            s.plugin,
            s.version,
            s.world,
            s.on_error.as_str(),
            s.timeout_ms,
            s.memory_mb,
            mib(s.memory_in_use_bytes),
            if s.healthy { "healthy" } else { "UNHEALTHY" },
            s.calls,
            s.failures,
            config.join(",")
        );
        if let Some(e) = &s.last_error {
            println!("\tlast error: {e}");
        }
    }
}

/// The plugin to attach and how it runs: shared by `topic attach` and `exchange attach`, and turned
/// into the one [`AttachOptions`] both requests carry.
#[derive(Args, Debug)]
pub struct StageArgs {
    /// NAME (latest version) or NAME@VERSION.
    plugin: String,
    /// Plugin configuration, KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "K=V")]
    config: Vec<String>,
    /// What happens to a batch the plugin fails on.
    #[arg(long, default_value = "dead-letter", value_parser = ["dead-letter", "skip", "reject"])]
    on_error: String,
    /// Time limit per call in ms (default: the broker's plugins.timeout_ms).
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Memory limit per instance in MiB (default: the broker's plugins.memory_mb).
    #[arg(long)]
    memory_mb: Option<u32>,
}

impl TryFrom<StageArgs> for AttachOptions {
    type Error = anyhow::Error;

    fn try_from(args: StageArgs) -> anyhow::Result<AttachOptions> {
        Ok(AttachOptions {
            plugin: args.plugin,
            config: parse_config(&args.config)?,
            on_error: args.on_error.parse().map_err(anyhow::Error::msg)?,
            timeout_ms: args.timeout_ms,
            memory_mb: args.memory_mb,
        })
    }
}

/// Parses repeated `K=V` flags.
pub fn parse_config(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
            _ => bail!("invalid config {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}
