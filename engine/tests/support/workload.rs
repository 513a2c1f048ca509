//! The mixed write workload of the backup tests: inserts (some with 20 KB blobs),
//! updates, deletes, columns added, indexes made and dropped, on table
//! `t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER, b BLOB)`.

/// The next statement; `columns` counts the columns added so far (at most 20).
pub fn statement(rng: &mut rand::rngs::StdRng, columns: &mut u32) -> String {
    use rand::Rng;
    let v: u32 = rng.random();
    match rng.random_range(0..100) {
        0..=44 => format!("INSERT INTO t (v, n) VALUES ('v{v}', {})", v % 1000),
        45..=49 => format!("INSERT INTO t (v, n, b) VALUES ('big{v}', {}, randomblob(20000))", v % 1000),
        50..=69 => format!("UPDATE t SET v = 'u{v}', n = n + 1 WHERE id IN (SELECT id FROM t ORDER BY (id * {}) % 97 LIMIT 3)", v % 89 + 1),
        70..=89 => format!("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY (id * {}) % 101 LIMIT 2)", v % 83 + 1),
        90..=93 if *columns < 20 => {
            *columns += 1;
            format!("ALTER TABLE t ADD COLUMN c{columns} INTEGER DEFAULT {v}")
        }
        90..=96 => format!("CREATE INDEX IF NOT EXISTS ix{} ON t (n, v)", v % 5),
        _ => format!("DROP INDEX IF EXISTS ix{}", v % 5),
    }
}
