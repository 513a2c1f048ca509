//! Binding a Hrana statement's arguments (positional and named) to a prepared statement,
//! finding its SQL text (inline or stored), and naming its failure.

use std::sync::Arc;

use rusqlite::types::Value as SqlValue;
use rusqlite::Statement;

use super::error::{from_statement, HranaError};
use super::proto::{Stmt, Value};
use crate::error::EngineError;
use crate::pdb::Session;

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
