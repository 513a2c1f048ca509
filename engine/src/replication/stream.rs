//! The primary serving one standby over a WebSocket: bases of files the standby lacks
//! (or holds in another incarnation), then every segment in order, drops, and a
//! heartbeat with the lag when nothing happens; the standby's acknowledgements release
//! the commits waiting for them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures::{SinkExt, StreamExt};

use super::source::Source;
use super::wire::{self, Envelope, Message, Reply};

/// How often a quiet stream says it is alive (a standby reconnects after 5 s of silence).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

struct Connected(Arc<Source>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.standbys.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serve the standby on `ws` until it goes or this member stops being primary.
pub async fn serve(source: Arc<Source>, ws: WebSocket, tmp_dir: PathBuf) {
    let (mut tx, mut rx) = ws.split();
    let hello = tokio::time::timeout(Duration::from_secs(10), rx.next()).await;
    let Ok(Some(Ok(WsMessage::Text(text)))) = hello else {
        return;
    };
    let Ok(Reply::Hello { epoch, files }) = serde_json::from_str::<Reply>(&text) else {
        return;
    };
    let mine = source.epoch.load(Ordering::SeqCst);
    if epoch > mine {
        // The standby has seen a newer primary: this one was deposed.
        tracing::warn!(
            mine,
            seen = epoch,
            "a standby has seen a newer epoch: this member stops acknowledging"
        );
        source.fence_now();
        return;
    }
    source.standbys.fetch_add(1, Ordering::SeqCst);
    let _connected = Connected(source.clone());
    let acks = {
        let source = source.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = rx.next().await {
                let WsMessage::Text(text) = msg else { continue };
                if let Ok(Reply::Ack {
                    file,
                    incarnation,
                    txid,
                }) = serde_json::from_str(&text)
                {
                    if let Some(tap) = source.taps().into_iter().find(|t| t.file == file) {
                        tap.ack(&incarnation, txid);
                    }
                }
            }
        })
    };
    let mut sent: BTreeMap<String, (String, u64)> = files
        .into_iter()
        .filter(|(f, _)| wire::valid_file(f))
        .map(|(f, p)| (f, (p.incarnation, p.txid)))
        .collect();
    let envelope = |message| Envelope {
        epoch: mine,
        message,
    };
    loop {
        if acks.is_finished() || !source.writable() && source.epoch.load(Ordering::SeqCst) != mine {
            break;
        }
        let changed = source.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match catch_up(&source, &mut sent, &tmp_dir, mine).await {
            Ok(out) => {
                let mut failed = false;
                for (env, payload) in out {
                    if tx
                        .send(WsMessage::Binary(wire::encode(&env, &payload).into()))
                        .await
                        .is_err()
                    {
                        failed = true;
                        break;
                    }
                }
                if failed {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "replication stream");
                break;
            }
        }
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep(HEARTBEAT) => {
                let (lag_transactions, lag_bytes) = source.lag();
                let beat = envelope(Message::Heartbeat { lag_transactions, lag_bytes });
                if tx.send(WsMessage::Binary(wire::encode(&beat, &[]).into())).await.is_err() {
                    break;
                }
            }
        }
    }
    acks.abort();
}

type Out = Vec<(Envelope, Vec<u8>)>;

/// What the standby needs next, given what it was sent: databases before the catalog, so
/// a database the catalog registers is there when the catalog says so.
async fn catch_up(
    source: &Arc<Source>,
    sent: &mut BTreeMap<String, (String, u64)>,
    tmp_dir: &std::path::Path,
    epoch: u64,
) -> Result<Out, crate::error::EngineError> {
    let mut out = Vec::new();
    let env = |message| Envelope { epoch, message };
    let mut taps = source.taps();
    taps.sort_by_key(|t| t.file == "catalog.db");
    for tap in taps {
        let inc = tap.incarnation();
        let behind = match sent.get(&tap.file) {
            Some((i, txid)) if *i == inc => tap.since(*txid),
            _ => None,
        };
        let segments = match behind {
            Some(s) => s,
            None => {
                let (t, tmp) = (
                    tap.clone(),
                    tmp_dir.join(format!("base.{}.db", rand::random::<u32>())),
                );
                let (bytes, txid, checksum) = tokio::task::spawn_blocking(move || t.base(&tmp))
                    .await
                    .map_err(crate::error::EngineError::internal)??;
                let total = bytes.len() as u64;
                let mut offset = 0usize;
                loop {
                    let end = (offset + wire::BASE_CHUNK).min(bytes.len());
                    out.push((
                        env(Message::Base {
                            file: tap.file.clone(),
                            incarnation: inc.clone(),
                            txid,
                            checksum: checksum.clone(),
                            offset: offset as u64,
                            total,
                        }),
                        bytes[offset..end].to_vec(),
                    ));
                    offset = end;
                    if offset >= bytes.len() {
                        break;
                    }
                }
                sent.insert(tap.file.clone(), (inc.clone(), txid));
                tap.since(txid).unwrap_or_default()
            }
        };
        for (last, bytes) in segments {
            out.push((
                env(Message::Segment {
                    file: tap.file.clone(),
                }),
                bytes.to_vec(),
            ));
            sent.insert(tap.file.clone(), (inc.clone(), last));
        }
    }
    let tapped: Vec<String> = source.taps().iter().map(|t| t.file.clone()).collect();
    let gone: Vec<String> = sent
        .keys()
        .filter(|f| !tapped.contains(f))
        .cloned()
        .collect();
    for file in gone {
        sent.remove(&file);
        out.push((env(Message::Drop { file }), Vec::new()));
    }
    Ok(out)
}
