//! Hrana over HTTP: `POST v2/pipeline` and `v3/pipeline`. A pipeline's requests run in
//! order on the stream its baton names (a new one for `baton: null`); a failed request is
//! an error result and the rest still run. An HTTP error status means the stream itself
//! is gone (or the request was refused whole) and carries a JSON `{message, code}`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::HranaError;
use super::exec::{Ctx, Outcome, Progress, Runner};
use super::proto::{PipelineBody, ReadablePipeline, StreamRequest};
use super::{authorize, open_stream, owner_of, stream_of, stream_state, BUSY_WAIT, INLINE_CAP};
use crate::engine::streams::{Ended, Stream, StreamKind, StreamState};
use crate::http::{request_token, EngineState};
use crate::pdb::{Caller, Pdb};
use crate::workers::Class;

/// Requests a pipeline may hold.
pub const MAX_PIPELINE_REQUESTS: usize = 10_000;

/// `POST …/v2/pipeline`.
pub async fn v2(
    State(s): State<Arc<EngineState>>,
    Path(db): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(s, db, headers, body, 2).await
}

/// `POST …/v3/pipeline`.
pub async fn v3(
    State(s): State<Arc<EngineState>>,
    Path(db): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(s, db, headers, body, 3).await
}

/// A refused body: too large (413) or unreadable (400).
pub fn body_refused(rej: BytesRejection) -> Response {
    let status = rej.status();
    HranaError::protocol(rej.body_text()).http(status)
}

async fn handle(
    s: Arc<EngineState>,
    db: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    version: u8,
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
        Err(rej) => return body_refused(rej),
    };
    let owner = owner_of(&s, token);
    let (resp, bytes_out, failed) = respond(&s, &db, &pdb, caller, owner, &body, version).await;
    let bytes_in = body.len() as u64;
    s.network.charge(bytes_in, bytes_out);
    pdb.meter
        .record_request(started.elapsed(), bytes_in, bytes_out, failed);
    resp
}

/// The response, the bytes of its body, and whether anything in it failed.
async fn respond(
    s: &Arc<EngineState>,
    db: &str,
    pdb: &Arc<Pdb>,
    caller: Caller,
    owner: u64,
    body: &[u8],
    version: u8,
) -> (Response, u64, bool) {
    let refused = |e: HranaError, status: StatusCode| (e.http(status), 0, true);
    let (baton, requests) = match parse(body) {
        Ok(parsed) => parsed,
        Err(e) => return refused(e, StatusCode::BAD_REQUEST),
    };
    let existing = match &baton {
        Some(b) => match stream_of(s, db, b, owner) {
            Ok(stream) => Some(stream),
            Err(e) => return refused(e, StatusCode::BAD_REQUEST),
        },
        None => None,
    };
    if requests.len() > MAX_PIPELINE_REQUESTS {
        if let Some(stream) = &existing {
            end(s, stream, Ended::Closed);
        }
        return refused(
            HranaError::protocol(format!(
                "a pipeline holds at most {MAX_PIPELINE_REQUESTS} requests, this one {}",
                requests.len()
            )),
            StatusCode::BAD_REQUEST,
        );
    }
    // The tier's request rate: every request of a refused pipeline is an error result,
    // and the stream stays usable.
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
    // A pipeline that opens a stream and closes it (a driver's lone execute or batch)
    // keeps the stream to itself: no registry, no lock, no baton.
    let ends_here = matches!(requests.last(), Some(Ok(StreamRequest::Close)));
    let on = match (refusal, existing) {
        (Some(e), existing) => return all_failed(s, db, existing.as_ref(), requests.len(), &e),
        (None, Some(stream)) => On::Stream(stream),
        (None, None) if ends_here => match stream_state(s, pdb, caller) {
            Ok(state) => On::Own(state),
            Err(e) => return all_failed(s, db, None, requests.len(), &e.into()),
        },
        (None, None) => match open_stream(s, pdb, caller, owner, StreamKind::Http) {
            Ok(stream) => On::Stream(stream),
            Err(e) => return all_failed(s, db, None, requests.len(), &e.into()),
        },
    };
    let _held = match &on {
        On::Stream(stream) => Some(stream.hold()),
        On::Own(_) => None,
    };
    if caller == Caller::Tenant {
        let wait = s.engine.io.wait().max(s.network.wait());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    let run = Run::new(requests, version);
    let stream = match &on {
        On::Stream(stream) => Some(stream.clone()),
        On::Own(_) => None,
    };
    let run = match drive(s, on, run, caller).await {
        Ok((_, run)) => run,
        Err(e) => {
            if let Some(stream) = &stream {
                end(s, stream, Ended::Closed);
            }
            return refused(e, StatusCode::BAD_REQUEST);
        }
    };
    let baton = match &stream {
        None => None,
        Some(stream) if run.closed || stream.ended().is_some() => {
            if run.closed {
                end(s, stream, Ended::Closed);
            }
            s.engine.streams.remove(stream.id);
            None
        }
        Some(stream) => {
            let seq = stream.seq.load(std::sync::atomic::Ordering::SeqCst);
            Some(s.batons.sign(db, stream.id, seq))
        }
    };
    let failed = run.errors > 0;
    let body = run.into_body(baton.as_deref());
    let n = body.len() as u64;
    (json_response(body), n, failed)
}

/// The baton and the requests of a pipeline body, each request readable or its error.
#[allow(clippy::type_complexity)]
fn parse(
    body: &[u8],
) -> Result<(Option<String>, Vec<Result<StreamRequest, HranaError>>), HranaError> {
    if let Ok(all) = serde_json::from_slice::<ReadablePipeline>(body) {
        return Ok((all.baton, all.requests.into_iter().map(Ok).collect()));
    }
    let req: PipelineBody<'_> = serde_json::from_slice(body)
        .map_err(|e| HranaError::protocol(format!("the body is not a Hrana pipeline: {e}")))?;
    let requests = req
        .requests
        .iter()
        .map(|r| {
            serde_json::from_str(r.get()).map_err(|e| {
                HranaError::protocol(format!("the request is not one this server knows: {e}"))
            })
        })
        .collect();
    Ok((req.baton, requests))
}

/// Every request failed with `e` (the stream, if any, stays as it was).
fn all_failed(
    s: &EngineState,
    db: &str,
    stream: Option<&Arc<Stream>>,
    n: usize,
    e: &HranaError,
) -> (Response, u64, bool) {
    let mut out = Vec::new();
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"type":"error","error":"#);
        e.write_json(&mut out);
        out.push(b'}');
    }
    let baton = stream.map(|st| {
        let seq = st.seq.load(std::sync::atomic::Ordering::SeqCst);
        s.batons.sign(db, st.id, seq)
    });
    let run = Run {
        out,
        ..Run::new(Vec::new(), 2)
    };
    let body = run.into_body(baton.as_deref());
    let n = body.len() as u64;
    (json_response(body), n, true)
}

fn json_response(body: Vec<u8>) -> Response {
    ([("content-type", "application/json")], body).into_response()
}

/// End `stream` (its transaction rolls back) and forget it.
fn end(s: &EngineState, stream: &Stream, why: Ended) {
    if let Ok(l) = stream.lock() {
        l.end(why);
    }
    s.engine.streams.remove(stream.id);
}

/// A pipeline on its way: the requests, how far they got, and the results so far.
pub struct Run {
    requests: Vec<Result<StreamRequest, HranaError>>,
    next: usize,
    progress: Progress,
    out: Vec<u8>,
    version: u8,
    /// A `close` ran: later requests fail, and the stream ends.
    pub closed: bool,
    /// Requests that failed.
    pub errors: usize,
    busy_since: Option<Instant>,
}

/// Where a pipeline stopped.
pub enum Stop {
    /// Every request ran.
    Done,
    /// A statement waits for the write lock.
    Blocked,
    /// The inline cap interrupted it, or it needs a worker.
    Capped,
    /// A protocol violation: the stream ends and the HTTP request fails.
    Fatal(HranaError),
}

impl Run {
    /// A run of `requests` in Hrana `version`.
    pub fn new(requests: Vec<Result<StreamRequest, HranaError>>, version: u8) -> Self {
        Run {
            // A point select's two results take about 330 bytes.
            out: Vec::with_capacity(512),
            requests,
            next: 0,
            progress: Progress::default(),
            version,
            closed: false,
            errors: 0,
            busy_since: None,
        }
    }

    /// Whether every request is a read that may try the inline path.
    pub fn reads_only(&self) -> bool {
        !self.requests.is_empty()
            && self.requests.iter().all(|r| match r {
                Ok(StreamRequest::Execute { stmt }) => {
                    stmt.sql.as_deref().is_some_and(crate::query::is_select)
                }
                Ok(StreamRequest::Close | StreamRequest::GetAutocommit) => true,
                _ => false,
            })
    }

    /// Whether the run opens a transaction (its first request is an `execute` of BEGIN).
    pub fn begins_transaction(&self) -> bool {
        matches!(self.requests.first(), Some(Ok(StreamRequest::Execute { stmt }))
        if stmt.sql.as_deref().is_some_and(|s| {
            s.trim_start().get(..5).is_some_and(|w| w.eq_ignore_ascii_case("BEGIN"))
        }))
    }

    fn begin_result(&mut self) -> usize {
        let mark = self.out.len();
        if self.next > 0 {
            self.out.push(b',');
        }
        mark
    }

    fn error_result(&mut self, e: &HranaError) {
        self.out.extend_from_slice(br#"{"type":"error","error":"#);
        e.write_json(&mut self.out);
        self.out.push(b'}');
        self.errors += 1;
    }

    /// Run requests from where the run stopped, on `state`.
    pub fn advance(&mut self, state: &mut StreamState, ctx: &Ctx<'_>) -> Stop {
        if self.next < self.requests.len() {
            if let Err(e) = state.session.refresh(&ctx.rules, state.read_only_txn) {
                self.fail_rest(&e.into());
                return Stop::Done;
            }
        }
        let runner = Runner { ctx };
        while self.next < self.requests.len() {
            let mark = self.begin_result();
            let req = match &self.requests[self.next] {
                Ok(r) => r,
                Err(e) => {
                    let e = e.clone();
                    self.error_result(&e);
                    self.next += 1;
                    continue;
                }
            };
            if self.closed {
                let e = HranaError::new(
                    "STREAM_CLOSED",
                    "the stream was closed earlier in this pipeline",
                );
                self.error_result(&e);
                self.next += 1;
                continue;
            }
            let is_close = matches!(req, StreamRequest::Close);
            self.out.extend_from_slice(br#"{"type":"ok","response":"#);
            match runner.run(state, req, &mut self.progress, &mut self.out) {
                Outcome::Done => {
                    self.out.push(b'}');
                    self.closed |= is_close;
                }
                Outcome::Failed(e) => {
                    self.out.truncate(mark);
                    self.begin_result();
                    self.error_result(&e);
                }
                Outcome::Fatal(e) => return Stop::Fatal(e),
                Outcome::Blocked => {
                    self.out.truncate(mark);
                    return Stop::Blocked;
                }
                Outcome::Capped => {
                    self.out.truncate(mark);
                    return Stop::Capped;
                }
            }
            self.progress = Progress::default();
            self.busy_since = None;
            self.next += 1;
        }
        Stop::Done
    }

    /// The waiting request gave up on the write lock: it fails with SQLITE_BUSY.
    fn give_up_busy(&mut self) {
        self.fail_current(&busy_error());
    }

    /// The waiting request fails with `e`, and the run goes on.
    fn fail_current(&mut self, e: &HranaError) {
        self.begin_result();
        self.error_result(e);
        self.progress = Progress::default();
        self.busy_since = None;
        self.next += 1;
    }

    /// Every request not run yet fails with `e`.
    fn fail_rest(&mut self, e: &HranaError) {
        while self.next < self.requests.len() {
            self.begin_result();
            self.error_result(e);
            self.next += 1;
        }
    }

    /// The one result of a one-request run: the response's JSON, or the error's.
    pub fn single(self) -> Result<Vec<u8>, Vec<u8>> {
        const OK: &[u8] = br#"{"type":"ok","response":"#;
        const ERR: &[u8] = br#"{"type":"error","error":"#;
        let inner = |prefix: &[u8]| self.out[prefix.len()..self.out.len() - 1].to_vec();
        if self.out.starts_with(OK) {
            Ok(inner(OK))
        } else if self.out.starts_with(ERR) && self.out.len() > ERR.len() {
            Err(inner(ERR))
        } else {
            Err(br#"{"message":"the request gave no result","code":"INTERNAL"}"#.to_vec())
        }
    }

    /// The response body: `{"baton": …, "base_url": null, "results": […]}`.
    pub fn into_body(self, baton: Option<&str>) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.out.len() + 96);
        body.extend_from_slice(b"{\"baton\":");
        super::encode::opt_string(&mut body, baton);
        body.extend_from_slice(b",\"base_url\":null,\"results\":[");
        body.extend_from_slice(&self.out);
        body.extend_from_slice(b"]}");
        body
    }
}

/// The context for `caller` on the stream's database now.
fn ctx<'a>(s: &'a EngineState, pdb: &Pdb, caller: Caller, version: u8, cap: bool) -> Ctx<'a> {
    let rules = pdb.rules();
    Ctx {
        engine: &s.engine,
        budgets: s.engine.budgets(&rules, caller),
        rules,
        version,
        cap: cap.then_some(INLINE_CAP),
    }
}

/// The stream a run works on.
pub enum On {
    /// A registered stream, locked for each attempt.
    Stream(Arc<Stream>),
    /// A stream that ends with this request: its state, owned by the request alone.
    Own(Box<StreamState>),
}

impl On {
    fn pdb(&self) -> Arc<Pdb> {
        match self {
            On::Stream(st) => st.pdb.clone(),
            On::Own(state) => state.session.pdb().clone(),
        }
    }

    fn in_transaction(&self) -> bool {
        match self {
            On::Stream(st) => st.in_transaction(),
            On::Own(state) => !state.session.conn().is_autocommit(),
        }
    }
}

/// One attempt at the run on its stream.
fn attempt(s: &EngineState, on: &mut On, run: &mut Run, caller: Caller, cap: bool) -> Stop {
    let mut locked;
    let state = match on {
        On::Own(state) => &mut **state,
        On::Stream(stream) => {
            locked = match stream.lock() {
                Ok(l) => l,
                Err(e) => {
                    run.fail_rest(&e.into());
                    return Stop::Done;
                }
            };
            locked.state()
        }
    };
    let pdb = state.session.pdb().clone();
    let ctx = ctx(s, &pdb, caller, run.version, cap);
    run.advance(state, &ctx)
}

/// Run the pipeline to its end: reads first on this thread under the inline cap, the
/// rest on the worker pool; a statement that finds the write lock taken waits (holding
/// no thread) until a transaction ends, for at most [`BUSY_WAIT`]. Returns the stream
/// with the run.
pub async fn drive(
    s: &Arc<EngineState>,
    mut on: On,
    mut run: Run,
    caller: Caller,
) -> Result<(On, Run), HranaError> {
    let mut heavy = false;
    if run.reads_only() {
        match attempt(s, &mut on, &mut run, caller, true) {
            Stop::Done => return Ok((on, run)),
            Stop::Fatal(e) => return Err(e),
            Stop::Capped => heavy = true,
            Stop::Blocked => {}
        }
    }
    let class = match caller {
        Caller::Admin => Class::Admin,
        Caller::Tenant if heavy => Class::Heavy,
        Caller::Tenant => Class::Tenant,
    };
    // The statements of an interactive transaction run on this thread, not handed to a
    // worker thread and back: each handoff costs a wake-up, and a transaction of seven
    // requests makes seven. Work outside a transaction keeps to the niced workers.
    let interactive = on.in_transaction() || run.begins_transaction();
    let pdb = on.pdb();
    loop {
        let released = pdb.write_released.clone().notified_owned();
        let s2 = s.clone();
        let work = move || {
            crate::replication::deferring(|| {
                let stop = attempt(&s2, &mut on, &mut run, caller, false);
                (on, run, stop)
            })
        };
        let done = if interactive && !heavy {
            s.workers.run_here(class, work).await
        } else {
            s.workers.run(class, work).await
        };
        let ((on_back, back, stop), pending) =
            done.map_err(|e| HranaError::new("INTERNAL", e.to_string()))?;
        // With standbys (`required`), the answer waits for them, not the worker.
        crate::replication::acknowledged(pending)
            .await
            .map_err(|e| {
                HranaError::from(crate::error::EngineError::NotAcknowledged(e.to_string()))
            })?;
        (on, run) = (on_back, back);
        match stop {
            Stop::Done => return Ok((on, run)),
            Stop::Fatal(e) => return Err(e),
            // Only the inline attempt is capped; anything else is a fault of the engine's.
            Stop::Capped => run.fail_current(&HranaError::new(
                "INTERNAL",
                "a statement on a worker was interrupted by the inline cap",
            )),
            Stop::Blocked => {
                let since = *run.busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= BUSY_WAIT {
                    run.give_up_busy();
                    continue;
                }
                let _ = tokio::time::timeout(BUSY_POLL, released).await;
            }
        }
    }
}

/// How long a waiting writer sleeps at most before it tries again unasked (a lock held
/// by a session that signals nothing, such as the JSON API's).
const BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// SQLITE_BUSY after waiting [`BUSY_WAIT`] for the write lock.
pub fn busy_error() -> HranaError {
    HranaError::new(
        "SQLITE_BUSY",
        format!(
            "database is locked: another stream held the write lock for more than {} ms",
            BUSY_WAIT.as_millis()
        ),
    )
}
