//! Files the engine reads again while it runs (its TLS pair, its admin tokens), so the
//! operator can replace them in the mounted Secret without a restart.

use std::fmt::Display;
use std::time::Duration;

/// How often they are looked at. The kubelet takes up to a minute or so to bring a
/// changed Secret into the pod, so this adds little.
pub const EVERY: Duration = Duration::from_secs(10);

/// Call `reload` on a blocking thread every `every` for as long as the returned task
/// runs; `Ok(true)` (a change) is logged as `changed`, an error as `kept` (what stays in
/// force).
pub fn every<E: Display + Send + 'static>(
    every: Duration,
    changed: &'static str,
    kept: &'static str,
    reload: impl Fn() -> Result<bool, E> + Send + Sync + Clone + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let r = reload.clone();
            match tokio::task::spawn_blocking(r).await {
                Ok(Ok(true)) => tracing::info!("{changed}"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "{kept}"),
                Err(e) => tracing::warn!(error = %e, "{kept}"),
            }
        }
    })
}
