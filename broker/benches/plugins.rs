//! Plugin host benchmarks: the WASM tag filter (plugins/tag-filter) against the native tag filter
//! over batches of 1000 records of 100 B, a cold compile of that ~95 KB component, and deploy →
//! first call when the compiled code is already cached. Results live in BENCHMARKS.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quiver_broker::config::PluginConfig;
use quiver_broker::filter::Filter;
use quiver_broker::meta::MetaStore;
use quiver_broker::plugins::{
    EngineLimits, Limits, Pipelines, PluginEngine, PluginInstance, PluginRegistry,
};
use quiver_proto::{batch, Batch, BatchBuilder, RecordData};

const RECORDS: usize = 1000;

/// 1000 records with 100-byte values; every other one tagged `a`, the rest `b`.
fn make_batch() -> Batch {
    let value = [b'v'; 100];
    let mut b = BatchBuilder::with_capacity(RECORDS * 140);
    for i in 0..RECORDS {
        let tags: &[&str] = if i % 2 == 0 { &["a"] } else { &["b"] };
        b.push(&RecordData {
            timestamp: 1_700_000_000_000,
            value: &value,
            tags,
            ..Default::default()
        })
        .unwrap();
    }
    Batch::parse(b.finish().unwrap()).unwrap()
}

/// The tag-filter component, built by scripts/build-plugins.sh (run here when it is missing).
fn tag_filter_wasm() -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("target/plugins/tag-filter.wasm");
    if !path.exists() {
        let ok = std::process::Command::new("bash")
            .arg(root.join("scripts/build-plugins.sh"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "scripts/build-plugins.sh failed");
    }
    std::fs::read(&path).unwrap()
}

struct Host {
    _dir: tempfile::TempDir,
    engine: Arc<PluginEngine>,
    registry: Arc<PluginRegistry>,
    pipelines: Pipelines,
}

fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let meta = MetaStore::open(&dir.path().join("meta")).unwrap();
    let engine =
        Arc::new(PluginEngine::new(&dir.path().join("compiled"), EngineLimits::default()).unwrap());
    let registry = Arc::new(PluginRegistry::new(meta.clone(), engine.clone()));
    let pipelines =
        Pipelines::open(meta, registry.clone(), PluginConfig::default(), 8 << 20).unwrap();
    Host {
        _dir: dir,
        engine,
        registry,
        pipelines,
    }
}

fn tags_config() -> Vec<(String, String)> {
    vec![("tags".into(), "a".into())]
}

fn filters(c: &mut Criterion) {
    let batch = make_batch();
    let h = host();
    h.registry
        .deploy("tag-filter", None, &tag_filter_wasm())
        .unwrap();
    let wasm = h
        .pipelines
        .read_filter("tag-filter", tags_config())
        .unwrap();
    let native = Filter::parse("tag:a").unwrap();
    // Both keep the same records.
    let a = wasm.apply(&batch, 0).unwrap().unwrap();
    let b = batch::select(&batch, |r| native.matches(r)).unwrap();
    assert_eq!(a, b);

    let mut group = c.benchmark_group("tag_filter_1000x100B");
    group
        .throughput(Throughput::Elements(RECORDS as u64))
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("native", |bench| {
        bench.iter(|| batch::select(&batch, |r| native.matches(r)))
    });
    group.bench_function("wasm", |bench| {
        bench.iter(|| wasm.apply(&batch, 0).unwrap())
    });
    // The breakdown: the component call alone (batch in, verdicts out), and the native matching
    // alone (no output batch), so the plugin's own cost can be told from the shared `select`.
    let pre = h.registry.pre("tag-filter", "1").unwrap();
    let limits = Limits {
        timeout: Duration::from_secs(1),
        memory_bytes: 64 << 20,
        max_output_bytes: 0,
    };
    let mut instance = PluginInstance::new(&pre, limits).unwrap();
    instance.init(&tags_config()).unwrap();
    group.bench_function("wasm_call_only", |bench| {
        bench.iter(|| instance.filter(batch.bytes(), RECORDS).unwrap())
    });
    group.bench_function("native_match_only", |bench| {
        bench.iter(|| batch.records().filter(|r| native.matches(r)).count())
    });
    group.finish();
}

fn deploy(c: &mut Criterion) {
    let bytes = tag_filter_wasm();
    let batch = make_batch();
    let mut group = c.benchmark_group("deploy_tag_filter");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));

    // A cold compile: a new content hash each time, so the cache never answers.
    let h = host();
    let mut n = 0u64;
    group.bench_function("cold_compile", |bench| {
        bench.iter(|| {
            n += 1;
            let compiled = h.engine.compile(&format!("cold-{n}"), &bytes).unwrap();
            h.engine.evict(&format!("cold-{n}"));
            compiled
        })
    });

    // Deploy (validate, cached compiled code, link, store durably) then the first filter call.
    let h = host();
    h.registry.deploy("warm", Some("0"), &bytes).unwrap();
    let mut v = 0u64;
    group.bench_function("cached_deploy_to_first_call", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                v += 1;
                let start = Instant::now();
                let version = v.to_string();
                h.registry.deploy("warm", Some(&version), &bytes).unwrap();
                let f = h
                    .pipelines
                    .read_filter(&format!("warm@{version}"), tags_config())
                    .unwrap();
                f.apply(&batch, 0).unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, filters, deploy);
criterion_main!(benches);
