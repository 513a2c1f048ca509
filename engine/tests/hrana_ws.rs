//! Hrana over WebSocket, over a real socket: version negotiation, hello, streams,
//! connection-scoped SQL texts, cursors, and hostile clients.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tenantdb_engine::engine::EngineOptions;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str, db: &str, protocols: &str) -> (Ws, Option<String>) {
    let mut req = format!("ws://{addr}/db/{db}/")
        .into_client_request()
        .unwrap();
    if !protocols.is_empty() {
        req.headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, chosen)
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next message: JSON, or the close frame's (code, reason) as {"close": [code, reason]}.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s");
        match m {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(Some(f)))) => {
                return json!({"close": [u16::from(f.code), f.reason.to_string()]})
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                return json!({"close": [0, ""]})
            }
            Some(Ok(_)) => continue,
        }
    }
}

async fn request(ws: &mut Ws, id: i32, req: Value) -> Value {
    send(
        ws,
        json!({"type": "request", "request_id": id, "request": req}),
    )
    .await;
    let r = recv(ws).await;
    assert_eq!(r["request_id"], id, "{r}");
    r
}

async fn setup() -> (App, String, String) {
    let app = app_with(EngineOptions {
        seed_sql: Some("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);".into()),
        stream_idle_timeout: Duration::from_millis(500),
        ..Default::default()
    });
    app.create(json!({"name": "db"})).await;
    let t = app.token(&["db"]).await;
    let addr = app.serve().await;
    (app, t, addr)
}

#[tokio::test]
async fn versions_are_negotiated_and_streams_run_statements() {
    let (_app, t, addr) = setup().await;
    for (offer, want) in [
        ("hrana3, hrana2", Some("hrana3")),
        ("hrana2, hrana1", Some("hrana2")),
        ("", None),
    ] {
        let (mut ws, chosen) = connect(&addr, "db", offer).await;
        assert_eq!(chosen.as_deref(), want);
        send(&mut ws, json!({"type": "hello", "jwt": t})).await;
        assert_eq!(recv(&mut ws).await, json!({"type": "hello_ok"}));
        let r = request(&mut ws, 1, json!({"type": "open_stream", "stream_id": 5})).await;
        assert_eq!(r["type"], "response_ok");
        let r = request(
            &mut ws,
            2,
            json!({"type": "execute", "stream_id": 5, "stmt": {"sql": "SELECT 40 + 2"}}),
        )
        .await;
        assert_eq!(r["response"]["result"]["rows"][0][0]["value"], "42", "{r}");
        let r = request(
            &mut ws,
            3,
            json!({"type": "execute", "stream_id": 5, "stmt": {"sql": "SELEC"}}),
        )
        .await;
        assert_eq!(
            (r["type"].as_str(), r["error"]["code"].as_str()),
            (Some("response_error"), Some("SQLITE_ERROR"))
        );
        let r = request(
            &mut ws,
            4,
            json!({"type": "get_autocommit", "stream_id": 5}),
        )
        .await;
        if want == Some("hrana3") {
            assert_eq!(r["response"]["is_autocommit"], true);
        } else {
            assert_eq!(r["type"], "response_error", "Hrana 3 only: {r}");
        }
        let r = request(&mut ws, 6, json!({"type": "close_stream", "stream_id": 5})).await;
        assert_eq!(r["response"]["type"], "close_stream");
    }
}

#[tokio::test]
async fn transactions_on_two_streams_of_one_connection_and_shared_sql_texts() {
    let (_app, t, addr) = setup().await;
    let (mut ws, _) = connect(&addr, "db", "hrana2").await;
    send(&mut ws, json!({"type": "hello", "jwt": t})).await;
    recv(&mut ws).await;
    request(&mut ws, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    request(&mut ws, 2, json!({"type": "open_stream", "stream_id": 2})).await;
    let r = request(
        &mut ws,
        3,
        json!({"type": "store_sql", "sql_id": 9, "sql": "SELECT count(*) FROM kv"}),
    )
    .await;
    assert_eq!(r["type"], "response_ok");
    request(
        &mut ws,
        4,
        json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "BEGIN"}}),
    )
    .await;
    request(&mut ws, 5, json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "INSERT INTO kv VALUES ('a', 'b')"}})).await;
    let r = request(
        &mut ws,
        6,
        json!({"type": "execute", "stream_id": 2, "stmt": {"sql_id": 9}}),
    )
    .await;
    assert_eq!(
        r["response"]["result"]["rows"][0][0]["value"], "0",
        "not committed yet: {r}"
    );
    request(
        &mut ws,
        7,
        json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "COMMIT"}}),
    )
    .await;
    let r = request(
        &mut ws,
        8,
        json!({"type": "batch", "stream_id": 2, "batch": {"steps": [{"stmt": {"sql_id": 9}}]}}),
    )
    .await;
    assert_eq!(
        r["response"]["result"]["step_results"][0]["rows"][0][0]["value"], "1",
        "{r}"
    );
    // An id in use is a protocol violation: the connection closes.
    send(&mut ws, json!({"type": "request", "request_id": 9, "request": {"type": "store_sql", "sql_id": 9, "sql": "SELECT 2"}})).await;
    assert_eq!(recv(&mut ws).await["close"][0], 1008);
}

#[tokio::test]
async fn a_cursor_reads_a_big_result_in_pieces() {
    let (_app, t, addr) = setup().await;
    let (mut ws, _) = connect(&addr, "db", "hrana3").await;
    send(&mut ws, json!({"type": "hello", "jwt": t})).await;
    recv(&mut ws).await;
    request(&mut ws, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    let sql =
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n LIMIT 20000) SELECT x FROM n";
    let r = request(
        &mut ws,
        2,
        json!({"type": "open_cursor", "stream_id": 1, "cursor_id": 3,
        "batch": {"steps": [{"stmt": {"sql": sql}}]}}),
    )
    .await;
    assert_eq!(r["type"], "response_ok", "{r}");
    let mut rows = 0;
    let mut kinds = Vec::new();
    for id in 3.. {
        let r = request(
            &mut ws,
            id,
            json!({"type": "fetch_cursor", "cursor_id": 3, "max_count": 1000}),
        )
        .await;
        for e in r["response"]["entries"].as_array().unwrap() {
            if e["type"] == "row" {
                rows += 1;
            } else {
                kinds.push(e["type"].as_str().unwrap().to_string());
            }
        }
        if r["response"]["done"] == true {
            break;
        }
    }
    assert_eq!(rows, 20_000);
    assert_eq!(kinds, ["step_begin", "step_end"]);
    request(&mut ws, 99, json!({"type": "close_cursor", "cursor_id": 3})).await;
    let r = request(
        &mut ws,
        100,
        json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "SELECT 1"}}),
    )
    .await;
    assert_eq!(
        r["type"], "response_ok",
        "the stream serves after its cursor"
    );
}

#[tokio::test]
async fn hostile_clients_are_closed_and_the_engine_serves_on() {
    let (app, t, addr) = setup().await;
    // Garbage text.
    let (mut ws, _) = connect(&addr, "db", "hrana2").await;
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(recv(&mut ws).await["close"][0], 1007);
    // A binary frame.
    let (mut ws, _) = connect(&addr, "db", "hrana2").await;
    ws.send(Message::Binary(vec![0, 1, 2].into()))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["close"][0], 1003);
    // A request before hello.
    let (mut ws, _) = connect(&addr, "db", "hrana2").await;
    send(&mut ws, json!({"type": "request", "request_id": 1, "request": {"type": "open_stream", "stream_id": 1}})).await;
    assert_eq!(recv(&mut ws).await["close"][0], 1008);
    // Never a hello: closed after the idle timeout (500 ms here).
    let (mut ws, _) = connect(&addr, "db", "hrana2").await;
    let started = std::time::Instant::now();
    assert_eq!(recv(&mut ws).await["close"][0], 1008);
    assert!(started.elapsed() < Duration::from_secs(3));
    // A wrong token: hello_error, then close.
    let (mut ws, _) = connect(&addr, "db", "hrana2").await;
    send(&mut ws, json!({"type": "hello", "jwt": "tdb_wrong"})).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "hello_error", "{r}");
    assert_eq!(r["error"]["code"], "FORBIDDEN");
    // A token for another database.
    app.create(json!({"name": "other"})).await;
    let (mut ws, _) = connect(&addr, "other", "hrana2").await;
    send(&mut ws, json!({"type": "hello", "jwt": t})).await;
    assert_eq!(recv(&mut ws).await["type"], "hello_error");
    // An unknown request type gets an error response; the connection stays.
    let (mut ws, _) = connect(&addr, "db", "hrana2").await;
    send(&mut ws, json!({"type": "hello", "jwt": t})).await;
    recv(&mut ws).await;
    let r = request(&mut ws, 1, json!({"type": "frobnicate"})).await;
    assert_eq!(r["type"], "response_error");
    let r = request(
        &mut ws,
        2,
        json!({"type": "execute", "stream_id": 77, "stmt": {"sql": "SELECT 1"}}),
    )
    .await;
    assert_eq!(r["type"], "response_error", "no such stream: {r}");
    request(&mut ws, 3, json!({"type": "open_stream", "stream_id": 1})).await;
    let r = request(
        &mut ws,
        4,
        json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "SELECT 'alive'"}}),
    )
    .await;
    assert_eq!(r["response"]["result"]["rows"][0][0]["value"], "alive");
}

#[tokio::test]
async fn a_vanished_clients_transaction_rolls_back() {
    let (app, t, addr) = setup().await;
    let (mut ws, _) = connect(&addr, "db", "hrana2").await;
    send(&mut ws, json!({"type": "hello", "jwt": t})).await;
    recv(&mut ws).await;
    request(&mut ws, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    request(
        &mut ws,
        2,
        json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "BEGIN IMMEDIATE"}}),
    )
    .await;
    request(&mut ws, 3, json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "INSERT INTO kv VALUES ('gone', '1')"}})).await;
    drop(ws);
    // Another client's write gets the lock once the connection's streams are gone.
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec("INSERT INTO kv VALUES ('next', '2')"),
                hexec("SELECT k FROM kv"),
            ],
        )
        .await;
    assert_eq!(
        rows(ok(&v, 1)),
        &vec![json!([{"type": "text", "value": "next"}])]
    );
}

#[tokio::test]
async fn a_stream_idle_inside_a_transaction_expires_while_the_connection_lives() {
    let (app, t, addr) = setup().await;
    let (mut ws, _) = connect(&addr, "db", "hrana2").await;
    send(&mut ws, json!({"type": "hello", "jwt": t})).await;
    recv(&mut ws).await;
    request(&mut ws, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    request(&mut ws, 2, json!({"type": "open_stream", "stream_id": 2})).await;
    request(
        &mut ws,
        3,
        json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "BEGIN IMMEDIATE"}}),
    )
    .await;
    request(&mut ws, 4, json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "INSERT INTO kv VALUES ('held', '1')"}})).await;
    // The connection stays open, the transaction idles: after the idle timeout (500 ms
    // here) it rolls back and a writer elsewhere gets the lock.
    let started = std::time::Instant::now();
    let v = app
        .pipeline(
            "db",
            Some(&t),
            None,
            vec![
                hexec("INSERT INTO kv VALUES ('next', '2')"),
                hexec("SELECT k FROM kv"),
            ],
        )
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        rows(ok(&v, 1)),
        &vec![json!([{"type": "text", "value": "next"}])]
    );
    let r = request(
        &mut ws,
        5,
        json!({"type": "execute", "stream_id": 1, "stmt": {"sql": "COMMIT"}}),
    )
    .await;
    assert_eq!(r["type"], "response_error", "the expired stream: {r}");
    // A stream idle outside a transaction is kept: it holds no lock.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = request(
        &mut ws,
        6,
        json!({"type": "execute", "stream_id": 2, "stmt": {"sql": "SELECT 1"}}),
    )
    .await;
    assert_eq!(r["type"], "response_ok", "{r}");
}
