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
//! | `init-loop` | `init` itself spins forever (as `loop` does), so the attachment never becomes ready |
//! | `random`    | asks the host for `random-bytes` (default 67108864 = 64 MiB, 1 to 1073741824) bytes in ONE `wasi:random/random.get-random-bytes` call, then returns every record unchanged |
//! | `panic-then-refuse` | `init` succeeds before `refuse-after-ms` (required, Unix ms by the host clock) and returns `Err("hostile init refused after the deadline")` at or after it; `transform` panics as `panic` does |
//! | `hoard`     | `init` allocates and writes `hoard-mib` (required, 1 to 4096) MiB in 1 MiB chunks and keeps them; `transform` returns every record unchanged |
//! | `bad-delay` | emits each record with header `quiver-deliver-at` set to a bad value chosen by `delay` (required): `far` = now + 2 years in ms, `text` = `soon`, `negative` = `-5` |
//! | `forge`     | emits each record with header `header` (required, e.g. `quiver-error`) set to `value` (default `forged`) |
//!
//! `bad-delay` and `forge` keep the rest of the record and replace a header of the same name the
//! record already has, so the value they set is the only one. The output batch of `bad-delay`
//! carries the delayed flag (the SDK's encoder sets it for a delay header), so the broker does look
//! at the bad value.
//!
//! For `net`, a test can point `addr` at a listener of its own: then a refused connection cannot
//! pass for a sandbox denial.
//!
//! `huge` needs guest memory of roughly three times its output (the output buffer doubles while it
//! grows), so a test of the output limit must allow the instance that much memory.

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::Mutex;

use quiver_sdk_guest::{
    info, now_ms, transform_plugin, Config, Output, Record, RecordData, SdkError,
};

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
    "init-loop",
    "random",
    "panic-then-refuse",
    "hoard",
    "bad-delay",
    "forge",
];

/// The message of the `panic` mode, and of `panic-then-refuse`'s transform.
pub const PANIC_MESSAGE: &str = "hostile plugin panicked on purpose";

/// The error of the `init-fail` mode.
pub const INIT_FAIL_MESSAGE: &str = "hostile init refused on purpose";

/// The error of `panic-then-refuse`'s `init` once the host clock reaches `refuse-after-ms`.
pub const REFUSE_MESSAGE: &str = "hostile init refused after the deadline";

/// The header `bad-delay` sets: the broker's absolute delivery time.
pub const DELIVER_AT_HEADER: &str = "quiver-deliver-at";

/// How far ahead `bad-delay=far` asks for delivery: two years of 365 days.
pub const TWO_YEARS_MS: i64 = 2 * 365 * 24 * 60 * 60 * 1000;

const MIB: usize = 1 << 20;

/// Default number of 1 MiB copies `huge` emits per input record: 70 MiB > 64 MiB.
const DEFAULT_HUGE_MIB: usize = 70;

/// Default size of `random`'s one request: 64 MiB, as much as the default instance memory.
const DEFAULT_RANDOM_BYTES: u64 = 64 << 20;

/// What `transform` does, chosen once in `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Asks the host for this many random bytes per batch.
    Random(u64),
    /// `init` already checked the deadline; `transform` only panics.
    PanicThenRefuse,
    /// `init` already filled the hoard; `transform` passes records through.
    Hoard,
    /// Sets `quiver-deliver-at` to a bad value of this kind.
    BadDelay(BadDelay),
    /// Sets the header `name` to `value`.
    Forge {
        name: String,
        value: String,
    },
}

/// The kinds of bad delivery time `bad-delay` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadDelay {
    /// Two years ahead: a due time beyond any sane hold.
    Far,
    /// Not a number at all.
    Text,
    /// A negative number of milliseconds.
    Negative,
}

impl BadDelay {
    const CHOICES: [&'static str; 3] = ["far", "text", "negative"];

    /// The header value for a record emitted now.
    fn header_value(self) -> String {
        match self {
            BadDelay::Far => now_ms().saturating_add(TWO_YEARS_MS).to_string(),
            BadDelay::Text => "soon".to_owned(),
            BadDelay::Negative => "-5".to_owned(),
        }
    }
}

/// Reads `mode` and the settings that mode takes; an unknown mode is refused with the list of
/// modes.
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
        "init-loop" => return Err(spin_forever()),
        "random" => Mode::Random(random_bytes(config)?),
        "panic-then-refuse" => refuse_after_deadline(config)?,
        "hoard" => fill_hoard(config)?,
        "bad-delay" => Mode::BadDelay(bad_delay(config)?),
        "forge" => forged_header(config)?,
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

/// `key` parsed as a whole number in `range`; `None` when the key is not set.
fn number_in<T>(config: &Config, key: &str, range: RangeInclusive<T>) -> Result<Option<T>, String>
where
    T: FromStr + PartialOrd + Display,
{
    let Some(raw) = config.get(key) else {
        return Ok(None);
    };
    match raw.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(SdkError::InvalidConfig {
            key: key.to_owned(),
            value: raw.to_owned(),
            expected: format!("a whole number from {} to {}", range.start(), range.end()),
        }
        .into()),
    }
}

fn random_bytes(config: &Config) -> Result<u64, String> {
    // Up to 1 GiB: far more than an instance may hold, which is the point of asking.
    Ok(number_in(config, "random-bytes", 1..=1 << 30)?.unwrap_or(DEFAULT_RANDOM_BYTES))
}

/// `panic-then-refuse`'s init: fine before the deadline, refused from it on. A test attaches
/// before the deadline, waits past it, and then every replacement instance the broker starts after
/// the first trap is refused.
fn refuse_after_deadline(config: &Config) -> Result<Mode, String> {
    let key = "refuse-after-ms";
    let raw = config.require(key)?;
    let deadline: i64 = raw.trim().parse().map_err(|_| SdkError::InvalidConfig {
        key: key.to_owned(),
        value: raw.to_owned(),
        expected: "a whole number of milliseconds since the Unix epoch".to_owned(),
    })?;
    // The host's clock, not the guest's: the broker decides what "now" is for every instance.
    if now_ms() >= deadline {
        return Err(REFUSE_MESSAGE.to_owned());
    }
    Ok(Mode::PanicThenRefuse)
}

fn bad_delay(config: &Config) -> Result<BadDelay, String> {
    let kind = config.require("delay")?;
    match kind {
        "far" => Ok(BadDelay::Far),
        "text" => Ok(BadDelay::Text),
        "negative" => Ok(BadDelay::Negative),
        other => Err(SdkError::InvalidConfig {
            key: "delay".to_owned(),
            value: other.to_owned(),
            expected: format!("one of {}", BadDelay::CHOICES.join(", ")),
        }
        .into()),
    }
}

fn forged_header(config: &Config) -> Result<Mode, String> {
    let name = config.require("header")?;
    if name.is_empty() {
        return Err(SdkError::EmptyConfig {
            key: "header".to_owned(),
        }
        .into());
    }
    Ok(Mode::Forge {
        name: name.to_owned(),
        value: config.get_or("value", "forged").to_owned(),
    })
}

/// The transform: one record in, whatever the mode does out.
pub fn misbehave(mode: &Mode, record: &Record, out: &mut Output) -> Result<(), String> {
    match mode {
        Mode::Pass | Mode::Hoard => out.keep(record).map_err(String::from),
        Mode::Loop => Err(spin_forever()),
        Mode::Grow => grow_forever(),
        Mode::Panic | Mode::PanicThenRefuse => panic!("{PANIC_MESSAGE}"),
        Mode::Huge(mib) => flood(record, out, *mib).map_err(String::from),
        Mode::Fs => probe_filesystem(record, out),
        Mode::Net(addr) => probe_network(record, out, *addr),
        Mode::Sleep => {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Err("woke up after an hour".to_owned())
        }
        Mode::Shout => Err("A".repeat(16 * MIB)),
        Mode::Random(len) => draw_random(record, out, *len),
        Mode::BadDelay(kind) => {
            let value = kind.header_value();
            keep_with_header(record, out, DELIVER_AT_HEADER, value.as_bytes())
        }
        Mode::Forge { name, value } => keep_with_header(record, out, name, value.as_bytes()),
    }
}

transform_plugin!(init = setup, transform = misbehave);

/// Never returns: the loop condition is a volatile read, which the compiler must perform on every
/// iteration, so the loop can be neither removed nor proven infinite and folded into a trap. The
/// result is the error message a stopped loop would give.
fn spin_forever() -> String {
    let running = true;
    let mut spins: u64 = 0;
    // SAFETY: `running` is a live, aligned, initialised local; a volatile read of it is always valid.
    while unsafe { std::ptr::read_volatile(&running) } {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
    format!("the loop stopped after {spins} spins")
}

/// Memory that is never freed: every `grow` call adds to it until the allocator gives up, and
/// `hoard`'s init fills it once.
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

/// `hoard`'s init: `hoard-mib` MiB written and kept for the life of the instance, so the memory
/// stays in use while the instance sits idle between batches.
fn fill_hoard(config: &Config) -> Result<Mode, String> {
    let key = "hoard-mib";
    let mib = number_in(config, key, 1..=4096usize)?.ok_or_else(|| SdkError::MissingConfig {
        key: key.to_owned(),
    })?;
    let mut hoard = HOARD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for done in 0..mib {
        // `vec!` would abort on failure; a refused allocation reads better as an init error.
        let mut chunk = Vec::new();
        if chunk.try_reserve_exact(MIB).is_err() || hoard.try_reserve(1).is_err() {
            return Err(format!(
                "hostile hoard: out of memory after {done} of {mib} MiB"
            ));
        }
        // Not zeroes: every byte is written, so every page is really committed.
        chunk.resize(MIB, 0xA5u8);
        hoard.push(std::hint::black_box(chunk));
    }
    Ok(Mode::Hoard)
}

/// `random`: one host call for `len` random bytes per batch, then the record unchanged. The bytes
/// are discarded; what is tested is what the host does to produce them.
fn draw_random(record: &Record, out: &mut Output, len: u64) -> Result<(), String> {
    // The SDK calls this once per record with a fresh output per batch, and this mode keeps every
    // record: the output is empty exactly at the first record of a batch.
    if out.is_empty() {
        let bytes = host_random_bytes(len);
        drop(std::hint::black_box(bytes));
    }
    out.keep(record).map_err(String::from)
}

/// `wasi:random/random.get-random-bytes(len)`, in one call.
#[cfg(target_os = "wasi")]
fn host_random_bytes(len: u64) -> Vec<u8> {
    wasip2::random::random::get_random_bytes(len)
}

#[cfg(not(target_os = "wasi"))]
thread_local! {
    /// The lengths the native stand-in was asked for, so a test can count the host calls.
    static RANDOM_REQUESTS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Natively there is no WASI host to ask: zeroes of the same length stand in.
#[cfg(not(target_os = "wasi"))]
fn host_random_bytes(len: u64) -> Vec<u8> {
    RANDOM_REQUESTS.with(|requests| requests.borrow_mut().push(len));
    vec![0; usize::try_from(len).unwrap_or(usize::MAX)]
}

/// Emits `record` with the header `name` set to `value`: any header of that name the record has is
/// left out, so the set value is the only one; everything else is kept.
fn keep_with_header(
    record: &Record,
    out: &mut Output,
    name: &str,
    value: &[u8],
) -> Result<(), String> {
    let mut headers: Vec<(&str, &[u8])> = record.headers().filter(|(n, _)| *n != name).collect();
    headers.push((name, value));
    let tags: Vec<&str> = record.tags().collect();
    // `Output::push` goes through the SDK's encoder, which flags the batch as delayed when a
    // delay header is present: `bad-delay`'s output is then really looked at by the broker.
    out.push(&RecordData {
        timestamp: record.timestamp,
        key: record.key,
        value: record.value,
        headers: &headers,
        tags: &tags,
    })
    .map_err(String::from)
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

// Natively only the modes that are harmless on a developer machine are exercised: `loop`, `grow`
// and `init-loop` never return, and `fs` / `net` would really touch the host; `random` runs against
// the native stand-in. The broker's tests run them all inside the sandbox.
#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sdk_guest::proto::batch::FLAG_DELAYED;
    use quiver_sdk_guest::proto::BatchHeader;
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

    /// The settings a mode cannot start without, besides `mode` itself.
    fn required(mode: &str) -> Vec<(&'static str, String)> {
        let far_deadline = (now_ms() + 3_600_000).to_string();
        match mode {
            "panic-then-refuse" => vec![("refuse-after-ms", far_deadline)],
            "hoard" => vec![("hoard-mib", "1".into())],
            "bad-delay" => vec![("delay", "far".into())],
            "forge" => vec![("header", "quiver-error".into())],
            _ => Vec::new(),
        }
    }

    fn init(mode: &str, extra: &[(&'static str, &str)]) -> Result<(), String> {
        let extra = extra.iter().map(|(k, v)| (*k, (*v).to_owned()));
        QuiverPlugin::init([("mode", mode.to_owned())].into_iter().chain(extra))
    }

    #[test]
    fn every_other_mode_is_accepted_and_logged() {
        // `init-fail` refuses and `init-loop` never returns.
        let starting = MODES
            .iter()
            .filter(|m| !matches!(**m, "init-fail" | "init-loop"));
        for mode in starting {
            let config = [("mode", (*mode).to_owned())].into_iter();
            QuiverPlugin::init(config.chain(required(mode))).unwrap();
        }
        let lines = quiver_sdk_guest::log::take_captured();
        assert_eq!(lines.len(), MODES.len() - 2, "{lines:?}");
        assert!(lines[0].1.contains("mode pass"), "{lines:?}");
    }

    #[test]
    fn required_settings_are_enforced() {
        for (mode, key) in [
            ("panic-then-refuse", "refuse-after-ms"),
            ("hoard", "hoard-mib"),
            ("bad-delay", "delay"),
            ("forge", "header"),
        ] {
            let err = init(mode, &[]).unwrap_err();
            assert!(
                err.contains(&format!("missing required config `{key}`")),
                "{err}"
            );
        }
        for (mode, key, value) in [
            ("random", "random-bytes", "0"),
            ("random", "random-bytes", "1073741825"),
            ("panic-then-refuse", "refuse-after-ms", "soon"),
            ("hoard", "hoard-mib", "0"),
            ("hoard", "hoard-mib", "4097"),
            ("bad-delay", "delay", "later"),
        ] {
            let err = init(mode, &[(key, value)]).unwrap_err();
            assert!(
                err.contains(&format!("config `{key}` has invalid value")),
                "{err}"
            );
        }
        let empty = init("forge", &[("header", "")]).unwrap_err();
        assert!(empty.contains("config `header` is empty"), "{empty}");
    }

    #[test]
    fn random_asks_for_its_bytes_and_passes_records_through() {
        let default = setup(&Config::from_pairs([("mode", "random")]));
        assert_eq!(default, Ok(Mode::Random(64 * MIB as u64)));
        let most = [("mode", "random"), ("random-bytes", "1073741824")];
        assert_eq!(setup(&Config::from_pairs(most)), Ok(Mode::Random(1 << 30)));
        init("random", &[("random-bytes", "4096")]).unwrap();
        let input = batch();
        let out = QuiverPlugin::transform(input.clone()).unwrap();
        assert_eq!(decode(&out).unwrap(), decode(&input).unwrap());
    }

    // The request log exists only in the native stand-in.
    #[cfg(not(target_os = "wasi"))]
    #[test]
    fn random_asks_once_per_batch_not_per_record() {
        init("random", &[("random-bytes", "100")]).unwrap();
        RANDOM_REQUESTS.with(|r| r.take());
        for _ in 0..2 {
            // Two records each.
            QuiverPlugin::transform(batch()).unwrap();
        }
        assert_eq!(RANDOM_REQUESTS.with(|r| r.take()), [100, 100]);
    }

    #[test]
    fn panic_then_refuse_starts_only_before_its_deadline() {
        let soon = (now_ms() + 60_000).to_string();
        init("panic-then-refuse", &[("refuse-after-ms", &soon)]).unwrap();
        let now = now_ms().to_string();
        let refused = init("panic-then-refuse", &[("refuse-after-ms", &now)]);
        assert_eq!(refused, Err(REFUSE_MESSAGE.to_owned()));
        let past = init("panic-then-refuse", &[("refuse-after-ms", "-1")]);
        assert_eq!(past, Err(REFUSE_MESSAGE.to_owned()));
    }

    #[test]
    #[should_panic(expected = "hostile plugin panicked on purpose")]
    fn panic_then_refuse_panics_in_transform() {
        let soon = (now_ms() + 60_000).to_string();
        init("panic-then-refuse", &[("refuse-after-ms", &soon)]).unwrap();
        let _ = QuiverPlugin::transform(batch());
    }

    #[test]
    fn hoard_keeps_its_memory_and_passes_records_through() {
        init("hoard", &[("hoard-mib", "2")]).unwrap();
        {
            let hoard = HOARD.lock().unwrap();
            // Other tests may hoard too: at least these two chunks are there, fully written.
            assert!(hoard.len() >= 2);
            assert!(hoard.iter().all(|c| c.len() == MIB && c[MIB - 1] == 0xA5));
        }
        let input = batch();
        let out = QuiverPlugin::transform(input.clone()).unwrap();
        assert_eq!(decode(&out).unwrap(), decode(&input).unwrap());
    }

    /// Runs `bad-delay=kind` over a batch whose second record already asks for a delivery time.
    fn bad_delay_values(kind: &str) -> Vec<String> {
        init("bad-delay", &[("delay", kind)]).unwrap();
        let input = encode(&[
            OwnedRecord::new("one").with_timestamp(5).with_tag("t"),
            OwnedRecord::new("two")
                .with_timestamp(6)
                .with_header(DELIVER_AT_HEADER, "1")
                .with_header("h", "v"),
        ])
        .unwrap();
        let out = QuiverPlugin::transform(input.clone()).unwrap();
        let flags = BatchHeader::parse(&out).unwrap().flags;
        assert_ne!(
            flags & FLAG_DELAYED,
            0,
            "the output batch is not flagged delayed"
        );
        let records = decode(&out).unwrap();
        let originals = decode(&input).unwrap();
        records
            .iter()
            .zip(&originals)
            .map(|(r, o)| {
                // Exactly one delivery header; everything else as it came in.
                assert_eq!(
                    r.headers
                        .iter()
                        .filter(|(n, _)| n == DELIVER_AT_HEADER)
                        .count(),
                    1
                );
                assert_eq!(
                    (&r.value, &r.tags, r.timestamp),
                    (&o.value, &o.tags, o.timestamp)
                );
                String::from_utf8(r.header(DELIVER_AT_HEADER).unwrap().to_vec()).unwrap()
            })
            .collect()
    }

    #[test]
    fn bad_delay_sets_a_bad_delivery_time_on_a_delayed_batch() {
        assert_eq!(bad_delay_values("text"), ["soon", "soon"]);
        assert_eq!(bad_delay_values("negative"), ["-5", "-5"]);
        let earliest = now_ms() + TWO_YEARS_MS;
        for far in bad_delay_values("far") {
            let at: i64 = far.parse().unwrap();
            assert!(
                (earliest..earliest + 60_000).contains(&at),
                "{at} vs {earliest}"
            );
        }
    }

    #[test]
    fn forge_adds_the_header_and_keeps_the_rest() {
        init("forge", &[("header", "quiver-error")]).unwrap();
        let out = decode(&QuiverPlugin::transform(batch()).unwrap()).unwrap();
        let mut expected = decode(&batch()).unwrap();
        for record in &mut expected {
            record
                .headers
                .push(("quiver-error".into(), b"forged".to_vec()));
        }
        assert_eq!(out, expected);

        init("forge", &[("header", "h"), ("value", "x")]).unwrap();
        let out = decode(&QuiverPlugin::transform(batch()).unwrap()).unwrap();
        assert_eq!(out[1].headers, [("h".to_owned(), b"x".to_vec())]);
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
