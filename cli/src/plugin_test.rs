//! `quiver plugin test FILE.wasm --input records.jsonl`: runs a component over sample records on
//! this machine, with no broker, and prints what a broker would do with each batch.
//!
//! Nothing here re-implements the broker: the component is deployed into a throwaway registry of
//! the broker crate (the same validation, world detection and link check as `plugin deploy`), runs
//! in a `PluginInstance` (the broker's sandbox, time and memory limits, failure classification) and
//! its answers go through the checks a pipeline stage applies (`quiver_broker::fuzzing`, which
//! calls the pipeline's own functions). A trapped instance is replaced, as the broker's slot does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use quiver_broker::config::PluginConfig;
use quiver_broker::fuzzing::{self, Outcome};
use quiver_broker::meta::MetaStore;
use quiver_broker::plugins::{
    EngineLimits, Limits, PluginEngine, PluginError, PluginInstance, PluginPre, PluginRegistry,
    World,
};
use quiver_broker::BrokerConfig;
use quiver_proto::batch::{Batch, Record};
use quiver_proto::plugins::PluginLogLine;

#[path = "plugin_records.rs"]
mod records;
#[path = "plugin_report.rs"]
mod report;

use records::Sample;
use report::{BatchReport, Failed, Printer, Verdict};

/// The version label of the throwaway deploy (shows in error messages as `NAME@local`).
const VERSION: &str = "local";

#[derive(Args, Debug)]
pub struct TestArgs {
    /// The component (.wasm) to run.
    file: PathBuf,
    /// Sample records, one JSON object per line: {"value": "…" or {"base64": "…"}, "key": …,
    /// "tags": […], "headers": {name: …}, "timestamp": ms}.
    #[arg(long)]
    input: PathBuf,
    /// Plugin configuration, KEY=VALUE (repeatable), as `topic attach --config`.
    #[arg(long = "config", value_name = "K=V")]
    config: Vec<String>,
    /// The world the component must implement (as where it will be attached expects); by default
    /// whichever it exports.
    #[arg(long, value_parser = ["filter", "transform", "router", "scheduler"])]
    world: Option<String>,
    /// Records per batch (the broker calls a plugin once per produced batch).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,
    /// Time limit per call in ms (default: the broker's default, plugins.timeout_ms).
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Memory limit of the instance in MiB (default: the broker's default, plugins.memory_mb).
    #[arg(long)]
    memory_mb: Option<u32>,
    /// `text` for people, `json` for one JSON object per line.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let input = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let samples = records::parse_jsonl(&input, now_ms())
        .with_context(|| format!("{}", args.input.display()))?;
    let config = super::parse_config(&args.config)?;
    let expected = args.world.as_deref().and_then(World::parse);
    let mut out = Printer::new(args.format == "json");
    let local = Local::open(&args.file, &wasm, limits(&args))?;
    out.loaded(&args.file, &local);
    if let Some(want) = expected {
        check_world(local.pre.world, want)?;
    }
    let mut session = Session::new(local, config);
    session.start(&mut out)?;
    let mut failed = 0;
    for (i, chunk) in samples.chunks(args.batch_size as usize).enumerate() {
        let report = session.batch(i + 1, chunk);
        failed += usize::from(report.result.is_err());
        out.batch(&report);
    }
    out.summary(samples.len(), failed, session.busy);
    if failed > 0 {
        bail!("the plugin failed on {failed} batch(es); see above");
    }
    Ok(())
}

/// The wrong world named with the fix: a plugin of one world cannot stand where another is
/// expected, since the broker calls a different export.
fn check_world(got: World, want: World) -> anyhow::Result<()> {
    if got != want {
        bail!(
            "this component implements the `{}` world, not `{}`: build it against world `{}` of wit/quiver-plugin.wit (export `init` and `{}`), or test it with --world {}",
            got.name(),
            want.name(),
            want.name(),
            want.as_str(),
            got.name()
        );
    }
    Ok(())
}

/// The broker's default per-call limits, or the flags' (clamped as an attachment's are).
fn limits(args: &TestArgs) -> Limits {
    let d = PluginConfig::default();
    let timeout = args
        .timeout_ms
        .unwrap_or(d.timeout_ms)
        .clamp(1, d.max_timeout_ms);
    let memory = args
        .memory_mb
        .unwrap_or(d.memory_mb)
        .clamp(1, d.max_memory_mb);
    Limits {
        timeout: Duration::from_millis(timeout.into()),
        memory_bytes: (memory as usize) << 20,
        max_output_bytes: BrokerConfig::default().log.max_batch_bytes as usize,
    }
}

fn now_ms() -> i64 {
    quiver_broker::util::now_ms()
}

/// The component deployed into a registry that lives in a temporary directory.
pub struct Local {
    _dir: tempfile::TempDir,
    registry: PluginRegistry,
    pub pre: Arc<PluginPre>,
    pub name: String,
    pub size_bytes: usize,
    pub compile_ms: u64,
    pub cached: bool,
    limits: Limits,
}

impl Local {
    fn open(file: &std::path::Path, wasm: &[u8], limits: Limits) -> anyhow::Result<Local> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let meta = MetaStore::open(&dir.path().join("meta"))?;
        let d = PluginConfig::default();
        let engine_limits = EngineLimits {
            max_memory_bytes: (d.max_memory_mb as usize) << 20,
            // One instance at a time, plus the deploy-time probe.
            max_instances: 4,
            max_total_memory_bytes: d.total_memory_bytes(),
        };
        let cache = compile_cache().unwrap_or_else(|| dir.path().join("compiled"));
        let engine = PluginEngine::new(&cache, engine_limits)?;
        let registry = PluginRegistry::new(meta, Arc::new(engine));
        let name = plugin_name(file);
        let deployed = registry
            .deploy(&name, Some(VERSION), wasm)
            .with_context(|| format!("{} cannot be deployed", file.display()))?;
        let pre = registry.pre(&name, VERSION)?;
        Ok(Local {
            _dir: dir,
            registry,
            pre,
            name,
            size_bytes: wasm.len(),
            compile_ms: deployed.compile_ms,
            cached: deployed.cached,
            limits,
        })
    }

    /// A fresh instance with its `init` run on `config`.
    fn instance(&self, config: &[(String, String)]) -> Result<PluginInstance, PluginError> {
        let mut instance = PluginInstance::new(&self.pre, self.limits)?;
        instance.init(config)?;
        Ok(instance)
    }
}

/// Where compiled code is kept between runs: compiling a large component (a JavaScript one) takes
/// seconds, and a test is run again and again while a plugin is written. The user's own cache
/// directory (`crate::cache`): the
/// engine loads what it finds there only when its checksum matches, under a name carrying the
/// engine's compatibility hash. `None` (a fresh temporary directory) when there is no home.
fn compile_cache() -> Option<PathBuf> {
    Some(crate::cache::dir()?.join("plugin-test"))
}

/// The file name as a plugin name (what `plugin deploy` would be given), e.g. `tag-filter`.
fn plugin_name(file: &std::path::Path) -> String {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let name: String = stem
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                true => c,
                false => '-',
            },
        )
        .take(64)
        .collect();
    match name.is_empty() {
        true => "plugin".into(),
        false => name,
    }
}

/// One instance at a time over the batches, replaced after a trap, a timeout or a memory hit.
struct Session {
    local: Local,
    config: Vec<(String, String)>,
    instance: Option<PluginInstance>,
    /// Where the plugin's log lines were read up to.
    log_cursor: u64,
    /// Time spent in batch calls.
    busy: Duration,
}

impl Session {
    fn new(local: Local, config: Vec<(String, String)>) -> Session {
        Session {
            local,
            config,
            instance: None,
            log_cursor: 0,
            busy: Duration::ZERO,
        }
    }

    /// Instantiates and runs `init`, as an attach does: a refusal ends the test.
    fn start(&mut self, out: &mut Printer) -> anyhow::Result<()> {
        let started = Instant::now();
        let result = self.local.instance(&self.config);
        let elapsed = started.elapsed();
        let logs = self.logs();
        match result {
            Ok(instance) => {
                out.init(elapsed, &logs, None);
                self.instance = Some(instance);
                Ok(())
            }
            Err(e) => {
                out.init(elapsed, &logs, Some(&Failed::of(&e)));
                bail!("the plugin's init failed: {e}")
            }
        }
    }

    fn batch(&mut self, number: usize, samples: &[Sample]) -> BatchReport {
        let lines = samples.iter().map(|s| s.line).collect();
        let started = Instant::now();
        let result = self.call(samples);
        let elapsed = started.elapsed();
        self.busy += elapsed;
        BatchReport {
            number,
            lines,
            elapsed,
            logs: self.logs(),
            result,
        }
    }

    fn call(&mut self, samples: &[Sample]) -> Result<Verdict, Failed> {
        let batch = records::encode(samples).map_err(|e| Failed {
            kind: "input".into(),
            message: format!("{e:#}"),
        })?;
        let instance = match self.instance.take() {
            Some(i) => i,
            // The broker's slot does the same after a failure that poisons the instance.
            None => self.local.instance(&self.config).map_err(|e| Failed {
                kind: "reinit".into(),
                message: format!("a replacement instance failed: {e}"),
            })?,
        };
        let mut instance = instance;
        let result = run_world(&mut instance, &batch, &self.local.pre.label);
        let poisoned = matches!(&result, Err(Ran::Plugin(e)) if e.failure().is_some_and(|f| f.poisons_instance()));
        if !poisoned {
            self.instance = Some(instance);
        }
        result.map_err(|e| match e {
            Ran::Plugin(e) => Failed::of(&e),
            Ran::Output(f) => f,
        })
    }

    /// The plugin's log lines since the last call of this.
    fn logs(&mut self) -> Vec<PluginLogLine> {
        let ring = self.local.registry.logs().ring(&self.local.name);
        let mut lines = Vec::new();
        loop {
            let page = ring.read(Some(self.log_cursor), None);
            if page.lines.is_empty() {
                return lines;
            }
            self.log_cursor = page.next;
            lines.extend(page.lines);
        }
    }
}

/// How a batch call failed: in the plugin (a `PluginError` as the broker classifies it), or in
/// the checks of what it returned.
enum Ran {
    Plugin(PluginError),
    Output(Failed),
}

impl From<PluginError> for Ran {
    fn from(e: PluginError) -> Ran {
        Ran::Plugin(e)
    }
}

/// Calls the world's batch function, then the pipeline's checks of its answer.
fn run_world(instance: &mut PluginInstance, batch: &Batch, label: &str) -> Result<Verdict, Ran> {
    let bytes = batch.bytes();
    let n = batch.record_count() as usize;
    let now = now_ms();
    let checked = |r: Result<Outcome, String>| {
        r.map_err(|message| {
            Ran::Output(Failed {
                kind: "output".into(),
                message: format!("plugin {label}: {message}"),
            })
        })
    };
    match instance.world() {
        World::Filter => {
            let verdicts = instance.filter(bytes, n)?;
            checked(fuzzing::filter(batch, &verdicts))?;
            Ok(Verdict::Kept(verdicts))
        }
        World::Transform => {
            let out = instance.transform(bytes)?;
            let records: Vec<Record> = match checked(fuzzing::transform(out, now))? {
                Outcome::Replaced(b) => b.to_records().collect(),
                Outcome::Same => batch.to_records().collect(),
                Outcome::Dropped | Outcome::Routed(_) => Vec::new(),
            };
            Ok(Verdict::Transformed(records))
        }
        World::Router => {
            let r = instance.route(bytes, n)?;
            let (topics, counts, targets) = (r.topics.clone(), r.counts.clone(), r.targets);
            checked(fuzzing::route(batch, topics, counts, targets.clone()))?;
            Ok(Verdict::Routed(per_record(&r.topics, &r.counts, &targets)))
        }
        World::Scheduler => {
            let delays = instance.schedule(bytes, n)?;
            checked(fuzzing::schedule(batch, &delays, now))?;
            Ok(Verdict::Scheduled { delays, now })
        }
    }
}

/// Each record's destination topics, in first-named order, each once (as the broker appends it).
fn per_record(topics: &[String], counts: &[u32], targets: &[u32]) -> Vec<Vec<String>> {
    let mut next = targets.iter();
    counts
        .iter()
        .map(|&c| {
            let mut names: Vec<String> = Vec::new();
            for &t in next.by_ref().take(c as usize) {
                if let Some(name) = topics.get(t as usize) {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
            names
        })
        .collect()
}
