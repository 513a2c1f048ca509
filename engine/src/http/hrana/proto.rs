//! Hrana's JSON messages as the clients send them (`docs/HRANA_3_SPEC.md` in
//! `tursodatabase/libsql`). Unknown fields are ignored, as the spec asks; optional fields
//! may be absent or `null`.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// `null` or absent as the type's default (clients send `"args": null` and the like).
fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Body of `POST v2/pipeline` and `v3/pipeline`. Requests are parsed one by one, so one
/// unreadable request is an error result and the others still run.
#[derive(Debug, Deserialize)]
pub struct PipelineBody<'a> {
    /// The stream; `null` opens one.
    #[serde(default)]
    pub baton: Option<String>,
    /// The requests, in order.
    #[serde(borrow)]
    pub requests: Vec<&'a RawValue>,
}

/// Body of `POST v3/cursor`.
#[derive(Debug, Deserialize)]
pub struct CursorBody {
    /// The stream; `null` opens one.
    #[serde(default)]
    pub baton: Option<String>,
    /// The batch whose results stream back.
    pub batch: Batch,
}

/// A request on a stream (HTTP; over WebSocket the same with a `stream_id`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamRequest {
    /// Close the stream.
    Close,
    /// Run one statement.
    Execute {
        /// The statement.
        stmt: Stmt,
    },
    /// Run a batch of statements with conditions.
    Batch {
        /// The batch.
        batch: Batch,
    },
    /// Run several statements separated by semicolons, ignoring rows.
    Sequence {
        /// The SQL text.
        #[serde(default)]
        sql: Option<String>,
        /// Or a stored SQL text.
        #[serde(default)]
        sql_id: Option<i32>,
    },
    /// Parse a statement and describe its parameters and columns.
    Describe {
        /// The SQL text.
        #[serde(default)]
        sql: Option<String>,
        /// Or a stored SQL text.
        #[serde(default)]
        sql_id: Option<i32>,
    },
    /// Store an SQL text under an id.
    StoreSql {
        /// The id.
        sql_id: i32,
        /// The text.
        sql: String,
    },
    /// Forget a stored SQL text.
    CloseSql {
        /// The id.
        sql_id: i32,
    },
    /// Whether the stream is outside a transaction (Hrana 3).
    GetAutocommit,
}

impl StreamRequest {
    /// The request's `type`, which its response repeats.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Close => "close",
            StreamRequest::Execute { .. } => "execute",
            StreamRequest::Batch { .. } => "batch",
            StreamRequest::Sequence { .. } => "sequence",
            StreamRequest::Describe { .. } => "describe",
            StreamRequest::StoreSql { .. } => "store_sql",
            StreamRequest::CloseSql { .. } => "close_sql",
            StreamRequest::GetAutocommit => "get_autocommit",
        }
    }
}

/// A statement.
#[derive(Debug, Clone, Deserialize)]
pub struct Stmt {
    /// The SQL text.
    #[serde(default)]
    pub sql: Option<String>,
    /// Or a stored SQL text.
    #[serde(default)]
    pub sql_id: Option<i32>,
    /// Positional arguments.
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<Value>,
    /// Named arguments (with or without their `:`, `@` or `$`).
    #[serde(default, deserialize_with = "null_default")]
    pub named_args: Vec<NamedArg>,
    /// Whether rows are wanted (default true).
    #[serde(default)]
    pub want_rows: Option<bool>,
}

/// A named argument.
#[derive(Debug, Clone, Deserialize)]
pub struct NamedArg {
    /// The parameter's name.
    pub name: String,
    /// Its value.
    pub value: Value,
}

/// A batch: steps run in order, each when its condition holds.
#[derive(Debug, Clone, Deserialize)]
pub struct Batch {
    /// The steps.
    pub steps: Vec<BatchStep>,
}

/// One step of a batch.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchStep {
    /// Run only when this holds (always when absent).
    #[serde(default)]
    pub condition: Option<BatchCond>,
    /// The statement.
    pub stmt: Stmt,
}

/// A condition on earlier steps of a batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BatchCond {
    /// Step `step` ran and succeeded.
    Ok {
        /// Index of an earlier step.
        step: u32,
    },
    /// Step `step` ran and failed.
    Error {
        /// Index of an earlier step.
        step: u32,
    },
    /// The negation.
    Not {
        /// The condition negated.
        cond: Box<BatchCond>,
    },
    /// All of them.
    And {
        /// The conditions.
        conds: Vec<BatchCond>,
    },
    /// Any of them.
    Or {
        /// The conditions.
        conds: Vec<BatchCond>,
    },
    /// The stream is outside a transaction (Hrana 3).
    IsAutocommit,
}

/// A value, as Hrana encodes it in JSON.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Value {
    /// NULL.
    Null,
    /// A 64-bit integer, as a decimal string (a JSON number is accepted too).
    Integer {
        /// The integer.
        #[serde(deserialize_with = "integer")]
        value: i64,
    },
    /// A 64-bit float.
    Float {
        /// The float.
        value: f64,
    },
    /// UTF-8 text.
    Text {
        /// The text.
        value: String,
    },
    /// Bytes, base64 (padded or not).
    Blob {
        /// The bytes, base64-encoded.
        base64: String,
    },
}

fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("integer value {s:?} is not a 64-bit integer"))
        }),
    }
}

/// A message from a WebSocket client: `hello` (with `jwt`) or `request` (with
/// `request_id` and `request`). A plain struct, so the request stays raw and is parsed on
/// its own: a bad request gets an error response of its own.
#[derive(Debug, Deserialize)]
pub struct ClientMsg<'a> {
    /// `hello` or `request`.
    #[serde(rename = "type", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    /// The token (a JWT in libSQL; here, the database's token), for `hello`.
    #[serde(default)]
    pub jwt: Option<String>,
    /// Echoed in the response, for `request`.
    #[serde(default)]
    pub request_id: Option<i32>,
    /// The request.
    #[serde(default, borrow)]
    pub request: Option<&'a RawValue>,
}

/// A request over WebSocket.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsRequest {
    /// Open stream `stream_id`.
    OpenStream {
        /// The client's id for it.
        stream_id: i32,
    },
    /// Close stream `stream_id`.
    CloseStream {
        /// The stream.
        stream_id: i32,
    },
    /// Run one statement on a stream.
    Execute {
        /// The stream.
        stream_id: i32,
        /// The statement.
        stmt: Stmt,
    },
    /// Run a batch on a stream.
    Batch {
        /// The stream.
        stream_id: i32,
        /// The batch.
        batch: Batch,
    },
    /// Run a sequence on a stream.
    Sequence {
        /// The stream.
        stream_id: i32,
        /// The SQL text.
        #[serde(default)]
        sql: Option<String>,
        /// Or a stored SQL text.
        #[serde(default)]
        sql_id: Option<i32>,
    },
    /// Describe a statement on a stream.
    Describe {
        /// The stream.
        stream_id: i32,
        /// The SQL text.
        #[serde(default)]
        sql: Option<String>,
        /// Or a stored SQL text.
        #[serde(default)]
        sql_id: Option<i32>,
    },
    /// Store an SQL text for the connection.
    StoreSql {
        /// The id.
        sql_id: i32,
        /// The text.
        sql: String,
    },
    /// Forget a stored SQL text.
    CloseSql {
        /// The id.
        sql_id: i32,
    },
    /// Whether a stream is outside a transaction (Hrana 3).
    GetAutocommit {
        /// The stream.
        stream_id: i32,
    },
    /// Run a batch on a stream and read its results incrementally (Hrana 3).
    OpenCursor {
        /// The stream.
        stream_id: i32,
        /// The client's id for the cursor.
        cursor_id: i32,
        /// The batch.
        batch: Batch,
    },
    /// Close a cursor.
    CloseCursor {
        /// The cursor.
        cursor_id: i32,
    },
    /// Read entries from a cursor.
    FetchCursor {
        /// The cursor.
        cursor_id: i32,
        /// Entries wanted at most.
        max_count: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_the_clients_send_them() {
        let v: Vec<Value> = serde_json::from_str(
            r#"[{"type":"integer","value":"9007199254740993"},{"type":"integer","value":-3},
                {"type":"float","value":1},{"type":"text","value":"é"},{"type":"blob","base64":"AQI"},
                {"type":"null"}]"#,
        )
        .unwrap();
        assert_eq!(
            v,
            vec![
                Value::Integer {
                    value: 9_007_199_254_740_993
                },
                Value::Integer { value: -3 },
                Value::Float { value: 1.0 },
                Value::Text { value: "é".into() },
                Value::Blob {
                    base64: "AQI".into()
                },
                Value::Null,
            ]
        );
        assert!(serde_json::from_str::<Value>(r#"{"type":"integer","value":"1.5"}"#).is_err());
        assert!(serde_json::from_str::<Value>(
            r#"{"type":"integer","value":"99999999999999999999"}"#
        )
        .is_err());
    }

    #[test]
    fn statements_accept_nulls_and_absent_fields() {
        let s: Stmt = serde_json::from_str(
            r#"{"sql":"SELECT 1;","sql_id":null,"args":null,"replication_index":null}"#,
        )
        .unwrap();
        assert!(s.args.is_empty() && s.named_args.is_empty() && s.want_rows.is_none());
        let r: StreamRequest = serde_json::from_str(
            r#"{"type":"batch","batch":{"steps":[{"condition":null,"stmt":{"sql":"BEGIN"}},
                {"condition":{"type":"not","cond":{"type":"ok","step":0}},"stmt":{"sql":"ROLLBACK"}}]}}"#,
        )
        .unwrap();
        assert_eq!(r.kind(), "batch");
        assert!(serde_json::from_str::<StreamRequest>(r#"{"type":"frobnicate"}"#).is_err());
    }
}
