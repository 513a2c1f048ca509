//! Running statements, one path for every protocol (the JSON API and Hrana): a session
//! on the database, the caller's lockdown rules and budgets, the tenant's storage quota,
//! the pages read and written charged to the tier's IO throttles, and every unit of work
//! metered.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::Engine;
use crate::error::{EngineError, Result};
use crate::lockdown::{self, LockdownRules};
use crate::metering;
use crate::pdb::{Caller, Pdb, Session};
use crate::query::{self, QueryRequest, ResultLimits, StmtResult};

/// What one statement may spend, and what its result may hold.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Wall-clock time.
    pub time: Duration,
    /// CPU time (`None`: only the time budget).
    pub cpu: Option<Duration>,
    /// Rows and bytes of a result.
    pub result: ResultLimits,
    /// Rows a result may hold because the lockdown profile says so (`None`: no rule;
    /// a streamed result is then unbounded).
    pub profile_rows: Option<usize>,
}

/// What a unit of work did, for the meter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Statements run.
    pub statements: u64,
    /// Rows returned.
    pub rows_read: u64,
    /// Rows changed.
    pub rows_written: u64,
    /// Whether a transaction committed.
    pub committed: bool,
}

/// How to run one unit of work (a statement, a batch, a Hrana request).
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// Who runs it.
    pub caller: Caller,
    /// Its budgets.
    pub budgets: Budgets,
    /// A time cap below the budget: interrupted by it, the unit is given up (`Ok(None)`)
    /// so it can run again where blocking is fine.
    pub cap: Option<Duration>,
    /// The database's own storage quota, as read with its open mode.
    pub quota: Option<u64>,
    /// A lone SELECT: it never waits for storage once its pages are cached, so its
    /// elapsed time is its CPU time (the thread CPU clock costs a syscall).
    pub lone_select: bool,
    /// Whether the unit starts a session (the meter counts sessions).
    pub new_session: bool,
}

/// Refuse `sql` when lockdown, reading the statement, says `caller` may not run it.
pub fn admit(rules: &LockdownRules, caller: Caller, sql: &str) -> Result<()> {
    if caller == Caller::Tenant {
        if let Some(reason) = lockdown::check_text(rules, sql) {
            return Err(EngineError::Lockdown(reason));
        }
    }
    Ok(())
}

impl Engine {
    /// The budgets of `caller` on a database under `rules`: the profile's limits for a
    /// tenant, the engine's defaults for the operator.
    pub fn budgets(&self, rules: &LockdownRules, caller: Caller) -> Budgets {
        let millis = |m: Option<u32>| m.map(|m| Duration::from_millis(u64::from(m)));
        let result = |rows| ResultLimits {
            max_rows: rows,
            max_bytes: self.opts.max_result_bytes,
        };
        match caller {
            Caller::Tenant => {
                let profile_rows = rules.max_result_rows.map(|r| r as usize);
                Budgets {
                    time: millis(rules.max_statement_millis)
                        .unwrap_or(self.opts.default_statement_budget),
                    cpu: millis(rules.max_statement_cpu_millis)
                        .or(self.opts.default_statement_cpu_budget),
                    result: result(profile_rows.unwrap_or(self.opts.default_max_rows)),
                    profile_rows,
                }
            }
            Caller::Admin => Budgets {
                time: self.opts.default_statement_budget,
                cpu: None,
                result: result(self.opts.default_max_rows),
                profile_rows: None,
            },
        }
    }

    /// Run `work` on `session` as one metered unit: the storage quota in force, the time
    /// and CPU budgets armed, the pages it read and wrote charged to the IO throttles and,
    /// with its statements and rows, to the database's meter. `Ok(None)` when `unit.cap`
    /// (not the caller's own budget) interrupted it; an interrupted statement is rolled
    /// back whole, so the unit can run again.
    pub fn run_unit<T>(
        &self,
        session: &mut Session,
        unit: &Unit,
        work: impl FnOnce(&mut Session) -> Result<(T, Tally)>,
    ) -> Result<Option<T>> {
        let budget = self.size_budget(session.pdb(), unit.quota);
        session.limit_size(budget)?;
        let start = quanta::Instant::now();
        let capped = unit.cap.filter(|c| *c < unit.budgets.time);
        session.set_budget(start, capped.unwrap_or(unit.budgets.time), unit.budgets.cpu);
        let charge_io = unit.caller == Caller::Tenant && self.io.is_limited();
        let metered = self.metering.load(std::sync::atomic::Ordering::Relaxed);
        // The thread CPU clock costs 0.4 µs a read here (a syscall; not in the vDSO): a
        // third of a point select. A lone SELECT runs on this thread without waiting for
        // storage once its pages are cached, so its elapsed time is its CPU time; writes
        // and batches, where a commit's fsync dwarfs the clock, read the real CPU clock.
        let clock = metered.then(|| metering::CpuClock::start(unit.lone_select, start));
        let outcome = work(session);
        let capped_out = capped.is_some() && matches!(outcome, Err(EngineError::Timeout(_)));
        if !capped_out {
            self.count_interruption(&outcome);
        }
        let conn = session.conn();
        let (pages_read, pages_written) = if metered || charge_io {
            metering::take_page_io(conn)
        } else {
            (0, 0)
        };
        if charge_io {
            self.io
                .charge(pages_read + pages_written, session.page_size());
        }
        if let Some(clock) = clock {
            let tally = outcome.as_ref().map(|(_, t)| *t).unwrap_or_default();
            session.pdb().meter.record_work(&metering::Work {
                cpu_micros: clock.micros(),
                pages_read,
                pages_written,
                statements: tally.statements,
                rows_read: tally.rows_read,
                rows_written: tally.rows_written,
                committed: tally.committed,
                session: unit.new_session,
            });
        }
        match outcome {
            Ok((t, _)) => Ok(Some(t)),
            Err(_) if capped_out => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Run a query on a database as `caller`.
    /// A tenant's query waits first while the tenant is over its IO limits (until the
    /// pages earlier statements read and wrote are paid for); the operator's admin work is
    /// neither charged nor held.
    pub fn query(&self, name: &str, req: QueryRequest, caller: Caller) -> Result<Vec<StmtResult>> {
        if caller == Caller::Tenant {
            let wait = self.io.wait();
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        self.query_capped(name, &req, caller, None)?
            .ok_or_else(|| EngineError::Internal("uncapped query gave up".into()))
    }

    /// Run a query with its time budget capped at `cap`: `Ok(None)` when the cap (not the
    /// caller's own budget) interrupted it, so it can run again where blocking is fine.
    /// An interrupted statement is rolled back whole, so running it again is safe.
    pub fn query_capped(
        &self,
        name: &str,
        req: &QueryRequest,
        caller: Caller,
        cap: Option<Duration>,
    ) -> Result<Option<Vec<StmtResult>>> {
        let pdb: Arc<Pdb> = self.get(name)?;
        let (stmts, transaction) = req.statements()?;
        let rules = pdb.rules();
        for s in stmts.iter() {
            admit(&rules, caller, s.sql)?;
        }
        let budgets = self.budgets(&rules, caller);
        let (mode, quota) = pdb.mode_and_quota();
        let mut session = pdb.session_in(mode, caller, &rules)?;
        let unit = Unit {
            caller,
            budgets,
            cap,
            quota,
            lone_select: !transaction && query::is_select(stmts[0].sql),
            new_session: true,
        };
        self.run_unit(&mut session, &unit, |s| {
            let results = run_statements(s.conn(), s, &stmts, transaction, budgets.result)?;
            let rows_written = results.iter().map(|r| r.rows_affected).sum();
            let tally = Tally {
                statements: results.len() as u64,
                rows_read: results.iter().map(|r| r.rows.len() as u64).sum(),
                rows_written,
                committed: transaction || rows_written > 0,
            };
            Ok((results, tally))
        })
    }
}

/// Run one statement, or a batch in one transaction, on a session's connection.
fn run_statements(
    conn: &Connection,
    session: &Session,
    stmts: &[query::StmtRef<'_>],
    transaction: bool,
    limits: ResultLimits,
) -> Result<Vec<StmtResult>> {
    if !transaction {
        return query::run(conn, stmts[0], limits)
            .map(|r| vec![r])
            .map_err(|e| session.explain(e));
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut out = Vec::with_capacity(stmts.len());
    for (i, s) in stmts.iter().enumerate() {
        match query::run(conn, *s, limits) {
            Ok(r) => out.push(r),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(prefix(session.explain(e), i));
            }
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(out)
}

fn prefix(e: EngineError, i: usize) -> EngineError {
    let p = |m: String| format!("batch statement {i}: {m}; nothing was committed");
    match e {
        EngineError::BadRequest(m) => EngineError::BadRequest(p(m)),
        EngineError::Sql(m) => EngineError::Sql(p(m)),
        EngineError::Lockdown(m) => EngineError::Lockdown(p(m)),
        other => other,
    }
}
