//! Running one statement of a request on the stream's session: binding, stepping under
//! the budgets, writing its result, and what the end of a transaction changes.

use super::*;

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

/// Run one statement on `session`, writing its `StmtResult`.
pub(super) fn run_stmt(
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
pub(super) fn end_of_transaction(
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
}
