//! Follows the edge's mirror definitions: one link task per mirror, stopped when its definition is
//! removed or changed (a changed one is started again once the old task has ended, so two sessions
//! of one mirror never write to the core at once).

use std::collections::HashMap;
use std::sync::Arc;

use quiver_broker::mirrors::MirrorDef;
use quiver_broker::supervisor::Supervisor;
use quiver_broker::Broker;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Starts mirroring the broker's defined mirrors, and any added later, until the supervisor
/// shuts down (which waits for the links to stop before the broker flushes).
pub fn start(broker: Arc<Broker>, supervisor: &Supervisor) {
    let sup = supervisor.clone();
    supervisor.spawn(manage(broker, sup));
}

struct Running {
    def: MirrorDef,
    stop: CancellationToken,
}

async fn manage(broker: Arc<Broker>, supervisor: Supervisor) {
    let token = supervisor.token();
    let mut changes = broker.mirrors().subscribe();
    let mut running: HashMap<String, Running> = HashMap::new();
    // One lock per mirror name: a link holds it while it runs.
    let mut turns: HashMap<String, Arc<Mutex<()>>> = HashMap::new();
    loop {
        changes.borrow_and_update();
        let defs = match broker.mirrors().definitions() {
            Ok(d) => d,
            Err(e) => {
                // Keep what runs; look again in a while.
                tracing::error!(error = %e, "cannot read the mirror definitions");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
                }
            }
        };
        running.retain(|_, r| {
            let keep = defs.contains(&r.def);
            if !keep {
                r.stop.cancel();
            }
            keep
        });
        for def in defs {
            if running.contains_key(&def.name) {
                continue;
            }
            let stop = token.child_token();
            let turn = turns.entry(def.name.clone()).or_default().clone();
            let (b, d, s) = (broker.clone(), def.clone(), stop.clone());
            supervisor.spawn(async move {
                let _turn = turn.lock_owned().await;
                if !s.is_cancelled() {
                    crate::link::run(b, d, s).await;
                }
            });
            running.insert(def.name.clone(), Running { def, stop });
        }
        tokio::select! {
            _ = token.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}
