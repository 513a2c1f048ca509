//! Running Hrana requests on a stream's session: `execute`, `batch` (with conditions),
//! `sequence`, `describe`, `store_sql`, `close_sql`, `get_autocommit`. Each request that
//! runs SQL is one unit of the engine's execution path ([`Engine::run_unit`]): lockdown,
//! budgets, storage quota, IO charges and metering as for the JSON API.
//!
//! Work is resumable: a statement that finds the write lock taken (SQLITE_BUSY) stops the
//! request where it is, so the caller can wait without holding a worker thread and run it
//! again from there; one interrupted by the inline cap stops the same way.

use std::sync::Arc;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Statement};

use super::encode;
use super::error::{from_statement, HranaError};
use super::proto::{Batch, BatchCond, Stmt, StreamRequest, Value};
use crate::engine::execution::{admit, Budgets, Tally, Unit};
use crate::engine::streams::StreamState;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::lockdown::LockdownRules;
use crate::pdb::{Caller, Session};

/// SQL texts a stream (HTTP) or a connection (WebSocket) may store at once.
pub const MAX_STORED_SQL: usize = 256;
/// Bytes a stored SQL text may hold.
pub const MAX_STORED_SQL_BYTES: usize = 64 << 10;

/// What the requests run under.
pub struct Ctx<'a> {
    /// The engine.
    pub engine: &'a Engine,
    /// The database's lockdown rules, read once for the pipeline.
    pub rules: Arc<LockdownRules>,
    /// The caller's budgets under those rules.
    pub budgets: Budgets,
    /// The Hrana version spoken (2 or 3; 1 is 2 without its additions).
    pub version: u8,
    /// The inline cap, when trying on an async thread: read-only statements only.
    pub cap: Option<std::time::Duration>,
}

/// How a request ended.
#[derive(Debug)]
pub enum Outcome {
    /// Its response was written.
    Done,
    /// It failed; the error is its result.
    Failed(HranaError),
    /// A protocol violation: the stream (over WebSocket, the connection) ends.
    Fatal(HranaError),
    /// A statement found the write lock taken: run the request again later.
    Blocked,
    /// The inline cap interrupted it, or it needs to write: run it again on a worker.
    Capped,
}

/// Where a resumable request stopped.
#[derive(Debug, Default)]
pub struct Progress {
    /// Steps of a batch done, their results written so far, and how each ended.
    step: usize,
    step_results: Vec<u8>,
    step_errors: Vec<Option<HranaError>>,
    step_ok: Vec<Option<bool>>,
    /// Statements of a sequence done.
    statements: usize,
}

/// Why one statement stopped.
enum StmtFail {
    Error(HranaError),
    Blocked,
    Capped,
}

impl From<HranaError> for StmtFail {
    fn from(e: HranaError) -> Self {
        if e.is_busy() {
            StmtFail::Blocked
        } else {
            StmtFail::Error(e)
        }
    }
}

/// `BEGIN READONLY` / `BEGIN TRANSACTION READONLY`: libSQL's read-only transaction,
/// which SQLite does not know. Recognised as exactly those words (and a `;`).
fn is_begin_readonly(sql: &str) -> bool {
    let t = sql.trim_start().as_bytes();
    if !(t.len() >= 14 && t[..5].eq_ignore_ascii_case(b"BEGIN")) {
        return false;
    }
    let words: Vec<&str> = sql
        .trim()
        .trim_end_matches(';')
        .split_ascii_whitespace()
        .collect();
    match words.as_slice() {
        [b, r] => b.eq_ignore_ascii_case("BEGIN") && r.eq_ignore_ascii_case("READONLY"),
        [b, t, r] => {
            b.eq_ignore_ascii_case("BEGIN")
                && t.eq_ignore_ascii_case("TRANSACTION")
                && r.eq_ignore_ascii_case("READONLY")
        }
        _ => false,
    }
}

fn to_sql(v: &Value) -> Result<SqlValue, HranaError> {
    use base64::Engine as _;
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Integer { value } => SqlValue::Integer(*value),
        Value::Float { value } => SqlValue::Real(*value),
        Value::Text { value } => SqlValue::Text(value.clone()),
        Value::Blob { base64 } => {
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            SqlValue::Blob(engine.decode(base64.as_bytes()).map_err(|e| {
                HranaError::new("ARGS_INVALID", format!("a blob is not base64: {e}"))
            })?)
        }
    })
}

/// A set of parameter indexes, without allocating for the usual few.
enum Bound {
    Few(u64, usize),
    Many(Vec<bool>),
}

impl Bound {
    fn new(count: usize) -> Self {
        if count <= 64 {
            Bound::Few(0, count)
        } else {
            Bound::Many(vec![false; count])
        }
    }

    fn set(&mut self, i: usize) {
        match self {
            Bound::Few(bits, _) => *bits |= 1 << i,
            Bound::Many(v) => v[i] = true,
        }
    }

    fn first_unset(&self) -> Option<usize> {
        match self {
            Bound::Few(bits, n) => (0..*n).find(|i| bits & (1 << i) == 0),
            Bound::Many(v) => v.iter().position(|b| !b),
        }
    }
}

/// Bind `stmt`'s arguments: positional by index, named by name as given, else with
/// `:`, `@` or `$` in front. Every parameter must get a value.
pub(super) fn bind(st: &mut Statement<'_>, stmt: &Stmt) -> Result<(), HranaError> {
    let count = st.parameter_count();
    if stmt.args.len() > count {
        return Err(HranaError::new(
            "ARGS_INVALID",
            format!(
                "the statement has {count} parameters, {} positional arguments were given",
                stmt.args.len()
            ),
        ));
    }
    // Which parameters got a value (a bit each; a vector past 64).
    let mut bound = Bound::new(count);
    let bind_err = |e: rusqlite::Error| HranaError::new("ARGS_INVALID", e.to_string());
    for (i, v) in stmt.args.iter().enumerate() {
        st.raw_bind_parameter(i + 1, to_sql(v)?).map_err(bind_err)?;
        bound.set(i);
    }
    for arg in &stmt.named_args {
        let index = if arg.name.starts_with([':', '@', '$', '?']) {
            st.parameter_index(&arg.name).ok().flatten()
        } else {
            [":", "@", "$"].iter().find_map(|p| {
                st.parameter_index(&format!("{p}{}", arg.name))
                    .ok()
                    .flatten()
            })
        };
        let Some(index) = index else {
            return Err(HranaError::new(
                "ARGS_INVALID",
                format!("the statement has no parameter named {:?}", arg.name),
            ));
        };
        st.raw_bind_parameter(index, to_sql(&arg.value)?)
            .map_err(bind_err)?;
        bound.set(index - 1);
    }
    if let Some(missing) = bound.first_unset() {
        let name = st
            .parameter_name(missing + 1)
            .map_or_else(|| format!("?{}", missing + 1), String::from);
        return Err(HranaError::new(
            "ARGS_INVALID",
            format!("no value was given for parameter {name}"),
        ));
    }
    Ok(())
}

/// A statement's failure, named by the engine (lockdown, budgets, quota) or by SQLite.
pub(super) fn fail(session: &Session, e: rusqlite::Error) -> HranaError {
    let sqlite = match &e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            Some(rusqlite::Error::SqliteFailure(*f, msg.clone()))
        }
        _ => None,
    };
    from_statement(session.explain(EngineError::from(e)), sqlite.as_ref())
}

/// The SQL text of a statement: its own, or the one stored under its id.
pub(super) fn text<'s>(
    sqls: &'s std::collections::HashMap<i32, Arc<str>>,
    sql: &'s Option<String>,
    sql_id: Option<i32>,
) -> Result<&'s str, HranaError> {
    match (sql, sql_id) {
        (Some(s), None) => Ok(s),
        (None, Some(id)) => sqls.get(&id).map(|s| &**s).ok_or_else(|| {
            HranaError::new(
                "SQL_NOT_FOUND",
                format!("no SQL text is stored under id {id}"),
            )
        }),
        _ => Err(HranaError::protocol(
            "a statement gives exactly one of sql and sql_id",
        )),
    }
}

/// Run one statement on `session`, writing its `StmtResult`.
fn run_stmt(
    session: &mut Session,
    ctx: &Ctx<'_>,
    read_only_txn: &mut bool,
    sql: &str,
    stmt: &Stmt,
    out: &mut Vec<u8>,
    tally: &mut Tally,
) -> Result<(), StmtFail> {
    let caller = session.caller();
    admit(&ctx.rules, caller, sql).map_err(|e| StmtFail::Error(e.into()))?;
    if sql.trim().is_empty() {
        return Err(StmtFail::Error(HranaError::new(
            "SQL_NO_STATEMENT",
            "the SQL text holds no statement",
        )));
    }
    // quanta reads the TSC: a few ns, where the OS clock costs ~100 ns on this VM.
    let started = quanta::Instant::now();
    let was_autocommit = session.conn().is_autocommit();
    let readonly_begin = is_begin_readonly(sql);
    let sql = if readonly_begin {
        "BEGIN DEFERRED"
    } else {
        sql
    };
    let conn = session.conn();
    let mut st = conn
        .prepare_cached(sql)
        .map_err(|e| StmtFail::Error(fail(session, e)))?;
    if ctx.cap.is_some() && !st.readonly() {
        // Only reads try the inline path: an interrupted write inside a transaction
        // would roll the whole transaction back.
        return Err(StmtFail::Capped);
    }
    bind(&mut st, stmt)?;
    let start = out.len();
    out.extend_from_slice(b"{\"cols\":");
    let cols_at = out.len();
    encode::columns(out, &st);
    let mut cols_end = out.len();
    out.extend_from_slice(b",\"rows\":[");
    let mut columns = st.column_count();
    let want_rows = stmt.want_rows.unwrap_or(true);
    let before = conn.total_changes();
    let limits = ctx.budgets.result;
    let mut rows_read = 0u64;
    let stepped: Result<(), StmtFail> = (|| {
        let mut rows = st.raw_query();
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(|e| fail(session, e))? {
            if rows_read == 0 && row.as_ref().column_count() != columns {
                // Prepared again at its first step (the schema changed): its columns now.
                columns = row.as_ref().column_count();
                let mut fresh = Vec::new();
                encode::columns(&mut fresh, row.as_ref());
                out.splice(cols_at..cols_end, fresh.iter().copied());
                cols_end = cols_at + fresh.len();
            }
            rows_read += 1;
            if !want_rows {
                continue;
            }
            if rows_read as usize > limits.max_rows {
                return Err(StmtFail::Error(HranaError::new(
                    "RESPONSE_TOO_LARGE",
                    format!(
                        "the result has more than {} rows; read it through a cursor (v3/cursor), or add a LIMIT",
                        limits.max_rows
                    ),
                )));
            }
            if rows_read > 1 {
                out.push(b',');
            }
            bytes += encode::row(out, row, columns).map_err(|e| fail(session, e))?;
            if bytes > limits.max_bytes {
                return Err(StmtFail::Error(HranaError::new(
                    "RESPONSE_TOO_LARGE",
                    format!(
                        "the result is larger than {} bytes; read it through a cursor (v3/cursor)",
                        limits.max_bytes
                    ),
                )));
            }
        }
        Ok(())
    })();
    if stepped.is_ok() && rows_read == 0 && st.column_count() != columns {
        let mut fresh = Vec::new();
        encode::columns(&mut fresh, &st);
        out.splice(cols_at..cols_end, fresh.iter().copied());
    }
    drop(st);
    if let Err(e) = stepped {
        out.truncate(start);
        return Err(match e {
            StmtFail::Error(e) if e.code == "STATEMENT_TIMEOUT" && ctx.cap.is_some() => {
                StmtFail::Capped
            }
            other => other,
        });
    }
    let changed = conn.total_changes() != before;
    let affected = if changed { conn.changes() } else { 0 };
    out.extend_from_slice(b"],\"affected_row_count\":");
    encode::number(out, affected);
    out.extend_from_slice(b",\"last_insert_rowid\":");
    if changed {
        encode::int_string(out, conn.last_insert_rowid());
    } else {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b",\"rows_read\":");
    encode::number(out, rows_read);
    out.extend_from_slice(b",\"rows_written\":");
    encode::number(out, affected);
    out.extend_from_slice(b",\"query_duration_ms\":");
    out.extend_from_slice(
        ryu::Buffer::new()
            .format_finite(started.elapsed().as_secs_f64() * 1000.0)
            .as_bytes(),
    );
    out.push(b'}');
    tally.statements += 1;
    tally.rows_read += rows_read;
    tally.rows_written += affected;
    if readonly_begin {
        *read_only_txn = true;
        session
            .refresh(&ctx.rules, true)
            .map_err(|e| StmtFail::Error(e.into()))?;
    }
    end_of_transaction(session, ctx, read_only_txn, tally, was_autocommit)
}

/// After statements: when a transaction just ended (or an autocommit write is done), a
/// read-only transaction stops being so and a writer waiting for the lock is told.
fn end_of_transaction(
    session: &mut Session,
    ctx: &Ctx<'_>,
    read_only_txn: &mut bool,
    tally: &mut Tally,
    was_autocommit: bool,
) -> Result<(), StmtFail> {
    if !session.conn().is_autocommit() {
        return Ok(());
    }
    if *read_only_txn {
        *read_only_txn = false;
        session
            .refresh(&ctx.rules, false)
            .map_err(|e| StmtFail::Error(e.into()))?;
    }
    if tally.rows_written > 0 {
        tally.committed = true;
    }
    if !was_autocommit || tally.rows_written > 0 {
        session.pdb().write_released.notify_one();
    }
    Ok(())
}

/// Whether `cond` holds after the steps so far.
pub(super) fn holds(cond: &BatchCond, ok: &[Option<bool>], autocommit: bool) -> bool {
    match cond {
        BatchCond::Ok { step } => ok.get(*step as usize).copied().flatten() == Some(true),
        BatchCond::Error { step } => ok.get(*step as usize).copied().flatten() == Some(false),
        BatchCond::Not { cond } => !holds(cond, ok, autocommit),
        BatchCond::And { conds } => conds.iter().all(|c| holds(c, ok, autocommit)),
        BatchCond::Or { conds } => conds.iter().any(|c| holds(c, ok, autocommit)),
        BatchCond::IsAutocommit => autocommit,
    }
}

/// A condition that refers only to earlier steps, and to `is_autocommit` only in Hrana 3.
pub(super) fn check_cond(cond: &BatchCond, step: usize, version: u8) -> Result<(), HranaError> {
    match cond {
        BatchCond::Ok { step: s } | BatchCond::Error { step: s } if *s as usize >= step => {
            Err(HranaError::protocol(format!(
                "step {step}'s condition refers to step {s}, which does not run before it"
            )))
        }
        BatchCond::Not { cond } => check_cond(cond, step, version),
        BatchCond::And { conds } | BatchCond::Or { conds } => {
            conds.iter().try_for_each(|c| check_cond(c, step, version))
        }
        BatchCond::IsAutocommit if version < 3 => Err(HranaError::protocol(
            "the is_autocommit condition needs Hrana 3 (v3/pipeline, or the hrana3 subprotocol)",
        )),
        _ => Ok(()),
    }
}

/// The runner of one stream's requests.
pub struct Runner<'c, 'e> {
    /// What they run under.
    pub ctx: &'c Ctx<'e>,
}

impl Runner<'_, '_> {
    fn unit(&self, lone_select: bool) -> Unit {
        Unit {
            caller: Caller::Tenant,
            budgets: self.ctx.budgets,
            cap: self.ctx.cap,
            quota: None,
            lone_select,
            new_session: false,
        }
    }

    /// Run `work` as one unit of the engine's execution path on the stream's session.
    fn metered(
        &self,
        state: &mut StreamState,
        lone_select: bool,
        work: impl FnOnce(
            &mut Session,
            &mut bool,
            &std::collections::HashMap<i32, Arc<str>>,
            &mut Tally,
        ) -> Outcome,
    ) -> Outcome {
        let StreamState {
            session,
            sqls,
            read_only_txn,
            ..
        } = state;
        let mut unit = self.unit(lone_select);
        unit.caller = session.caller();
        unit.quota = session.pdb().mode_and_quota().1;
        let ran = self.ctx.engine.run_unit(session, &unit, |s| {
            let mut tally = Tally::default();
            let outcome = work(s, read_only_txn, sqls, &mut tally);
            Ok((outcome, tally))
        });
        match ran {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Outcome::Capped,
            Err(e) => Outcome::Failed(e.into()),
        }
    }

    /// Run `req`, writing its response (`{"type": …, …}`) into `out` when it succeeds.
    pub fn run(
        &self,
        state: &mut StreamState,
        req: &StreamRequest,
        progress: &mut Progress,
        out: &mut Vec<u8>,
    ) -> Outcome {
        match req {
            StreamRequest::Close => {
                out.extend_from_slice(br#"{"type":"close"}"#);
                Outcome::Done
            }
            StreamRequest::Execute { stmt } => self.execute(state, stmt, out),
            StreamRequest::Batch { batch } => self.batch(state, batch, progress, out),
            StreamRequest::Sequence { sql, sql_id } => {
                self.sequence(state, sql, *sql_id, progress, out)
            }
            StreamRequest::Describe { sql, sql_id } => self.describe(state, sql, *sql_id, out),
            StreamRequest::StoreSql { sql_id, sql } => {
                match store_sql(&mut state.sqls, *sql_id, sql) {
                    Ok(()) => {
                        out.extend_from_slice(br#"{"type":"store_sql"}"#);
                        Outcome::Done
                    }
                    Err(o) => o,
                }
            }
            StreamRequest::CloseSql { sql_id } => {
                state.sqls.remove(sql_id);
                out.extend_from_slice(br#"{"type":"close_sql"}"#);
                Outcome::Done
            }
            StreamRequest::GetAutocommit => {
                if self.ctx.version < 3 {
                    return Outcome::Failed(HranaError::protocol(
                        "get_autocommit needs Hrana 3 (v3/pipeline, or the hrana3 subprotocol)",
                    ));
                }
                out.extend_from_slice(br#"{"type":"get_autocommit","is_autocommit":"#);
                let auto = state.session.conn().is_autocommit();
                out.extend_from_slice(if auto { b"true}" } else { b"false}" });
                Outcome::Done
            }
        }
    }

    fn execute(&self, state: &mut StreamState, stmt: &Stmt, out: &mut Vec<u8>) -> Outcome {
        let lone_select = stmt.sql.as_deref().is_some_and(crate::query::is_select);
        self.metered(state, lone_select, |session, ro, sqls, tally| {
            let sql = match text(sqls, &stmt.sql, stmt.sql_id) {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(e),
            };
            let start = out.len();
            out.extend_from_slice(br#"{"type":"execute","result":"#);
            match run_stmt(session, self.ctx, ro, sql, stmt, out, tally) {
                Ok(()) => {
                    out.push(b'}');
                    Outcome::Done
                }
                Err(f) => {
                    out.truncate(start);
                    match f {
                        StmtFail::Error(e) => Outcome::Failed(e),
                        StmtFail::Blocked => Outcome::Blocked,
                        StmtFail::Capped => Outcome::Capped,
                    }
                }
            }
        })
    }

    fn batch(
        &self,
        state: &mut StreamState,
        batch: &Batch,
        p: &mut Progress,
        out: &mut Vec<u8>,
    ) -> Outcome {
        if p.step == 0 && p.step_ok.is_empty() {
            for (i, step) in batch.steps.iter().enumerate() {
                if let Some(c) = &step.condition {
                    if let Err(e) = check_cond(c, i, self.ctx.version) {
                        return Outcome::Failed(e);
                    }
                }
            }
        }
        let stopped = self.metered(state, false, |session, ro, sqls, tally| {
            while p.step < batch.steps.len() {
                let step = &batch.steps[p.step];
                let autocommit = session.conn().is_autocommit();
                let run = step
                    .condition
                    .as_ref()
                    .is_none_or(|c| holds(c, &p.step_ok, autocommit));
                if p.step > 0 {
                    p.step_results.push(b',');
                }
                if !run {
                    p.step_results.extend_from_slice(b"null");
                    p.step_ok.push(None);
                    p.step_errors.push(None);
                    p.step += 1;
                    continue;
                }
                let mark = p.step_results.len();
                let done = text(sqls, &step.stmt.sql, step.stmt.sql_id)
                    .map_err(StmtFail::Error)
                    .and_then(|sql| {
                        run_stmt(
                            session,
                            self.ctx,
                            ro,
                            sql,
                            &step.stmt,
                            &mut p.step_results,
                            tally,
                        )
                    });
                match done {
                    Ok(()) => {
                        p.step_ok.push(Some(true));
                        p.step_errors.push(None);
                    }
                    Err(StmtFail::Error(e)) => {
                        p.step_results.truncate(mark);
                        p.step_results.extend_from_slice(b"null");
                        p.step_ok.push(Some(false));
                        p.step_errors.push(Some(e));
                    }
                    Err(stop) => {
                        // Undo the separator: the step runs again from here.
                        p.step_results
                            .truncate(mark.saturating_sub(usize::from(p.step > 0)));
                        return match stop {
                            StmtFail::Blocked => Outcome::Blocked,
                            _ => Outcome::Capped,
                        };
                    }
                }
                p.step += 1;
            }
            Outcome::Done
        });
        if !matches!(stopped, Outcome::Done) {
            return stopped;
        }
        out.extend_from_slice(br#"{"type":"batch","result":{"step_results":["#);
        out.extend_from_slice(&p.step_results);
        out.extend_from_slice(br#"],"step_errors":["#);
        for (i, e) in p.step_errors.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match e {
                Some(e) => e.write_json(out),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"]}}");
        Outcome::Done
    }

    fn sequence(
        &self,
        state: &mut StreamState,
        sql: &Option<String>,
        sql_id: Option<i32>,
        p: &mut Progress,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let outcome = self.metered(state, false, |session, ro, sqls, tally| {
            let sql = match text(sqls, sql, sql_id) {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(e),
            };
            run_sequence(session, self.ctx, ro, sql, p, tally)
        });
        if matches!(outcome, Outcome::Done) {
            out.extend_from_slice(br#"{"type":"sequence"}"#);
        }
        outcome
    }

    fn describe(
        &self,
        state: &mut StreamState,
        sql: &Option<String>,
        sql_id: Option<i32>,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let sql = match text(&state.sqls, sql, sql_id) {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(e),
        };
        let session = &state.session;
        let st = match session.conn().prepare_cached(sql) {
            Ok(st) => st,
            Err(e) => return Outcome::Failed(fail(session, e)),
        };
        out.extend_from_slice(br#"{"type":"describe","result":{"params":["#);
        for i in 1..=st.parameter_count() {
            if i > 1 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            encode::opt_string(out, st.parameter_name(i));
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"cols\":");
        encode::columns(out, &st);
        out.extend_from_slice(b",\"is_explain\":");
        out.extend_from_slice(if st.is_explain() > 0 {
            b"true"
        } else {
            b"false"
        });
        out.extend_from_slice(b",\"is_readonly\":");
        out.extend_from_slice(if st.readonly() { b"true" } else { b"false" });
        out.extend_from_slice(b"}}");
        Outcome::Done
    }
}

/// Store `sql` under `id`: an id in use is a protocol error (the spec says so).
pub fn store_sql(
    sqls: &mut std::collections::HashMap<i32, Arc<str>>,
    id: i32,
    sql: &str,
) -> Result<(), Outcome> {
    if sqls.contains_key(&id) {
        return Err(Outcome::Fatal(HranaError::protocol(format!(
            "SQL text id {id} is already in use; close_sql it first"
        ))));
    }
    if sqls.len() >= MAX_STORED_SQL {
        return Err(Outcome::Failed(HranaError::new(
            "SQL_STORE_TOO_MANY",
            format!("at most {MAX_STORED_SQL} SQL texts may be stored at once"),
        )));
    }
    if sql.len() > MAX_STORED_SQL_BYTES {
        return Err(Outcome::Failed(HranaError::new(
            "SQL_STORE_TOO_LARGE",
            format!("a stored SQL text holds at most {MAX_STORED_SQL_BYTES} bytes"),
        )));
    }
    sqls.insert(id, Arc::from(sql));
    Ok(())
}

/// Run the statements of `sql` one after another, ignoring rows, from statement
/// `p.statements` on.
fn run_sequence(
    session: &mut Session,
    ctx: &Ctx<'_>,
    read_only_txn: &mut bool,
    sql: &str,
    p: &mut Progress,
    tally: &mut Tally,
) -> Outcome {
    let was_autocommit = session.conn().is_autocommit();
    let stopped = sequence_from(session, ctx, sql, p, tally);
    if let Err(StmtFail::Error(e)) =
        end_of_transaction(session, ctx, read_only_txn, tally, was_autocommit)
    {
        return Outcome::Failed(e);
    }
    stopped
}

fn sequence_from(
    session: &Session,
    ctx: &Ctx<'_>,
    sql: &str,
    p: &mut Progress,
    tally: &mut Tally,
) -> Outcome {
    use rusqlite::fallible_iterator::FallibleIterator;
    let conn: &Connection = session.conn();
    let mut batch = rusqlite::Batch::new(conn, sql);
    // Statements done before a stop are prepared again and skipped.
    for _ in 0..p.statements {
        match batch.next() {
            Ok(Some(_)) => {}
            Ok(None) => return Outcome::Done,
            Err(e) => return Outcome::Failed(fail(session, e)),
        }
    }
    loop {
        let mut st = match batch.next() {
            Ok(Some(st)) => st,
            Ok(None) => return Outcome::Done,
            Err(e) => return Outcome::Failed(fail(session, e)),
        };
        let this = st.expanded_sql().unwrap_or_default();
        if let Err(e) = admit(&ctx.rules, session.caller(), &this) {
            return Outcome::Failed(e.into());
        }
        let before = conn.total_changes();
        let stepped = (|| {
            let mut rows = st.raw_query();
            while rows.next()?.is_some() {
                tally.rows_read += 1;
            }
            Ok::<_, rusqlite::Error>(())
        })();
        tally.rows_written += conn.total_changes().saturating_sub(before);
        drop(st);
        if let Err(e) = stepped {
            let e = fail(session, e);
            return if e.is_busy() {
                Outcome::Blocked
            } else {
                Outcome::Failed(e)
            };
        }
        tally.statements += 1;
        p.statements += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_begin_is_recognised_exactly() {
        for sql in [
            "BEGIN READONLY",
            "begin transaction readonly;",
            "  BEGIN   READONLY ; ",
        ] {
            assert!(is_begin_readonly(sql), "{sql}");
        }
        for sql in [
            "BEGIN",
            "BEGIN IMMEDIATE",
            "SELECT 'BEGIN READONLY'",
            "BEGIN READONLY x",
        ] {
            assert!(!is_begin_readonly(sql), "{sql}");
        }
    }

    #[test]
    fn conditions_evaluate_and_refer_only_backwards() {
        let ok = [Some(true), Some(false), None];
        let c = |j: &str| serde_json::from_str::<BatchCond>(j).unwrap();
        assert!(holds(&c(r#"{"type":"ok","step":0}"#), &ok, true));
        assert!(holds(&c(r#"{"type":"error","step":1}"#), &ok, true));
        assert!(
            !holds(&c(r#"{"type":"ok","step":2}"#), &ok, true),
            "skipped is not ok"
        );
        assert!(
            !holds(&c(r#"{"type":"error","step":2}"#), &ok, true),
            "nor error"
        );
        assert!(holds(
            &c(
                r#"{"type":"and","conds":[{"type":"ok","step":0},{"type":"not","cond":{"type":"ok","step":1}}]}"#
            ),
            &ok,
            true
        ));
        assert!(!holds(&c(r#"{"type":"or","conds":[]}"#), &ok, true));
        assert!(!holds(&c(r#"{"type":"is_autocommit"}"#), &ok, false));
        assert!(check_cond(&c(r#"{"type":"ok","step":3}"#), 3, 3).is_err());
        assert!(check_cond(&c(r#"{"type":"not","cond":{"type":"ok","step":2}}"#), 3, 3).is_ok());
        assert!(check_cond(&c(r#"{"type":"is_autocommit"}"#), 1, 2).is_err());
    }
}
