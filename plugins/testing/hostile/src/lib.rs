//! hostile: a TEST FIXTURE, not an example. A transform plugin that misbehaves on purpose so the
//! broker's hostile-plugin tests can check that the wasmtime host contains it: CPU time limits,
//! memory limits, traps, output-size limits and the absence of files and sockets. It must never be
//! deployed on a real broker.
//!
//! Config: `mode=<mode>` (required), checked in `init`:
//!
//! | mode        | what one `transform` call does |
//! |-------------|--------------------------------|
//! | `pass`      | returns every record unchanged (the control case) |
//! | `loop`      | spins forever on a volatile condition the optimiser cannot remove |
//! | `grow`      | allocates and writes 1 MiB chunks into a static hoard until allocation fails (a trap: `panic = "abort"`) |
//! | `panic`     | panics with "hostile plugin panicked on purpose" (a trap in the component) |
//! | `huge`      | emits `huge-mib` (default 70) copies of a 1 MiB value per input record: more than 64 MiB of output |
//! | `fs`        | reads `/etc/passwd` and writes `/tmp/quiver-hostile`; a success is emitted as a record (a test asserts it never is), failures return `Err("filesystem denied: …")` |
//! | `net`       | connects TCP to `addr` (default `127.0.0.1:9`) and sends a UDP datagram there; a success emits `connected` / `udp sent`, failures return `Err("network denied: …")` |
//! | `sleep`     | sleeps for an hour (`std::thread::sleep`: a WASI timer the host would wait on outside wasm) |
//! | `shout`     | fails the batch with a 16 MiB error message |
//! | `init-fail` | `init` itself returns `Err("hostile init refused on purpose")` |
//!
//! For `net`, a test can point `addr` at a listener of its own: then a refused connection cannot
//! pass for a sandbox denial.
//!
//! `huge` needs guest memory of roughly three times its output (the output buffer doubles while it
//! grows), so a test of the output limit must allow the instance that much memory.

use std::net::SocketAddr;
use std::sync::Mutex;

use quiver_sdk_guest::{info, transform_plugin, Config, Output, Record, SdkError};

/// The config values of `mode`, in the order the error message lists them.
pub const MODES: &[&str] = &[
    "pass",
    "loop",
    "grow",
    "panic",
    "huge",
    "fs",
    "net",
    "sleep",
    "shout",
    "init-fail",
];

/// The message of the `panic` mode.
pub const PANIC_MESSAGE: &str = "hostile plugin panicked on purpose";

/// The error of the `init-fail` mode.
pub const INIT_FAIL_MESSAGE: &str = "hostile init refused on purpose";

const MIB: usize = 1 << 20;

/// Default number of 1 MiB copies `huge` emits per input record: 70 MiB > 64 MiB.
const DEFAULT_HUGE_MIB: usize = 70;

/// What `transform` does, chosen once in `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Loop,
    Grow,
    Panic,
    /// Emits this many 1 MiB records per input record.
    Huge(usize),
    Fs,
    /// Connects to this address.
    Net(SocketAddr),
    Sleep,
    Shout,
}

/// Reads `mode` (and `huge-mib` for `huge`, `addr` for `net`); an unknown mode is refused with the
/// list of modes.
pub fn setup(config: &Config) -> Result<Mode, String> {
    let name = config.require("mode")?;
    let mode = match name {
        "pass" => Mode::Pass,
        "loop" => Mode::Loop,
        "grow" => Mode::Grow,
        "panic" => Mode::Panic,
        "huge" => Mode::Huge(huge_mib(config)?),
        "fs" => Mode::Fs,
        "net" => Mode::Net(net_addr(config)?),
        "sleep" => Mode::Sleep,
        "shout" => Mode::Shout,
        "init-fail" => return Err(INIT_FAIL_MESSAGE.to_owned()),
        other => {
            return Err(format!(
                "config `mode` has invalid value {other:?}: expected one of {}",
                MODES.join(", ")
            ))
        }
    };
    info!("hostile: mode {name} (a test fixture: never deploy it for real)");
    Ok(mode)
}

fn huge_mib(config: &Config) -> Result<usize, String> {
    let Some(raw) = config.get("huge-mib") else {
        return Ok(DEFAULT_HUGE_MIB);
    };
    match raw.trim().parse::<usize>() {
        // A batch is at most 4 GiB; stay well under it so the limit hit is the broker's.
        Ok(n @ 1..=3072) => Ok(n),
        _ => Err(format!(
            "config `huge-mib` has invalid value {raw:?}: expected a whole number of MiB from 1 to 3072"
        )),
    }
}

fn net_addr(config: &Config) -> Result<SocketAddr, String> {
    let raw = config.get_or("addr", "127.0.0.1:9");
    raw.trim().parse().map_err(|_| {
        format!("config `addr` has invalid value {raw:?}: expected an IP address and port, like 127.0.0.1:9")
    })
}

/// The transform: one record in, whatever the mode does out.
pub fn misbehave(mode: &Mode, record: &Record, out: &mut Output) -> Result<(), String> {
    match *mode {
        Mode::Pass => out.keep(record).map_err(String::from),
        Mode::Loop => spin_forever(),
        Mode::Grow => grow_forever(),
        Mode::Panic => panic!("{PANIC_MESSAGE}"),
        Mode::Huge(mib) => flood(record, out, mib).map_err(String::from),
        Mode::Fs => probe_filesystem(record, out),
        Mode::Net(addr) => probe_network(record, out, addr),
        Mode::Sleep => {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Err("woke up after an hour".to_owned())
        }
        Mode::Shout => Err("A".repeat(16 * MIB)),
    }
}

transform_plugin!(init = setup, transform = misbehave);

/// Never returns: the loop condition is a volatile read, which the compiler must perform on every
/// iteration, so the loop can be neither removed nor proven infinite and folded into a trap.
fn spin_forever() -> Result<(), String> {
    let running = true;
    let mut spins: u64 = 0;
    // SAFETY: `running` is a live, aligned, initialised local; a volatile read of it is always valid.
    while unsafe { std::ptr::read_volatile(&running) } {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
    Err(format!("the loop stopped after {spins} spins"))
}

/// Memory that is never freed: every `grow` call adds to it until the allocator gives up.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Never returns: allocates 1 MiB chunks and writes every byte of each (so the pages are really
/// used), keeping them all. When the instance's memory cannot grow, the allocation failure aborts,
/// which in the component is a trap.
fn grow_forever() -> Result<(), String> {
    let mut hoard = HOARD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let chunk = vec![0xA5u8; MIB];
        hoard.push(std::hint::black_box(chunk));
    }
}

/// Emits `mib` copies of `record` with a 1 MiB value.
fn flood(record: &Record, out: &mut Output, mib: usize) -> Result<(), SdkError> {
    let value = vec![b'x'; MIB];
    for _ in 0..mib {
        out.keep_with_value(record, &value)?;
    }
    Ok(())
}

/// Tries to read a host file and to write one. In the broker both must fail.
fn probe_filesystem(record: &Record, out: &mut Output) -> Result<(), String> {
    let mut denied = Vec::new();
    match std::fs::read_to_string("/etc/passwd") {
        Ok(content) => out.keep_with_value(record, content.as_bytes())?,
        Err(e) => denied.push(format!("read /etc/passwd: {e}")),
    }
    match std::fs::write(
        "/tmp/quiver-hostile",
        b"written by the hostile test plugin\n",
    ) {
        Ok(()) => out.keep_with_value(record, b"wrote /tmp/quiver-hostile")?,
        Err(e) => denied.push(format!("write /tmp/quiver-hostile: {e}")),
    }
    if denied.len() == 2 {
        return Err(format!("filesystem denied: {}", denied.join("; ")));
    }
    Ok(())
}

/// Tries to open a TCP connection and to send a UDP datagram. In the broker both must fail.
fn probe_network(record: &Record, out: &mut Output, addr: SocketAddr) -> Result<(), String> {
    let mut denied = Vec::new();
    match std::net::TcpStream::connect(addr) {
        Ok(_) => out.keep_with_value(record, b"connected")?,
        Err(e) => denied.push(format!("tcp connect {addr}: {e}")),
    }
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let udp = std::net::UdpSocket::bind(local)
        .map_err(|e| format!("udp bind {local}: {e}"))
        .and_then(|socket| {
            socket
                .send_to(b"hostile", addr)
                .map_err(|e| format!("udp send to {addr}: {e}"))
        });
    match udp {
        Ok(_) => out.keep_with_value(record, b"udp sent")?,
        Err(e) => denied.push(e),
    }
    if denied.len() == 2 {
        return Err(format!("network denied: {}", denied.join("; ")));
    }
    Ok(())
}

// Natively only the modes that are harmless on a developer machine are exercised: `loop` and `grow`
// never return, and `fs` / `net` would really touch the host. The broker's tests run them all inside
// the sandbox.
#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::testing::{decode, encode};
    use quiver_sdk_guest::OwnedRecord;

    fn batch() -> Vec<u8> {
        encode(&[
            OwnedRecord::new("one")
                .with_timestamp(5)
                .with_key("k")
                .with_tag("t"),
            OwnedRecord::new("two")
                .with_timestamp(6)
                .with_header("h", "v"),
        ])
        .unwrap()
    }

    #[test]
    fn pass_returns_every_record_unchanged() {
        QuiverPlugin::init([("mode", "pass")]).unwrap();
        let input = batch();
        let out = QuiverPlugin::transform(input.clone()).unwrap();
        assert_eq!(decode(&out).unwrap(), decode(&input).unwrap());
    }

    #[test]
    fn init_validates_the_mode() {
        let missing = QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap_err();
        assert!(
            missing.contains("missing required config `mode`"),
            "{missing}"
        );
        let unknown = QuiverPlugin::init([("mode", "explode")]).unwrap_err();
        assert!(unknown.contains("\"explode\""), "{unknown}");
        for mode in MODES {
            assert!(unknown.contains(mode), "{unknown} does not list {mode}");
        }
        // A refused init leaves nothing running.
        assert!(QuiverPlugin::transform(batch())
            .unwrap_err()
            .contains("before a successful init"));
        let bad_size = QuiverPlugin::init([("mode", "huge"), ("huge-mib", "0")]).unwrap_err();
        assert!(bad_size.contains("`huge-mib`"), "{bad_size}");
        let bad_addr = QuiverPlugin::init([("mode", "net"), ("addr", "localhost")]).unwrap_err();
        assert!(bad_addr.contains("`addr`"), "{bad_addr}");
        QuiverPlugin::init([("mode", "net"), ("addr", "[::1]:9")]).unwrap();
    }

    #[test]
    fn init_fail_refuses_the_attachment() {
        assert_eq!(
            QuiverPlugin::init([("mode", "init-fail")]),
            Err(INIT_FAIL_MESSAGE.to_owned())
        );
    }

    #[test]
    fn every_other_mode_is_accepted_and_logged() {
        for mode in MODES.iter().filter(|m| **m != "init-fail") {
            QuiverPlugin::init([("mode", *mode)]).unwrap();
        }
        let lines = quiver_sdk_guest::log::take_captured();
        assert_eq!(lines.len(), MODES.len() - 1, "{lines:?}");
        assert!(lines[0].1.contains("mode pass"), "{lines:?}");
    }

    // `cargo test` uses the test profile, which unwinds; in the component (`panic = "abort"`) the
    // same panic is a trap.
    #[test]
    #[should_panic(expected = "hostile plugin panicked on purpose")]
    fn panic_panics() {
        QuiverPlugin::init([("mode", "panic")]).unwrap();
        let _ = QuiverPlugin::transform(batch());
    }

    #[test]
    fn huge_emits_more_than_64_mib_per_record() {
        QuiverPlugin::init([("mode", "huge")]).unwrap();
        let input = encode(&[OwnedRecord::new("v").with_timestamp(1).with_tag("t")]).unwrap();
        let out = QuiverPlugin::transform(input).unwrap();
        assert!(out.len() > 64 * MIB, "{} bytes", out.len());
        let records = decode(&out).unwrap();
        assert_eq!(records.len(), DEFAULT_HUGE_MIB);
        assert!(records
            .iter()
            .all(|r| r.value.len() == MIB && r.tags == ["t"]));

        QuiverPlugin::init([("mode", "huge"), ("huge-mib", "2")]).unwrap();
        let out = QuiverPlugin::transform(batch()).unwrap();
        assert_eq!(decode(&out).unwrap().len(), 4);
    }
}
