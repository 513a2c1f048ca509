//! Hrana over WebSocket (JSON; subprotocols `hrana3`, `hrana2`, `hrana1`) at a database's
//! URL. The client says `hello` with its token first (within the stream idle timeout), then
//! sends requests that name streams it opened; each stream runs its requests in order on a
//! task of its own, with the same limits as Hrana over HTTP. SQL texts stored with
//! `store_sql` belong to the connection. A protocol violation (garbage, a binary frame, no
//! `hello`, an id in use) closes the connection with a close code and a reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::cursor::{check_batch, produce, whole_error, CursorProgress, Produced, Sink};
use super::error::HranaError;
use super::exec::{store_sql, Ctx, Outcome};
use super::pipeline::{drive, On, Run};
use super::proto::{Batch, ClientMsg, Stmt, StreamRequest, WsRequest};
use super::{authorize, open_stream, owner_of};
use crate::engine::streams::{Ended, Stream, StreamKind};
use crate::http::{request_token, EngineState, MAX_BODY_BYTES};
use crate::pdb::{Caller, Pdb, Session};
use crate::workers::Class;

mod stream;
use stream::stream_task;

/// Streams one connection may have open.
pub const MAX_STREAMS_PER_CONNECTION: usize = 128;
/// Requests queued on one stream before the connection stops reading (back-pressure).
const STREAM_QUEUE: usize = 64;

/// `GET …/db/<name>/`: a WebSocket upgrade speaking Hrana.
pub async fn upgrade(
    State(s): State<Arc<EngineState>>,
    Path(db): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return HranaError::protocol(
            "this is a database's Hrana URL: POST v2/pipeline or v3/pipeline under it, or open a WebSocket to it",
        )
        .http(StatusCode::BAD_REQUEST);
    };
    let ws = ws.protocols(["hrana3", "hrana2", "hrana1"]);
    let version = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some("hrana3") => 3,
        Some("hrana2") => 2,
        _ => 1,
    };
    let header_token = request_token(&headers).map(String::from);
    ws.max_message_size(MAX_BODY_BYTES)
        .on_upgrade(move |socket| async move {
            Connection::new(s, db, version, header_token)
                .serve(socket)
                .await
        })
}

/// A stream of the connection: open, or failed to open (its id stays taken until
/// `close_stream`).
enum WsStream {
    Open(mpsc::Sender<Job>),
    Failed(HranaError),
}

/// A request for a stream's task.
struct Job {
    request_id: i32,
    work: Work,
    bytes_in: u64,
}

enum Work {
    Request(StreamRequest),
    Cursor {
        batch: Batch,
        entries: mpsc::Sender<Vec<u8>>,
    },
    Close,
}

/// A cursor's entries, as the stream's task produces them.
struct WsCursor {
    entries: Arc<tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>>,
}

struct Connection {
    s: Arc<EngineState>,
    db: String,
    version: u8,
    header_token: Option<String>,
    caller: Option<(Caller, Arc<Pdb>, u64)>,
    streams: HashMap<i32, WsStream>,
    sqls: HashMap<i32, Arc<str>>,
    cursors: HashMap<i32, WsCursor>,
    out: mpsc::Sender<Message>,
    out_rx: Option<mpsc::Receiver<Message>>,
}

/// How the connection ends.
struct Close(u16, String);

fn response_ok(request_id: i32, response: &[u8]) -> Message {
    frame(
        br#"{"type":"response_ok","request_id":"#,
        request_id,
        br#","response":"#,
        response,
    )
}

fn response_error(request_id: i32, e: &HranaError) -> Message {
    let mut json = Vec::with_capacity(64);
    e.write_json(&mut json);
    response_error_json(request_id, &json)
}

fn response_error_json(request_id: i32, error: &[u8]) -> Message {
    frame(
        br#"{"type":"response_error","request_id":"#,
        request_id,
        br#","error":"#,
        error,
    )
}

/// `{head}<request_id>{key}{payload}}`: a response message around an encoded payload.
fn frame(head: &[u8], request_id: i32, key: &[u8], payload: &[u8]) -> Message {
    let mut m = Vec::with_capacity(payload.len() + 64);
    m.extend_from_slice(head);
    m.extend_from_slice(itoa::Buffer::new().format(request_id).as_bytes());
    m.extend_from_slice(key);
    m.extend_from_slice(payload);
    m.push(b'}');
    text(m)
}

fn text(bytes: Vec<u8>) -> Message {
    // Built from JSON written by this module: valid UTF-8.
    match axum::extract::ws::Utf8Bytes::try_from(bytes) {
        Ok(t) => Message::Text(t),
        Err(_) => Message::Text("{}".into()),
    }
}

impl Connection {
    fn new(s: Arc<EngineState>, db: String, version: u8, header_token: Option<String>) -> Self {
        let (out, out_rx) = mpsc::channel(256);
        Connection {
            s,
            db,
            version,
            header_token,
            caller: None,
            streams: HashMap::new(),
            sqls: HashMap::new(),
            cursors: HashMap::new(),
            out,
            out_rx: Some(out_rx),
        }
    }

    async fn serve(mut self, socket: WebSocket) {
        let (mut tx, mut rx) = socket.split();
        let Some(mut out_rx) = self.out_rx.take() else {
            return;
        };
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let closing = matches!(m, Message::Close(_));
                if tx.send(m).await.is_err() || closing {
                    break;
                }
            }
            let _ = tx.close().await;
        });
        let hello_within = self.s.engine.streams.idle_timeout();
        let hello_by = Instant::now() + hello_within;
        let closed = loop {
            let next = if self.caller.is_none() {
                match tokio::time::timeout_at(hello_by.into(), rx.next()).await {
                    Ok(m) => m,
                    Err(_) => {
                        let reason = format!("no hello within {} ms", hello_within.as_millis());
                        break Some(Close(1008, reason));
                    }
                }
            } else {
                rx.next().await
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(_)) | None => break None,
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Binary(_) => {
                    break Some(Close(1003, "binary frames are not JSON Hrana".into()))
                }
                Message::Close(_) => break None,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if let Err(c) = self.message(&text).await {
                break Some(c);
            }
        };
        if let Some(Close(code, reason)) = closed {
            let _ = self
                .out
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })))
                .await;
        }
        // Streams end with the connection: their tasks see the queue close.
        self.streams.clear();
        self.cursors.clear();
        drop(self.out);
        let _ = writer.await;
    }

    async fn send(&self, m: Message) {
        let _ = self.out.send(m).await;
    }

    async fn message(&mut self, text: &str) -> Result<(), Close> {
        let msg: ClientMsg<'_> = serde_json::from_str(text)
            .map_err(|e| Close(1007, format!("not a Hrana client message: {e}")))?;
        match (&*msg.kind, msg.request_id, msg.request) {
            ("hello", _, _) => self.hello(msg.jwt).await,
            ("request", Some(request_id), Some(request)) => {
                if self.caller.is_none() {
                    return Err(Close(1008, "the first message must be hello".into()));
                }
                match serde_json::from_str::<WsRequest>(request.get()) {
                    Ok(r) => self.request(request_id, r, text.len() as u64).await,
                    Err(e) => {
                        let e = HranaError::protocol(format!(
                            "the request is not one this server knows: {e}"
                        ));
                        self.send(response_error(request_id, &e)).await;
                        Ok(())
                    }
                }
            }
            ("request", _, _) => Err(Close(
                1007,
                "a request message has a request_id and a request".into(),
            )),
            (other, _, _) => Err(Close(
                1007,
                format!("{other:?} is not a Hrana client message type"),
            )),
        }
    }

    async fn hello(&mut self, jwt: Option<String>) -> Result<(), Close> {
        if self.caller.is_some() && self.version < 2 {
            return Err(Close(1008, "hrana1 allows one hello".into()));
        }
        let token = jwt
            .filter(|t| !t.is_empty())
            .or_else(|| self.header_token.clone());
        match authorize(&self.s, token.as_deref(), &self.db, "hrana_ws") {
            Ok((caller, pdb)) => {
                let owner = owner_of(&self.s, token.as_deref());
                self.caller = Some((caller, pdb, owner));
                self.send(text(br#"{"type":"hello_ok"}"#.to_vec())).await;
                Ok(())
            }
            Err(e) => {
                let e = HranaError::from(e);
                let mut m = br#"{"type":"hello_error","error":"#.to_vec();
                e.write_json(&mut m);
                m.push(b'}');
                self.send(text(m)).await;
                Err(Close(1008, "authentication failed".into()))
            }
        }
    }

    /// `sql_id` references replaced by the connection's stored texts.
    fn resolve(&self, stmt: &mut Stmt) -> Result<(), HranaError> {
        if let (None, Some(id)) = (&stmt.sql, stmt.sql_id) {
            let sql = self.sqls.get(&id).ok_or_else(|| {
                HranaError::new(
                    "SQL_NOT_FOUND",
                    format!("no SQL text is stored under id {id}"),
                )
            })?;
            stmt.sql = Some(sql.to_string());
            stmt.sql_id = None;
        }
        Ok(())
    }

    fn resolve_text(
        &self,
        sql: Option<String>,
        sql_id: Option<i32>,
    ) -> Result<(Option<String>, Option<i32>), HranaError> {
        let mut s = Stmt {
            sql,
            sql_id,
            args: Vec::new(),
            named_args: Vec::new(),
            want_rows: None,
        };
        self.resolve(&mut s)?;
        Ok((s.sql, s.sql_id))
    }

    /// A request for a stream's task, with `sql_id`s resolved against the connection's
    /// stored texts.
    fn stream_work(
        &self,
        request: StreamRequest,
        v3_only: &dyn Fn(&str) -> HranaError,
    ) -> Result<Work, HranaError> {
        let request = match request {
            StreamRequest::Execute { mut stmt } => {
                self.resolve(&mut stmt)?;
                StreamRequest::Execute { stmt }
            }
            StreamRequest::Batch { mut batch } => {
                for s in batch.steps.iter_mut() {
                    self.resolve(&mut s.stmt)?;
                }
                StreamRequest::Batch { batch }
            }
            StreamRequest::Sequence { sql, sql_id } => {
                let (sql, sql_id) = self.resolve_text(sql, sql_id)?;
                StreamRequest::Sequence { sql, sql_id }
            }
            StreamRequest::Describe { sql, sql_id } => {
                let (sql, sql_id) = self.resolve_text(sql, sql_id)?;
                StreamRequest::Describe { sql, sql_id }
            }
            StreamRequest::GetAutocommit if self.version < 3 => {
                return Err(v3_only("get_autocommit"))
            }
            other => other,
        };
        Ok(Work::Request(request))
    }

    fn rate_limited(&self) -> Option<HranaError> {
        let d = self.s.rate.as_ref()?.check();
        (!d.allowed).then(|| {
            HranaError::new(
                "RATE_LIMITED",
                format!(
                    "over the tier's request rate (burst {}); retry in {} s",
                    d.limit, d.retry_after_secs
                ),
            )
        })
    }

    async fn request(&mut self, id: i32, req: WsRequest, bytes_in: u64) -> Result<(), Close> {
        let v3_only = |what: &str| {
            HranaError::protocol(format!("{what} needs Hrana 3 (the hrana3 subprotocol)"))
        };
        let (stream_id, work) = match req {
            WsRequest::OpenStream { stream_id } => return self.open(id, stream_id).await,
            WsRequest::CloseStream { stream_id } => return self.close(id, stream_id).await,
            WsRequest::Stream {
                request: StreamRequest::StoreSql { sql_id, sql },
                ..
            } => {
                match store_sql(&mut self.sqls, sql_id, &sql) {
                    Ok(()) => self.send(response_ok(id, br#"{"type":"store_sql"}"#)).await,
                    Err(Outcome::Fatal(e)) => return Err(Close(1008, e.message)),
                    Err(Outcome::Failed(e)) => self.send(response_error(id, &e)).await,
                    Err(_) => {}
                }
                return Ok(());
            }
            WsRequest::Stream {
                request: StreamRequest::CloseSql { sql_id },
                ..
            } => {
                self.sqls.remove(&sql_id);
                self.send(response_ok(id, br#"{"type":"close_sql"}"#)).await;
                return Ok(());
            }
            WsRequest::FetchCursor {
                cursor_id,
                max_count,
            } => return self.fetch(id, cursor_id, max_count).await,
            WsRequest::CloseCursor { cursor_id } => {
                self.cursors.remove(&cursor_id);
                self.send(response_ok(id, br#"{"type":"close_cursor"}"#))
                    .await;
                return Ok(());
            }
            WsRequest::Stream { stream_id, request } => {
                (stream_id, self.stream_work(request, &v3_only))
            }
            WsRequest::OpenCursor {
                stream_id,
                cursor_id,
                mut batch,
            } => {
                if self.version < 3 {
                    (stream_id, Err(v3_only("open_cursor")))
                } else if self.cursors.contains_key(&cursor_id) {
                    return Err(Close(1008, format!("cursor id {cursor_id} is in use")));
                } else {
                    let resolved = batch
                        .steps
                        .iter_mut()
                        .try_for_each(|s| self.resolve(&mut s.stmt))
                        .and_then(|()| check_batch(&batch));
                    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                    self.cursors.insert(
                        cursor_id,
                        WsCursor {
                            entries: Arc::new(tokio::sync::Mutex::new(rx)),
                        },
                    );
                    (
                        stream_id,
                        resolved.map(|()| Work::Cursor { batch, entries: tx }),
                    )
                }
            }
        };
        let work = match (work, self.rate_limited()) {
            (Err(e), _) | (Ok(_), Some(e)) => {
                self.send(response_error(id, &e)).await;
                return Ok(());
            }
            (Ok(w), None) => w,
        };
        match self.streams.get(&stream_id) {
            Some(WsStream::Open(tx)) => {
                let job = Job {
                    request_id: id,
                    work,
                    bytes_in,
                };
                if tx.send(job).await.is_err() {
                    let e = HranaError::new("STREAM_CLOSED", "the stream has ended");
                    self.send(response_error(id, &e)).await;
                }
            }
            Some(WsStream::Failed(e)) => {
                let e = e.clone();
                self.send(response_error(id, &e)).await;
            }
            None => {
                let e = HranaError::protocol(format!("no stream {stream_id} is open"));
                self.send(response_error(id, &e)).await;
            }
        }
        Ok(())
    }

    async fn open(&mut self, id: i32, stream_id: i32) -> Result<(), Close> {
        if self.streams.contains_key(&stream_id) {
            return Err(Close(1008, format!("stream id {stream_id} is in use")));
        }
        if self.streams.len() >= MAX_STREAMS_PER_CONNECTION {
            let e = HranaError::new(
                "CONNECTION_LIMIT",
                format!("a connection may have {MAX_STREAMS_PER_CONNECTION} streams open"),
            );
            self.streams.insert(stream_id, WsStream::Failed(e.clone()));
            self.send(response_error(id, &e)).await;
            return Ok(());
        }
        let Some((caller, pdb, owner)) = self.caller.clone() else {
            return Err(Close(1008, "the first message must be hello".into()));
        };
        match open_stream(&self.s, &pdb, caller, owner, StreamKind::WebSocket) {
            Ok(stream) => {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                tokio::spawn(stream_task(
                    self.s.clone(),
                    stream,
                    caller,
                    self.version,
                    rx,
                    self.out.clone(),
                ));
                self.streams.insert(stream_id, WsStream::Open(tx));
                self.send(response_ok(id, br#"{"type":"open_stream"}"#))
                    .await;
            }
            Err(e) => {
                let e = HranaError::from(e);
                self.streams.insert(stream_id, WsStream::Failed(e.clone()));
                self.send(response_error(id, &e)).await;
            }
        }
        Ok(())
    }

    async fn close(&mut self, id: i32, stream_id: i32) -> Result<(), Close> {
        match self.streams.remove(&stream_id) {
            Some(WsStream::Open(tx)) => {
                let job = Job {
                    request_id: id,
                    work: Work::Close,
                    bytes_in: 0,
                };
                if tx.send(job).await.is_err() {
                    self.send(response_ok(id, br#"{"type":"close_stream"}"#))
                        .await;
                }
            }
            Some(WsStream::Failed(_)) | None => {
                self.send(response_ok(id, br#"{"type":"close_stream"}"#))
                    .await;
            }
        }
        Ok(())
    }

    async fn fetch(&mut self, id: i32, cursor_id: i32, max_count: u32) -> Result<(), Close> {
        let Some(cursor) = self.cursors.get(&cursor_id) else {
            let e = HranaError::protocol(format!("no cursor {cursor_id} is open"));
            self.send(response_error(id, &e)).await;
            return Ok(());
        };
        let entries = cursor.entries.clone();
        let out = self.out.clone();
        tokio::spawn(async move {
            let mut rx = entries.lock().await;
            let mut body = br#"{"type":"fetch_cursor","entries":["#.to_vec();
            let mut done = false;
            let max = max_count.clamp(1, 10_000) as usize;
            for i in 0..max {
                let next = if i == 0 {
                    rx.recv().await
                } else {
                    match rx.try_recv() {
                        Ok(e) => Some(e),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    }
                };
                let Some(entry) = next else {
                    done = true;
                    break;
                };
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&entry);
            }
            body.extend_from_slice(br#"],"done":"#);
            body.extend_from_slice(if done { b"true}" } else { b"false}" });
            let _ = out.send(response_ok(id, &body)).await;
        });
        Ok(())
    }
}
