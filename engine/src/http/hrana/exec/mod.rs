//! Running Hrana requests on a stream's session: `execute`, `batch` (with conditions),
//! `sequence`, `describe`, `store_sql`, `close_sql`, `get_autocommit`. Each request that
//! runs SQL is one unit of the engine's execution path ([`Engine::run_unit`]): lockdown,
//! budgets, storage quota, IO charges and metering as for the JSON API.
//!
//! Work is resumable: a statement that finds the write lock taken (SQLITE_BUSY) stops the
//! request where it is, so the caller can wait without holding a worker thread and run it
//! again from there; one interrupted by the inline cap stops the same way.

use std::sync::Arc;

use rusqlite::Connection;

use super::cond::{check_cond, holds};
use super::encode;
use super::error::HranaError;
use super::proto::{Batch, Stmt, StreamRequest};
use super::values::{bind, fail, text};

mod statement;
use crate::engine::execution::{admit, Budgets, Tally, Unit};
use crate::engine::streams::StreamState;
use crate::engine::Engine;
use crate::lockdown::LockdownRules;
use crate::pdb::{Caller, Session};
use statement::{end_of_transaction, run_stmt};

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
