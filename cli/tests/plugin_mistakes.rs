//! The common mistakes of a plugin author, each made on purpose, and the message each gets: it
//! names the mistake and the fix. A core module instead of a component, a world without `init`,
//! one with `init` only, one built against another version of the quiver:plugin WIT (another host
//! interface, or other types), a wrong world for where it is used, and a plugin that traps on its
//! first batch. The components are built here from WIT text (common/components.rs); the messages
//! come from the broker's registry and instances, seen through `quiver plugin test` and, for one,
//! through a real broker's deploy.

mod common;
#[path = "common/components.rs"]
mod components;

use std::process::Output;

use components::{component, Body};
use quiver_proto::ErrorCode;

/// The quiver:plugin WIT at `version` with `worlds` (the host and types interfaces trimmed to
/// what the worlds below use).
fn wit(version: &str, worlds: &str) -> String {
    format!(
        "package quiver:plugin@{version};
interface host {{ now-ms: func() -> s64; }}
interface types {{ record config-entry {{ key: string, value: string }} }}
{worlds}"
    )
}

const INIT: &str = "export init: func(config: list<config-entry>) -> result<_, string>;";
const FILTER: &str = "export filter: func(batch: list<u8>) -> result<list<bool>, string>;";

/// A filter world as wit/quiver-plugin.wit has it.
fn filter_world() -> String {
    format!("world filter {{ import host; use types.{{config-entry}}; {INIT} {FILTER} }}")
}

/// Runs `quiver plugin test` on `wasm` (written as NAME.wasm) over one record.
fn plugin_test(name: &str, wasm: &[u8], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&file, wasm).unwrap();
    let input = dir.path().join("records.jsonl");
    std::fs::write(&input, "\"one\"\n").unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["plugin", "test"])
        .arg(&file)
        .arg("--input")
        .arg(&input)
        .args(args)
        .env("QUIVER_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap()
}

/// The error `quiver plugin test` ends with (it failed).
fn error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// Asserts the deploy was refused with `message`.
fn refused(name: &str, wasm: &[u8], message: &str) {
    let err = error(&plugin_test(name, wasm, &[]));
    assert!(
        err.starts_with("error: ")
            && err.ends_with(&format!("{name}.wasm cannot be deployed: {message}")),
        "{err}"
    );
}

#[test]
fn a_core_module_is_told_how_to_build_a_component() {
    refused(
        "core",
        b"\0asm\x01\0\0\0",
        "this is a core WebAssembly module, not a component: build a component (Rust: `cargo build --target wasm32-wasip2`; JavaScript: componentize-js; Python: componentize-py), or wrap the module with `wasm-tools component new`",
    );
}

#[test]
fn a_missing_init_is_named_with_its_signature() {
    let wasm = component(
        &wit("0.1.0", &format!("world filter {{ {FILTER} }}")),
        "filter",
        &[("filter", Body::Ok)],
        &[],
    );
    refused(
        "no-init",
        &wasm,
        "the component exports `filter` but not `init`: every quiver:plugin@0.1.0 world also exports `init: func(config: list<config-entry>) -> result<_, string>`; add it (the SDK's `filter_plugin!(init = …, filter = …)` does)",
    );
}

#[test]
fn a_missing_batch_function_is_named() {
    let wasm = component(
        &wit(
            "0.1.0",
            &format!("world filter {{ use types.{{config-entry}}; {INIT} }}"),
        ),
        "filter",
        &[("init", Body::Ok)],
        &[],
    );
    refused(
        "init-only",
        &wasm,
        "the component exports `init` but none of `filter`, `transform`, `route`, `schedule`: export the batch function of the world you target (filter, transform, router, scheduler)",
    );
}

#[test]
fn another_wit_version_is_named_by_its_host_import() {
    let wasm = component(
        &wit("0.2.0", &filter_world()),
        "filter",
        &[("init", Body::Ok), ("filter", Body::Ok)],
        &[("quiver:plugin/host@0.2.0", "now-ms")],
    );
    refused(
        "v2",
        &wasm,
        "the component was built against another version of the plugin WIT (it imports `quiver:plugin/host@0.2.0`); this broker implements quiver:plugin@0.1.0: regenerate its bindings from this broker's wit/quiver-plugin.wit and rebuild",
    );
}

#[test]
fn other_export_types_suggest_another_wit_version() {
    // A WIT of the same version whose filter returns the verdicts without a result (a hand-edited
    // copy). Under another version the types import is caught first, as above.
    let worlds = format!(
        "world filter {{ use types.{{config-entry}}; {INIT} export filter: func(batch: list<u8>) -> list<bool>; }}"
    );
    let wasm = component(
        &wit("0.1.0", &worlds),
        "filter",
        &[("init", Body::Ok), ("filter", Body::Ok)],
        &[],
    );
    let err = error(&plugin_test("old-types", &wasm, &[]));
    assert!(
        err.contains("cannot be deployed: old-types@local: exports do not match the `filter` world of quiver:plugin@0.1.0 (built against another version of the WIT? regenerate the bindings from this broker's wit/quiver-plugin.wit): "),
        "{err}"
    );
}

#[test]
fn a_wrong_world_is_named_with_the_fix() {
    let wasm = component(
        &wit("0.1.0", &filter_world()),
        "filter",
        &[("init", Body::Ok), ("filter", Body::Ok)],
        &[],
    );
    let err = error(&plugin_test("keep-all", &wasm, &["--world", "transform"]));
    assert_eq!(
        err,
        "error: this component implements the `filter` world, not `transform`: build it against world `transform` of wit/quiver-plugin.wit (export `init` and `transform`), or test it with --world filter"
    );
    // The right world runs: the zeroed answer is an empty verdict list, one short of the batch.
    let out = plugin_test("keep-all", &wasm, &["--world", "filter"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  FAILED (output): plugin keep-all@local: returned 0 verdicts for a batch of 1 records\n"),
        "{text}"
    );
}

#[test]
fn a_trap_on_the_first_batch_says_it_is_the_plugins_bug() {
    let wasm = component(
        &wit("0.1.0", &filter_world()),
        "filter",
        &[("init", Body::Ok), ("filter", Body::Trap)],
        &[],
    );
    let out = plugin_test("trap-first", &wasm, &[]);
    error(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("init: ok")
            && text.contains("  FAILED (trap): plugin trap-first@local: trapped (a panic or invalid instruction in the plugin; reproduce it with `quiver plugin test`): wasm trap: wasm `unreachable` instruction executed\n"),
        "{text}"
    );
}

/// `plugin deploy` reaches the same check in a real broker: the same message, as an invalid plugin.
#[tokio::test]
async fn a_broker_deploy_gets_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let wasm = component(
        &wit("0.1.0", &format!("world filter {{ {FILTER} }}")),
        "filter",
        &[("filter", Body::Ok)],
        &[],
    );
    let err = client
        .admin()
        .deploy_plugin("no-init", None, wasm.into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidPlugin));
    assert!(
        err.to_string().contains("exports `filter` but not `init`"),
        "{err}"
    );
    client.close().await;
    broker.stop().await;
}
