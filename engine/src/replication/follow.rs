//! The standby following its primary: connect to `/v1/replication/stream` (TLS verified
//! against the tenant's CA, the admin token presented), say where every file stands,
//! apply what comes in order and acknowledge it once durable. Messages of an epoch older
//! than the newest seen are refused; silence for 5 s or any error starts over.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::apply::Replica;
use super::wire::{self, Message, Reply};

/// What the follower reports.
#[derive(Debug, Default)]
pub struct Progress {
    /// Connected and applying.
    pub streaming: AtomicBool,
    /// Newest epoch seen.
    pub epoch: AtomicU64,
    /// Lag the primary last reported.
    pub lag_transactions: AtomicU64,
    /// The same in bytes.
    pub lag_bytes: AtomicU64,
    /// When a transaction was last applied (unix ms; 0 never).
    pub last_applied_ms: AtomicI64,
    /// A heartbeat came after a catch-up: every file is as far as the primary had it.
    pub caught_up: AtomicBool,
}

/// Where the primary is and how to reach it.
#[derive(Clone)]
pub struct Upstream {
    /// `https://host:port` (or `http://` on loopback, in tests).
    pub url: String,
    /// Admin tokens to present (tried in turn).
    pub tokens: Vec<String>,
    /// TLS client configuration trusting the tenant's CA.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Follow `up` until `stop`.
pub async fn follow(
    replica: Arc<Replica>,
    progress: Arc<Progress>,
    up: Upstream,
    stop: CancellationToken,
) {
    let turn = AtomicUsize::new(0);
    while !stop.is_cancelled() {
        let token = up
            .tokens
            .get(turn.fetch_add(1, Ordering::Relaxed) % up.tokens.len().max(1))
            .cloned()
            .unwrap_or_default();
        tokio::select! {
            _ = stop.cancelled() => break,
            r = session(&replica, &progress, &up, &token) => {
                if let Err(e) = r {
                    tracing::info!(primary = %up.url, error = %e, "replication stream ended; reconnecting");
                }
            }
        }
        progress.streaming.store(false, Ordering::SeqCst);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    progress.streaming.store(false, Ordering::SeqCst);
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn session(
    replica: &Arc<Replica>,
    progress: &Arc<Progress>,
    up: &Upstream,
    token: &str,
) -> Result<(), Error> {
    let url = url_parts(&up.url)?;
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port)).await?;
    tcp.set_nodelay(true)?;
    let request = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!(
            "ws://{}:{}/v1/replication/stream",
            url.host, url.port
        ))
        .header("Host", format!("{}:{}", url.host, url.port))
        .header("Authorization", format!("Bearer {token}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())?;
    match (&up.tls, url.tls) {
        (Some(tls), true) => {
            let name = rustls::pki_types::ServerName::try_from(url.host.clone())?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await?;
            let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
            run(ws, replica, progress).await
        }
        (None, false) => {
            let (ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
            run(ws, replica, progress).await
        }
        _ => Err("the primary's URL and this engine's TLS settings disagree".into()),
    }
}

async fn run<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    replica: &Arc<Replica>,
    progress: &Arc<Progress>,
) -> Result<(), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let hello = Reply::Hello {
        epoch: progress.epoch.load(Ordering::SeqCst),
        files: replica.positions(),
    };
    ws.send(WsMessage::Text(serde_json::to_string(&hello)?.into()))
        .await?;
    progress.streaming.store(true, Ordering::SeqCst);
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        let msg = match next {
            Err(_) => return Err("the primary has been silent for 5 s".into()),
            Ok(None) => return Err("the primary closed the stream".into()),
            Ok(Some(m)) => m?,
        };
        let WsMessage::Binary(bytes) = msg else {
            continue;
        };
        let (env, payload) = wire::decode(&bytes)?;
        let seen = progress.epoch.load(Ordering::SeqCst);
        if env.epoch < seen {
            return Err(format!(
                "refused: a stream of epoch {} after epoch {seen}",
                env.epoch
            )
            .into());
        }
        progress.epoch.store(env.epoch, Ordering::SeqCst);
        let ack = match env.message {
            Message::Heartbeat {
                lag_transactions,
                lag_bytes,
            } => {
                progress
                    .lag_transactions
                    .store(lag_transactions, Ordering::Relaxed);
                progress.caught_up.store(true, Ordering::SeqCst);
                progress.lag_bytes.store(lag_bytes, Ordering::Relaxed);
                None
            }
            message => {
                let (r, payload) = (replica.clone(), payload.to_vec());
                tokio::task::spawn_blocking(move || apply(&r, message, &payload)).await??
            }
        };
        if let Some(ack) = ack {
            progress
                .last_applied_ms
                .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
            ws.send(WsMessage::Text(serde_json::to_string(&ack)?.into()))
                .await?;
        }
    }
}

/// Apply one message; the acknowledgement to send, if any.
fn apply(replica: &Replica, message: Message, payload: &[u8]) -> Result<Option<Reply>, Error> {
    let file = match &message {
        Message::Base { file, .. } | Message::Segment { file } | Message::Drop { file } => file,
        Message::Heartbeat { .. } => return Ok(None),
    };
    if !wire::valid_file(file) {
        return Err(format!("refused: {file:?} is not a replicated file").into());
    }
    Ok(match message {
        Message::Base {
            file,
            incarnation,
            txid,
            checksum,
            offset,
            total,
        } => replica
            .base_part(&file, &incarnation, txid, &checksum, offset, total, payload)?
            .then_some(Reply::Ack {
                file,
                incarnation,
                txid,
            }),
        Message::Segment { file } => {
            let at = replica.segment(&file, payload)?;
            Some(Reply::Ack {
                file,
                incarnation: at.incarnation,
                txid: at.txid,
            })
        }
        Message::Drop { file } => {
            replica.drop_file(&file)?;
            None
        }
        Message::Heartbeat { .. } => None,
    })
}

struct UrlParts {
    tls: bool,
    host: String,
    port: u16,
}

fn url_parts(url: &str) -> Result<UrlParts, Error> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("the primary's URL {url:?} is not http(s)").into());
    };
    let hostport = rest.trim_end_matches('/');
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("the primary's URL {url:?} has no port"))?;
    Ok(UrlParts {
        tls,
        host: host.to_string(),
        port: port.parse()?,
    })
}
