//! Writes the CRD YAML into `charts/tenantdb/crds/` and `manifests/crds/`, and the
//! API reference into `docs/api-reference.md`.
//! Run from anywhere: `cargo run -p tenantdb-crds --bin crdgen`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = tenantdb_crds::generate::crd_files()?;
    for dir in tenantdb_crds::generate::OUTPUT_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for (name, text) in &files {
            std::fs::write(dir.join(name), text)?;
            println!("wrote {}", dir.join(name).display());
        }
    }
    let reference = root.join(tenantdb_crds::generate::API_REFERENCE);
    std::fs::create_dir_all(reference.parent().unwrap_or(&root))?;
    std::fs::write(&reference, tenantdb_crds::generate::api_reference())?;
    println!("wrote {}", reference.display());
    Ok(())
}
