//! One stream of a WebSocket connection: a task that runs the stream's requests in order
//! on its session, and cursors whose entries go back through the connection's queue.

use super::*;

/// A stream's requests, in order, until the connection closes it or goes away.
pub(super) async fn stream_task(
    s: Arc<EngineState>,
    stream: Arc<Stream>,
    caller: Caller,
    version: u8,
    mut jobs: mpsc::Receiver<Job>,
    out: mpsc::Sender<Message>,
) {
    while let Some(job) = jobs.recv().await {
        let started = Instant::now();
        let reply = match job.work {
            Work::Close => {
                let _ = out
                    .send(response_ok(job.request_id, br#"{"type":"close_stream"}"#))
                    .await;
                break;
            }
            Work::Request(req) => {
                let run = Run::new(vec![Ok(req)], version);
                let on = On::Stream(stream.clone());
                match drive(&s, on, run, caller).await.map(|(_, run)| run) {
                    Ok(run) => match run.single() {
                        Ok(resp) => response_ok(job.request_id, &resp),
                        Err(e) => response_error_json(job.request_id, &e),
                    },
                    Err(e) => response_error(job.request_id, &e),
                }
            }
            Work::Cursor { batch, entries } => {
                let _ = out
                    .send(response_ok(job.request_id, br#"{"type":"open_cursor"}"#))
                    .await;
                cursor(&s, &stream, caller, batch, entries).await;
                continue;
            }
        };
        let failed = matches!(&reply, Message::Text(t) if t.as_str().starts_with(r#"{"type":"response_error""#));
        let bytes_out = match &reply {
            Message::Text(t) => t.len() as u64,
            _ => 0,
        };
        s.network.charge(job.bytes_in, bytes_out);
        stream
            .pdb
            .meter
            .record_request(started.elapsed(), job.bytes_in, bytes_out, failed);
        if out.send(reply).await.is_err() {
            break;
        }
    }
    if let Ok(l) = stream.lock() {
        l.end(Ended::Closed);
    }
    s.engine.streams.remove(stream.id);
}

/// Entries into a WebSocket cursor's queue.
struct QueueSink {
    tx: mpsc::Sender<Vec<u8>>,
    handle: tokio::runtime::Handle,
    stall: Duration,
}

impl Sink for QueueSink {
    fn entry(&mut self, json: &[u8], session: &Session) -> bool {
        let waited = Instant::now();
        let (tx, stall) = (&self.tx, self.stall);
        let sent = self
            .handle
            .block_on(async move { tokio::time::timeout(stall, tx.send(json.to_vec())).await });
        session.extend_deadline(waited.elapsed());
        matches!(sent, Ok(Ok(())))
    }

    fn flush(&mut self, _: &Session) -> bool {
        true
    }
}

/// Produce a cursor's entries into its queue, on the worker pool.
async fn cursor(
    s: &Arc<EngineState>,
    stream: &Arc<Stream>,
    caller: Caller,
    batch: Batch,
    entries: mpsc::Sender<Vec<u8>>,
) {
    let _held = stream.hold();
    let class = match caller {
        Caller::Admin => Class::Admin,
        Caller::Tenant => Class::Heavy,
    };
    let sink = QueueSink {
        tx: entries,
        handle: tokio::runtime::Handle::current(),
        stall: s.engine.streams.idle_timeout(),
    };
    let batch = Arc::new(batch);
    let mut job = (CursorProgress::default(), sink);
    let since = Instant::now();
    loop {
        let released = stream.pdb.write_released.clone().notified_owned();
        let (s2, st2, b2) = (s.clone(), stream.clone(), batch.clone());
        let ran = s
            .workers
            .run(class, move || {
                let (mut p, mut sink) = job;
                let produced = match st2.lock() {
                    Ok(mut l) => {
                        let state = l.state();
                        let rules = state.session.pdb().rules();
                        let ctx = Ctx {
                            engine: &s2.engine,
                            budgets: s2.engine.budgets(&rules, caller),
                            rules,
                            version: 3,
                            cap: None,
                        };
                        produce(state, &ctx, &b2, &mut p, &mut sink)
                    }
                    Err(e) => {
                        let mut out = Vec::new();
                        whole_error(&mut out, &e.into());
                        let _ = sink.handle.block_on(sink.tx.send(out));
                        Produced::Done
                    }
                };
                ((p, sink), produced)
            })
            .await;
        let Ok((back, produced)) = ran else {
            return;
        };
        job = back;
        match produced {
            Produced::Done => return,
            Produced::Blocked if since.elapsed() >= crate::http::hrana::BUSY_WAIT => {
                let mut out = Vec::new();
                whole_error(&mut out, &crate::http::hrana::pipeline::busy_error());
                let _ = job.1.tx.send(out).await;
                return;
            }
            Produced::Blocked => {
                let _ = tokio::time::timeout(Duration::from_millis(5), released).await;
            }
        }
    }
}
