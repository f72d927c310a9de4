//! Shared pieces of the HTTP integration tests: an in-process chime server
//! on 127.0.0.1:0, a small webhook receiver, and bounded polling.
//!
//! Nothing here sleeps to "let things settle": state is awaited with
//! [`eventually`], which polls with a deadline and fails loudly.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use chime::server::{ServeConfig, ServeError, Server};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long [`eventually`] waits before giving up.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A server running in this process, stopped with [`TestServer::stop`] (or
/// left to die with the test's runtime if a test fails first).
pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: reqwest::Client,
    /// Sent as `X-Hasura-Admin-Secret` by [`TestServer::post`] when set.
    pub secret: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// A plain HTTP client with a timeout, so a hung server fails the test
/// instead of hanging it.
pub fn client() -> reqwest::Client {
    chime::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build reqwest client")
}

impl TestServer {
    /// Opens a server for `config` (which must not use TLS) and serves it
    /// on a fresh 127.0.0.1 port.
    pub async fn start(config: ServeConfig) -> TestServer {
        let secret = config.admin_secret.clone();
        let server = Server::open(config).expect("Server::open");
        Self::serve(server, secret).await
    }

    /// Serves an already opened server on a fresh 127.0.0.1 port.
    pub async fn serve(server: Server, secret: Option<String>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async {
            stop_rx.await.ok();
        }));
        TestServer {
            addr,
            base: format!("http://{addr}"),
            client: client(),
            secret,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Asks the server to stop and waits until it has (its data directory
    /// is unlocked once this returns).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops within 15 s")
                .expect("server task did not panic")
                .expect("server ran without error");
        }
    }

    /// POSTs raw bytes to `path` with the admin secret (if any); returns
    /// the status and the JSON body (`Value::Null` if the body is not JSON).
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = &self.secret {
            request = request.header("x-hasura-admin-secret", secret);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// POSTs a JSON body to `/v1/metadata`.
    pub async fn metadata(&self, body: Value) -> (u16, Value) {
        self.post_raw("/v1/metadata", body.to_string()).await
    }

    /// POSTs a JSON body to `/v1/query`.
    pub async fn query(&self, body: Value) -> (u16, Value) {
        self.post_raw("/v1/query", body.to_string()).await
    }

    /// Runs a command that must succeed and returns its answer.
    pub async fn ok(&self, body: Value) -> Value {
        let (status, answer) = self.metadata(body.clone()).await;
        assert_eq!(status, 200, "request {body} was answered {answer}");
        answer
    }

    /// Creates an event from `args` and returns its id.
    pub async fn create(&self, args: Value) -> String {
        let answer = self
            .ok(json!({"type": "create_scheduled_event", "args": args}))
            .await;
        assert_eq!(answer["message"], "success", "{answer}");
        answer["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no event_id in {answer}"))
            .to_owned()
    }

    /// `get_scheduled_events` with `args`.
    pub async fn events(&self, args: Value) -> Value {
        self.ok(json!({"type": "get_scheduled_events", "args": args}))
            .await
    }

    /// Every event, in the API's order.
    pub async fn all_events(&self) -> Vec<Value> {
        match self.events(json!({"type": "one_off"})).await["events"].take() {
            Value::Array(events) => events,
            other => panic!("events is not an array: {other}"),
        }
    }

    /// The number of events, as `get_rows_count` reports it.
    pub async fn count(&self) -> u64 {
        let answer = self
            .events(json!({"type": "one_off", "limit": 0, "get_rows_count": true}))
            .await;
        answer["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("no count in {answer}"))
    }

    /// The event with `id`, as `get_scheduled_events` shows it.
    pub async fn event(&self, id: &str) -> Value {
        self.all_events()
            .await
            .into_iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("event {id} is not listed"))
    }

    /// `get_scheduled_event_invocations` with `args`.
    pub async fn invocations(&self, args: Value) -> Value {
        self.ok(json!({"type": "get_scheduled_event_invocations", "args": args}))
            .await
    }

    /// Waits (bounded) until event `id` has `status`, and returns it.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        eventually(&format!("event {id} becomes {status}"), || async {
            let event = self.event(id).await;
            (event["status"] == status).then_some(event)
        })
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Status and JSON body of a response.
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("response body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Polls `check` every 20 ms until it returns `Some`, for at most
/// [`DEADLINE`]; panics naming `what` if it never does.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A webhook receiver on 127.0.0.1:0: `POST /ok` answers 200 `ok`,
/// `POST /fail` answers 500 `nope`. Counts the calls it gets.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub hits: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let (ok_hits, fail_hits) = (hits.clone(), hits.clone());
        let app = Router::new()
            .route(
                "/ok",
                post(move || async move {
                    ok_hits.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }),
            )
            .route(
                "/fail",
                post(move || async move {
                    fail_hits.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::INTERNAL_SERVER_ERROR, "nope")
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            base: format!("http://{addr}"),
            hits,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An ISO 8601 UTC time `seconds` from now (negative: in the past).
pub fn from_now(seconds: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds)).to_string()
}
