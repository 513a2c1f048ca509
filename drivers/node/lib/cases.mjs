// What an application does with @libsql/client, run over one transport (HTTP or WebSocket).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "@libsql/client";
import { admin, database, engine, limitedEngine } from "./engine.mjs";

export function cases(transport) {
  const urlOf = (db) => (transport === "ws" ? db.wsUrl : db.url);
  const client = (db, opts = {}) => createClient({ url: urlOf(db), authToken: db.token, ...opts });

  test(`${transport}: an interactive transaction commits, another rolls back`, async () => {
    const db = await database(engine);
    const c = client(db);
    await c.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)");
    await c.execute("INSERT INTO accounts VALUES (1, 100), (2, 0)");
    const tx = await c.transaction("write");
    await tx.execute("UPDATE accounts SET balance = balance - 30 WHERE id = 1");
    const mid = await tx.execute("SELECT balance FROM accounts WHERE id = 1");
    assert.equal(mid.rows[0].balance, 70, "the transaction sees its own write");
    const other = await c.execute("SELECT balance FROM accounts WHERE id = 1");
    assert.equal(other.rows[0].balance, 100, "others do not, before commit");
    await tx.execute("UPDATE accounts SET balance = balance + 30 WHERE id = 2");
    await tx.commit();
    const rb = await c.transaction("write");
    await rb.execute("DELETE FROM accounts");
    await rb.rollback();
    const after = await c.execute("SELECT id, balance FROM accounts ORDER BY id");
    assert.deepEqual(after.rows.map((r) => [r.id, r.balance]), [[1, 70], [2, 30]]);
    c.close();
  });

  test(`${transport}: 9007199254740993 round-trips exactly, and a blob`, async () => {
    const db = await database(engine);
    const c = client(db, { intMode: "bigint" });
    await c.execute("CREATE TABLE t (n INTEGER, b BLOB)");
    const blob = new Uint8Array([0, 1, 2, 253, 254, 255]);
    const ins = await c.execute({ sql: "INSERT INTO t VALUES (?, ?)", args: [9007199254740993n, blob] });
    assert.equal(ins.rowsAffected, 1);
    assert.equal(ins.lastInsertRowid, 1n);
    const r = await c.execute("SELECT n, b, n + 1 AS next FROM t");
    assert.equal(r.rows[0].n, 9007199254740993n);
    assert.equal(r.rows[0].next, 9007199254740994n);
    assert.deepEqual(new Uint8Array(r.rows[0].b), blob);
    assert.equal(r.columnTypes[0], "INTEGER", "decltype");
    c.close();
  });

  test(`${transport}: a batch in write mode is one transaction`, async () => {
    const db = await database(engine);
    const c = client(db);
    const done = await c.batch(
      [
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE)",
        { sql: "INSERT INTO items (name) VALUES (?)", args: ["a"] },
        { sql: "INSERT INTO items (name) VALUES (?)", args: ["b"] },
        "SELECT count(*) AS n FROM items",
      ],
      "write",
    );
    assert.equal(done[3].rows[0].n, 2);
    await assert.rejects(
      c.batch(["INSERT INTO items (name) VALUES ('c')", "INSERT INTO items (name) VALUES ('a')"], "write"),
      (e) => e.code === "SQLITE_CONSTRAINT" && /UNIQUE/.test(e.message),
    );
    const n = await c.execute("SELECT count(*) AS n FROM items");
    assert.equal(n.rows[0].n, 2, "the failed batch left nothing");
    c.close();
  });

  test(`${transport}: refusals arrive as errors naming their cause`, async () => {
    await admin(engine, "PUT", "/v1/lockdown-profiles/js-strict", {
      disabledStatements: ["DROP_TABLE", "DELETE_WITHOUT_WHERE"],
    });
    const db = await database(engine, { lockdownProfile: "js-strict", storageQuotaBytes: 128 * 1024 });
    const c = client(db);
    await c.execute("CREATE TABLE t (x TEXT)");
    await c.execute("INSERT INTO t VALUES ('keep')");
    await assert.rejects(c.execute("DROP TABLE t"), (e) => e.code === "LOCKDOWN" && /DROP TABLE/.test(e.message));
    await assert.rejects(
      c.execute("WITH c AS (SELECT 1) DELETE FROM t"),
      (e) => e.code === "LOCKDOWN" && /DELETE without WHERE/.test(e.message),
    );
    await assert.rejects(
      c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 200) INSERT INTO t SELECT randomblob(4000) FROM n"),
      (e) => e.code === "STORAGE_QUOTA" && /quota/.test(e.message),
    );
    const r = await c.execute("SELECT count(*) AS n FROM t");
    assert.equal(r.rows[0].n, 1, "nothing of the refused insert was written");
    c.close();
    // The rate limit: the limited engine's tier allows a burst of 5 requests.
    const ldb = await database(limitedEngine);
    const lc = client(ldb);
    let refused;
    for (let i = 0; i < 20 && !refused; i++) {
      try {
        await lc.execute("SELECT 1");
      } catch (e) {
        refused = e;
      }
    }
    assert.ok(refused, "the rate limit refused a request");
    assert.equal(refused.code, "RATE_LIMITED");
    assert.match(refused.message, /request rate/);
    lc.close();
  });

  test(`${transport}: a stream left open mid-transaction expires and another writer goes on`, async () => {
    const db = await database(engine);
    const setup = client(db);
    await setup.execute("CREATE TABLE t (x TEXT)");
    const abandoned = client(db);
    const tx = await abandoned.transaction("write");
    await tx.execute("INSERT INTO t VALUES ('never committed')");
    // The first client vanishes without commit or rollback; the second writes.
    const started = Date.now();
    let attempts = 0;
    for (;;) {
      attempts++;
      try {
        await setup.execute("INSERT INTO t VALUES ('second')");
        break;
      } catch (e) {
        assert.equal(e.code, "SQLITE_BUSY", e.message);
        assert.ok(Date.now() - started < 30_000, "gave up waiting for the expiry");
      }
    }
    const waited = Date.now() - started;
    console.log(`# ${transport}: the second writer waited ${waited} ms (${attempts} attempt(s)) for the abandoned stream to expire`);
    const rows = await setup.execute("SELECT x FROM t");
    assert.deepEqual(rows.rows.map((r) => r.x), ["second"], "the abandoned transaction rolled back");
    await assert.rejects(tx.commit(), "the expired transaction cannot commit");
    setup.close();
    abandoned.close();
  });

  test(`${transport}: SQL errors carry SQLite's code`, async () => {
    const db = await database(engine);
    const c = client(db);
    await assert.rejects(c.execute("SELEC 1"), (e) => e.code === "SQLITE_ERROR" && /syntax error/.test(e.message));
    await assert.rejects(c.execute("SELECT * FROM missing"), (e) => /no such table/.test(e.message));
    const other = await database(engine);
    const wrong = createClient({ url: urlOf(other), authToken: db.token });
    await assert.rejects(wrong.execute("SELECT 1"), "a token for another database is refused");
    wrong.close();
    c.close();
  });
}
