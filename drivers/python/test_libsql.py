"""What an application does with Python's `libsql` package (Hrana 3 over HTTP: v3/pipeline
and v3/cursor) against a TenantDB database. Run by drivers/run.sh, which sets
TENANTDB_ENGINE and TENANTDB_ADMIN_TOKEN."""

import json
import os
import unittest
import urllib.request

import libsql

ENGINE = os.environ["TENANTDB_ENGINE"]
ADMIN = os.environ["TENANTDB_ADMIN_TOKEN"]


def admin(method, path, body=None):
    req = urllib.request.Request(
        ENGINE + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        text = resp.read()
        return json.loads(text) if text else None


COUNTER = [0]


def database(**extra):
    """A new database and a token for it alone: (url as handed out, token)."""
    COUNTER[0] += 1
    name = f"py-{os.getpid()}-{COUNTER[0]}"
    admin("POST", "/v1/databases", {"name": name, "source": {"empty": {}}, **extra})
    token = admin("POST", "/v1/tokens", {"databases": [name]})["token"]
    return f"{ENGINE}/db/{name}/", token


class LibsqlPython(unittest.TestCase):
    def connect(self, **extra):
        url, token = database(**extra)
        return libsql.connect(url, auth_token=token)

    def test_commit_and_rollback(self):
        c = self.connect()
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO t (v) VALUES (?)", ("kept",))
        c.commit()
        c.execute("INSERT INTO t (v) VALUES (?)", ("rolled back",))
        c.rollback()
        self.assertEqual(c.execute("SELECT v FROM t").fetchall(), [("kept",)])

    def test_integers_and_the_clients_float_bug(self):
        c = self.connect()
        c.execute("CREATE TABLE t (n INTEGER)")
        # Within 32 bits, ints go as integers.
        c.execute("INSERT INTO t VALUES (?)", (2**31 - 1,))
        # Wider ints are read back exactly...
        c.execute("INSERT INTO t VALUES (9007199254740993)")
        c.commit()
        self.assertEqual(
            c.execute("SELECT n FROM t ORDER BY n").fetchall(),
            [(2**31 - 1,), (9007199254740993,)],
        )
        # ...but libsql 0.1.11 sends a Python int outside 32 bits as a float (its bug):
        # the server sees a REAL, and anything above 2**53 loses precision on the way.
        self.assertEqual(c.execute("SELECT typeof(?)", (2**40,)).fetchall(), [("real",)])
        self.assertEqual(c.execute("SELECT ?", (2**53 + 1,)).fetchall(), [(float(2**53),)])

    def test_blob_text_and_null(self):
        c = self.connect()
        blob = bytes(range(256))
        row = c.execute("SELECT ?, ?, ?, ?", (blob, "héllo", None, 1.5)).fetchall()[0]
        self.assertEqual(row, (blob, "héllo", None, 1.5))

    def test_a_big_result_streams_through_the_cursor(self):
        c = self.connect()
        rows = c.execute(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 50000) SELECT x FROM n"
        ).fetchall()
        self.assertEqual(len(rows), 50000, "past the JSON API's 10,000-row cap")
        self.assertEqual(rows[-1], (50000,))

    def test_a_lockdown_refusal_names_its_cause(self):
        admin("PUT", "/v1/lockdown-profiles/py-strict", {"disabledStatements": ["DROP_TABLE"]})
        c = self.connect(lockdownProfile="py-strict")
        c.execute("CREATE TABLE t (x)")
        c.commit()
        with self.assertRaises(Exception) as refused:
            c.execute("DROP TABLE t")
        self.assertIn("LOCKDOWN", str(refused.exception))
        self.assertIn("DROP TABLE", str(refused.exception))

    def test_full_text_search(self):
        c = self.connect()
        c.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
        c.execute("INSERT INTO docs VALUES (?), (?)", ("pluggable databases", "hrana streams"))
        c.commit()
        self.assertEqual(
            c.execute("SELECT body FROM docs WHERE docs MATCH ?", ("hrana",)).fetchall(),
            [("hrana streams",)],
        )


if __name__ == "__main__":
    unittest.main(verbosity=2)
