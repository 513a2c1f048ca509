//! The committed CRD YAML must be exactly what the Rust types generate.

use std::path::PathBuf;

#[test]
fn committed_crds_match_the_types() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for (name, text) in tenantdb_crds::generate::crd_files().expect("CRDs render") {
        for dir in tenantdb_crds::generate::OUTPUT_DIRS {
            let path = root.join(dir).join(&name);
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{} is missing ({e}); run `cargo run -p tenantdb-crds --bin crdgen`",
                    path.display()
                )
            });
            assert!(
                committed == text,
                "{} differs from the types; run `cargo run -p tenantdb-crds --bin crdgen`",
                path.display()
            );
        }
    }
}

#[test]
fn committed_api_reference_matches_the_types() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join(tenantdb_crds::generate::API_REFERENCE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == tenantdb_crds::generate::api_reference(),
        "{} differs from the types; run `cargo run -p tenantdb-crds --bin crdgen`",
        path.display()
    );
}

/// The PluggableDatabase phases the schema allows are the ones the operator sets:
/// Deleting among them, none it never sets (Creating, Unplugged).
#[test]
fn pdb_phases_are_the_ones_that_happen() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(tenantdb_crds::PluggableDatabase::crd()).unwrap();
    let phase = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["phase"];
    let allowed: Vec<&str> = phase["enum"]
        .as_array()
        .expect("status.phase is an enum")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        allowed,
        [
            "Pending",
            "Open",
            "Mounted",
            "Relocating",
            "Deleting",
            "Failed",
            "Invalid"
        ]
    );
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    assert!(
        status["properties"].get("archive").is_none(),
        "status.archive is never written"
    );
}
