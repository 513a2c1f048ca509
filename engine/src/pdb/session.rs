//! A session: one pooled connection lent to one caller, with its rules, budgets and limits
//! set for it, and returned to the pool (rolled back, limits restored) when dropped.

use super::*;

impl Session {
    /// The database this session is on.
    pub fn pdb(&self) -> &Arc<Pdb> {
        &self.pdb
    }

    /// Who the session runs as.
    pub fn caller(&self) -> Caller {
        self.caller
    }

    /// Wait at most `ms` for another session's write lock (0: fail at once with
    /// [`EngineError::Busy`], for callers that wait without holding a thread).
    pub fn set_busy_timeout(&mut self, ms: u32) -> Result<()> {
        if let Some(c) = self.conn.as_mut() {
            if c.busy_ms != ms {
                wait_for_locks(&mut c.conn, ms)?;
                c.busy_ms = ms;
            }
        }
        Ok(())
    }

    /// Whether the session is still valid: its database was not closed since it started.
    pub fn is_current(&self) -> bool {
        self.pdb.generation.load(Ordering::SeqCst) == self.generation && !self.pdb.is_closing()
    }

    /// Before the next statements of a session kept across requests: the database must
    /// still be open to this caller, rules changed since apply now, and a read-only
    /// transaction (`read_only_txn`) stays read-only.
    pub fn refresh(&mut self, rules: &LockdownRules, read_only_txn: bool) -> Result<()> {
        if !self.is_current() {
            return Err(EngineError::Conflict(format!(
                "database {} was closed; open a new stream",
                self.pdb.name
            )));
        }
        let mode = self.pdb.open_mode();
        self.pdb.admits(mode, self.caller)?;
        let Session {
            pdb, conn, caller, ..
        } = self;
        match conn.as_mut() {
            Some(c) => pdb.fit(c, mode, *caller, rules, read_only_txn),
            None => Ok(()),
        }
    }

    /// The connection.
    pub fn conn(&self) -> &Connection {
        // Present from creation until drop.
        &self.conn.as_ref().expect("session holds a connection").conn
    }

    /// Turn an error from this session into the engine's, naming the lockdown rule that refused.
    pub fn explain(&self, err: EngineError) -> EngineError {
        let why = self.conn.as_ref().and_then(|c| c.denied.take());
        if matches!(err, EngineError::Timeout(_)) {
            if let Some(b) = self.conn.as_ref().map(|c| &c.budget) {
                if b.over_cpu.swap(false, Ordering::Relaxed) {
                    return EngineError::CpuBudget(format!(
                        "the statement used more than its CPU budget of {} ms and was interrupted; make it cheaper (an index, a smaller range) or raise the profile's maxStatementCpuMillis",
                        b.cpu_ns.load(Ordering::Relaxed) / 1_000_000
                    ));
                }
            }
        }
        match (why, err) {
            // The authorizer refused part of this statement: that is the reason, whatever
            // code SQLite reported (functions come back as a plain error).
            (Some(reason), _) => EngineError::Lockdown(reason),
            (None, EngineError::Lockdown(_)) => {
                EngineError::Lockdown("the statement is not allowed".into())
            }
            (None, other) => other,
        }
    }

    /// Give the running statement `by` more time (what a streamed result spent waiting
    /// for its reader does not count against its time budget).
    pub fn extend_deadline(&self, by: Duration) {
        if let Some(c) = &self.conn {
            c.budget.extend(by);
        }
    }

    /// Let the database grow to at most `max_bytes` in this session (`None`: no limit).
    /// A write past it fails with SQLITE_FULL (HTTP 507) and its statement is rolled
    /// back whole, so nothing is partly written; reads are unaffected.
    pub fn limit_size(&mut self, max_bytes: Option<u64>) -> Result<()> {
        let Some(c) = self.conn.as_mut() else {
            return Ok(());
        };
        // SQLite never sets the limit below the current size, so a full database stays readable.
        let pages = max_bytes.map_or(u64::MAX, |b| (b / c.page_size).max(1));
        if pages == c.max_pages {
            return Ok(());
        }
        let admin = c.admin.swap(true, Ordering::Relaxed);
        let set = pages.min(0xFFFF_FFFE);
        let r = c
            .conn
            .query_row(&format!("PRAGMA max_page_count = {set}"), [], |_| Ok(()));
        c.admin.store(admin, Ordering::Relaxed);
        r?;
        c.max_pages = pages;
        Ok(())
    }

    /// The page size of the session's database, in bytes.
    pub fn page_size(&self) -> u64 {
        self.conn.as_ref().map_or(4096, |c| c.page_size)
    }

    /// Interrupt statements that run longer than `budget` from `start` (a clock read the
    /// caller already made, so one read serves the deadline and the CPU clock), or that
    /// use more than `cpu` of CPU time (`None`: no CPU budget).
    pub fn set_budget(&self, start: quanta::Instant, budget: Duration, cpu: Option<Duration>) {
        if let Some(c) = &self.conn {
            c.budget.arm(self.pdb.deadline_after(start, budget), cpu);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let c_id = c.id;
            c.budget.arm(0, None);
            if !c.conn.is_autocommit() {
                let _ = c.conn.execute_batch("ROLLBACK");
                self.pdb.write_released.notify_one();
            }
            if c.busy_ms != BUSY_TIMEOUT_MS {
                let restored = wait_for_locks(&mut c.conn, BUSY_TIMEOUT_MS);
                c.busy_ms = if restored.is_ok() { BUSY_TIMEOUT_MS } else { 0 };
            }
            let current = self.pdb.generation.load(Ordering::SeqCst) == self.generation;
            let kept = current
                && self.pdb.idle.lock().is_ok_and(|mut idle| {
                    let room = idle.len() < MAX_IDLE;
                    if room {
                        idle.push(c);
                    }
                    room
                });
            if !kept {
                if let Ok(mut i) = self.pdb.interrupts.lock() {
                    i.retain(|(id, _)| *id != c_id);
                }
            }
        }
        self.pdb.active.fetch_sub(1, Ordering::SeqCst);
    }
}
