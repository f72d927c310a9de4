//! A webhook on 127.0.0.1:0 that records every request with its arrival
//! time and answers by path, then from a script.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::wait::WAIT;

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// How long to hold the request before answering.
        delay: Duration,
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
            delay: Duration::ZERO,
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

    /// `count` more headers (`x-pad-0`, `x-pad-1`, …) of `bytes` bytes of
    /// value each: an answer whose head is far larger than its body.
    pub fn padded_headers(mut self, count: usize, bytes: usize) -> Reply {
        let value = "p".repeat(bytes);
        for n in 0..count {
            self = self.header(&format!("x-pad-{n}"), &value);
        }
        self
    }

    /// `value` as the body, with a JSON content type.
    pub fn json(self, value: &Value) -> Reply {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// Holds each request `delay` before answering.
    pub fn after(mut self, by: Duration) -> Reply {
        if let Reply::Answer { delay, .. } = &mut self {
            *delay = by;
        }
        self
    }

    /// `plain` gzip-compressed as the body, with `Content-Encoding: gzip`
    /// (one stored deflate block: real gzip bytes any decoder reads,
    /// without a compression library).
    pub fn gzip(self, plain: &[u8]) -> Reply {
        self.header("content-encoding", "gzip")
            .body(gzip_stored(plain))
    }
}

/// `plain` as a gzip member (RFC 1952) holding one stored deflate block
/// (RFC 1951, BTYPE 00): header, block, CRC-32 and length of the input.
pub fn gzip_stored(plain: &[u8]) -> Vec<u8> {
    let len = u16::try_from(plain.len()).expect("one stored block holds at most 65,535 bytes");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(1); // BFINAL, stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(plain);
    out.extend_from_slice(&crc32fast::hash(plain).to_le_bytes());
    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    out
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
    /// Fixed replies by request path, before the script.
    routes: Vec<(String, Reply)>,
    /// Replies for the next requests, in order.
    script: Mutex<VecDeque<Reply>>,
    /// The reply once the script is used up.
    then: Reply,
    received: Mutex<Vec<Received>>,
    /// How many requests arrived, to wait on.
    count: watch::Sender<usize>,
}

/// A webhook on 127.0.0.1:0 that records every request with its arrival
/// time and answers from its routes and script.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn ok() -> Receiver {
        Self::start(vec![], Reply::ok()).await
    }

    /// `/fail` answers 500 `nope`, anything else 200 `ok`.
    pub async fn ok_or_fail() -> Receiver {
        Self::routed(
            vec![("/fail", Reply::status(500).body("nope"))],
            Reply::ok().body("ok"),
        )
        .await
    }

    /// Answers the requests with `script` in order, then with `then`.
    pub async fn start(script: Vec<Reply>, then: Reply) -> Receiver {
        Self::serve(vec![], script, then).await
    }

    /// Answers a request to one of the `routes`' paths with its reply, any
    /// other with `then`.
    pub async fn routed(routes: Vec<(&str, Reply)>, then: Reply) -> Receiver {
        let routes = routes
            .into_iter()
            .map(|(path, reply)| (path.to_owned(), reply))
            .collect();
        Self::serve(routes, vec![], then).await
    }

    async fn serve(routes: Vec<(String, Reply)>, script: Vec<Reply>, then: Reply) -> Receiver {
        let state = Arc::new(ReceiverState {
            routes,
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

    /// Every request so far, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// How many calls each event got, by the `id` in the JSON body chime
    /// sends (`?` for a body without one).
    pub fn calls_per_event(&self) -> HashMap<String, usize> {
        let mut calls = HashMap::new();
        for request in self.state.received.lock().unwrap().iter() {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let id = body["id"].as_str().unwrap_or("?").to_owned();
            *calls.entry(id).or_default() += 1;
        }
        calls
    }

    /// How many calls event `id` got (see [`Receiver::calls_per_event`]).
    pub fn calls_for(&self, id: &str) -> usize {
        self.calls_per_event().get(id).copied().unwrap_or(0)
    }

    /// How many requests arrived so far.
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
    method: Method,
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
    let routed = state
        .routes
        .iter()
        .find(|(path, _)| path == uri.path())
        .map(|(_, reply)| reply.clone());
    let reply = routed.unwrap_or_else(|| {
        state
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| state.then.clone())
    });
    match reply {
        Reply::Hang => std::future::pending().await,
        Reply::Answer {
            status,
            headers,
            body,
            delay,
        } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut response = Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
    }
}
