//! How a connection waits for another connection's write lock.

use std::time::Duration;

use rusqlite::Connection;

/// How long a statement waits for another session's write lock by default.
pub const BUSY_TIMEOUT_MS: u32 = 5000;

/// Wait up to `ms` for another connection's write lock: [`BUSY_TIMEOUT_MS`] through
/// [`retry_lock`], any other value through SQLite's own handler (0: do not wait).
pub fn wait_for_locks(conn: &mut Connection, ms: u32) -> rusqlite::Result<()> {
    if ms == BUSY_TIMEOUT_MS {
        conn.busy_handler(Some(retry_lock))
    } else {
        conn.busy_timeout(Duration::from_millis(u64::from(ms)))
    }
}

/// A busy handler that waits [`BUSY_TIMEOUT_MS`] in all: 100 µs between the first 50
/// tries, then 1 ms. SQLite's own handler sleeps 1, 2, 5, 10 … 100 ms between tries, so a
/// lock held for 3 ms (the backup shipper's checkpoint) cost a waiting writer 8 ms, and a
/// writer that commits back to back held the lock at nearly every try of the shipper's.
pub fn retry_lock(tries: i32) -> bool {
    const FINE: i32 = 50;
    let waited_ms = if tries < FINE {
        tries / 10
    } else {
        FINE / 10 + (tries - FINE)
    };
    if waited_ms >= BUSY_TIMEOUT_MS as i32 {
        return false;
    }
    std::thread::sleep(if tries < FINE {
        Duration::from_micros(100)
    } else {
        Duration::from_millis(1)
    });
    true
}
