//! A client of one chime's HTTP API, with the commands tests send most.

use std::time::Duration;

use serde_json::{Value, json};

use super::wait::eventually;

/// A plain HTTP client with a timeout, so a hung server fails the test
/// instead of hanging it, and no proxy, so 127.0.0.1 is really local.
/// The keys of an event in `get_scheduled_events`, all always present,
/// sorted: Hasura's 13.
pub const EVENT_KEYS: [&str; 13] = [
    "comment",
    "created_at",
    "header_conf",
    "id",
    "next_retry_at",
    "payload",
    "request_transform",
    "response_transform",
    "retry_conf",
    "scheduled_time",
    "status",
    "tries",
    "webhook_conf",
];

pub fn http_client() -> reqwest::Client {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("build reqwest client")
}

/// [`http_client`] that trusts only the PEM certificate at `cert` (a
/// [`self_signed_cert`](super::self_signed_cert)), for a server on HTTPS.
pub fn https_client(cert: &std::path::Path) -> reqwest::Client {
    crate::tls::install_crypto_provider();
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .expect("build reqwest client")
}

/// Whether `e` says the connection failed or broke (refused, reset, closed
/// before the whole answer): what a killed server looks like to a client.
/// A timeout is not one: a server that hangs is alive, and wrong.
pub fn is_connection_error(e: &reqwest::Error) -> bool {
    !e.is_timeout() && (e.is_connect() || e.is_request() || e.is_body())
}

/// Status and JSON body of a response (`Value::Null` if the body is not
/// JSON).
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("response body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A client of one server's API: `/v1/metadata`, `/v1/query`, and the
/// commands built on them.
#[derive(Clone)]
pub struct ApiClient {
    /// `http://127.0.0.1:PORT` (or `https://…`).
    pub base: String,
    pub http: reqwest::Client,
    /// Sent as `X-Hasura-Admin-Secret` when set.
    pub secret: Option<String>,
}

impl ApiClient {
    /// A client of the server at `base` (a URL such as
    /// [`Listening::url`](crate::server::Listening::url)), without a secret.
    pub fn new(base: impl Into<String>) -> ApiClient {
        ApiClient {
            base: base.into(),
            http: http_client(),
            secret: None,
        }
    }

    /// `base` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs raw bytes to `path` with the admin secret (if any); fails only
    /// when no whole answer comes (the server is gone, before or after its
    /// status line: a kill can land between the head and the body).
    pub async fn try_post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = &self.secret {
            request = request.header("x-hasura-admin-secret", secret);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// [`ApiClient::try_post_raw`] that must be answered.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.try_post_raw(path, body).await.expect("request sent")
    }

    /// POSTs a JSON body to `path` and returns the response itself, for a
    /// test that looks at its headers or its exact bytes.
    pub async fn post_response(&self, path: &str, body: &Value) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(secret) = &self.secret {
            request = request.header("x-hasura-admin-secret", secret);
        }
        request.send().await.expect("request sent")
    }

    /// Sends `method` to `path` with exactly `headers` (the client's secret
    /// is not added: a test of the front door chooses every header) and
    /// `body`: the status, the response's headers and its JSON body
    /// (`Value::Null` if the body is not JSON).
    pub async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("response body");
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Creates one event per element of `args`, through bulks of at most
    /// 500 creates (well under the default body limit), and returns their
    /// ids in the same order.
    pub async fn create_all(&self, args: &[Value]) -> Vec<String> {
        let mut ids = Vec::with_capacity(args.len());
        for chunk in args.chunks(500) {
            let creates: Vec<Value> = chunk
                .iter()
                .map(|args| json!({"type": "create_scheduled_event", "args": args}))
                .collect();
            let (status, answers) = self.query(json!({"type": "bulk", "args": creates})).await;
            assert_eq!(status, 200, "bulk create was answered {answers}");
            let answers = answers.as_array().expect("a bulk answers an array");
            ids.extend(answers.iter().map(|answer| {
                answer["event_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no event_id in {answer}"))
                    .to_owned()
            }));
        }
        ids
    }

    /// POSTs a JSON body to `/v1/metadata`: the status and the JSON answer.
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

    /// Deletes the event `id`, which must succeed.
    pub async fn delete(&self, id: &str) {
        let answer = self
            .ok(json!({
                "type": "delete_scheduled_event",
                "args": {"type": "one_off", "event_id": id},
            }))
            .await;
        assert_eq!(answer, json!({"message": "success"}));
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

    /// The event as `get_scheduled_events` shows it, or `None` when it is
    /// not listed (unknown or deleted).
    pub async fn find_event(&self, id: &str) -> Option<Value> {
        self.all_events().await.into_iter().find(|e| e["id"] == id)
    }

    /// The event with `id`, which must be listed.
    pub async fn event(&self, id: &str) -> Value {
        self.find_event(id)
            .await
            .unwrap_or_else(|| panic!("event {id} is not listed"))
    }

    /// `get_scheduled_event_invocations` with `args`.
    pub async fn invocations(&self, args: Value) -> Value {
        self.ok(json!({"type": "get_scheduled_event_invocations", "args": args}))
            .await
    }

    /// The invocation logs of event `id`, newest first.
    pub async fn invocations_of(&self, id: &str) -> Vec<Value> {
        match self
            .invocations(json!({"type": "one_off", "event_id": id}))
            .await["invocations"]
            .take()
        {
            Value::Array(invocations) => invocations,
            other => panic!("invocations is not an array: {other}"),
        }
    }

    /// Waits (bounded) until event `id` is listed and `done` holds for it,
    /// and returns it.
    pub async fn wait_event(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        eventually(&format!("event {id} is {what}"), || async {
            self.find_event(id).await.filter(|e| done(e))
        })
        .await
    }

    /// Waits (bounded) until event `id` has `status`, and returns it.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_event(id, status, |e| e["status"] == status).await
    }

    /// Every API view, as the bytes of its answers: the events of every
    /// status and of all, with counts, in both orders; every event's
    /// invocation logs; every invocation. Two servers that answer the same
    /// here show their users the same state.
    pub async fn views(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        let statuses: [&[&str]; 7] = [
            &[],
            &["scheduled"],
            &["locked"],
            &["delivered"],
            &["error"],
            &["dead"],
            &["scheduled", "locked", "delivered", "error", "dead"],
        ];
        for status in statuses {
            for (column, order) in [("scheduled_time", "asc"), ("created_at", "desc")] {
                let args = serde_json::json!({
                    "type": "one_off",
                    "status": status,
                    "get_rows_count": true,
                    "order_by": [{"column": column, "type": order}],
                });
                let answer = self.events(args.clone()).await;
                out.push((args.to_string(), answer.to_string()));
            }
        }
        let args = serde_json::json!({"type": "one_off", "get_rows_count": true});
        let answer = self.invocations(args.clone()).await;
        out.push((args.to_string(), answer.to_string()));
        for event in self.all_events().await {
            let args = serde_json::json!(
                {"type": "one_off", "event_id": event["id"], "get_rows_count": true}
            );
            let answer = self.invocations(args.clone()).await;
            out.push((args.to_string(), answer.to_string()));
        }
        out
    }
}

/// The one invocation of an event, after checking there is exactly one.
pub async fn only_invocation(api: &ApiClient, id: &str) -> Value {
    let invocations = api.invocations_of(id).await;
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

/// Bytes a `webhook_response` invocation keeps of the answer: the names and
/// values of its headers, and its body (they share `--response-body-cap`).
pub fn stored_response_bytes(invocation: &Value) -> (usize, usize) {
    let data = &invocation["response"]["data"];
    let headers = data["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().len() + h["value"].as_str().unwrap().len())
        .sum();
    (headers, data["body"].as_str().unwrap().len())
}

/// An HTTP/2-only client that speaks prior knowledge (h2c) over plain TCP,
/// otherwise like [`http_client`].
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("build reqwest h2c client")
}

/// Writes `request` (head and as much body as the test wants sent) on a new
/// connection to `addr`, leaves the connection open for writing, and
/// returns the response's head and body as text once the server has sent
/// them all (by `Content-Length`) or closed the connection. Panics if no
/// complete answer comes within [`WAIT`](super::WAIT): a server that waits
/// for bytes that are never sent fails the test instead of hanging it.
pub async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write the request");
    let mut answer = Vec::new();
    let complete = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        });
        length.is_some_and(|n| body.len() >= n)
    };
    let read = async {
        let mut buf = [0u8; 4096];
        while !complete(&answer) {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(super::WAIT, read)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no complete answer within {:?}; got so far: {:?}",
                super::WAIT,
                String::from_utf8_lossy(&answer)
            )
        });
    String::from_utf8_lossy(&answer).into_owned()
}
