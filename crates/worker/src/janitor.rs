//! The periodic sweep that keeps Redis memory bounded (see [`courier_store::Janitor`]).

use std::time::Duration;

use courier_store::Janitor;
use tokio_util::sync::CancellationToken;

/// Sweeps every `every` until `shutdown`; errors are logged and the next sweep tries again.
pub async fn run(janitor: Janitor, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match janitor.sweep().await {
            Ok(s) if s.tasks + s.index_entries + s.dead_letters + s.adopted > 0 => {
                tracing::debug!(
                    adopted = s.adopted,
                    tasks = s.tasks,
                    index_entries = s.index_entries,
                    dead_letters = s.dead_letters,
                    "swept"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "janitor sweep failed"),
        }
    }
}
