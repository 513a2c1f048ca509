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

/// A pipeline body whose every request is readable: parsed in one pass, the usual case
/// (else [`PipelineBody`] parses the requests one by one, so a bad one fails alone).
#[derive(Debug, Deserialize)]
pub struct ReadablePipeline {
    /// The stream; `null` opens one.
    #[serde(default)]
    pub baton: Option<String>,
    /// The requests, in order.
    pub requests: Vec<StreamRequest>,
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
#[derive(Debug)]
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
        sql: Option<String>,
        /// Or a stored SQL text.
        sql_id: Option<i32>,
    },
    /// Parse a statement and describe its parameters and columns.
    Describe {
        /// The SQL text.
        sql: Option<String>,
        /// Or a stored SQL text.
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

/// Every field any request has: parsed as a plain struct (serde's internally tagged
/// enums buffer the whole value first, a cost on every request), then checked.
#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    stmt: Option<Stmt>,
    #[serde(default)]
    batch: Option<Batch>,
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    sql_id: Option<i32>,
    #[serde(default)]
    stream_id: Option<i32>,
    #[serde(default)]
    cursor_id: Option<i32>,
    #[serde(default)]
    max_count: Option<u32>,
}

fn missing<E: serde::de::Error>(kind: &str, field: &str) -> E {
    E::custom(format!("a {kind} request needs {field}"))
}

impl WireRequest<'_> {
    fn stmt<E: serde::de::Error>(&mut self) -> Result<Stmt, E> {
        self.stmt.take().ok_or_else(|| missing(&self.kind, "stmt"))
    }
    fn batch<E: serde::de::Error>(&mut self) -> Result<Batch, E> {
        self.batch
            .take()
            .ok_or_else(|| missing(&self.kind, "batch"))
    }
    fn sql_text<E: serde::de::Error>(&mut self) -> Result<String, E> {
        self.sql.take().ok_or_else(|| missing(&self.kind, "sql"))
    }
    fn id<E: serde::de::Error>(&self, v: Option<i32>, field: &str) -> Result<i32, E> {
        v.ok_or_else(|| missing(&self.kind, field))
    }
    /// The stream request this is, if it is one.
    fn stream_request<E: serde::de::Error>(&mut self) -> Result<Option<StreamRequest>, E> {
        Ok(Some(match &*self.kind {
            "close" => StreamRequest::Close,
            "execute" => StreamRequest::Execute { stmt: self.stmt()? },
            "batch" => StreamRequest::Batch {
                batch: self.batch()?,
            },
            "sequence" => StreamRequest::Sequence {
                sql: self.sql.take(),
                sql_id: self.sql_id,
            },
            "describe" => StreamRequest::Describe {
                sql: self.sql.take(),
                sql_id: self.sql_id,
            },
            "store_sql" => StreamRequest::StoreSql {
                sql_id: self.id(self.sql_id, "sql_id")?,
                sql: self.sql_text()?,
            },
            "close_sql" => StreamRequest::CloseSql {
                sql_id: self.id(self.sql_id, "sql_id")?,
            },
            "get_autocommit" => StreamRequest::GetAutocommit,
            _ => return Ok(None),
        }))
    }
}

impl<'de> Deserialize<'de> for StreamRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut w = WireRequest::deserialize(d)?;
        w.stream_request()?
            .ok_or_else(|| serde::de::Error::custom(format!("unknown request type {:?}", w.kind)))
    }
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
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// A 64-bit integer, as a decimal string (a JSON number is accepted too).
    Integer {
        /// The integer.
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

/// Values are most of a request, so they are read by hand: `type`, then `value` (or
/// `base64`) read as the type says, in one pass; a `value` seen before its `type` is
/// kept raw and read once the type is known.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ValueVisitor)
    }
}

struct ValueVisitor;

/// An integer as Hrana sends it: a decimal string (or, leniently, a JSON number).
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a 64-bit integer as a decimal string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Int, E> {
                s.trim()
                    .parse()
                    .map(Int)
                    .map_err(|_| E::custom(format!("integer value {s:?} is not a 64-bit integer")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("integer value {v} is not a 64-bit integer")))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Hrana value {\"type\": …}")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        use serde::de::Error;
        let mut kind: Option<std::borrow::Cow<'de, str>> = None;
        let mut value: Option<Value> = None;
        let mut early: Option<&'de RawValue> = None;
        let mut base64: Option<String> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match (&*key, kind.as_deref()) {
                ("type", _) => kind = Some(map.next_value()?),
                ("value", Some("integer")) => {
                    value = Some(Value::Integer {
                        value: map.next_value::<Int>()?.0,
                    })
                }
                ("value", Some("float")) => {
                    value = Some(Value::Float {
                        value: map.next_value()?,
                    })
                }
                ("value", Some("text")) => {
                    value = Some(Value::Text {
                        value: map.next_value()?,
                    })
                }
                ("value", _) => early = Some(map.next_value()?),
                ("base64", _) => base64 = Some(map.next_value()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("type"))?;
        let raw = |what: &str| {
            early
                .map(RawValue::get)
                .ok_or_else(|| A::Error::custom(format!("a {what} value needs value")))
        };
        Ok(match (&*kind, value) {
            (_, Some(v)) => v,
            ("null", None) => Value::Null,
            ("integer", None) => Value::Integer {
                value: serde_json::from_str::<Int>(raw("integer")?)
                    .map_err(A::Error::custom)?
                    .0,
            },
            ("float", None) => Value::Float {
                value: serde_json::from_str(raw("float")?).map_err(A::Error::custom)?,
            },
            ("text", None) => Value::Text {
                value: serde_json::from_str(raw("text")?).map_err(A::Error::custom)?,
            },
            ("blob", None) => Value::Blob {
                base64: base64.ok_or_else(|| A::Error::missing_field("base64"))?,
            },
            (other, None) => return Err(A::Error::custom(format!("unknown value type {other:?}"))),
        })
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

/// A request over WebSocket: a stream request with the stream it is for, or one of the
/// connection's own.
#[derive(Debug)]
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
    /// A request on stream `stream_id` (`store_sql` and `close_sql` belong to the
    /// connection: their `stream_id` is ignored).
    Stream {
        /// The stream.
        stream_id: i32,
        /// The request.
        request: StreamRequest,
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

impl<'de> Deserialize<'de> for WsRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut w = WireRequest::deserialize(d)?;
        let stream = |w: &WireRequest<'_>| w.id::<D::Error>(w.stream_id, "stream_id");
        let cursor = |w: &WireRequest<'_>| w.id::<D::Error>(w.cursor_id, "cursor_id");
        Ok(match &*w.kind {
            "open_stream" => WsRequest::OpenStream {
                stream_id: stream(&w)?,
            },
            "close_stream" => WsRequest::CloseStream {
                stream_id: stream(&w)?,
            },
            "open_cursor" => WsRequest::OpenCursor {
                stream_id: stream(&w)?,
                cursor_id: cursor(&w)?,
                batch: w.batch()?,
            },
            "close_cursor" => WsRequest::CloseCursor {
                cursor_id: cursor(&w)?,
            },
            "fetch_cursor" => WsRequest::FetchCursor {
                cursor_id: cursor(&w)?,
                max_count: w.max_count.unwrap_or(1000),
            },
            // A stream request; the connection's store_sql and close_sql name no stream.
            "store_sql" | "close_sql" => WsRequest::Stream {
                stream_id: w.stream_id.unwrap_or(0),
                request: w
                    .stream_request()?
                    .ok_or_else(|| missing(&w.kind, "a known type"))?,
            },
            "close" => {
                return Err(serde::de::Error::custom(
                    "over WebSocket, close a stream with close_stream",
                ))
            }
            _ => {
                let stream_id = stream(&w)?;
                match w.stream_request()? {
                    Some(request) => WsRequest::Stream { stream_id, request },
                    None => {
                        return Err(serde::de::Error::custom(format!(
                            "unknown request type {:?}",
                            w.kind
                        )))
                    }
                }
            }
        })
    }
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
        // Any key order, unknown keys ignored.
        assert_eq!(
            serde_json::from_str::<Value>(r#"{"value":"-5","x":1,"type":"integer"}"#).unwrap(),
            Value::Integer { value: -5 }
        );
        assert_eq!(
            serde_json::from_str::<Value>(r#"{"value":"a\"b","type":"text"}"#).unwrap(),
            Value::Text {
                value: "a\"b".into()
            }
        );
        assert!(serde_json::from_str::<Value>(r#"{"type":"date","value":"x"}"#).is_err());
        assert!(serde_json::from_str::<Value>(r#"{"type":"blob"}"#).is_err());
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
