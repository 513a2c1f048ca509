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
