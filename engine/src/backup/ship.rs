//! The loop that drives one database's shipper: wake on commits, gather for a quarter of
//! the shipping delay, seal, ship the backlog in order (generation manifest and snapshot
//! first, then segments), checkpoint when the WAL has grown, start generations on
//! schedule; back off while the store fails, and keep status.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::layout;
use super::shipper::{SealError, Shipper};
use super::store::Store;
use super::BackupConfig;

/// A database's backup as its status reports it.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipStatus {
    /// Current generation.
    pub generation: Option<String>,
    /// Last transaction sealed into the backlog.
    pub sealed_txid: u64,
    /// Last transaction in the store.
    pub shipped_txid: u64,
    /// Its commit time (unix ms).
    pub shipped_ms: i64,
    /// Segments and snapshots waiting in the backlog.
    pub backlog_files: usize,
    /// Their bytes.
    pub backlog_bytes: u64,
    /// Age of the oldest commit not yet in the store (ms; 0 when none waits).
    pub lag_ms: i64,
    /// When the current generation's snapshot was taken (unix ms).
    pub last_snapshot_ms: i64,
    /// Bytes shipped since the engine started.
    pub shipped_bytes: u64,
    /// Failed store operations since the engine started.
    pub failures: u64,
    /// The last failure, until a shipment succeeds.
    pub last_error: Option<String>,
}

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
        let s = sh.clone();
        blocking(move || s.start_generation(false))
            .await
            .map_err(|e| e.to_string())?;
    }
    let s = sh.clone();
    match blocking(move || s.seal(true)).await {
        Err(SealError::Gap) => {
            tracing::warn!(database = %sh.name, "WAL restarted behind the shipper: new generation");
            let s = sh.clone();
            blocking(move || s.start_generation(true))
                .await
                .map_err(|e| e.to_string())?;
        }
        other => {
            other.map_err(|e| e.to_string())?;
        }
    }
    let shipped = upload(run).await;
    if shipped.is_ok() {
        expire(run).await?;
    }
    let forced = run.force.swap(false, std::sync::atomic::Ordering::SeqCst);
    if forced || sh.wal_bytes() > run.cfg.checkpoint_bytes() {
        let s = sh.clone();
        blocking(move || s.checkpoint())
            .await
            .map_err(|e| e.to_string())?;
        if forced {
            upload(run).await?;
        }
    }
    shipped
}

/// Ship the backlog, oldest generation first; stop at the first failure.
async fn upload(run: &Running) -> Result<(), String> {
    let sh = &run.shipper;
    let current = sh
        .state
        .lock()
        .map(|s| s.generation.clone())
        .unwrap_or(None);
    let pending = sh.dir.join("pending");
    let mut gens: Vec<String> = read_names(&pending);
    gens.sort();
    let mut result = Ok(());
    for gen in &gens {
        let dir = pending.join(gen);
        let mut files: Vec<String> = read_names(&dir)
            .into_iter()
            .filter(|f| !f.ends_with(".tmp"))
            .collect();
        // Manifest and snapshot before any segment of the generation.
        files.sort_by_key(|f| (f != "generation.json", f != "snapshot.db", f.clone()));
        for f in files {
            let path = dir.join(&f);
            let bytes = match tokio::fs::read(&path).await {
                Ok(b) => b,
                Err(e) => return Err(e.to_string()),
            };
            let len = bytes.len() as u64;
            if let Err(e) = run
                .store
                .put_new(&format!("{}/{gen}/{f}", run.key), bytes)
                .await
            {
                result = Err(e.to_string());
                break;
            }
            let _ = tokio::fs::remove_file(&path).await;
            let mut st = run.status.lock().unwrap_or_else(|p| p.into_inner());
            st.shipped_bytes += len;
            st.last_error = None;
            if let Some((_, last, ms)) = layout::parse_segment_name(&f) {
                st.shipped_txid = last;
                st.shipped_ms = ms;
            }
        }
        if result.is_err() {
            break;
        }
        if current.as_deref() != Some(gen.as_str()) {
            let _ = tokio::fs::remove_dir(&dir).await;
        }
    }
    refresh_status(run);
    result
}

fn read_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Recount the backlog and the lag.
fn refresh_status(run: &Running) {
    let sh = &run.shipper;
    let (gen, sealed, gen_ms) = sh
        .state
        .lock()
        .map(|s| (s.generation.clone(), s.sealed_txid, s.generation_ms))
        .unwrap_or_default();
    let (mut files, mut bytes, mut oldest) = (0usize, 0u64, None::<i64>);
    let pending = sh.dir.join("pending");
    for gen in read_names(&pending) {
        for f in std::fs::read_dir(pending.join(&gen))
            .into_iter()
            .flatten()
            .flatten()
        {
            files += 1;
            bytes += f.metadata().map_or(0, |m| m.len());
            if let Some(ms) = head(&f.path())
                .and_then(|b| super::segment::read_header(&b).ok())
                .map(|h| h.0.first_ms)
            {
                oldest = Some(oldest.map_or(ms, |o| o.min(ms)));
            }
        }
    }
    let mut st = run.status.lock().unwrap_or_else(|p| p.into_inner());
    st.generation = gen;
    st.sealed_txid = sealed;
    st.last_snapshot_ms = gen_ms;
    st.backlog_files = files;
    st.backlog_bytes = bytes;
    st.lag_ms = oldest.map_or(0, |o| (chrono::Utc::now().timestamp_millis() - o).max(0));
    if st.shipped_txid < sealed && files == 0 {
        st.shipped_txid = sealed;
    }
}

/// The first 4 KiB of a file (a segment's header fits).
fn head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(4096);
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

/// Delete generations no instant of the recovery window needs: those whose successor
/// (complete, in the store) started before the window did. At most once a minute.
async fn expire(run: &Running) -> Result<(), String> {
    let now = chrono::Utc::now().timestamp_millis();
    let last = run.expired_at.load(std::sync::atomic::Ordering::Relaxed);
    if now - last < 60_000 {
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
    for doomed in layout::expired(&layout::group(&rel), window_start) {
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
