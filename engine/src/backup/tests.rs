//! Capture and replay without a store: every transaction sealed from the WAL, replayed
//! on the generation's snapshot, gives back exactly the database as it was after it.

use std::path::Path;

use rand::SeedableRng;
use sha2::{Digest, Sha256};

use super::restore::{apply, Until};
use super::shipper::Shipper;
#[path = "../../tests/support/workload.rs"]
mod workload;
use crate::files;
use workload::statement;

fn content(conn: &rusqlite::Connection) -> String {
    let mut h = Sha256::new();
    for sql in [
        "SELECT type, name, sql FROM sqlite_schema ORDER BY name",
        "SELECT * FROM t ORDER BY id",
    ] {
        let mut st = conn.prepare(sql).unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..n {
                use rusqlite::types::ValueRef;
                match r.get_ref(i).unwrap() {
                    ValueRef::Null => h.update(b"n"),
                    ValueRef::Integer(v) => h.update(v.to_be_bytes()),
                    ValueRef::Real(v) => h.update(v.to_be_bytes()),
                    ValueRef::Text(b) | ValueRef::Blob(b) => h.update(b),
                }
                h.update(b"|");
            }
        }
    }
    hex::encode(h.finalize())
}

/// A stand-in store for unit tests: a directory, `<generation>/<file>`.
fn local_store(root: &Path) -> impl Fn(&str, &str, Vec<u8>) -> Result<(), String> + '_ {
    move |gen: &str, file: &str, bytes: Vec<u8>| {
        let d = root.join(gen);
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        std::fs::write(d.join(file), bytes).map_err(|e| e.to_string())
    }
}

/// Seal and ship everything committed so far (`wait_for`: see `next_segment`).
fn ship_all(shipper: &Shipper, ship: &super::shipper::Ship<'_>, wait_for: bool) {
    shipper.ship_to_end(wait_for, ship).unwrap();
}

/// Seal and ship at most `max` segments: beside a writer that never stops, shipping
/// "everything" could chase it forever (a debug build ships slower than it writes).
fn ship_some(shipper: &Shipper, ship: &super::shipper::Ship<'_>, max: usize) {
    for _ in 0..max {
        let Some(s) = shipper.next_segment(true).unwrap() else {
            return;
        };
        ship(&s.generation, &s.file, s.bytes.clone()).unwrap();
        shipper.commit(&s).unwrap();
    }
}

fn generation_files(dir: &Path, gen: &str) -> (Vec<u8>, u64, Vec<Vec<u8>>) {
    let d = dir.join(gen);
    let snapshot = std::fs::read(d.join("snapshot.db")).unwrap();
    let manifest: super::layout::GenerationManifest =
        serde_json::from_slice(&std::fs::read(d.join("generation.json")).unwrap()).unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    segs.sort();
    (
        snapshot,
        manifest.base_txid,
        segs.iter()
            .map(|s| std::fs::read(d.join(s)).unwrap())
            .collect(),
    )
}

#[test]
fn every_sealed_transaction_replays_to_the_database_it_left() {
    files::leave_checkpoints_to_the_shipper();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.db");
    let mut conn = files::open_db_rw(&db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
    let shipper = Shipper::open("db", &db, &dir.path().join("backlog")).unwrap();
    let capture = shipper.capture.clone();
    conn.wal_hook(Some(
        move |_: &mut rusqlite::hooks::Wal, f: std::ffi::c_int| {
            capture.committed(f as u32);
            Ok(())
        },
    ))
    .unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER, b BLOB)")
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut columns = 0;
    // (generation, txid, content after it)
    let mut ledger: Vec<(String, u64, String)> = Vec::new();
    let backlog = dir.path().join("store");
    let ship = local_store(&backlog);
    let mut gen = shipper.start_generation(false, &ship).unwrap();
    let mut restarts = 0;
    for i in 0..600 {
        conn.execute_batch(&statement(&mut rng, &mut columns))
            .unwrap();
        ship_all(&shipper, &ship, true);
        let txid = shipper.state.lock().unwrap().sealed_txid;
        ledger.push((gen.clone(), txid, content(&conn)));
        if i % 37 == 0 {
            let (log, done) = shipper.checkpoint(&ship).unwrap();
            assert!(
                log > 0 && done == log,
                "a checkpoint folds every shipped frame: {log} {done}"
            );
            restarts += 1;
        }
        if i % 250 == 249 {
            gen = shipper.start_generation(false, &ship).unwrap();
        }
    }
    // The checkpoints let the WAL start over: it never held much more than 37 writes.
    let wal = std::fs::metadata(dir.path().join("db.db-wal"))
        .unwrap()
        .len();
    assert!(
        restarts > 10 && wal < 4 << 20,
        "the WAL grew to {wal} bytes"
    );
    let mut checked = 0;
    // Every 15th write, and each generation's first and last.
    for (k, (gen, txid, want)) in ledger
        .iter()
        .enumerate()
        .filter(|(k, _)| k % 15 == 0 || k % 250 < 2 || k % 250 > 247)
    {
        let (snapshot, base, segs) = generation_files(&backlog, gen);
        let out = dir.path().join(format!("r{k}.db"));
        let (applied, _, _) = apply(
            "t",
            gen,
            base,
            &snapshot,
            &segs,
            Until {
                ms: None,
                txid: Some(*txid),
            },
            &out,
        )
        .unwrap();
        assert_eq!(applied, *txid);
        let r = rusqlite::Connection::open(&out).unwrap();
        assert_eq!(
            &content(&r),
            want,
            "write {k} (transaction {txid} of {gen}) replays differently"
        );
        checked += 1;
        drop(r);
        let _ = files::remove_db(&out);
    }
    assert!(checked >= 40, "{checked} checked");
}

#[test]
fn generations_started_under_concurrent_writes_hold_exactly_their_base() {
    files::leave_checkpoints_to_the_shipper();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.db");
    let conn = files::open_db_rw(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, pad BLOB)",
    )
    .unwrap();
    let shipper =
        std::sync::Arc::new(Shipper::open("db", &db, &dir.path().join("backlog")).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, capture, stop) = (db.clone(), shipper.capture.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = files::open_db_rw(&db).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            c.wal_hook(Some(
                move |_: &mut rusqlite::hooks::Wal, f: std::ffi::c_int| {
                    capture.committed(f as u32);
                    Ok(())
                },
            ))
            .unwrap();
            let mut k = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                c.execute("INSERT INTO t (pad) VALUES (randomblob(3000))", [])
                    .unwrap();
                k += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            k
        })
    };
    let backlog = dir.path().join("store");
    let ship = local_store(&backlog);
    let mut gens = vec![shipper.start_generation(false, &ship).unwrap()];
    for i in 0..60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        ship_some(&shipper, &ship, 4);
        if i % 9 == 0 {
            shipper.checkpoint(&ship).unwrap();
        }
        if i % 10 == 9 {
            gens.push(shipper.start_generation(false, &ship).unwrap());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let inserted = writer.join().unwrap();
    ship_all(&shipper, &ship, false);
    for gen in &gens {
        let (snapshot, base, segs) = generation_files(&backlog, gen);
        let last = super::segment::open(segs.last().unwrap())
            .unwrap()
            .0
            .last_txid;
        for txid in [base, base + 1, (base + last) / 2, last] {
            let out = dir.path().join(format!("{gen}-{txid}.db"));
            apply(
                "t",
                gen,
                base,
                &snapshot,
                &segs,
                Until {
                    ms: None,
                    txid: Some(txid),
                },
                &out,
            )
            .unwrap();
            let r = rusqlite::Connection::open(&out).unwrap();
            let rows: i64 = r
                .query_row("SELECT count(*) FROM t", [], |x| x.get(0))
                .unwrap();
            // Transaction 1 is the CREATE TABLE; every later one inserts a row.
            assert_eq!(
                rows as u64,
                txid - 1,
                "{gen} at {txid} (base {base}, snapshot rows {})",
                snapshot_rows(&snapshot, dir.path())
            );
        }
    }
    assert!(inserted > 100, "only {inserted} inserts");
}

fn snapshot_rows(snapshot: &[u8], dir: &Path) -> i64 {
    let p = dir.join(format!("snap-{}.db", rand::random::<u32>()));
    std::fs::write(&p, snapshot).unwrap();
    let r = rusqlite::Connection::open(&p).unwrap();
    r.query_row("SELECT count(*) FROM t", [], |x| x.get(0))
        .unwrap()
}
