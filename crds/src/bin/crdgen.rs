//! Writes the CRD YAML into `charts/tenantdb/crds/` and `manifests/crds/`.
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
    Ok(())
}
