//! Rebuilding a database as it was at an instant: the generation that covers it, its
//! snapshot, then its segments replayed transaction by transaction up to the instant.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::layout::{self, GenerationManifest};
use super::segment;
use super::store::{Store, StoreError};

/// Why a restore cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The store holds nothing for that database.
    #[error("the backup store holds no backup of {0}")]
    NoBackup(String),
    /// The instant is outside what the store can restore.
    #[error("{point} is outside the recoverable window of {database}: {first} to {last}")]
    OutsideWindow {
        /// Source database.
        database: String,
        /// Asked for.
        point: String,
        /// First recoverable instant.
        first: String,
        /// Last recoverable instant.
        last: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What the store holds does not chain or verify.
    #[error("backup of {0} is damaged: {1}")]
    Damaged(String, String),
    /// Writing the restored file failed.
    #[error("restore: {0}")]
    Io(#[from] std::io::Error),
}

/// What a restore did, measured.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// Generation restored from.
    pub generation: String,
    /// Last transaction applied.
    pub txid: u64,
    /// Its commit time (unix ms; the snapshot's time when none was applied).
    pub commit_ms: i64,
    /// Bytes downloaded and the seconds it took.
    pub downloaded_bytes: u64,
    /// Seconds downloading.
    pub download_seconds: f64,
    /// Page bytes replayed and the seconds it took.
    pub replayed_bytes: u64,
    /// Seconds replaying.
    pub replay_seconds: f64,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| t.to_rfc3339())
}

/// The recoverable generations of `tenant/database`.
pub async fn list(
    store: &Store,
    tenant: &str,
    database: &str,
) -> Result<Vec<layout::ListedGeneration>, StoreError> {
    let base = layout::database_key(tenant, database);
    let keys = store.list(&base).await?;
    let rel: Vec<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&format!("{base}/")).map(str::to_string))
        .collect();
    Ok(layout::group(&rel))
}

/// Restore `tenant/database` as of `point` (unix ms; `None`: the latest) into the new
/// file `into`.
pub async fn restore(
    store: &Store,
    tenant: &str,
    database: &str,
    point: Option<i64>,
    into: &Path,
) -> Result<RestoreReport, RestoreError> {
    let who = layout::database_key(tenant, database);
    let gens = list(store, tenant, database).await?;
    let Some((first, last)) = layout::window(&gens) else {
        return Err(RestoreError::NoBackup(who));
    };
    if let Some(p) = point {
        if p < first || p > last {
            return Err(RestoreError::OutsideWindow {
                database: who,
                point: rfc3339(p),
                first: rfc3339(first),
                last: rfc3339(last),
            });
        }
    }
    let gen = layout::choose(&gens, point).ok_or_else(|| RestoreError::NoBackup(who.clone()))?;
    let started = Instant::now();
    let manifest: GenerationManifest = serde_json::from_slice(
        &store
            .get(&format!("{who}/{}/generation.json", gen.name))
            .await?,
    )
    .map_err(|e| RestoreError::Damaged(who.clone(), e.to_string()))?;
    let snapshot = store
        .get(&format!("{who}/{}/snapshot.db", gen.name))
        .await?;
    let mut report = RestoreReport {
        generation: gen.name.clone(),
        txid: manifest.base_txid,
        commit_ms: manifest.start_ms,
        downloaded_bytes: snapshot.len() as u64,
        ..Default::default()
    };
    let mut segments = Vec::new();
    for (a, b, ms) in &gen.segments {
        segments.push(
            store
                .get(&format!(
                    "{who}/{}/{}",
                    gen.name,
                    layout::segment_name(*a, *b, *ms)
                ))
                .await?,
        );
        if point.is_some_and(|p| *ms > p) {
            break;
        }
    }
    report.downloaded_bytes += segments.iter().map(|s| s.len() as u64).sum::<u64>();
    report.download_seconds = started.elapsed().as_secs_f64();
    let replay = Instant::now();
    let into = into.to_path_buf();
    let (name, base) = (gen.name.clone(), manifest.base_txid);
    let who2 = who.clone();
    let mut report = tokio::task::spawn_blocking(move || {
        apply(
            &who2,
            &name,
            base,
            &snapshot,
            &segments,
            Until {
                ms: point,
                txid: None,
            },
            &into,
        )
        .map(|(txid, ms, bytes)| {
            if txid > report.txid {
                report.txid = txid;
                report.commit_ms = ms;
            }
            report.replayed_bytes = bytes;
            report
        })
    })
    .await
    .map_err(|e| RestoreError::Io(std::io::Error::other(e.to_string())))??;
    report.replay_seconds = replay.elapsed().as_secs_f64();
    Ok(report)
}

/// Where replay stops: the last commit at or before `ms`, and at most transaction `txid`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Until {
    /// Instant (unix ms).
    pub ms: Option<i64>,
    /// Transaction.
    pub txid: Option<u64>,
}

/// Write the snapshot to `into` and replay whole transactions of generation `gen` (whose
/// snapshot holds transactions up to `base`) until `until`; returns the last transaction
/// applied, its time and the page bytes replayed.
pub fn apply(
    who: &str,
    gen: &str,
    base: u64,
    snapshot: &[u8],
    segments: &[Vec<u8>],
    until: Until,
    into: &Path,
) -> Result<(u64, i64, u64), RestoreError> {
    let damaged = |m: String| RestoreError::Damaged(who.to_string(), m);
    let mut f = OpenOptions::new().create_new(true).write(true).open(into)?;
    f.write_all(snapshot)?;
    let (mut chain, mut next, mut applied, mut at_ms, mut bytes) =
        (gen.to_string(), base + 1, base, 0, 0u64);
    'segments: for raw in segments {
        let (h, frames) = segment::open(raw).map_err(|e| damaged(e.to_string()))?;
        if h.prev_checksum != chain || h.first_txid != next || h.generation != gen {
            return Err(damaged(format!(
                "segment {}-{} does not follow transaction {}",
                h.first_txid,
                h.last_txid,
                next - 1
            )));
        }
        let ps = h.page_size as u64;
        let mut txn: Vec<&segment::SegmentFrame> = Vec::new();
        for fr in &frames {
            txn.push(fr);
            if fr.commit_size == 0 {
                continue;
            }
            if until.ms.is_some_and(|p| fr.commit_ms > p) || until.txid.is_some_and(|t| next > t) {
                break 'segments;
            }
            for page in txn.drain(..) {
                f.seek(SeekFrom::Start((page.page as u64 - 1) * ps))?;
                f.write_all(&page.data)?;
                bytes += ps;
            }
            f.set_len(fr.commit_size as u64 * ps)?;
            applied = next;
            at_ms = fr.commit_ms;
            next += 1;
        }
        chain = h.checksum;
    }
    f.sync_all()?;
    drop(f);
    let conn = rusqlite::Connection::open(into).map_err(|e| damaged(e.to_string()))?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| damaged(e.to_string()))?;
    if check != "ok" {
        return Err(damaged(format!("integrity_check: {check}")));
    }
    conn.execute_batch("PRAGMA journal_mode=WAL;")
        .map_err(|e| damaged(e.to_string()))?;
    Ok((applied, at_ms, bytes))
}
