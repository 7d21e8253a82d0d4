//! Progress bars on stderr for long CLI work (`produce` from a large input, `consume --count N`),
//! drawn only when stderr is a terminal: piped or redirected, the bar is hidden and the command's
//! output is byte for byte what it is without one.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar towards `len` (records or bytes, as `template` shows them), or a spinner counting up
/// when the total is unknown; hidden unless stderr is a terminal.
pub fn bar(len: Option<u64>, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    // Ticks keep the rate and elapsed time moving while the command waits on the broker.
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `produce`: bytes of standard input read when it is a file of known size, else records sent.
pub fn produce(input_bytes: Option<u64>) -> ProgressBar {
    match input_bytes {
        Some(len) => bar(
            Some(len),
            "{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed} {msg}",
        ),
        None => bar(None, "{spinner} {human_pos} records sent {elapsed} {msg}"),
    }
}

/// `consume --count N`: records printed of N.
pub fn consume(count: u64) -> ProgressBar {
    bar(
        Some(count),
        "{spinner} [{bar:30}] {human_pos}/{human_len} records {elapsed} (eta {eta})",
    )
}

/// The size of standard input when it is a regular file (`< big.txt`): what a byte bar can
/// count towards. A pipe or a terminal has no size.
pub fn stdin_file_len() -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        let meta = std::fs::File::from(fd).metadata().ok()?;
        meta.is_file().then_some(meta.len()).filter(|&n| n > 0)
    }
    #[cfg(not(unix))]
    {
        None
    }
}
