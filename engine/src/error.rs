//! Every way an engine operation can fail, and the HTTP status each one maps to.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An engine error: what went wrong, phrased for the caller.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed or names something invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or unknown ones (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials that may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// A lockdown rule refused the statement (403).
    #[error("{0}")]
    Lockdown(String),
    /// No such database, archive or profile (404).
    #[error("{0}")]
    NotFound(String),
    /// The object is in a state that does not allow this (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is not JSON (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A body or result over its limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// Over the request rate (429).
    #[error("{0}")]
    RateLimited(String),
    /// The statement needs more memory than the engine's SQLite heap budget (503).
    #[error("{0}")]
    MemoryBudget(String),
    /// Every concurrent session the tier allows is in use (429).
    #[error("{0}")]
    TooManySessions(String),
    /// The statement ran past its time budget and was interrupted (408).
    #[error("{0}")]
    Timeout(String),
    /// The statement used more CPU time than its budget and was interrupted (408).
    #[error("{0}")]
    CpuBudget(String),
    /// Over a storage quota (507).
    #[error("{0}")]
    InsufficientStorage(String),
    /// SQL the database refused (syntax, constraint, type) (400).
    #[error("{0}")]
    Sql(String),
    /// Another session holds the write lock (409); the statement did not run and may be
    /// run again.
    #[error("{0}")]
    Busy(String),
    /// The commit happened on this member and was not acknowledged: it is not known to
    /// be on a standby, or this member is no longer the primary (503).
    #[error("{0}")]
    NotAcknowledged(String),
    /// This member does not serve that now (a standby, a member waiting for its role): 503.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the engine itself (500).
    #[error("{0}")]
    Internal(String),
    /// The backup store failed or could not be reached (502).
    #[error("{0}")]
    BackupStore(String),
}

impl From<crate::names::InvalidName> for EngineError {
    fn from(e: crate::names::InvalidName) -> Self {
        EngineError::BadRequest(e.to_string())
    }
}

impl EngineError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            EngineError::BadRequest(_) | EngineError::Sql(_) => StatusCode::BAD_REQUEST,
            EngineError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            EngineError::Forbidden(_) | EngineError::Lockdown(_) => StatusCode::FORBIDDEN,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Conflict(_) | EngineError::Busy(_) => StatusCode::CONFLICT,
            EngineError::NotAcknowledged(_) | EngineError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            EngineError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EngineError::RateLimited(_) | EngineError::TooManySessions(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            EngineError::Timeout(_) | EngineError::CpuBudget(_) => StatusCode::REQUEST_TIMEOUT,
            EngineError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::BackupStore(_) => StatusCode::BAD_GATEWAY,
            EngineError::MemoryBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::BadRequest(_) => "bad_request",
            EngineError::Sql(_) => "sql_error",
            EngineError::Unauthorized(_) => "unauthorized",
            EngineError::Forbidden(_) => "forbidden",
            EngineError::Lockdown(_) => "lockdown",
            EngineError::NotFound(_) => "not_found",
            EngineError::Conflict(_) => "conflict",
            EngineError::Busy(_) => "busy",
            EngineError::NotAcknowledged(_) => "not_acknowledged",
            EngineError::Unavailable(_) => "unavailable",
            EngineError::TooLarge(_) => "too_large",
            EngineError::UnsupportedMediaType(_) => "unsupported_media_type",
            EngineError::RateLimited(_) => "rate_limited",
            EngineError::TooManySessions(_) => "connection_limit",
            EngineError::Timeout(_) => "statement_timeout",
            EngineError::CpuBudget(_) => "statement_cpu_budget",
            EngineError::InsufficientStorage(_) => "storage_quota",
            EngineError::Internal(_) => "internal",
            EngineError::BackupStore(_) => "backup_store",
            EngineError::MemoryBudget(_) => "memory_budget",
        }
    }

    /// An internal error from anything displayable.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        EngineError::Internal(e.to_string())
    }
}

impl From<std::io::Error> for EngineError {
    fn from(e: std::io::Error) -> Self {
        EngineError::Internal(format!("io: {e}"))
    }
}

impl From<rusqlite::Error> for EngineError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        let mut not_acked: Option<String> = None;
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == ErrorCode::Unknown
                    && crate::replication::take_not_acknowledged()
                        .map(|why| not_acked = Some(why))
                        .is_some() =>
            {
                EngineError::NotAcknowledged(not_acked.take().unwrap_or_default())
            }
            rusqlite::Error::SqliteFailure(f, msg) => match f.code {
                ErrorCode::AuthorizationForStatementDenied => EngineError::Lockdown(format!(
                    "not allowed: {}",
                    msg.clone().unwrap_or_else(|| "statement refused".into())
                )),
                ErrorCode::OperationInterrupted => EngineError::Timeout(
                    "the statement exceeded its time budget and was interrupted".into(),
                ),
                ErrorCode::DiskFull => {
                    EngineError::InsufficientStorage("the database is at its storage quota".into())
                }
                ErrorCode::OutOfMemory => EngineError::MemoryBudget(
                    "the statement needs more memory than the engine's budget (derived from its memory limit); make it smaller, or raise the tier's memory"
                        .into(),
                ),
                ErrorCode::ReadOnly => {
                    EngineError::Conflict("the database is open read-only".into())
                }
                // Plain SQLITE_BUSY: the lock was held, nothing ran, a retry can succeed.
                // BUSY_SNAPSHOT and the like cannot: the transaction must start again.
                ErrorCode::DatabaseBusy if f.extended_code == rusqlite::ffi::SQLITE_BUSY => {
                    EngineError::Busy(format!("the database is busy: {e}"))
                }
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    EngineError::Conflict(format!("the database is busy: {e}"))
                }
                ErrorCode::ConstraintViolation
                | ErrorCode::TypeMismatch
                | ErrorCode::TooBig
                | ErrorCode::ApiMisuse
                | ErrorCode::Unknown => EngineError::Sql(e.to_string()),
                _ => EngineError::Internal(e.to_string()),
            },
            rusqlite::Error::SqlInputError { error, msg, .. }
                if error.code == ErrorCode::AuthorizationForStatementDenied =>
            {
                EngineError::Lockdown(msg.clone())
            }
            rusqlite::Error::SqlInputError { .. }
            | rusqlite::Error::InvalidParameterCount(..)
            | rusqlite::Error::InvalidParameterName(_)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::MultipleStatement => EngineError::Sql(e.to_string()),
            _ => EngineError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        if matches!(self, EngineError::Internal(_)) {
            tracing::error!(error = %self, "internal error");
        }
        (
            self.status(),
            Json(json!({"code": self.code(), "message": self.to_string()})),
        )
            .into_response()
    }
}

/// Result of an engine operation.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<crate::backup::restore::RestoreError> for EngineError {
    fn from(e: crate::backup::restore::RestoreError) -> Self {
        use crate::backup::restore::RestoreError as R;
        match e {
            R::NoBackup(_) => EngineError::NotFound(e.to_string()),
            R::OutsideWindow { .. } => EngineError::BadRequest(e.to_string()),
            R::Store(crate::backup::store::StoreError::NotFound(_)) => {
                EngineError::NotFound(e.to_string())
            }
            R::Store(_) => EngineError::BackupStore(e.to_string()),
            R::Damaged(..) | R::Io(_) => EngineError::Internal(e.to_string()),
        }
    }
}
