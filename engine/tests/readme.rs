//! The README's "engine on its own" commands, run as written (curl against the real
//! binary), so the README cannot drift from the API.

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_readme_engine_commands_work() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split("## The engine on its own")
        .nth(1)
        .expect("README section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("sh block");
    let mut lines = block.lines();
    let serve = lines.next().expect("serve line");
    assert!(
        serve.starts_with("cargo run --release -p tenantdb-engine -- serve"),
        "{serve}"
    );
    let rest: Vec<&str> = lines.collect();

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut engine = Command::new(env!("CARGO_BIN_EXE_tenantdb-engine"))
        .args([
            "serve",
            "--data-dir",
            &dir.path().display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-token",
            "s3cret",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let script = format!("set -euo pipefail\n{}\n", rest.join("\n"))
        .replace("localhost:8080", &format!("localhost:{port}"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let _ = engine.kill();
    let _ = engine.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "README commands failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"plug of orders-2026\""), "{stdout}");
    assert!(stdout.contains("\"currency\":\"USD\""), "{stdout}");
}
