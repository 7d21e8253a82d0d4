//! Request/reply between two processes: `cargo run --example request_reply` creates the topic
//! `rpc.requests` if missing, starts itself again as `request_reply responder` (a child process that
//! upper-cases what it is sent, reading the topic as a queue so that more responders could share it),
//! sends a few requests, prints the replies and stops the child. `-- responder` runs only a
//! responder, until killed. Trusts ./quiver-data/tls/ca.pem unless QUIVER_CA says otherwise, and
//! talks to QUIVER_SERVER (default 127.0.0.1:7447); the child inherits both.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use quiver::{
    Client, ErrorCode, NewTopic, QueueConfig, Record, Requester, RequesterConfig, Responder,
};
use tokio::io::AsyncReadExt;

const TOPIC: &str = "rpc.requests";
/// The share group the responders read requests under.
const GROUP: &str = "rpc.responders";
/// Given to the child: stop (between polls) once standard input closes.
const UNTIL_EOF: &str = "--until-stdin-closes";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::var("QUIVER_SERVER").unwrap_or_else(|_| "127.0.0.1:7447".into());
    let ca = std::env::var("QUIVER_CA").unwrap_or_else(|_| "./quiver-data/tls/ca.pem".into());
    let client = Client::connect(&server, ca.as_ref()).await?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => request(client).await,
        ["responder"] => respond(client, false).await,
        ["responder", UNTIL_EOF] => respond(client, true).await,
        _ => bail!("unexpected arguments {args:?}: expected nothing or `responder`"),
    }
}

/// Starts a responder, sends requests to it, prints the replies.
async fn request(client: Client) -> anyhow::Result<()> {
    match client.admin().create_topic(NewTopic::new(TOPIC, 1)).await {
        Err(e) if e.code() != Some(ErrorCode::TopicExists) => {
            return Err(e).context("creating the request topic")
        }
        _ => {}
    }
    let responder = ResponderProcess::spawn()?;
    let requester = Requester::new(client.clone(), RequesterConfig::default()).await?;
    println!("replies come back on {}", requester.reply_topic());
    for text in [
        "uppercase this",
        "hello, quiver",
        "request/reply over topics",
    ] {
        let started = Instant::now();
        // The first request also waits for the child process to start.
        let reply = requester
            .request(TOPIC, text, Duration::from_secs(10))
            .await?;
        println!(
            "{text:?} -> {:?} in {:?}",
            String::from_utf8_lossy(&reply.value),
            started.elapsed()
        );
    }
    requester.close().await?;
    responder.stop().await;
    client.close().await;
    Ok(())
}

/// Serves requests until killed, or with `until_eof` until standard input closes.
async fn respond(client: Client, until_eof: bool) -> anyhow::Result<()> {
    // A short lease: requests held by a responder that dies are answered by another soon.
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(5),
        ..QueueConfig::default()
    };
    let responder = Responder::new(client.clone(), GROUP, TOPIC, config);
    let stop = Arc::new(AtomicBool::new(false));
    if until_eof {
        tokio::spawn(stop_at_eof(stop.clone()));
    }
    eprintln!("responder {}: serving {TOPIC}", std::process::id());
    let mut uppercase = |request: Record| async move {
        Bytes::from(String::from_utf8_lossy(&request.value).to_uppercase())
    };
    // Stopping between polls (not during one) leaves no request leased to a responder that left.
    while !stop.load(Ordering::Relaxed) {
        responder.serve_once(&mut uppercase).await?;
    }
    client.close().await;
    Ok(())
}

async fn stop_at_eof(stop: Arc<AtomicBool>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    stop.store(true, Ordering::Relaxed);
}

/// The responder child process; killed when dropped (also when a request fails).
struct ResponderProcess(Child);

impl ResponderProcess {
    fn spawn() -> anyhow::Result<ResponderProcess> {
        let exe = std::env::current_exe().context("finding this example's executable")?;
        let child = Command::new(exe)
            .args(["responder", UNTIL_EOF])
            .stdin(Stdio::piped())
            .spawn()
            .context("starting the responder")?;
        Ok(ResponderProcess(child))
    }

    /// Closes the child's standard input and gives it a few seconds to finish its poll and exit.
    async fn stop(mut self) {
        drop(self.0.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ResponderProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
