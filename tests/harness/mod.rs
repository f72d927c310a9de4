//! Helpers for the delivery and crash tests: a chime server in-process or as a
//! child process, a client of its metadata API, and a webhook receiver that
//! records what it is sent and answers from a script.
//!
//! Every wait here is bounded polling of something observable (the API, the
//! receiver's count): a test never sleeps to let things settle.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Response, Uri};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use chime::server::{ServeConfig, ServeError, Server};

/// The longest any wait for a state may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// The API client

/// A client of one server's metadata API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        chime::tls::install_crypto_provider();
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// POSTs a command to `/v1/metadata`: the HTTP status and the JSON answer.
    pub async fn metadata(&self, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/metadata", self.base))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text}"));
        (status, value)
    }

    /// Creates an event and returns its id.
    pub async fn create(&self, args: Value) -> String {
        let (status, answer) = self
            .metadata(json!({"type": "create_scheduled_event", "args": args}))
            .await;
        assert_eq!(status, 200, "create failed: {answer}");
        assert_eq!(answer["message"], "success", "{answer}");
        answer["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn delete(&self, id: &str) {
        let (status, answer) = self
            .metadata(json!({
                "type": "delete_scheduled_event",
                "args": {"type": "one_off", "event_id": id},
            }))
            .await;
        assert_eq!(status, 200, "delete failed: {answer}");
        assert_eq!(answer, json!({"message": "success"}));
    }

    pub async fn events(&self) -> Vec<Value> {
        let (status, answer) = self
            .metadata(json!({"type": "get_scheduled_events", "args": {"type": "one_off"}}))
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["events"].as_array().unwrap().clone()
    }

    /// The event as `get_scheduled_events` shows it, or `None` when it is
    /// not listed (unknown or deleted).
    pub async fn event(&self, id: &str) -> Option<Value> {
        self.events().await.into_iter().find(|e| e["id"] == id)
    }

    /// The event's invocation logs, newest first.
    pub async fn invocations(&self, id: &str) -> Vec<Value> {
        let (status, answer) = self
            .metadata(json!({
                "type": "get_scheduled_event_invocations",
                "args": {"type": "one_off", "event_id": id},
            }))
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["invocations"].as_array().unwrap().clone()
    }

    /// Polls the event until `done` holds (at most [`WAIT`]) and returns it;
    /// panics with the last state seen otherwise.
    pub async fn wait_event(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let event = self.event(id).await;
            if let Some(e) = &event
                && done(e)
            {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "event {id} not {what} within {WAIT:?}; last seen: {event:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until the event has `status` and returns it.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_event(id, status, |e| e["status"] == status).await
    }
}

// ---------------------------------------------------------------------------
// In-process server

/// A server running in the test's runtime on 127.0.0.1:0, with its own
/// data directory.
pub struct TestServer {
    pub api: Api,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `configure` has adjusted its configuration.
    pub async fn start_with(configure: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::new(dir.path());
        configure(&mut config);
        let server = Server::open(config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        TestServer {
            api: Api::new(addr),
            addr,
            stop: Some(stop),
            task,
            dir,
        }
    }

    /// Asks the server to stop and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}

// ---------------------------------------------------------------------------
// The chime binary as a child process

/// `chime serve` as a child process. Killed when dropped, so a failing test
/// leaves no process behind.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub api: Api,
    /// Everything the child wrote to stderr so far, for failure messages.
    pub stderr: Arc<Mutex<String>>,
}

impl ChildServer {
    /// Starts `chime serve --data-dir DIR --listen 127.0.0.1:0 EXTRA...` and
    /// waits for its `listening on http://ADDR` line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ChildServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chime"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        // Drains stderr for the child's whole life so it never blocks on a
        // full pipe, and reports the address once.
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(rest.trim().parse::<SocketAddr>());
                }
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(WAIT) {
            Ok(Ok(addr)) => addr,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chime serve did not report its address ({other:?}); stderr:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        ChildServer {
            child,
            addr,
            api: Api::new(addr),
            stderr: log,
        }
    }

    /// [`ChildServer::start`] off the async workers (it blocks until the
    /// child is listening).
    pub async fn spawn(data_dir: &Path, extra: &[&str]) -> ChildServer {
        let data_dir = data_dir.to_owned();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            ChildServer::start(&data_dir, &extra)
        })
        .await
        .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM: asks for a graceful stop (see [`ChildServer::wait_exit`]).
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.pid());
    }

    /// SIGKILL, and waits until the process is gone (and its lock with it).
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits at most `limit` for the child to exit on its own.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// The webhook receiver

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Reads the request, then never answers (until the caller gives up).
    Hang,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Answer { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Reply {
        if let Reply::Answer { body, .. } = &mut self {
            *body = bytes.into();
        }
        self
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// Wall-clock time of arrival, comparable with chime's times.
    pub at: jiff::Timestamp,
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Every value of the header `name`.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

struct ReceiverState {
    /// Replies for the next requests, in order.
    script: Mutex<VecDeque<Reply>>,
    /// The reply once the script is used up.
    then: Reply,
    received: Mutex<Vec<Received>>,
    /// How many requests arrived, to wait on.
    count: watch::Sender<usize>,
}

/// A webhook on 127.0.0.1:0 that records every request with its arrival
/// time and answers from a script.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn ok() -> Receiver {
        Self::start(vec![], Reply::ok()).await
    }

    /// Answers the requests with `script` in order, then with `then`.
    pub async fn start(script: Vec<Reply>, then: Reply) -> Receiver {
        let state = Arc::new(ReceiverState {
            script: Mutex::new(script.into()),
            then,
            received: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        *self.state.count.borrow()
    }

    /// Waits until at least `n` requests arrived, at most `limit`; returns
    /// everything received (check its length: it is short on timeout).
    pub async fn wait_for_within(&self, n: usize, limit: Duration) -> Vec<Received> {
        let mut count = self.state.count.subscribe();
        let _ = tokio::time::timeout(limit, count.wait_for(|&c| c >= n)).await;
        self.received()
    }

    /// Waits until at least `n` requests arrived (at most [`WAIT`]).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let got = self.wait_for_within(n, WAIT).await;
        assert!(
            got.len() >= n,
            "receiver got {} requests within {WAIT:?}, expected {n}: {got:?}",
            got.len()
        );
        got
    }
}

async fn handle(
    State(state): State<Arc<ReceiverState>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let at = jiff::Timestamp::now();
    state.received.lock().unwrap().push(Received {
        at,
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    state.count.send_modify(|c| *c += 1);
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.then.clone());
    match reply {
        Reply::Hang => std::future::pending().await,
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut response = Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
    }
}

// ---------------------------------------------------------------------------
// Times

/// Now plus `seconds`, to the microsecond (what chime keeps).
pub fn in_seconds(seconds: f64) -> jiff::Timestamp {
    let now = jiff::Timestamp::now().as_microsecond();
    jiff::Timestamp::from_microsecond(now + (seconds * 1e6) as i64).unwrap()
}

/// Parses a time as the API shows it.
pub fn ts(value: &Value) -> jiff::Timestamp {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap()
}

/// Seconds from `a` to `b` (negative when `b` is earlier).
pub fn secs_between(a: jiff::Timestamp, b: jiff::Timestamp) -> f64 {
    (b.as_microsecond() - a.as_microsecond()) as f64 / 1e6
}

/// A port that was bound and released, so connecting to it is refused.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The one invocation of an event, after checking there is exactly one.
pub async fn only_invocation(api: &Api, id: &str) -> Value {
    let invocations = api.invocations(id).await;
    assert_eq!(invocations.len(), 1, "{invocations:#?}");
    invocations[0].clone()
}

/// The `client_error` message of an invocation, after checking its shape.
pub fn client_error(invocation: &Value) -> String {
    assert_eq!(invocation["status"], Value::Null, "{invocation:#}");
    assert_eq!(
        invocation["response"]["type"], "client_error",
        "{invocation:#}"
    );
    invocation["response"]["data"]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}
