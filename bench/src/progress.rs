//! The progress bar: one step per (case, system) run, with the live record count of the run in
//! progress. Drawn on stderr only when it is a terminal; tables go to stdout through `println`,
//! which keeps the bar from tearing them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn new(runs: u64) -> Progress {
        let bar = ProgressBar::new(runs);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:24}] {pos}/{len} {wide_msg} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar, ticker: None }
    }

    /// Starts a run; the returned counter is shown as it grows.
    pub fn start(&mut self, label: String) -> Arc<AtomicU64> {
        self.stop_ticker();
        let live = Arc::new(AtomicU64::new(0));
        let (bar, counter) = (self.bar.clone(), live.clone());
        self.ticker = Some(tokio::spawn(async move {
            loop {
                let n = counter.load(Ordering::Relaxed);
                bar.set_message(format!("{label}: {n} records"));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
        live
    }

    pub fn finish_run(&mut self) {
        self.stop_ticker();
        self.bar.inc(1);
    }

    pub fn println(&self, text: &str) {
        self.bar.suspend(|| println!("{text}"));
    }

    pub fn done(mut self) {
        self.stop_ticker();
        self.bar.finish_and_clear();
    }

    fn stop_ticker(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}
