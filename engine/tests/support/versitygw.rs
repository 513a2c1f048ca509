//! versitygw, the S3-compatible store of the backup tests and bench: built from its Go
//! module by `e2e/build-tools.sh` (which `./test.sh` runs first), started here on
//! loopback over a directory whose subdirectory `backups` is the bucket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary: `$TENANTDB_VERSITYGW`, else the build-tools cache.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TENANTDB_VERSITYGW") {
        return p.into();
    }
    let cache =
        std::env::var("TENANTDB_E2E_CACHE").unwrap_or_else(|_| "/var/cache/tenantdb-e2e".into());
    let cached = Path::new(&cache).join("bin/versitygw");
    assert!(
        cached.exists(),
        "versitygw is needed for the backup tests: run e2e/build-tools.sh (./test.sh does), or set TENANTDB_VERSITYGW"
    );
    cached
}

/// Start versitygw over `root` on `port` with these credentials; returns once it listens.
pub fn spawn(root: &Path, port: u16, key: &str, secret: &str) -> Child {
    std::fs::create_dir_all(root.join("backups")).expect("bucket directory");
    let mut child = Command::new(binary())
        .args([
            "--access",
            key,
            "--secret",
            secret,
            "--port",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["posix", &root.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("versitygw starts");
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("versitygw did not start");
}
