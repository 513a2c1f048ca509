//! Cursors: a batch whose results stream to the client entry by entry (`step_begin`,
//! `row`…, `step_end` or `step_error`), so a result of any size is read without the row
//! cap and without the engine holding it whole. Over HTTP, `POST v3/cursor` answers in
//! NDJSON; over WebSocket, `open_cursor` / `fetch_cursor` (see [`super::ws`]).
//!
//! The time a statement spends waiting for its reader does not count against its time
//! budget; a reader that takes nothing for the stream idle timeout is taken for gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::cond::{check_cond, holds};
use super::encode;
use super::error::HranaError;
use super::exec::Ctx;
use super::proto::{Batch, CursorBody};
use super::values::{bind, fail, text};
use super::{authorize, open_stream, owner_of, stream_of, BUSY_WAIT};
use crate::engine::execution::{admit, Tally, Unit};
use crate::engine::streams::{Stream, StreamKind, StreamState};
use crate::http::{request_token, EngineState};
use crate::pdb::{Caller, Session};
use crate::workers::Class;

/// Where a cursor's entries go.
pub trait Sink: Send {
    /// Take one entry (a JSON object); false when the reader is gone. `session` is the
    /// running statement's, whose deadline moves by the time spent waiting.
    fn entry(&mut self, json: &[u8], session: &Session) -> bool;
    /// Hand over what is buffered; false when the reader is gone.
    fn flush(&mut self, session: &Session) -> bool;
}

/// How far a cursor got.
#[derive(Debug, Default)]
pub struct CursorProgress {
    step: usize,
    step_ok: Vec<Option<bool>>,
    /// Every step ran (or the reader left).
    pub done: bool,
}

/// Why production stopped.
pub enum Produced {
    /// Every step ran, or the reader is gone.
    Done,
    /// A step waits for the write lock: produce again later from it.
    Blocked,
}

fn step_error(out: &mut Vec<u8>, step: usize, e: &HranaError) {
    out.clear();
    out.extend_from_slice(br#"{"type":"step_error","step":"#);
    encode::number(out, step as u64);
    out.extend_from_slice(br#","error":"#);
    e.write_json(out);
    out.push(b'}');
}

/// Validate the batch's conditions: an entry `error` for the whole batch when one is wrong.
pub fn check_batch(batch: &Batch) -> Result<(), HranaError> {
    for (i, step) in batch.steps.iter().enumerate() {
        if let Some(c) = &step.condition {
            check_cond(c, i, 3)?;
        }
    }
    Ok(())
}

/// Run the batch's steps from where `p` stopped, sending entries to `sink`.
pub fn produce(
    state: &mut StreamState,
    ctx: &Ctx<'_>,
    batch: &Batch,
    p: &mut CursorProgress,
    sink: &mut dyn Sink,
) -> Produced {
    let StreamState { session, sqls, .. } = state;
    if let Err(e) = session.refresh(&ctx.rules, false) {
        let mut out = Vec::new();
        whole_error(&mut out, &e.into());
        sink.entry(&out, session);
        sink.flush(session);
        p.done = true;
        return Produced::Done;
    }
    let unit = Unit {
        caller: session.caller(),
        budgets: ctx.budgets,
        cap: None,
        quota: session.pdb().mode_and_quota().1,
        lone_select: false,
        new_session: false,
    };
    let ran = ctx.engine.run_unit(session, &unit, |session| {
        let mut tally = Tally::default();
        let r = steps(session, sqls, ctx, batch, p, sink, &mut tally);
        Ok((r, tally))
    });
    match ran {
        Ok(Some(r)) => r,
        Ok(None) | Err(_) => {
            p.done = true;
            Produced::Done
        }
    }
}

/// An `error` entry: the whole batch failed.
pub fn whole_error(out: &mut Vec<u8>, e: &HranaError) {
    out.extend_from_slice(br#"{"type":"error","error":"#);
    e.write_json(out);
    out.push(b'}');
}

fn steps(
    session: &mut Session,
    sqls: &HashMap<i32, Arc<str>>,
    ctx: &Ctx<'_>,
    batch: &Batch,
    p: &mut CursorProgress,
    sink: &mut dyn Sink,
    tally: &mut Tally,
) -> Produced {
    let mut out = Vec::with_capacity(512);
    while p.step < batch.steps.len() {
        let i = p.step;
        let step = &batch.steps[i];
        let autocommit = session.conn().is_autocommit();
        if let Some(c) = &step.condition {
            if !holds(c, &p.step_ok, autocommit) {
                p.step_ok.push(None);
                p.step += 1;
                continue;
            }
        }
        match one_step(session, sqls, ctx, i, &step.stmt, sink, &mut out, tally) {
            StepEnd::Ok => p.step_ok.push(Some(true)),
            StepEnd::Failed(e) => {
                step_error(&mut out, i, &e);
                if !sink.entry(&out, session) {
                    p.done = true;
                    return Produced::Done;
                }
                p.step_ok.push(Some(false));
            }
            StepEnd::Blocked => {
                sink.flush(session);
                return Produced::Blocked;
            }
            StepEnd::ReaderGone => {
                p.done = true;
                return Produced::Done;
            }
        }
        p.step += 1;
    }
    sink.flush(session);
    p.done = true;
    if session.conn().is_autocommit() && tally.rows_written > 0 {
        session.pdb().write_released.notify_one();
    }
    Produced::Done
}

enum StepEnd {
    Ok,
    Failed(HranaError),
    Blocked,
    ReaderGone,
}

#[allow(clippy::too_many_arguments)]
fn one_step(
    session: &Session,
    sqls: &HashMap<i32, Arc<str>>,
    ctx: &Ctx<'_>,
    i: usize,
    stmt: &super::proto::Stmt,
    sink: &mut dyn Sink,
    out: &mut Vec<u8>,
    tally: &mut Tally,
) -> StepEnd {
    let sql = match text(sqls, &stmt.sql, stmt.sql_id) {
        Ok(s) => s,
        Err(e) => return StepEnd::Failed(e),
    };
    if let Err(e) = admit(&ctx.rules, session.caller(), sql) {
        return StepEnd::Failed(e.into());
    }
    let conn = session.conn();
    let mut st = match conn.prepare_cached(sql) {
        Ok(st) => st,
        Err(e) => return StepEnd::Failed(fail(session, e)),
    };
    if let Err(e) = bind(&mut st, stmt) {
        return StepEnd::Failed(e);
    }
    let mut columns = st.column_count();
    let step_begin = |out: &mut Vec<u8>, st: &rusqlite::Statement<'_>| {
        out.clear();
        out.extend_from_slice(br#"{"type":"step_begin","step":"#);
        encode::number(out, i as u64);
        out.extend_from_slice(br#","cols":"#);
        encode::columns(out, st);
        out.push(b'}');
        std::mem::take(out)
    };
    let mut begin = step_begin(out, &st);
    let before = conn.total_changes();
    let max_rows = ctx.budgets.profile_rows;
    let want_rows = stmt.want_rows.unwrap_or(true);
    let mut rows = st.raw_query();
    let mut n = 0usize;
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                let e = fail(session, e);
                if n == 0 && e.is_busy() {
                    return StepEnd::Blocked;
                }
                if n == 0 && !sink.entry(&begin, session) {
                    return StepEnd::ReaderGone;
                }
                return StepEnd::Failed(e);
            }
        };
        if n == 0 && row.as_ref().column_count() != columns {
            // Prepared again at its first step (the schema changed): its columns now.
            columns = row.as_ref().column_count();
            begin = step_begin(out, row.as_ref());
        }
        if n == 0 && !sink.entry(&begin, session) {
            return StepEnd::ReaderGone;
        }
        n += 1;
        tally.rows_read += 1;
        if max_rows.is_some_and(|m| n > m) {
            return StepEnd::Failed(HranaError::new(
                "RESPONSE_TOO_LARGE",
                format!(
                    "the result has more than the lockdown profile's {} rows",
                    max_rows.unwrap_or_default()
                ),
            ));
        }
        if !want_rows {
            continue;
        }
        out.clear();
        out.extend_from_slice(br#"{"type":"row","row":"#);
        if let Err(e) = encode::row(out, row, columns) {
            return StepEnd::Failed(fail(session, e));
        }
        out.push(b'}');
        if !sink.entry(out, session) {
            return StepEnd::ReaderGone;
        }
    }
    drop(rows);
    if n == 0 && st.column_count() != columns {
        begin = step_begin(out, &st);
    }
    if n == 0 && !sink.entry(&begin, session) {
        return StepEnd::ReaderGone;
    }
    let changed = conn.total_changes() != before;
    let affected = if changed { conn.changes() } else { 0 };
    tally.statements += 1;
    tally.rows_written += affected;
    out.clear();
    out.extend_from_slice(br#"{"type":"step_end","affected_row_count":"#);
    encode::number(out, affected);
    out.extend_from_slice(br#","last_insert_rowid":"#);
    if changed {
        encode::int_string(out, conn.last_insert_rowid());
    } else {
        out.extend_from_slice(b"null");
    }
    out.push(b'}');
    if !sink.entry(out, session) {
        return StepEnd::ReaderGone;
    }
    StepEnd::Ok
}

/// NDJSON into an HTTP response body, in chunks.
struct NdjsonSink {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    handle: tokio::runtime::Handle,
    stall: Duration,
    sent: u64,
}

const CHUNK: usize = 16 << 10;

impl Sink for NdjsonSink {
    fn entry(&mut self, json: &[u8], session: &Session) -> bool {
        self.buf.extend_from_slice(json);
        self.buf.push(b'\n');
        self.buf.len() < CHUNK || self.flush(session)
    }

    fn flush(&mut self, session: &Session) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.sent += chunk.len() as u64;
        let waited = Instant::now();
        let (tx, stall) = (&self.tx, self.stall);
        let sent = self
            .handle
            .block_on(async move { tokio::time::timeout(stall, tx.send(Ok(chunk))).await });
        session.extend_deadline(waited.elapsed());
        matches!(sent, Ok(Ok(())))
    }
}

/// `POST …/v3/cursor`.
pub async fn v3(
    State(s): State<Arc<EngineState>>,
    Path(db): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let token = request_token(&headers);
    let (caller, pdb) = match authorize(&s, token, &db, "hrana_http") {
        Ok(x) => x,
        Err(e) => {
            let status = e.status();
            return HranaError::from(e).http(status);
        }
    };
    s.engine
        .requests_per_minute
        .record(crate::catalog::now().max(0) as u64);
    let body = match body {
        Ok(b) => b,
        Err(rej) => return super::pipeline::body_refused(rej),
    };
    let req: CursorBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return HranaError::protocol(format!("the body is not a Hrana cursor request: {e}"))
                .http(StatusCode::BAD_REQUEST)
        }
    };
    let owner = owner_of(&s, token);
    let stream = match &req.baton {
        Some(b) => match stream_of(&s, &db, b, owner) {
            Ok(st) => Ok(st),
            Err(e) => return e.http(StatusCode::BAD_REQUEST),
        },
        None => Err(()),
    };
    let refusal = match s.rate.as_ref().map(|r| r.check()) {
        Some(d) if !d.allowed => Some(HranaError::new(
            "RATE_LIMITED",
            format!(
                "over the tier's request rate (burst {}); retry in {} s",
                d.limit, d.retry_after_secs
            ),
        )),
        _ => None,
    };
    let stream = match (refusal, stream) {
        (Some(e), st) => return refused_cursor(&s, &db, st.ok().as_ref(), &e),
        (None, Ok(st)) => st,
        (None, Err(())) => match open_stream(&s, &pdb, caller, owner, StreamKind::Http) {
            Ok(st) => st,
            Err(e) => return refused_cursor(&s, &db, None, &e.into()),
        },
    };
    let seq = stream.seq.load(std::sync::atomic::Ordering::SeqCst);
    let mut first = Vec::new();
    first.extend_from_slice(b"{\"baton\":");
    encode::string(&mut first, &s.batons.sign(&db, stream.id, seq));
    first.extend_from_slice(b",\"base_url\":null}\n");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let bytes_in = body.len() as u64;
    let first_len = first.len() as u64;
    let _ = tx.send(Ok(Bytes::from(first))).await;
    if let Err(e) = check_batch(&req.batch) {
        let mut out = Vec::new();
        whole_error(&mut out, &e);
        out.push(b'\n');
        let _ = tx.send(Ok(Bytes::from(out))).await;
    } else {
        let s2 = s.clone();
        tokio::spawn(async move {
            let sent = drive(&s2, &stream, req.batch, caller, tx).await;
            s2.network.charge(bytes_in, first_len + sent);
            pdb.meter
                .record_request(started.elapsed(), bytes_in, first_len + sent, false);
        });
    }
    let body = Body::from_stream(tokio_stream_of(rx));
    ([("content-type", "text/plain")], body).into_response()
}

/// A receiver as a stream of body chunks.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The cursor answer when the request is refused: the baton line, then the refusal as
/// the first step's error (the form every client reads).
fn refused_cursor(
    s: &EngineState,
    db: &str,
    stream: Option<&Arc<Stream>>,
    e: &HranaError,
) -> Response {
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"baton\":");
    let baton = stream.map(|st| {
        let seq = st.seq.load(std::sync::atomic::Ordering::SeqCst);
        s.batons.sign(db, st.id, seq)
    });
    encode::opt_string(&mut body, baton.as_deref());
    body.extend_from_slice(b",\"base_url\":null}\n");
    let mut out = Vec::new();
    step_error(&mut out, 0, e);
    body.extend_from_slice(&out);
    body.push(b'\n');
    ([("content-type", "text/plain")], body).into_response()
}

/// Produce the cursor's entries on the worker pool until done; returns the bytes sent.
async fn drive(
    s: &Arc<EngineState>,
    stream: &Arc<Stream>,
    batch: Batch,
    caller: Caller,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> u64 {
    let _held = stream.hold();
    let class = match caller {
        Caller::Admin => Class::Admin,
        Caller::Tenant => Class::Heavy,
    };
    let sink = NdjsonSink {
        buf: Vec::with_capacity(CHUNK),
        tx,
        handle: tokio::runtime::Handle::current(),
        stall: s.engine.streams.idle_timeout(),
        sent: 0,
    };
    let batch = Arc::new(batch);
    let mut job = (CursorProgress::default(), sink, None::<Instant>);
    loop {
        let released = stream.pdb.write_released.clone().notified_owned();
        let (s2, st2, b2) = (s.clone(), stream.clone(), batch.clone());
        let ran = s
            .workers
            .run(class, move || {
                let (mut p, mut sink, since) = job;
                let produced = run_once(&s2, &st2, &b2, caller, &mut p, &mut sink);
                ((p, sink, since), produced)
            })
            .await;
        let Ok((back, produced)) = ran else {
            return 0;
        };
        job = back;
        match produced {
            Produced::Done => return job.1.sent,
            Produced::Blocked => {
                let since = *job.2.get_or_insert_with(Instant::now);
                if since.elapsed() >= BUSY_WAIT {
                    let (p, sink, _) = &mut job;
                    let mut out = Vec::new();
                    step_error(&mut out, p.step, &super::pipeline::busy_error());
                    out.push(b'\n');
                    let _ = sink.tx.send(Ok(Bytes::from(out))).await;
                    return sink.sent;
                }
                let _ = tokio::time::timeout(Duration::from_millis(5), released).await;
            }
        }
    }
}

fn run_once(
    s: &EngineState,
    stream: &Stream,
    batch: &Batch,
    caller: Caller,
    p: &mut CursorProgress,
    sink: &mut NdjsonSink,
) -> Produced {
    let mut locked = match stream.lock() {
        Ok(l) => l,
        Err(e) => {
            let mut out = Vec::new();
            whole_error(&mut out, &e.into());
            out.push(b'\n');
            let _ = sink.handle.block_on(sink.tx.send(Ok(Bytes::from(out))));
            return Produced::Done;
        }
    };
    let state = locked.state();
    let rules = state.session.pdb().rules();
    let ctx = Ctx {
        engine: &s.engine,
        budgets: s.engine.budgets(&rules, caller),
        rules,
        version: 3,
        cap: None,
    };
    produce(state, &ctx, batch, p, sink)
}
