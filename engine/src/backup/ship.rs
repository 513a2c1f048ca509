//! The loop that drives one database's shipper: wake on commits, gather for a quarter of
//! the shipping delay, seal segments and ship them in order, checkpoint when the WAL has
//! grown and everything in it is shipped, start generations on schedule; back off while
//! the store fails (the WAL is the backlog meanwhile), and keep status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::layout;
use super::shipper::{SealError, Shipper};
use super::store::Store;
use super::BackupConfig;

use super::ShipStatus;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SealError> + Send + 'static,
) -> Result<T, SealError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SealError::Io(std::io::Error::other(e.to_string())))?
}

/// Drive `run` until stopped.
pub async fn drive(run: Arc<Running>) {
    let mut backoff = Duration::ZERO;
    loop {
        if let Err(e) = pass(&run).await {
            backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
            let mut st = run.status.lock().unwrap_or_else(|p| p.into_inner());
            st.failures += 1;
            st.last_error = Some(e);
            tracing::warn!(database = %run.shipper.name, error = ?st.last_error, ?backoff, "backup pass failed");
        } else {
            backoff = Duration::ZERO;
        }
        let idle = if backoff.is_zero() {
            run.cfg.snapshot_check()
        } else {
            backoff
        };
        tokio::select! {
            _ = run.stop.cancelled() => break,
            _ = run.checkpoint_now.notified() => { let _ = run.force.swap(true, std::sync::atomic::Ordering::SeqCst); }
            _ = run.shipper.capture.wake.notified() => {
                tokio::time::sleep(run.cfg.max_delay() / 4).await;
            }
            _ = tokio::time::sleep(idle) => {}
        }
    }
    // Last pass on the way out: seal what is there and try once to ship it.
    let _ = pass(&run).await;
}

/// A running shipper: what its loop works with.
pub struct Running {
    /// The shipper.
    pub shipper: Arc<Shipper>,
    /// Status.
    pub status: Arc<Mutex<ShipStatus>>,
    /// Stop.
    pub stop: CancellationToken,
    /// Checkpoint on demand.
    pub checkpoint_now: Arc<tokio::sync::Notify>,
    /// A checkpoint was asked for.
    pub force: std::sync::atomic::AtomicBool,
    /// The store.
    pub store: Store,
    /// Settings.
    pub cfg: BackupConfig,
    /// Key prefix of this database (`<tenant>/<database>`).
    pub key: String,
    /// A new generation was asked for.
    pub snapshot_now: std::sync::atomic::AtomicBool,
    /// When retention last ran (unix ms).
    pub expired_at: std::sync::atomic::AtomicI64,
}

/// Runs `f` on a blocking thread with a [`super::shipper::Ship`] that puts objects in
/// this database's place in the store (blocking on the runtime: the blocking thread may).
async fn with_ship<T: Send + 'static>(
    run: &Running,
    f: impl FnOnce(&Shipper, &super::shipper::Ship<'_>) -> Result<T, SealError> + Send + 'static,
) -> Result<T, SealError> {
    let (sh, store, key) = (run.shipper.clone(), run.store.clone(), run.key.clone());
    let status = run.status.clone();
    let handle = tokio::runtime::Handle::current();
    blocking(move || {
        let ship = |gen: &str, file: &str, bytes: Vec<u8>| {
            let len = bytes.len() as u64;
            handle
                .block_on(store.put_new(&format!("{key}/{gen}/{file}"), bytes))
                .map_err(|e| e.to_string())?;
            status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .shipped_bytes += len;
            Ok(())
        };
        f(&sh, &ship)
    })
    .await
}

async fn pass(run: &Running) -> Result<(), String> {
    let sh = run.shipper.clone();
    let due = {
        let st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
        run.snapshot_now
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            || st.generation.is_none()
            || chrono::Utc::now().timestamp_millis() - st.generation_ms
                >= run.cfg.snapshot_interval().as_millis() as i64
    };
    if due {
        with_ship(run, |sh, ship| sh.start_generation(false, ship))
            .await
            .map_err(|e| e.to_string())?;
    }
    ship_segments(run).await?;
    if run.force.swap(false, std::sync::atomic::Ordering::SeqCst) || wal_over_trigger(run) {
        checkpoint(run).await?;
    }
    expire(run).await
}

/// Whether the WAL in use has passed the checkpoint trigger.
fn wal_over_trigger(run: &Running) -> bool {
    run.shipper.wal_in_use() > run.cfg.checkpoint_bytes()
}

async fn checkpoint(run: &Running) -> Result<(), String> {
    with_ship(run, |sh, ship| sh.checkpoint(ship))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Seal and ship segments until the WAL holds nothing more to ship, checkpointing
/// whenever the WAL in use passes the trigger (not only once the shipper has caught up:
/// a writer that never pauses would grow the WAL until then, and appending to a growing
/// file costs each commit more than overwriting a restarted one); a WAL that restarted
/// behind the shipper starts a new generation.
async fn ship_segments(run: &Running) -> Result<(), String> {
    loop {
        let sh = run.shipper.clone();
        let mut sealed = match blocking(move || sh.next_segment(true)).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(()),
            Err(SealError::Gap) => {
                tracing::warn!(database = %run.shipper.name, "WAL restarted behind the shipper: new generation");
                with_ship(run, |sh, ship| sh.start_generation(true, ship))
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let bytes = std::mem::take(&mut sealed.bytes);
        let len = bytes.len() as u64;
        let key = format!("{}/{}/{}", run.key, sealed.generation, sealed.file);
        run.store
            .put_new(&key, bytes)
            .await
            .map_err(|e| e.to_string())?;
        run.shipper.commit(&sealed).map_err(|e| e.to_string())?;
        {
            let mut st = run.status.lock().unwrap_or_else(|p| p.into_inner());
            st.shipped_bytes += len;
            st.shipped_txid = sealed.next.sealed_txid;
            st.shipped_ms = sealed.last_ms;
            st.last_error = None;
        }
        if wal_over_trigger(run) {
            checkpoint(run).await?;
        }
    }
}

/// Recount what waits and the lag: on every status read, so that a reader never sees
/// "nothing waits" from before the latest commits.
pub(crate) fn refresh_status(run: &Running) {
    let sh = &run.shipper;
    let (gen, sealed, gen_ms) = sh
        .state
        .lock()
        .map(|s| (s.generation.clone(), s.sealed_txid, s.generation_ms))
        .unwrap_or_default();
    let pending = sh.capture.pending();
    let oldest = sh.capture.oldest_ms();
    let backlog = sh.unshipped_bytes();
    let mut st = run.status.lock().unwrap_or_else(|p| p.into_inner());
    st.generation = gen;
    st.sealed_txid = sealed;
    st.shipped_txid = sealed;
    st.last_snapshot_ms = gen_ms;
    st.pending_commits = pending;
    st.backlog_bytes = backlog;
    st.lag_ms = oldest.map_or(0, |o| (chrono::Utc::now().timestamp_millis() - o).max(0));
}

/// Delete generations no instant of the recovery window needs: those whose successor
/// (complete, in the store) started before the window did, and note where the window now
/// starts. At most once a minute, sooner while the window is unknown.
async fn expire(run: &Running) -> Result<(), String> {
    let now = chrono::Utc::now().timestamp_millis();
    let last = run.expired_at.load(std::sync::atomic::Ordering::Relaxed);
    let window_known = run
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first_recoverable_ms
        .is_some();
    if window_known && now - last < 60_000 {
        return Ok(());
    }
    run.expired_at
        .store(now, std::sync::atomic::Ordering::Relaxed);
    let keys = run.store.list(&run.key).await.map_err(|e| e.to_string())?;
    let prefix = format!("{}/", run.key);
    let rel: Vec<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
        .collect();
    let window_start = now - run.cfg.retention().as_millis() as i64;
    let groups = layout::group(&rel);
    let doomed_all = layout::expired(&groups, window_start);
    let kept: Vec<layout::ListedGeneration> = groups
        .into_iter()
        .filter(|g| !doomed_all.contains(&g.name))
        .collect();
    run.status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first_recoverable_ms = layout::window(&kept).map(|(first, _)| first);
    for doomed in doomed_all {
        for k in keys
            .iter()
            .filter(|k| k.starts_with(&format!("{prefix}{doomed}/")))
        {
            run.store.delete(k).await.map_err(|e| e.to_string())?;
        }
        tracing::info!(database = %run.shipper.name, generation = %doomed, "generation left the recovery window: deleted");
    }
    Ok(())
}
