//! Hrana, libSQL's remote protocol, for every database of the engine: what the libSQL
//! drivers (`@libsql/client`, `libsql-client-go`, the `libsql` crate and Python package)
//! and the ORMs on them speak. A database's URL is `…/db/<name>/`:
//! - `GET v2`, `GET v3`: the versions spoken;
//! - `POST v2/pipeline`, `POST v3/pipeline`: requests on a stream, named by a baton;
//! - `POST v3/cursor`: a batch whose results stream back as NDJSON;
//! - a WebSocket at the URL itself (subprotocols `hrana3`, `hrana2`, `hrana1`).
//!
//! Requests run on the engine's one execution path, under the same tokens, lockdown,
//! limits and metering as the JSON API.

pub mod baton;
mod cond;
pub mod cursor;
pub mod encode;
pub mod error;
pub mod exec;
pub mod pipeline;
pub mod proto;
mod values;
pub mod ws;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

use self::error::HranaError;
use super::EngineState;
use crate::engine::streams::{Missing, Stream, StreamKind, StreamState};
use crate::error::EngineError;
use crate::pdb::{Caller, Pdb};

/// How long a read may run on an async thread before it moves to a worker.
pub const INLINE_CAP: Duration = Duration::from_millis(2);
/// How long a statement waits for another stream's write lock before it fails with
/// SQLITE_BUSY (SQLite's own busy timeout in the JSON API).
pub const BUSY_WAIT: Duration = Duration::from_millis(crate::pdb::BUSY_TIMEOUT_MS as u64);

/// The Hrana routes.
pub fn routes() -> Router<Arc<EngineState>> {
    Router::new()
        .route("/db/{pdb}", get(ws::upgrade))
        .route("/db/{pdb}/", get(ws::upgrade))
        .route("/db/{pdb}/v2", get(|| async { "Hrana 2 over HTTP (JSON)" }))
        .route("/db/{pdb}/v3", get(|| async { "Hrana 3 over HTTP (JSON)" }))
        .route("/db/{pdb}/v2/pipeline", post(pipeline::v2))
        .route("/db/{pdb}/v3/pipeline", post(pipeline::v3))
        .route("/db/{pdb}/v3/cursor", post(cursor::v3))
}

/// What the fallback says of a path that looks like a database URL without its
/// trailing slash (`@libsql/client` then drops the database's name).
pub fn missing_slash(path: &str) -> Option<EngineError> {
    let rest = path.strip_prefix("/db/")?;
    matches!(rest, "v2" | "v3" | "v2/pipeline" | "v3/pipeline" | "v3/cursor").then(|| {
        EngineError::NotFound(format!(
            "{path} names no database: a database URL ends with a slash, as in /db/<name>/ (clients resolve v2/pipeline relative to it)"
        ))
    })
}

/// The caller and the database for a Hrana request with `token`, or the refusal. A
/// refused request is counted apart and never billed to the database.
pub fn authorize(
    s: &EngineState,
    token: Option<&str>,
    db: &str,
    plane: &str,
) -> Result<(Caller, Arc<Pdb>), EngineError> {
    let caller = super::auth::admit_data(s, token, db, plane)?;
    Ok((caller, s.engine.get(db)?))
}

/// The key a stream's owner is known by: a keyed hash of the token.
pub fn owner_of(s: &EngineState, token: Option<&str>) -> u64 {
    s.owner_hasher.hash_one(token.unwrap_or(""))
}

/// The stream a baton names, checked: signed here for `db`, open, the caller's, and
/// this request's turn (the baton moves on, so it is used once).
pub fn stream_of(
    s: &EngineState,
    db: &str,
    baton: &str,
    owner: u64,
) -> Result<Arc<Stream>, HranaError> {
    let invalid = || {
        HranaError::new(
            "BATON_INVALID",
            "the baton is not one this engine issued for this database; open a new stream (baton null)",
        )
    };
    let (id, seq) = s.batons.open(db, baton).map_err(|_| invalid())?;
    let stream = s.engine.streams.get(id).map_err(|m| match m {
        Missing::Expired => HranaError::new(
            "STREAM_EXPIRED",
            "the stream expired after being idle; its open transaction was rolled back",
        ),
        Missing::Unknown => invalid(),
    })?;
    if stream.database != db || stream.owner != owner || stream.kind != StreamKind::Http {
        return Err(invalid());
    }
    if let Some(why) = stream.ended() {
        return Err(HranaError::new("STREAM_CLOSED", why.error(db).to_string()));
    }
    stream
        .seq
        .compare_exchange(
            seq,
            seq + 1,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        )
        .map_err(|_| {
            HranaError::new(
                "BATON_REUSED",
                "the baton was already used: send the one from the last response",
            )
        })?;
    Ok(stream)
}

/// Open a stream on `pdb` for `caller` and register it.
pub fn open_stream(
    s: &EngineState,
    pdb: &Arc<Pdb>,
    caller: Caller,
    owner: u64,
    kind: StreamKind,
) -> Result<Arc<Stream>, EngineError> {
    let state = stream_state(s, pdb, caller)?;
    Ok(s.engine.streams.open(&pdb.name, owner, kind, state))
}

/// A stream's state on `pdb` for `caller`: a session on its own connection, holding one
/// of the tier's connections until it is dropped.
pub fn stream_state(
    s: &EngineState,
    pdb: &Arc<Pdb>,
    caller: Caller,
) -> Result<Box<StreamState>, EngineError> {
    let slot = s.sessions.acquire()?;
    let rules = pdb.rules();
    let mut session = pdb.session_with(caller, &rules)?;
    // A stream waits for another stream's write lock without holding a thread.
    session.set_busy_timeout(0)?;
    pdb.meter.record_work(&crate::metering::Work {
        session: true,
        ..Default::default()
    });
    Ok(StreamState::new(session, slot))
}
