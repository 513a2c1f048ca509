//! Hrana's `Error {message, code}`: what a driver shows its application. SQLite's own
//! failures carry SQLite's code (`SQLITE_CONSTRAINT`, …), as libSQL's server sends them;
//! the engine's refusals carry a code that names the limit or rule that refused.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::EngineError;

/// A Hrana error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HranaError {
    /// Machine-readable code.
    pub code: Cow<'static, str>,
    /// What happened, for a person.
    pub message: String,
}

impl HranaError {
    /// An error with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        HranaError {
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }

    /// A request that does not follow the protocol.
    pub fn protocol(message: impl Into<String>) -> Self {
        HranaError::new("PROTOCOL_ERROR", message)
    }

    /// Whether this is a plain SQLITE_BUSY, which a later attempt may get past.
    pub fn is_busy(&self) -> bool {
        self.code == "SQLITE_BUSY"
    }

    /// Write `{"message": …, "code": …}`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"message\":");
        super::encode::string(out, &self.message);
        out.extend_from_slice(b",\"code\":");
        super::encode::string(out, &self.code);
        out.push(b'}');
    }

    /// The HTTP response when the stream itself is gone or the request is refused whole:
    /// `{message, code, error}` as `application/json` (the JS client reads the first two,
    /// the Go client the third).
    pub fn http(&self, status: StatusCode) -> Response {
        let body = serde_json::json!({
            "message": self.message,
            "code": self.code,
            "error": format!("{}: {}", self.code, self.message),
        });
        (status, axum::Json(body)).into_response()
    }
}

impl From<EngineError> for HranaError {
    fn from(e: EngineError) -> Self {
        let code = match &e {
            EngineError::BadRequest(_) => "ARGS_INVALID",
            EngineError::Unauthorized(_) => "UNAUTHORIZED",
            EngineError::Forbidden(_) => "FORBIDDEN",
            EngineError::Lockdown(_) => "LOCKDOWN",
            EngineError::NotFound(_) => "NOT_FOUND",
            EngineError::Conflict(_) => "CONFLICT",
            EngineError::UnsupportedMediaType(_) => "PROTOCOL_ERROR",
            EngineError::TooLarge(_) => "RESPONSE_TOO_LARGE",
            EngineError::RateLimited(_) => "RATE_LIMITED",
            EngineError::TooManySessions(_) => "CONNECTION_LIMIT",
            EngineError::Timeout(_) => "STATEMENT_TIMEOUT",
            EngineError::CpuBudget(_) => "STATEMENT_CPU_BUDGET",
            EngineError::MemoryBudget(_) => "MEMORY_BUDGET",
            EngineError::InsufficientStorage(_) => "STORAGE_QUOTA",
            EngineError::Busy(_) => "SQLITE_BUSY",
            EngineError::NotAcknowledged(_) => "NOT_ACKNOWLEDGED",
            EngineError::Unavailable(_) => "UNAVAILABLE",
            EngineError::Sql(_) => "SQLITE_ERROR",
            EngineError::Internal(_) => "INTERNAL",
            EngineError::BackupStore(_) => "BACKUP_STORE",
        };
        HranaError::new(code, e.to_string())
    }
}

/// SQLite's name of a primary result code.
fn sqlite_code(code: rusqlite::ErrorCode) -> &'static str {
    use rusqlite::ErrorCode as C;
    match code {
        C::InternalMalfunction => "SQLITE_INTERNAL",
        C::PermissionDenied => "SQLITE_PERM",
        C::OperationAborted => "SQLITE_ABORT",
        C::DatabaseBusy => "SQLITE_BUSY",
        C::DatabaseLocked => "SQLITE_LOCKED",
        C::OutOfMemory => "SQLITE_NOMEM",
        C::ReadOnly => "SQLITE_READONLY",
        C::OperationInterrupted => "SQLITE_INTERRUPT",
        C::SystemIoFailure => "SQLITE_IOERR",
        C::DatabaseCorrupt => "SQLITE_CORRUPT",
        C::NotFound => "SQLITE_NOTFOUND",
        C::DiskFull => "SQLITE_FULL",
        C::CannotOpen => "SQLITE_CANTOPEN",
        C::FileLockingProtocolFailed => "SQLITE_PROTOCOL",
        C::SchemaChanged => "SQLITE_SCHEMA",
        C::TooBig => "SQLITE_TOOBIG",
        C::ConstraintViolation => "SQLITE_CONSTRAINT",
        C::TypeMismatch => "SQLITE_MISMATCH",
        C::ApiMisuse => "SQLITE_MISUSE",
        C::NoLargeFileSupport => "SQLITE_NOLFS",
        C::AuthorizationForStatementDenied => "SQLITE_AUTH",
        C::ParameterOutOfRange => "SQLITE_RANGE",
        C::NotADatabase => "SQLITE_NOTADB",
        _ => "SQLITE_ERROR",
    }
}

/// A statement's failure: the engine's refusals (lockdown, budgets, storage quota, memory)
/// by the engine's code, everything else by SQLite's.
pub fn from_statement(e: EngineError, sqlite: Option<&rusqlite::Error>) -> HranaError {
    let engine_refusal = matches!(
        e,
        EngineError::Lockdown(_)
            | EngineError::Timeout(_)
            | EngineError::CpuBudget(_)
            | EngineError::InsufficientStorage(_)
            | EngineError::MemoryBudget(_)
            | EngineError::TooLarge(_)
            | EngineError::BadRequest(_)
            | EngineError::Busy(_)
            | EngineError::NotAcknowledged(_)
    );
    match sqlite {
        Some(rusqlite::Error::SqliteFailure(f, msg)) if !engine_refusal => HranaError::new(
            sqlite_code(f.code),
            msg.clone().unwrap_or_else(|| f.to_string()),
        ),
        Some(rusqlite::Error::SqlInputError { msg, .. }) if !engine_refusal => {
            HranaError::new("SQLITE_ERROR", msg.clone())
        }
        _ => e.into(),
    }
}
