//! Load generators for the HTTP figures: point selects through the JSON API or Hrana
//! (from wrk when installed, else an in-process client), and pgbench's TPC-B-like
//! transaction as interactive Hrana stream requests.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{pct, Rng};

/// Which protocol a point select goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /v1/databases/bench/query`.
    Json,
    /// `POST /db/bench/v2/pipeline`, a fresh stream closed in the same request (what
    /// `@libsql/client`'s `execute` sends).
    Hrana,
}

impl Protocol {
    /// The path under the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Protocol::Json => "/v1/databases/bench/query",
            Protocol::Hrana => "/db/bench/v2/pipeline",
        }
    }

    fn body(self, id: i64) -> Value {
        match self {
            Protocol::Json => {
                json!({"sql": "SELECT balance FROM acct WHERE id = ?", "params": [id]})
            }
            Protocol::Hrana => json!({"baton": null, "requests": [
                {"type": "execute", "stmt": {"sql": "SELECT balance FROM acct WHERE id = ?",
                                             "args": [{"type": "integer", "value": id.to_string()}]}},
                {"type": "close"}]}),
        }
    }

    /// The body as text, rendered as cheaply for either protocol.
    pub fn body_text(self, id: i64) -> String {
        match self {
            Protocol::Json => {
                format!(r#"{{"sql":"SELECT balance FROM acct WHERE id = ?","params":[{id}]}}"#)
            }
            Protocol::Hrana => format!(
                r#"{{"baton":null,"requests":[{{"type":"execute","stmt":{{"sql":"SELECT balance FROM acct WHERE id = ?","args":[{{"type":"integer","value":"{id}"}}]}}}},{{"type":"close"}}]}}"#
            ),
        }
    }

    /// The body as a Lua expression for wrk, with the id random in 1..=rows.
    pub fn lua_body(self, rows: i64) -> String {
        match self {
            Protocol::Json => format!(
                r#"'{{"sql":"SELECT balance FROM acct WHERE id = ?","params":[' .. math.random(1, {rows}) .. ']}}'"#
            ),
            Protocol::Hrana => format!(
                r#"'{{"baton":null,"requests":[{{"type":"execute","stmt":{{"sql":"SELECT balance FROM acct WHERE id = ?","args":[{{"type":"integer","value":"' .. math.random(1, {rows}) .. '"}}]}}}},{{"type":"close"}}]}}'"#
            ),
        }
    }
}

/// Point selects through `protocol` at `conns` connections for `secs`, from an
/// in-process client: (req/s, p50, p99). Failed requests are not counted.
pub async fn point_selects(
    base: &str,
    token: &str,
    protocol: Protocol,
    conns: usize,
    secs: f64,
) -> (f64, Duration, Duration) {
    point_selects_over(base, token, protocol, conns, secs, None).await
}

/// How a client reaches an HTTPS engine: the name its certificate carries, the address
/// that name stands for here, and the CA (PEM) to trust alone.
#[derive(Clone)]
pub struct Tls {
    pub name: String,
    pub addr: std::net::SocketAddr,
    pub ca_pem: String,
}

/// [`point_selects`], over HTTPS when `tls` says how.
pub async fn point_selects_over(
    base: &str,
    token: &str,
    protocol: Protocol,
    conns: usize,
    secs: f64,
    tls: Option<Tls>,
) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (url, token) = (format!("{base}{}", protocol.path()), token.to_string());
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let mut builder = reqwest::Client::builder().pool_max_idle_per_host(1);
            if let Some(t) = tls {
                builder = builder
                    .use_rustls_tls()
                    .resolve(&t.name, t.addr)
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(
                        reqwest::Certificate::from_pem(t.ca_pem.as_bytes()).expect("CA"),
                    );
            }
            let client = builder.build().expect("client");
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let body = protocol.body(rng.next());
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                if let Ok(resp) = r {
                    let ok = resp.status().is_success();
                    let bytes = resp.bytes().await.unwrap_or_default();
                    // A Hrana error result is a 200 too: count only answers with a row.
                    if ok
                        && (protocol == Protocol::Json
                            || bytes.windows(6).any(|w| w == b"\"rows\""))
                    {
                        lat.push(t.elapsed());
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort();
    (all.len() as f64 / secs, pct(&all, 0.5), pct(&all, 0.99))
}

/// The tables of pgbench's TPC-B-like benchmark at scale 1, as SQL for SQLite.
pub const TPCB_SCHEMA: &str = "CREATE TABLE pgbench_branches (bid INTEGER PRIMARY KEY, bbalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE pgbench_tellers (tid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, tbalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE pgbench_accounts (aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, abalance INTEGER NOT NULL, filler TEXT);
CREATE TABLE pgbench_history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, mtime TEXT, filler TEXT);
INSERT INTO pgbench_branches VALUES (1, 0, NULL);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10) INSERT INTO pgbench_tellers SELECT x, 1, 0, NULL FROM n;
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100000) INSERT INTO pgbench_accounts SELECT x, 1, 0, printf('%.84c', ' ') FROM n;";

/// A Hrana integer argument.
fn int(v: i64) -> String {
    format!(r#"{{"type":"integer","value":"{v}"}}"#)
}

/// An `execute` request with `args`, rendered once (a lean client, as pgbench is).
fn exec(sql: &str, args: &[i64]) -> String {
    let args: Vec<String> = args.iter().map(|a| int(*a)).collect();
    format!(
        r#"{{"type":"execute","stmt":{{"sql":"{sql}","args":[{}],"want_rows":true}}}}"#,
        args.join(",")
    )
}

/// The baton of a pipeline response, and whether its first result is ok.
fn read_response(body: &[u8]) -> (Option<String>, bool) {
    let text = std::str::from_utf8(body).unwrap_or_default();
    let baton = text
        .split_once(r#""baton":""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(b, _)| b.to_string());
    let ok = text
        .split_once(r#""results":[{"type":""#)
        .is_some_and(|(_, rest)| rest.starts_with("ok"));
    (baton, ok)
}

/// A lean HTTP/1.1 client on one kept-alive connection (hyper's, without a pool or
/// any per-request machinery), as pgbench is a lean client of PostgreSQL.
struct Lean {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: String,
    auth: String,
}

impl Lean {
    async fn connect(url: &str, token: &str) -> Option<Lean> {
        let host = url.strip_prefix("http://")?.split('/').next()?.to_string();
        let tcp = tokio::net::TcpStream::connect(&host).await.ok()?;
        tcp.set_nodelay(true).ok()?;
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(Lean {
            send,
            host,
            auth: format!("Bearer {token}"),
        })
    }

    async fn post(&mut self, path: &str, body: String) -> Option<bytes::Bytes> {
        use http_body_util::BodyExt;
        let req = hyper::Request::post(path)
            .header("host", &self.host)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .ok()?;
        self.send.ready().await.ok()?;
        let resp = self.send.send_request(req).await.ok()?;
        Some(resp.into_body().collect().await.ok()?.to_bytes())
    }
}

/// One client's TPC-B-like transactions until `deadline`, each statement its own Hrana
/// request on one stream (BEGIN, UPDATE, SELECT, UPDATE, UPDATE, INSERT, COMMIT):
/// the latencies of the committed ones.
async fn tpcb_client(url: String, token: String, seed: u64, deadline: Instant) -> Vec<Duration> {
    let path = url
        .strip_prefix("http://")
        .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
        .unwrap_or_default();
    let Some(mut client) = Lean::connect(&url, &token).await else {
        return Vec::new();
    };
    let mut rng = Rng(seed);
    let mut lat = Vec::new();
    while Instant::now() < deadline {
        let (aid, tid, delta) = (rng.next(), rng.next() % 10 + 1, rng.next() % 10_001 - 5_000);
        let steps = [
            exec("BEGIN", &[]),
            exec("UPDATE pgbench_accounts SET abalance = abalance + ? WHERE aid = ?", &[delta, aid]),
            exec("SELECT abalance FROM pgbench_accounts WHERE aid = ?", &[aid]),
            exec("UPDATE pgbench_tellers SET tbalance = tbalance + ? WHERE tid = ?", &[delta, tid]),
            exec("UPDATE pgbench_branches SET bbalance = bbalance + ? WHERE bid = 1", &[delta]),
            exec("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (?, 1, ?, ?, CURRENT_TIMESTAMP)", &[tid, aid, delta]),
            format!(r#"{},{{"type":"close"}}"#, exec("COMMIT", &[])),
        ];
        let t = Instant::now();
        let mut baton: Option<String> = None;
        let mut ok = true;
        for step in &steps {
            let body = match &baton {
                Some(b) => format!(r#"{{"baton":"{b}","requests":[{step}]}}"#),
                None => format!(r#"{{"baton":null,"requests":[{step}]}}"#),
            };
            let Some(resp) = client.post(&path, body).await else {
                ok = false;
                break;
            };
            let (next, step_ok) = read_response(&resp);
            if !step_ok {
                ok = false;
                if let Some(b) = next {
                    let close = format!(r#"{{"baton":"{b}","requests":[{{"type":"close"}}]}}"#);
                    let _ = client.post(&path, close).await;
                }
                break;
            }
            baton = next;
        }
        if ok {
            lat.push(t.elapsed());
        }
    }
    lat
}

/// TPC-B-like transactions per second at `clients` clients for `secs`: (tps, p50, p99).
pub async fn tpcb(
    base: &str,
    token: &str,
    db: &str,
    clients: usize,
    secs: f64,
) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let url = format!("{base}/db/{db}/v2/pipeline");
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(tpcb_client(
                url.clone(),
                token.to_string(),
                0xA5A5_5A5A ^ (c as u64 + 7),
                deadline,
            ))
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort();
    (all.len() as f64 / secs, pct(&all, 0.5), pct(&all, 0.99))
}

/// µs of one point select through the router in this process (no network), through
/// `protocol`: what each protocol's own handling costs, best of three rounds of `n`.
pub async fn router_cost(router: axum::Router, token: &str, protocol: Protocol, n: usize) -> f64 {
    use tower::ServiceExt;
    let mut best = f64::MAX;
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            let body = protocol.body_text(rng.next());
            let req = axum::http::Request::post(protocol.path())
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .expect("request");
            let resp = router.clone().oneshot(req).await.expect("response");
            assert!(resp.status().is_success());
            let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    best
}
