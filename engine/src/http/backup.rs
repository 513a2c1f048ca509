//! Backup on the admin plane: a database's backup status, a checkpoint on demand, the
//! recoverable windows the store holds, and creating a database by restore.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{blocking, EngineState};
use crate::backup::{layout, restore, Backup};
use crate::engine::CreateRequest;
use crate::error::{EngineError, Result};

/// Backup routes (mounted inside the admin plane, behind its token).
pub fn routes() -> Router<Arc<EngineState>> {
    Router::new()
        .route("/v1/databases/{pdb}/backup", get(status))
        .route("/v1/databases/{pdb}/backup/checkpoint", post(checkpoint))
        .route("/v1/databases/{pdb}/backup/snapshot", post(snapshot))
        .route("/v1/backups/{tenant}", get(databases))
        .route("/v1/backups/{tenant}/{database}", get(windows))
}

fn backup(s: &EngineState) -> Result<&Arc<Backup>> {
    s.engine
        .backup
        .as_ref()
        .ok_or_else(|| EngineError::Conflict("backup is not configured for this engine".into()))
}

async fn status(State(s): State<Arc<EngineState>>, Path(pdb): Path<String>) -> Result<Response> {
    s.engine.get(&pdb)?;
    let st = backup(&s)?
        .status(&pdb)
        .ok_or_else(|| EngineError::NotFound(format!("no backup runs for database {pdb}")))?;
    Ok(Json(st).into_response())
}

async fn checkpoint(
    State(s): State<Arc<EngineState>>,
    Path(pdb): Path<String>,
) -> Result<Response> {
    s.engine.get(&pdb)?;
    if !backup(&s)?.checkpoint(&pdb) {
        return Err(EngineError::NotFound(format!(
            "no backup runs for database {pdb}"
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"checkpoint": "requested"})),
    )
        .into_response())
}

async fn snapshot(State(s): State<Arc<EngineState>>, Path(pdb): Path<String>) -> Result<Response> {
    s.engine.get(&pdb)?;
    if !backup(&s)?.snapshot_now(&pdb) {
        return Err(EngineError::NotFound(format!(
            "no backup runs for database {pdb}"
        )));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"snapshot": "requested"}))).into_response())
}

async fn windows(
    State(s): State<Arc<EngineState>>,
    Path((tenant, database)): Path<(String, String)>,
) -> Result<Response> {
    crate::names::validate("tenant", &tenant)?;
    crate::names::validate("database", &database)?;
    let gens = restore::list(backup(&s)?.store(), &tenant, &database)
        .await
        .map_err(|e| EngineError::BackupStore(e.to_string()))?;
    let window = layout::window(&gens).map(|(a, b)| json!({"firstMs": a, "lastMs": b}));
    Ok(
        Json(
            json!({"tenant": tenant, "database": database, "window": window, "generations": gens}),
        )
        .into_response(),
    )
}

/// Every database the store holds for `tenant` (live, dropped, or of a tenant that is
/// gone), each with its recoverable window.
async fn databases(
    State(s): State<Arc<EngineState>>,
    Path(tenant): Path<String>,
) -> Result<Response> {
    crate::names::validate("tenant", &tenant)?;
    let keys = backup(&s)?
        .store()
        .list(&tenant)
        .await
        .map_err(|e| EngineError::BackupStore(e.to_string()))?;
    let mut by_db: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let prefix = format!("{tenant}/");
    for k in &keys {
        let rel = k.strip_prefix(&prefix).unwrap_or(k);
        if let Some((db, rest)) = rel.split_once('/') {
            by_db
                .entry(db.to_string())
                .or_default()
                .push(rest.to_string());
        }
    }
    let databases: Vec<serde_json::Value> = by_db
        .into_iter()
        .map(|(db, rel)| {
            let gens = layout::group(&rel);
            let window = layout::window(&gens).map(|(a, b)| json!({"firstMs": a, "lastMs": b}));
            json!({"database": db, "window": window, "generations": gens.len()})
        })
        .collect();
    Ok(Json(json!({"tenant": tenant, "databases": databases})).into_response())
}

/// Create `req` (whose source is a restore): unless it already exists as asked, rebuild
/// the backup into a scratch file, then register it as a new database.
pub async fn create_by_restore(
    s: &Arc<EngineState>,
    req: CreateRequest,
) -> Result<(crate::engine::PdbInfo, bool)> {
    crate::names::validate("database", &req.name)?;
    let Some(r) = req.source.as_ref().and_then(|src| src.restore.clone()) else {
        return Err(EngineError::BadRequest("no restore source".into()));
    };
    let b = backup(s)?.clone();
    let tenant = r.tenant.clone().unwrap_or_else(|| b.tenant().to_string());
    crate::names::validate("tenant", &tenant)?;
    crate::names::validate("database", &r.database)?;
    let point = match &r.point_in_time {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    EngineError::BadRequest(format!("pointInTime {t:?} is not RFC 3339: {e}"))
                })?
                .timestamp_millis(),
        ),
    };
    let probe = req.clone();
    if let Some(info) = blocking(s, move |e| e.existing(&probe)).await? {
        return Ok((info, false));
    }
    let scratch = s.engine.scratch_path(&req.name);
    let report = restore::restore(b.store(), &tenant, &r.database, point, &scratch).await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let _ = crate::files::remove_db(&scratch);
            return Err(e.into());
        }
    };
    tracing::info!(database = %req.name, from = %format!("{tenant}/{}", r.database), ?report, "restored");
    blocking(s, move |e| e.create_restored(req, scratch)).await
}
