//! The OpenAPI document lists exactly the routes the router serves.

mod common;

use axum::http::StatusCode;
use common::*;
use tenantdb_engine::openapi::{document, ROUTES};

#[tokio::test]
async fn every_documented_route_is_served() {
    let app = app();
    for (method, path, ..) in ROUTES {
        let concrete = path
            .replace("{pdb}", "nosuchdb")
            .replace("{name}", "nosuch")
            .replace("{id}", "nosuch");
        let (status, body) = app.admin(&method.to_uppercase(), &concrete, None).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let fallback = body["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such route"));
        assert!(!fallback, "{method} {path} is documented but not routed");
    }
}

#[tokio::test]
async fn the_document_is_served_with_schemas() {
    let app = app();
    let (status, doc) = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, document());
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        ROUTES
            .iter()
            .map(|r| r.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    for schema in [
        "CreateRequest",
        "QueryRequest",
        "StmtResult",
        "LockdownRules",
        "Error",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    assert!(doc["components"]["schemas"]["StatementClass"]
        .to_string()
        .contains("DROP_TABLE"));
    assert!(
        !doc.to_string().contains("#/$defs/"),
        "every $ref resolves inside the document"
    );
}

#[test]
fn the_committed_document_in_docs_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/engine-openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let now = serde_json::to_string_pretty(&tenantdb_engine::openapi::document()).unwrap() + "\n";
    assert!(
        committed == now,
        "{} is stale; run `cargo run -p tenantdb-engine -- openapi > docs/engine-openapi.json`",
        path.display()
    );
}
