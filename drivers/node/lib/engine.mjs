// The engine under test, through its admin API: databases and tokens for the driver tests.
// TENANTDB_ENGINE is the engine's base URL (http://127.0.0.1:PORT), TENANTDB_ADMIN_TOKEN
// its admin token; TENANTDB_LIMITED_ENGINE an engine whose tier allows a burst of 5 requests.

export const engine = process.env.TENANTDB_ENGINE;
export const limitedEngine = process.env.TENANTDB_LIMITED_ENGINE;
const adminToken = process.env.TENANTDB_ADMIN_TOKEN;
if (!engine || !adminToken) {
  throw new Error("set TENANTDB_ENGINE and TENANTDB_ADMIN_TOKEN (drivers/run.sh does)");
}

export async function admin(base, method, path, body) {
  const resp = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

let counter = 0;

/// A new database (`extra` adds to the create request) and a token for it alone:
/// { name, url (http, as handed out: ending in '/'), wsUrl, token }.
export async function database(base, extra = {}) {
  const name = `js-${process.pid}-${Date.now().toString(36)}-${counter++}`;
  await admin(base, "POST", "/v1/databases", { name, source: { empty: {} }, ...extra });
  const { token } = await admin(base, "POST", "/v1/tokens", { databases: [name] });
  const url = `${base}/db/${name}/`;
  return { name, url, wsUrl: url.replace(/^http/, "ws"), token };
}
