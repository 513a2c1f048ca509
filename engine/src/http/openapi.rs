//! The OpenAPI document served at `/openapi.json`: the routes, from one table (which
//! a test checks against the router), with schemas generated from the Rust types by schemars.

use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::catalog::{ArchiveRecord, OpenMode};
use crate::cgroup::{CpuLimit, MemoryLimit};
use crate::engine::{CloseMode, CreateRequest, Manifest, PdbInfo};
use crate::isolation::{IoReport, NetworkReport};
use crate::lockdown::LockdownRules;
use crate::query::{QueryRequest, StmtResult};
use crate::reports::{Bill, SlaReport, UsageReport};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (health, metrics, isolation figures).
    None,
    /// The admin token.
    Admin,
    /// The admin token or a data token valid for the database.
    Data,
}

/// One documented route: method, path, summary, request schema, response schema, auth.
pub type Route = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Auth,
);

/// Every route the engine serves.
pub const ROUTES: &[Route] = &[
    ("get", "/healthz", "Liveness", None, None, Auth::None),
    ("get", "/readyz", "Readiness", None, None, Auth::None),
    (
        "get",
        "/metrics",
        "Prometheus metrics",
        None,
        None,
        Auth::None,
    ),
    (
        "get",
        "/openapi.json",
        "This document",
        None,
        None,
        Auth::None,
    ),
    (
        "get",
        "/v1/status",
        "Tenant, limits, databases by state, uptime, SLA summary and statistics (storage growth, peak requests per minute, average response time, error rate)",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/isolation/cpu",
        "CPU limit read from the cgroup (`limit`), tenant priority, concurrent sessions (max, active, refused), the worker pool, the statement time and CPU budgets with the statements each interrupted, and the tenant's own cgroup when the engine made one",
        None,
        None,
        Auth::None,
    ),
    (
        "get",
        "/v1/isolation/memory",
        "Memory limit read from the cgroup (`limit`), the page cache per connection and the SQLite heap limit derived from it, and the heap in use",
        None,
        None,
        Auth::None,
    ),
    (
        "get",
        "/v1/isolation/io",
        "Storage IO limits (IOPS, bytes a second): the mechanisms enforcing them, use, tokens and throttled counts",
        None,
        Some("IoReport"),
        Auth::None,
    ),
    (
        "get",
        "/v1/isolation/network",
        "Network bandwidth limit over data-plane bodies, bytes in and out, throttled counts",
        None,
        Some("NetworkReport"),
        Auth::None,
    ),
    (
        "get",
        "/v1/isolation/cache",
        "Page-cache budget per connection and the connections holding one now",
        None,
        None,
        Auth::None,
    ),
    (
        "get",
        "/v1/databases",
        "List databases (pageSize 1–1000, pageToken)",
        None,
        None,
        Auth::Admin,
    ),
    (
        "post",
        "/v1/databases",
        "Create a database (idempotent)",
        Some("CreateRequest"),
        Some("PdbInfo"),
        Auth::Admin,
    ),
    (
        "get",
        "/v1/databases/{pdb}",
        "Describe a database",
        None,
        Some("PdbInfo"),
        Auth::Admin,
    ),
    (
        "patch",
        "/v1/databases/{pdb}",
        "Set storageQuotaBytes or lockdownProfile (null clears)",
        None,
        Some("PdbInfo"),
        Auth::Admin,
    ),
    (
        "delete",
        "/v1/databases/{pdb}",
        "Drop a database (keepFiles=true keeps its file)",
        None,
        None,
        Auth::Admin,
    ),
    (
        "post",
        "/v1/databases/{pdb}/query",
        "Run one statement, or a batch in one transaction",
        Some("QueryRequest"),
        Some("StmtResult"),
        Auth::Data,
    ),
    (
        "get",
        "/db/{pdb}/",
        "Hrana over WebSocket: upgrade here (subprotocols hrana3, hrana2, hrana1; JSON); the token goes in `hello`. This URL, with its trailing slash, is what the libSQL drivers take",
        None,
        None,
        Auth::Data,
    ),
    (
        "get",
        "/db/{pdb}/v2",
        "Hrana 2 over HTTP is spoken (200)",
        None,
        None,
        Auth::None,
    ),
    (
        "get",
        "/db/{pdb}/v3",
        "Hrana 3 over HTTP is spoken (200)",
        None,
        None,
        Auth::None,
    ),
    (
        "post",
        "/db/{pdb}/v2/pipeline",
        "Hrana 2 pipeline (JSON): requests on the stream the baton names (null opens one); see HRANA_3_SPEC.md and HTTP_V2_SPEC.md in tursodatabase/libsql",
        None,
        None,
        Auth::Data,
    ),
    (
        "post",
        "/db/{pdb}/v3/pipeline",
        "Hrana 3 pipeline (JSON): as v2, plus get_autocommit and the is_autocommit condition",
        None,
        None,
        Auth::Data,
    ),
    (
        "post",
        "/db/{pdb}/v3/cursor",
        "Hrana 3 cursor: a batch whose results stream back as NDJSON (no row cap)",
        None,
        None,
        Auth::Data,
    ),
    (
        "post",
        "/v1/databases/{pdb}/open",
        "Open ReadWrite, ReadOnly or Restricted: {\"mode\": …}",
        None,
        Some("PdbInfo"),
        Auth::Admin,
    ),
    (
        "post",
        "/v1/databases/{pdb}/close",
        "Close to Mounted: {\"mode\": normal|immediate|abort}",
        None,
        Some("PdbInfo"),
        Auth::Admin,
    ),
    (
        "post",
        "/v1/databases/{pdb}/unplug",
        "Unplug into an archive: {\"archive\": name?}",
        None,
        Some("Manifest"),
        Auth::Admin,
    ),
    (
        "get",
        "/v1/databases/{pdb}/history",
        "Lifecycle history",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/databases/{pdb}/backup",
        "Continuous backup of the database: generation, sealed and shipped transactions, backlog, lag, last error",
        None,
        Some("ShipStatus"),
        Auth::Admin,
    ),
    (
        "post",
        "/v1/databases/{pdb}/backup/checkpoint",
        "Seal everything to the store's backlog and checkpoint the WAL now (202)",
        None,
        None,
        Auth::Admin,
    ),
    (
        "post",
        "/v1/databases/{pdb}/backup/snapshot",
        "Start a new backup generation with a base snapshot now (202)",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/backups/{tenant}",
        "Every database the backup store holds for a tenant (present or gone), each with its recoverable window",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/backups/{tenant}/{database}",
        "What the backup store holds for a database (of any tenant, present or gone): generations and the recoverable window",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/archives",
        "List archives",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/archives/{name}",
        "An archive's manifest",
        None,
        Some("Manifest"),
        Auth::Admin,
    ),
    (
        "delete",
        "/v1/archives/{name}",
        "Delete an archive and its files",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/archives/{name}/data",
        "Download an archive's data (headers X-Tenantdb-Sha256, X-Tenantdb-Database)",
        None,
        None,
        Auth::Admin,
    ),
    (
        "put",
        "/v1/archives/{name}/data",
        "Upload an archive's data (?database=&sha256=); verified before it is registered",
        None,
        Some("Manifest"),
        Auth::Admin,
    ),
    (
        "get",
        "/v1/lockdown-profiles",
        "List lockdown profiles",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/lockdown-profiles/{name}",
        "A profile's rules",
        None,
        Some("LockdownRules"),
        Auth::Admin,
    ),
    (
        "put",
        "/v1/lockdown-profiles/{name}",
        "Create or replace a profile",
        Some("LockdownRules"),
        None,
        Auth::Admin,
    ),
    (
        "delete",
        "/v1/lockdown-profiles/{name}",
        "Delete an unused profile",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/usage",
        "Metered usage per database and in total (?period=YYYY-MM, default this month)",
        None,
        Some("UsageReport"),
        Auth::Admin,
    ),
    (
        "get",
        "/v1/sla",
        "Latency (avg, p95, p99), error rate and uptime against the tier's targets, with violations",
        None,
        Some("SlaReport"),
        Auth::Admin,
    ),
    (
        "get",
        "/v1/billing",
        "The bill of a period: tier base price plus usage by resource and by database",
        None,
        Some("Bill"),
        Auth::Admin,
    ),
    (
        "post",
        "/v1/tokens",
        "Issue a data token: {\"databases\": [names or \"*\"], \"expiresInSeconds\": N (optional; forever without)}; an expired token gets 401",
        None,
        None,
        Auth::Admin,
    ),
    (
        "get",
        "/v1/tokens/{id}",
        "A data token's id, the databases it opens and its expiry (`expiresAt`, Unix seconds; 404 once revoked; dropping or unplugging the last database a token names revokes it)",
        None,
        Some("TokenInfo"),
        Auth::Admin,
    ),
    (
        "delete",
        "/v1/tokens/{id}",
        "Revoke a data token",
        None,
        None,
        Auth::Admin,
    ),
];

fn schemas() -> Map<String, Value> {
    let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut out = Map::new();
    let mut add = |name: &str, s: schemars::Schema| {
        out.insert(name.to_string(), s.to_value());
    };
    add("CreateRequest", CreateRequest::json_schema(&mut g));
    add("PdbInfo", PdbInfo::json_schema(&mut g));
    add("QueryRequest", QueryRequest::json_schema(&mut g));
    add("StmtResult", StmtResult::json_schema(&mut g));
    add("Manifest", Manifest::json_schema(&mut g));
    add("ArchiveRecord", ArchiveRecord::json_schema(&mut g));
    add("LockdownRules", LockdownRules::json_schema(&mut g));
    add("OpenMode", OpenMode::json_schema(&mut g));
    add("CloseMode", CloseMode::json_schema(&mut g));
    add("CpuLimit", CpuLimit::json_schema(&mut g));
    add("MemoryLimit", MemoryLimit::json_schema(&mut g));
    add("IoReport", IoReport::json_schema(&mut g));
    add("NetworkReport", NetworkReport::json_schema(&mut g));
    add("UsageReport", UsageReport::json_schema(&mut g));
    add("SlaReport", SlaReport::json_schema(&mut g));
    add("Bill", Bill::json_schema(&mut g));
    add("ShipStatus", crate::backup::ShipStatus::json_schema(&mut g));
    add(
        "TokenInfo",
        crate::engine::access::TokenInfo::json_schema(&mut g),
    );
    for (name, s) in g.take_definitions(true) {
        out.entry(name).or_insert(s);
    }
    out
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, req, resp, auth) in ROUTES {
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": resp.map(|r| json!({"$ref": format!("#/components/schemas/{r}")})).unwrap_or(json!({}))}}},
                "4XX": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if let Some(r) = req {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{r}")}}}});
        }
        if *auth != Auth::None {
            op["security"] = json!([{"bearer": []}]);
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        paths.entry(path.to_string()).or_insert_with(|| json!({}))[*method] = op;
    }
    let mut schemas = schemas();
    schemas.insert("Error".into(), json!({"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}));
    json!({
        "openapi": "3.1.0",
        "info": {"title": "tenantdb-engine", "version": env!("CARGO_PKG_VERSION"),
                 "description": "One tenant's pluggable databases. Tokens go in `Authorization: Bearer …` or `X-Tenantdb-Token`."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    })
}
