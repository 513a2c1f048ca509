//! What interrupts a running statement: its wall-clock deadline and its CPU budget.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What interrupts a connection's running statement: a wall-clock deadline and a CPU
/// budget. Both are checked by SQLite's progress handler, every 1,000 VM instructions.
#[derive(Debug, Default)]
pub(super) struct StatementBudget {
    /// Instant (ns since `Pdb::epoch`) after which the statement is interrupted; 0 = none.
    pub(super) deadline: AtomicU64,
    /// CPU time the statement may use, in ns; 0 = no CPU budget.
    pub(super) cpu_ns: AtomicU64,
    /// The thread CPU clock (ns) when the statement first reached the handler; 0 = not yet.
    pub(super) cpu_base: AtomicU64,
    /// Instant (ns since epoch) before which the CPU budget cannot have run out. A
    /// statement runs on one thread, whose CPU time never outruns the wall clock, so the
    /// CPU clock (a syscall, 0.4 µs here) is read only then, not at every callback.
    pub(super) cpu_check_at: AtomicU64,
    /// Set when the CPU budget (not the deadline) interrupted the statement.
    pub(super) over_cpu: AtomicBool,
}

/// The calling thread's CPU clock in ns, never 0 (0 means "not read yet").
pub(super) fn thread_cpu_ns() -> u64 {
    (crate::metering::thread_cpu_time().as_nanos() as u64).max(1)
}

impl StatementBudget {
    /// Arm both budgets for the next statement.
    pub(super) fn arm(&self, deadline: u64, cpu: Option<Duration>) {
        self.deadline.store(deadline, Ordering::Relaxed);
        let cpu_ns = cpu.map_or(0, |c| (c.as_nanos() as u64).max(1));
        self.cpu_ns.store(cpu_ns, Ordering::Relaxed);
        self.cpu_base.store(0, Ordering::Relaxed);
        self.over_cpu.store(false, Ordering::Relaxed);
    }

    /// Move the deadline `by` later (time a streamed result waited for its reader).
    pub(super) fn extend(&self, by: Duration) {
        let d = self.deadline.load(Ordering::Relaxed);
        if d != 0 {
            self.deadline
                .store(d.saturating_add(by.as_nanos() as u64), Ordering::Relaxed);
        }
    }

    /// Whether the statement must stop at `now` (ns since epoch).
    pub(super) fn exceeded(&self, now: u64) -> bool {
        let at = self.deadline.load(Ordering::Relaxed);
        if at != 0 && now > at {
            return true;
        }
        let budget = self.cpu_ns.load(Ordering::Relaxed);
        if budget == 0 {
            return false;
        }
        let base = self.cpu_base.load(Ordering::Relaxed);
        if base == 0 {
            // The first callback: a few µs of CPU in, which the budget forgives.
            self.cpu_base.store(thread_cpu_ns(), Ordering::Relaxed);
            self.cpu_check_at.store(now + budget, Ordering::Relaxed);
            return false;
        }
        if now < self.cpu_check_at.load(Ordering::Relaxed) {
            return false;
        }
        let used = thread_cpu_ns().saturating_sub(base);
        if used >= budget {
            self.over_cpu.store(true, Ordering::Relaxed);
            return true;
        }
        // Not before the rest of the budget could be used up (and not in a storm of reads).
        let rest = (budget - used).max(CPU_CHECK_MIN_NS);
        self.cpu_check_at.store(now + rest, Ordering::Relaxed);
        false
    }
}

/// The least wall time between two reads of the CPU clock for one statement.
pub(super) const CPU_CHECK_MIN_NS: u64 = 500_000;
