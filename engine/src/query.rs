//! The data plane's statement execution: JSON parameters in, typed JSON rows out,
//! within row, byte and time limits.

use base64::Engine as _;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, Statement};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// Whether `sql` starts with SELECT (after white space): a scheduling hint only (which
/// statements may try the inline path); what a statement may do is decided by lockdown.
pub fn is_select(sql: &str) -> bool {
    sql.trim_start()
        .as_bytes()
        .get(..6)
        .is_some_and(|h| h.eq_ignore_ascii_case(b"SELECT"))
}

/// One statement with its parameters.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stmt {
    /// SQL text: exactly one statement.
    pub sql: String,
    /// `[…]` for `?` placeholders, `{"name": …}` for `:name` ones.
    #[serde(default)]
    pub params: Option<Value>,
}

/// A query request: one statement, or a batch run in one transaction.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// A single statement.
    #[serde(default)]
    pub sql: Option<String>,
    /// Its parameters.
    #[serde(default)]
    pub params: Option<Value>,
    /// Statements run in one transaction: all commit or none.
    #[serde(default)]
    pub batch: Option<Vec<Stmt>>,
}

/// One statement of a request, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct StmtRef<'a> {
    /// SQL text.
    pub sql: &'a str,
    /// Parameters.
    pub params: Option<&'a Value>,
}

/// The statements of a request: one (held inline, no allocation) or a batch.
#[derive(Debug)]
pub enum Statements<'a> {
    /// A single statement.
    One([StmtRef<'a>; 1]),
    /// A batch, run in one transaction.
    Batch(Vec<StmtRef<'a>>),
}

impl<'a> std::ops::Deref for Statements<'a> {
    type Target = [StmtRef<'a>];
    fn deref(&self) -> &Self::Target {
        match self {
            Statements::One(one) => one,
            Statements::Batch(many) => many,
        }
    }
}

impl QueryRequest {
    /// The statements to run, and whether they form a transaction.
    pub fn statements(&self) -> Result<(Statements<'_>, bool)> {
        match (&self.sql, &self.batch) {
            (Some(sql), None) => Ok((
                Statements::One([StmtRef {
                    sql,
                    params: self.params.as_ref(),
                }]),
                false,
            )),
            (None, Some(batch)) if !batch.is_empty() && self.params.is_none() => Ok((
                Statements::Batch(
                    batch
                        .iter()
                        .map(|s| StmtRef {
                            sql: &s.sql,
                            params: s.params.as_ref(),
                        })
                        .collect(),
                ),
                true,
            )),
            (None, Some(_)) => Err(EngineError::BadRequest(
                "batch must hold at least one statement, each with its own params".into(),
            )),
            _ => Err(EngineError::BadRequest(
                "give exactly one of sql (with params) or batch".into(),
            )),
        }
    }
}

/// The result of one statement.
#[derive(Debug, Clone, Default, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StmtResult {
    /// Column names, when the statement returns rows.
    pub columns: Vec<String>,
    /// Rows as arrays of JSON values (integers, reals, text, null, `{"base64": …}` for blobs).
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
    /// rowid of the last insert on this connection.
    pub last_insert_rowid: i64,
}

/// Limits on one statement's result.
#[derive(Debug, Clone, Copy)]
pub struct ResultLimits {
    /// Rows at most.
    pub max_rows: usize,
    /// Bytes of values at most (approximate, by value size).
    pub max_bytes: usize,
}

fn to_sql(v: &Value) -> Result<SqlValue> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().ok_or_else(|| EngineError::BadRequest(format!("number {n} does not fit a 64-bit value")))?),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Object(o) if o.len() == 1 && o.contains_key("base64") => {
            let text = o["base64"].as_str().ok_or_else(|| EngineError::BadRequest("a blob is {\"base64\": \"…\"}".into()))?;
            SqlValue::Blob(base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| EngineError::BadRequest(format!("blob is not base64: {e}")))?)
        }
        other => return Err(EngineError::BadRequest(format!("parameter {other} is not a SQL value (use null, a number, a string, true/false or {{\"base64\": …}})"))),
    })
}

fn from_sql(v: ValueRef<'_>) -> (Value, usize) {
    match v {
        ValueRef::Null => (Value::Null, 4),
        ValueRef::Integer(i) => (Value::from(i), 8),
        ValueRef::Real(f) => (
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            8,
        ),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t).into_owned();
            let n = s.len();
            (Value::String(s), n)
        }
        ValueRef::Blob(b) => {
            let mut m = Map::new();
            m.insert(
                "base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            );
            (Value::Object(m), b.len() * 4 / 3)
        }
    }
}

fn bind(stmt: &mut Statement<'_>, params: Option<&Value>) -> Result<()> {
    let expected = stmt.parameter_count();
    match params {
        None | Some(Value::Null) if expected == 0 => Ok(()),
        None | Some(Value::Null) => Err(EngineError::BadRequest(format!(
            "the statement has {expected} parameters and none were given"
        ))),
        Some(Value::Array(values)) => {
            if values.len() != expected {
                return Err(EngineError::BadRequest(format!(
                    "the statement has {expected} parameters, {} were given",
                    values.len()
                )));
            }
            for (i, v) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, to_sql(v)?)?;
            }
            Ok(())
        }
        Some(Value::Object(named)) => {
            let mut bound = 0;
            for (key, v) in named {
                let candidates = if key.starts_with([':', '@', '$']) {
                    vec![key.clone()]
                } else {
                    vec![format!(":{key}"), format!("@{key}"), format!("${key}")]
                };
                let idx = candidates
                    .iter()
                    .find_map(|k| stmt.parameter_index(k).ok().flatten());
                let Some(idx) = idx else {
                    return Err(EngineError::BadRequest(format!(
                        "the statement has no parameter named {key:?}"
                    )));
                };
                stmt.raw_bind_parameter(idx, to_sql(v)?)?;
                bound += 1;
            }
            if bound != expected {
                return Err(EngineError::BadRequest(format!(
                    "the statement has {expected} parameters, {bound} were given"
                )));
            }
            Ok(())
        }
        Some(other) => Err(EngineError::BadRequest(format!(
            "params must be an array or an object, not {other}"
        ))),
    }
}

/// Run one statement on `conn` (its cached prepared form when there is one).
pub fn run(conn: &Connection, s: StmtRef<'_>, limits: ResultLimits) -> Result<StmtResult> {
    if s.sql.trim().is_empty() {
        return Err(EngineError::BadRequest("sql is empty".into()));
    }
    let mut stmt = conn.prepare_cached(s.sql)?;
    bind(&mut stmt, s.params)?;
    let mut out = StmtResult {
        columns: (0..stmt.column_count())
            .map(|i| stmt.column_name(i).map(String::from))
            .collect::<rusqlite::Result<_>>()?,
        ..Default::default()
    };
    if out.columns.is_empty() {
        out.rows_affected = stmt.raw_execute()? as u64;
    } else {
        // Another connection may have changed the schema since this statement was
        // prepared: SQLite prepares it again at its first step, so what `*` means (the
        // columns) is read from the statement as it runs, not as it was cached.
        let mut n = out.columns.len();
        let writes = !stmt.readonly();
        let mut rows = stmt.raw_query();
        let mut bytes = 0usize;
        while let Some(row) = rows.next()? {
            if out.rows.is_empty() {
                n = row.as_ref().column_count();
            }
            if out.rows.len() >= limits.max_rows {
                return Err(EngineError::TooLarge(format!(
                    "the result has more than {} rows; add a LIMIT or page with WHERE",
                    limits.max_rows
                )));
            }
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                let (v, size) = from_sql(row.get_ref(i)?);
                bytes += size;
                vals.push(v);
            }
            if bytes > limits.max_bytes {
                return Err(EngineError::TooLarge(format!(
                    "the result is larger than {} bytes",
                    limits.max_bytes
                )));
            }
            out.rows.push(vals);
        }
        // Only a writing statement that returns rows (INSERT … RETURNING) affected any.
        drop(rows);
        if stmt.column_count() != out.columns.len() {
            out.columns = stmt.column_names().map(String::from).collect();
        }
        out.rows_affected = if writes { conn.changes() } else { 0 };
    }
    out.last_insert_rowid = conn.last_insert_rowid();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ResultLimits = ResultLimits {
        max_rows: 100,
        max_bytes: 1 << 20,
    };

    fn stmt(sql: &str, params: Value) -> Stmt {
        Stmt {
            sql: sql.into(),
            params: Some(params),
        }
    }

    fn run(c: &Connection, s: &Stmt, limits: ResultLimits) -> Result<StmtResult> {
        super::run(
            c,
            StmtRef {
                sql: &s.sql,
                params: s.params.as_ref(),
            },
            limits,
        )
    }

    #[test]
    fn positional_and_named_parameters_and_typed_results() {
        let c = Connection::open_in_memory().unwrap();
        run(
            &c,
            &stmt(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, raw BLOB)",
                Value::Null,
            ),
            LIMITS,
        )
        .unwrap();
        let ins = run(
            &c,
            &stmt(
                "INSERT INTO t (name, score, raw) VALUES (?, ?, ?)",
                serde_json::json!(["ada", 1.5, {"base64": "AAE="}]),
            ),
            LIMITS,
        )
        .unwrap();
        assert_eq!((ins.rows_affected, ins.last_insert_rowid), (1, 1));
        run(
            &c,
            &stmt(
                "INSERT INTO t (name, score) VALUES (:name, :score)",
                serde_json::json!({"name": "bob", "score": 2}),
            ),
            LIMITS,
        )
        .unwrap();
        let r = run(
            &c,
            &stmt(
                "SELECT id, name, score, raw FROM t ORDER BY id",
                Value::Null,
            ),
            LIMITS,
        )
        .unwrap();
        assert_eq!(r.columns, vec!["id", "name", "score", "raw"]);
        assert_eq!(
            r.rows[0],
            vec![
                serde_json::json!(1),
                serde_json::json!("ada"),
                serde_json::json!(1.5),
                serde_json::json!({"base64": "AAE="})
            ]
        );
        assert_eq!(r.rows[1][3], Value::Null);
    }

    #[test]
    fn wrong_parameters_are_bad_requests() {
        let c = Connection::open_in_memory().unwrap();
        for (sql, p) in [
            ("SELECT ?", Value::Null),
            ("SELECT ?", serde_json::json!([1, 2])),
            ("SELECT :a", serde_json::json!({"b": 1})),
            ("SELECT ?", serde_json::json!([[1]])),
        ] {
            assert!(
                matches!(
                    run(&c, &stmt(sql, p.clone()), LIMITS),
                    Err(EngineError::BadRequest(_))
                ),
                "{sql} {p}"
            );
        }
        assert!(matches!(
            run(&c, &stmt("SELEC 1", Value::Null), LIMITS),
            Err(EngineError::Sql(_))
        ));
        assert!(matches!(
            run(&c, &stmt("SELECT 1; SELECT 2", Value::Null), LIMITS),
            Err(EngineError::Sql(_))
        ));
    }

    #[test]
    fn row_limit_is_enforced() {
        let c = Connection::open_in_memory().unwrap();
        let r = run(&c, &stmt("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n LIMIT 500) SELECT x FROM n", Value::Null), LIMITS);
        assert!(matches!(r, Err(EngineError::TooLarge(_))));
    }

    #[test]
    fn select_star_follows_a_column_another_connection_added() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let a = Connection::open(&path).unwrap();
        a.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let q = stmt("SELECT * FROM t", Value::Null);
        assert_eq!(run(&a, &q, LIMITS).unwrap().columns, ["x"]);
        let b = Connection::open(&path).unwrap();
        b.execute_batch("ALTER TABLE t ADD COLUMN y DEFAULT 2")
            .unwrap();
        // `a` has the statement cached from before the change.
        let r = run(&a, &q, LIMITS).unwrap();
        assert_eq!(r.columns, ["x", "y"]);
        assert_eq!(r.rows[0].len(), 2);
    }
}
