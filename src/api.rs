//! The HTTP API: Hasura's `/v1/metadata` and `/v1/query`, `/healthz`, and
//! the console's assets.
//!
//! A `/v1/*` request goes through the front door first, from its headers
//! alone: a browser request (one with `Origin`) from a foreign origin, or
//! (with no admin secret) one naming a host that is not this machine, gets
//! 403; a missing or wrong secret gets 401, a role other than `admin` 400
//! (Hasura's codes and messages). Only then is the body read, up to the limit, so
//! a caller who may not use the API cannot make the server hold its bytes.
//! The body is then parsed and validated as a whole ([`crate::hasura`])
//! before anything is appended; writes are answered only once their records
//! are durable and applied.
//!
//! Listings are never built whole: a reply is rendered a chunk at a time as
//! the client takes it (`Reply`), each listing reading the projection a
//! page at a time (`Listing`), so one request's memory is bounded
//! whatever the number of events.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::hasura::{self, ApiError, Command, Endpoint, InvocationsOf};
use crate::log::LogError;
use crate::projection::{
    EventPager, EventView, InvocationPager, InvocationRef, Order, Projection, Status,
};
use crate::record::{EventId, Record, UnixMicros};
use crate::service::{Service, ServiceError};

/// What the handlers share.
pub struct ApiState {
    pub service: Arc<Service>,
    /// When set, every `/v1/*` call must carry it in `X-Hasura-Admin-Secret`
    /// (or `X-Hasura-Access-Key`, Hasura's older name for it).
    pub admin_secret: Option<AdminSecret>,
    /// The body limit, for the 413 message.
    pub max_body_bytes: usize,
    /// Which browser origins and host names may use `/v1/*`.
    pub front_door: FrontDoor,
    /// Which environment variables creates may name (`--webhook-env-allow`).
    pub env_policy: crate::webhook::EnvPolicy,
    /// Events whose cancel another request has planned but not yet
    /// appended, so that two racing deletes of one event write one record;
    /// shared with the dispatcher, whose check before a call waits for them.
    pub cancels: Arc<CancelsInFlight>,
}

/// The events some request is cancelling right now: planned (checked
/// against the projection) but not yet applied. A request planning a
/// delete of one of them waits until that request is done and then plans
/// again, as if it had come after it: the projection then shows the event
/// gone (`success` with nothing written, as for any second delete), or, if that append failed,
/// still there, and this request cancels it itself.
#[derive(Debug, Default)]
pub struct CancelsInFlight {
    /// A std mutex, held only while planning (never across an `.await`),
    /// and always taken after the projection's lock.
    ids: std::sync::Mutex<HashSet<EventId>>,
    /// Signalled whenever ids leave `ids`.
    done: tokio::sync::Notify,
}

impl CancelsInFlight {
    /// Whether some request has planned a cancel of `id` that is not yet
    /// applied (or refused). The dispatcher asks before it calls a webhook:
    /// such a cancel was planned while the event still showed `scheduled`,
    /// and it wins (`dispatch::attempt`).
    pub fn contains(&self, id: EventId) -> bool {
        self.lock().contains(&id)
    }

    /// Completes once ids leave the set after this call (create it before
    /// looking, as `notify_waiters` reaches only futures already created).
    pub(crate) fn done(&self) -> tokio::sync::futures::Notified<'_> {
        self.done.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<EventId>> {
        // Nothing panics while holding it; a poisoned set is still a set.
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One request's ids in [`CancelsInFlight`], removed (and waiters woken)
/// when dropped, whether its append succeeded, failed or panicked.
struct CancelsHeld {
    cancels: Arc<CancelsInFlight>,
    ids: Vec<EventId>,
}

impl Drop for CancelsHeld {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        {
            let mut held = self.cancels.lock();
            for id in &self.ids {
                held.remove(id);
            }
        }
        self.cancels.done.notify_waiters();
    }
}

/// The admin secret, kept as its SHA-256 digest: a guess is hashed too and
/// the two 32-byte digests are compared in constant time, so neither the
/// content nor the length of the secret shows in the answer's timing.
#[derive(Clone)]
pub struct AdminSecret {
    digest: [u8; 32],
}

impl AdminSecret {
    pub fn new(secret: &str) -> AdminSecret {
        AdminSecret {
            digest: sha256(secret.as_bytes()),
        }
    }

    /// Whether `given` is the secret.
    pub fn matches(&self, given: &[u8]) -> bool {
        bool::from(sha256(given).ct_eq(&self.digest))
    }
}

impl std::fmt::Debug for AdminSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminSecret(..)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// The checks made on a `/v1/*` request's `Origin` and `Host` before
/// anything else, so that a web page cannot drive the API from a browser.
#[derive(Clone, Debug, Default)]
pub struct FrontDoor {
    /// Whether the server serves HTTPS, for its own origin
    /// (`SCHEME://HOST` of the request).
    pub tls: bool,
    /// Origins besides the server's own whose browser requests are served
    /// (`--allow-origin`), as [`parse_origin`] writes them.
    pub allowed_origins: Vec<String>,
    /// Which `Host` a request may name.
    pub hosts: HostRule,
}

/// Which `Host` (or HTTP/2 authority) a browser's `/v1/*` request (one
/// with `Origin`) may name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostRule {
    /// Any: an admin secret guards the API, so a page reaching it through a
    /// rebound DNS name still cannot use it.
    #[default]
    Any,
    /// No secret: only loopback names and addresses, so a page whose DNS
    /// name is rebound to 127.0.0.1 (then same-origin with the server in
    /// the browser's eyes) is refused.
    Loopback,
    /// No secret on a non-loopback address (`--allow-unauthenticated`):
    /// loopback names or any IP address literal; a DNS rebinding attack
    /// needs a name, and the operator chose to expose the address.
    LoopbackOrAddress,
}

/// Why an `--allow-origin` value is not an origin.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an origin: write SCHEME://HOST[:PORT] with scheme http or https and no path")]
pub struct BadOrigin(String);

/// Reads an origin as browsers send it in `Origin`: `http://host[:port]` or
/// `https://…`, no path; lower-cased, a trailing `/` dropped.
pub fn parse_origin(text: &str) -> Result<String, BadOrigin> {
    let origin = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => Ok(origin),
        _ => Err(BadOrigin(text.to_string())),
    }
}

impl FrontDoor {
    /// Refuses (403) a request from a browser page of a foreign origin, or,
    /// per [`HostRule`], one from a page that reached this server through a
    /// host name that is not this machine's (DNS rebinding: the page is then
    /// same-origin with the server as far as the browser knows).
    ///
    /// Both rules apply only to requests that carry `Origin`: browsers send
    /// it on every request that is not a GET or HEAD, cross-origin or not,
    /// `no-cors` included (the Fetch standard), and `/v1/*` takes only POST.
    /// A request without it comes from no web page (curl, SDKs, proxies that
    /// rewrite `Host`) and is left to the admin secret.
    fn check(&self, request: &Request) -> Result<(), ApiError> {
        let Some(origin) = request.headers().get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        if self.allowed_origins.contains(&origin) {
            return Ok(());
        }
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        let scheme = if self.tls { "https" } else { "http" };
        let own = host.is_some_and(|h| origin == format!("{scheme}://{}", h.to_ascii_lowercase()));
        if !own {
            return Err(ApiError::forbidden(
                "requests from this origin are refused (see --allow-origin)",
            ));
        }
        if !host.is_some_and(|h| self.host_allowed(h)) {
            return Err(ApiError::forbidden(
                "without an admin secret, browser requests must name this machine as localhost or a loopback address",
            ));
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        if self.hosts == HostRule::Any {
            return true;
        }
        let name = host_name(host);
        let name = name.to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        match name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || self.hosts == HostRule::LoopbackOrAddress,
            Err(_) => false,
        }
    }
}

/// `host` of `host:port`, `[v6]` of `[v6]:port`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The routes. Bodies of `/v1/*` are read by the handlers, after the front
/// door, up to `max_body_bytes`.
pub fn router(api: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/metadata", post(metadata))
        .route("/v1/query", post(query))
        .merge(crate::console::routes())
        // Hasura's answer to any other path, and to a path it serves asked
        // with another method (`GET /v1/metadata`): 404, not axum's 405.
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(api)
}

async fn not_found() -> Response {
    error_response(ApiError::resource_not_found())
}

/// Every JSON answer's `Content-Type`, as Hasura sends it.
const JSON_UTF8: &str = "application/json; charset=utf-8";

async fn healthz() -> &'static str {
    "OK"
}

async fn metadata(State(api): State<Arc<ApiState>>, request: Request) -> Response {
    answer(api.handle(Endpoint::Metadata, request).await)
}

async fn query(State(api): State<Arc<ApiState>>, request: Request) -> Response {
    answer(api.handle(Endpoint::Query, request).await)
}

/// The response: the reply's first chunk is rendered before the status is
/// chosen, so a read that fails there is still a 500, and a reply that fits
/// in it goes out whole with a `Content-Length`. A larger one is sent as it
/// is rendered (chunked in HTTP/1.1), chunk by chunk as the client takes
/// them; a read failing after that cuts the connection (see [`Streamed`]).
fn answer(result: Result<Reply, ApiError>) -> Response {
    let mut reply = match result {
        Ok(reply) => reply,
        Err(e) => return error_response(e),
    };
    let first = match reply.next_chunk() {
        Ok(first) => first.unwrap_or_default(),
        Err(e) => return error_response(e),
    };
    let body = if reply.is_done() {
        Body::from(first)
    } else {
        Body::new(Streamed {
            first: Some(first),
            reply,
        })
    };
    let json = header::HeaderValue::from_static(JSON_UTF8);
    (StatusCode::OK, [(header::CONTENT_TYPE, json)], body).into_response()
}

fn error_response(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let json = header::HeaderValue::from_static(JSON_UTF8);
    (status, [(header::CONTENT_TYPE, json)], e.to_json().to_string()).into_response()
}

impl ApiState {
    async fn handle(&self, endpoint: Endpoint, request: Request) -> Result<Reply, ApiError> {
        // Everything that can refuse the caller looks at headers only: not
        // one byte of the body is read for a request that will be refused.
        self.front_door.check(&request)?;
        self.authorize(request.headers())?;
        let body = self.read_body(request.into_body()).await?;
        let mut command = hasura::parse_request(&body, endpoint)?;
        hasura::check_env_policy(&mut command, &self.env_policy)?;
        self.execute(command).await
    }

    /// The whole body, or 413 once it passes the limit (with or without a
    /// `Content-Length`).
    async fn read_body(&self, body: Body) -> Result<Bytes, ApiError> {
        match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(ApiError::payload_too_large(self.max_body_bytes))
            }
            Err(e) => {
                tracing::debug!(error = %e, "request body not read");
                Err(ApiError::parse_failed("$", "the request body could not be read"))
            }
        }
    }

    /// Hasura's checks, in Hasura's order and words: the secret, from
    /// `X-Hasura-Admin-Secret` or its deprecated name `X-Hasura-Access-Key`
    /// (401 when missing or wrong), then the role: the metadata API is for
    /// `admin` only (400 at `$.args`, as Hasura answers a known caller
    /// asking for another role).
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(secret) = &self.admin_secret {
            let given = headers
                .get("x-hasura-admin-secret")
                .or_else(|| headers.get("x-hasura-access-key"));
            match given {
                None => {
                    return Err(ApiError::access_denied(
                        r#""x-hasura-admin-secret"/"x-hasura-access-key" required, but not found"#,
                    ));
                }
                Some(given) if !secret.matches(given.as_bytes()) => {
                    return Err(ApiError::access_denied(
                        r#"invalid "x-hasura-admin-secret"/"x-hasura-access-key""#,
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(role) = headers.get("x-hasura-role")
            && role.as_bytes() != b"admin"
        {
            return Err(ApiError::admin_only());
        }
        Ok(())
    }

    async fn execute(&self, command: Command) -> Result<Reply, ApiError> {
        let answer = match command {
            Command::BulkKeepGoing(items) => self.keep_going(items).await,
            command => {
                let mut answers = self.execute_all(vec![command]).await?;
                answers.pop().unwrap_or(Answer::Value(Value::Null))
            }
        };
        Reply::single(answer)
    }

    /// `bulk_keep_going`: each command runs on its own, in order, as if
    /// sent alone; one that fails (or did not parse) is answered with its
    /// error object in its place, and the others still run. Boxed because
    /// a keep-going bulk may hold another.
    fn keep_going(
        &self,
        items: Vec<Result<Command, ApiError>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + '_>> {
        Box::pin(async move {
            let mut answers = Vec::with_capacity(items.len());
            for item in items {
                let answer = match item {
                    Err(e) => Answer::Value(e.to_json()),
                    Ok(Command::BulkKeepGoing(inner)) => self.keep_going(inner).await,
                    Ok(command) => match self.execute_all(vec![command]).await {
                        Ok(mut answer) => answer.pop().unwrap_or(Answer::Value(Value::Null)),
                        Err(e) => Answer::Value(e.to_json()),
                    },
                };
                answers.push(answer);
            }
            Answer::List(answers)
        })
    }

    /// Runs commands as one unit: every write is checked first, then all
    /// writes are appended as one batch (all or nothing), then the reads
    /// are answered. A request deleting an event another request is
    /// cancelling waits for it and plans again ([`CancelsInFlight`]).
    async fn execute_all(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Answer>, ApiError> {
        let service = &self.service;
        let (planned, records, held) = loop {
            // Read again after a wait, so records carry the time they were
            // planned at.
            let now = service.clock.now();
            // Made before looking, so a request finishing in between still
            // wakes this one (`notify_waiters` reaches every `Notified`
            // already created).
            let finished = self.cancels.done.notified();
            {
                let projection = service.projection();
                let mut in_flight = self.cancels.lock();
                // Another request cancelling an event this one deletes: plan
                // once it is done, when the projection shows its outcome.
                // Checked before planning, so the commands are planned (and
                // moved) only once.
                let busy = commands
                    .iter()
                    .any(|command| deletes_any(command, &|id| in_flight.contains(id)));
                if !busy {
                    let mut scope = Scope::default();
                    let mut records = Vec::new();
                    let planned: Vec<Planned> = commands
                        .into_iter()
                        .map(|command| plan(&projection, &mut scope, command, now, &mut records))
                        .collect();
                    // Still under the lock: no other request can plan a
                    // cancel of these between this look and this claim.
                    in_flight.extend(scope.cancelled.iter().copied());
                    let held = CancelsHeld {
                        cancels: self.cancels.clone(),
                        ids: scope.cancelled.into_iter().collect(),
                    };
                    break (planned, records, held);
                }
            }
            finished.await;
        };
        if !records.is_empty() {
            // In a task of its own, so that a caller who hangs up does not
            // cut the append short between durable and applied, and the
            // cancels it holds are let go only once it is done.
            let service = service.clone();
            let appended = tokio::spawn(async move {
                let appended = service.append(records).await;
                drop(held);
                appended
            })
            .await
            .map_err(internal)?;
            appended.map_err(unavailable)?;
        }
        planned.into_iter().map(|plan| self.answer(plan)).collect()
    }

    /// A planned command's answer, once the request's writes are in.
    fn answer(&self, plan: Planned) -> Result<Answer, ApiError> {
        match plan {
            Planned::Answered(answer) => Ok(Answer::Value(answer)),
            Planned::Read(read) => self.read(read),
            Planned::List(plans) => plans
                .into_iter()
                .map(|plan| self.answer(plan))
                .collect::<Result<_, _>>()
                .map(Answer::List),
        }
    }

    /// Answers a read, once the request's writes are in: a listing that is
    /// read and rendered page by page as the answer is sent.
    fn read(&self, read: Read) -> Result<Answer, ApiError> {
        match read {
            Read::Events {
                statuses,
                order,
                limit,
                offset,
                get_rows_count,
            } => Ok(self.events(statuses, order, limit, offset, get_rows_count)),
            Read::Invocations {
                event_id,
                order,
                limit,
                offset,
                get_rows_count,
            } => Ok(self.invocations(event_id, order, limit, offset, get_rows_count)),
        }
    }

    fn events(
        &self,
        statuses: Vec<Status>,
        order: Order,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    ) -> Answer {
        let count = get_rows_count.then_some(Count::Events(statuses.clone()));
        Answer::Listing(Box::new(Listing::new(
            Arc::clone(&self.service),
            Rows::Events {
                pager: EventPager::ordered(statuses, order, offset, limit),
                page: VecDeque::new(),
            },
            count,
        )))
    }

    fn invocations(
        &self,
        event_id: InvocationsOf,
        order: Order,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    ) -> Answer {
        // An event that does not exist (or no longer does) simply has no
        // invocations: the pager finds none, and the count is 0.
        let event_id = match event_id {
            InvocationsOf::Every => None,
            InvocationsOf::Event(id) => Some(id),
            InvocationsOf::NoEvent => {
                return Answer::Value(hasura::no_invocations(get_rows_count));
            }
        };
        let count = get_rows_count.then_some(Count::Invocations(event_id));
        Answer::Listing(Box::new(Listing::new(
            Arc::clone(&self.service),
            Rows::Invocations {
                pager: InvocationPager::ordered(event_id, order, offset, limit),
                page: VecDeque::new(),
            },
            count,
        )))
    }
}

/// How many rows a listing reads from the projection per take of its lock.
/// A page costs tens of bytes per row (locations, not payloads), so a
/// thousand keeps the lock short and the memory small.
pub const LISTING_PAGE_ROWS: usize = 1_000;

/// A reply is sent in chunks of about this many bytes (a chunk ends after
/// the row that passes it): the memory one reply holds while it waits for
/// its client to read, whatever the listing's size.
pub const REPLY_CHUNK_BYTES: usize = 64 * 1024;

/// What one command answers.
enum Answer {
    /// A write's answer, built whole (it is small).
    Value(Value),
    /// A listing, read and rendered as the reply is sent. Boxed: it is much
    /// larger than a `Value` and a bulk holds many answers.
    Listing(Box<Listing>),
    /// A bulk's answers, one per command: `[answer,answer,…]`.
    List(Vec<Answer>),
}

/// A request's whole answer, rendered a chunk at a time: a single
/// command's answer, or a bulk's `[answer,answer,…]`.
struct Reply {
    /// What is left to render, in order.
    parts: VecDeque<Part>,
}

enum Part {
    Bytes(Vec<u8>),
    Listing(Box<Listing>),
}

impl Reply {
    fn single(answer: Answer) -> Result<Reply, ApiError> {
        let mut reply = Reply {
            parts: VecDeque::new(),
        };
        reply.push(answer)?;
        Ok(reply)
    }

    /// Appends `answer`; a list as one JSON array, as `serde_json` writes a
    /// `Value::Array`: no spaces.
    fn push(&mut self, answer: Answer) -> Result<(), ApiError> {
        match answer {
            Answer::Value(value) => self.write(|out| serde_json::to_writer(out, &value).map_err(internal)),
            Answer::Listing(listing) => {
                self.parts.push_back(Part::Listing(listing));
                Ok(())
            }
            Answer::List(answers) => {
                self.write(|out| out.push(b'['));
                for (i, answer) in answers.into_iter().enumerate() {
                    if i > 0 {
                        self.write(|out| out.push(b','));
                    }
                    self.push(answer)?;
                }
                self.write(|out| out.push(b']'));
                Ok(())
            }
        }
    }

    /// Writes what is known now into the bytes part at the end: one buffer
    /// for a run of written answers (a bulk of creates is one part).
    fn write<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut bytes = match self.parts.pop_back() {
            Some(Part::Bytes(bytes)) => bytes,
            Some(listing) => {
                self.parts.push_back(listing);
                Vec::new()
            }
            None => Vec::new(),
        };
        let result = f(&mut bytes);
        self.parts.push_back(Part::Bytes(bytes));
        result
    }

    /// Whether everything has been rendered.
    fn is_done(&self) -> bool {
        self.parts.is_empty()
    }

    /// The next chunk, about [`REPLY_CHUNK_BYTES`]; `None` once all is sent.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        let mut out = Vec::new();
        while out.len() < REPLY_CHUNK_BYTES {
            match self.parts.front_mut() {
                None => break,
                Some(Part::Bytes(bytes)) => {
                    out.append(bytes);
                    self.parts.pop_front();
                }
                Some(Part::Listing(listing)) => {
                    if listing.fill(&mut out)? {
                        self.parts.pop_front();
                    }
                }
            }
        }
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }
}

/// A reply's body once its first chunk is out: each poll renders the next
/// chunk, so a chunk is rendered only when hyper has sent the one before
/// (a slow client holds one chunk, not the listing).
struct Streamed {
    first: Option<Bytes>,
    reply: Reply,
}

/// A read failed after the answer began: the status is sent, so the
/// connection is cut rather than the answer ended, and the client sees an
/// incomplete body (no final chunk), never a short listing that looks whole.
#[derive(Debug, thiserror::Error)]
#[error("a read failed while the answer was being sent; the server log has the detail")]
struct ReplyCut;

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = ReplyCut;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, ReplyCut>>> {
        let this = self.get_mut();
        let chunk = match this.first.take() {
            Some(first) => Ok(Some(first)),
            None => this.reply.next_chunk().map_err(|_| ReplyCut),
        };
        std::task::Poll::Ready(chunk.transpose().map(|c| c.map(http_body::Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.reply.is_done()
    }
}

/// A listing being rendered: its pager, the page being rendered, and where
/// it stands in its JSON.
///
/// The projection is locked once per page ([`LISTING_PAGE_ROWS`] rows), and
/// rows are read from the log and rendered outside the lock. Writes that
/// land between two pages are seen as [`EventPager`] and
/// [`InvocationPager`] say: a row appears at most once and the order holds;
/// a row deleted before its page is read is left out, one created behind
/// the cursor too, and each row shows its state as of its page. `count` is
/// taken first, under the same lock as the first page, so it is the size
/// of the listing as it stood then (Hasura's `count` is likewise that of
/// its query, not a promise about rows read later).
struct Listing {
    service: Arc<Service>,
    rows: Rows,
    /// What `count` counts, when asked for (`get_rows_count`).
    count: Option<Count>,
    stage: Stage,
    /// The log's epoch when the page was read: its locations are read as
    /// of it ([`Service::read_as_of`]), since a compaction may move records
    /// while a slow client takes the page.
    epoch: u64,
}

enum Rows {
    Events {
        pager: EventPager,
        page: VecDeque<EventView>,
    },
    Invocations {
        pager: InvocationPager,
        page: VecDeque<InvocationRef>,
    },
}

enum Count {
    Events(Vec<Status>),
    Invocations(Option<EventId>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing written yet.
    Start,
    /// The head is written; `any` once a row is.
    Rows { any: bool },
    Done,
}

impl Listing {
    fn new(service: Arc<Service>, rows: Rows, count: Option<Count>) -> Listing {
        Listing {
            service,
            rows,
            count,
            stage: Stage::Start,
            epoch: 0,
        }
    }

    /// Renders into `out` until it holds [`REPLY_CHUNK_BYTES`] or the
    /// listing is over; returns whether it is over.
    fn fill(&mut self, out: &mut Vec<u8>) -> Result<bool, ApiError> {
        while out.len() < REPLY_CHUNK_BYTES {
            match self.stage {
                Stage::Start => {
                    let count = {
                        let (projection, epoch) =
                            self.service.projection_and_epoch().map_err(internal)?;
                        self.epoch = epoch;
                        self.rows.next_page(&projection);
                        self.count.as_ref().map(|count| match count {
                            Count::Events(statuses) => projection.count(statuses),
                            Count::Invocations(event) => projection.invocation_count(*event),
                        })
                    };
                    self.rows.listing().head(count, out);
                    self.stage = Stage::Rows { any: false };
                }
                Stage::Rows { any } => {
                    if self.rows.page_is_empty() {
                        if self.rows.is_done() {
                            out.extend_from_slice(hasura::LISTING_TAIL);
                            self.stage = Stage::Done;
                        } else {
                            let (projection, epoch) =
                                self.service.projection_and_epoch().map_err(internal)?;
                            self.epoch = epoch;
                            self.rows.next_page(&projection);
                        }
                        continue;
                    }
                    let mark = out.len();
                    if any {
                        out.push(hasura::ROW_SEPARATOR);
                    }
                    if self.rows.render_next(&self.service, self.epoch, out)? {
                        self.stage = Stage::Rows { any: true };
                    } else {
                        out.truncate(mark);
                    }
                }
                Stage::Done => return Ok(true),
            }
        }
        Ok(self.stage == Stage::Done)
    }
}

impl Rows {
    fn listing(&self) -> hasura::Listing {
        match self {
            Rows::Events { .. } => hasura::Listing::Events,
            Rows::Invocations { .. } => hasura::Listing::Invocations,
        }
    }

    /// Reads the next page from `projection` (locked by the caller).
    fn next_page(&mut self, projection: &Projection) {
        match self {
            Rows::Events { pager, page } => {
                page.extend(pager.next_page(projection, LISTING_PAGE_ROWS));
            }
            Rows::Invocations { pager, page } => {
                page.extend(pager.next_page(projection, LISTING_PAGE_ROWS));
            }
        }
    }

    fn page_is_empty(&self) -> bool {
        match self {
            Rows::Events { page, .. } => page.is_empty(),
            Rows::Invocations { page, .. } => page.is_empty(),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Rows::Events { pager, .. } => pager.is_done(),
            Rows::Invocations { pager, .. } => pager.is_done(),
        }
    }

    /// Reads the page's next row from the log (its locations looked up at
    /// `epoch`) and appends its JSON to `out`; false when it renders to
    /// nothing (a record that is not the invocation its reference names,
    /// or one that left every view since the page was read).
    fn render_next(
        &mut self,
        service: &Service,
        epoch: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool, ApiError> {
        let value = match self {
            Rows::Events { page, .. } => {
                let Some(view) = page.pop_front() else {
                    return Ok(false);
                };
                let record = match service.read_as_of(view.loc, epoch).map_err(internal)? {
                    Some(record) => record,
                    // Moved more than once, or gone, since the page was read.
                    None => match service.read_created(view.id).map_err(internal)? {
                        Some(created) => Record::EventCreated(created),
                        None => return Ok(false),
                    },
                };
                match record {
                    Record::EventCreated(created) => hasura::render_event(&created, &view),
                    other => {
                        return Err(internal(format!(
                            "event {} points at a {} record",
                            view.id,
                            other.kind()
                        )));
                    }
                }
            }
            Rows::Invocations { page, .. } => {
                let Some(r) = page.pop_front() else {
                    return Ok(false);
                };
                let record = match service.read_as_of(r.loc, epoch).map_err(internal)? {
                    Some(record) => record,
                    None => match service.read_invocation(&r).map_err(internal)? {
                        Some(record) => record,
                        None => return Ok(false),
                    },
                };
                match hasura::render_invocation(&r, &record) {
                    Some(value) => value,
                    None => return Ok(false),
                }
            }
        };
        serde_json::to_writer(&mut *out, &value).map_err(internal)?;
        Ok(true)
    }
}

/// A write the log could not take: 503, and the server keeps serving reads.
/// The whole cause (which names files of the data directory) goes to the
/// server's log; the caller learns only the OS error, which tells a full
/// disk from a failing one, and whether a restart is needed.
fn unavailable(e: ServiceError) -> ApiError {
    tracing::error!(error = %e, "append failed");
    let cause = match &e {
        ServiceError::Log(LogError::Io(io)) => io.source.to_string(),
        ServiceError::Log(LogError::Fatal(io)) => format!(
            "{} failed ({}), no more writes until the server restarts",
            io.op, io.source
        ),
        ServiceError::Log(LogError::Poisoned(_)) => {
            "an earlier failure stopped writes until the server restarts".to_string()
        }
        _ => "see the server log".to_string(),
    };
    ApiError::unavailable(format!("the log cannot accept writes: {cause}"))
}

/// A read that failed inside chime: 500, with the detail in the server's log
/// only.
fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "read failed");
    ApiError::unexpected("internal error; the server log has the detail")
}

/// What one command of a request comes to, before anything is appended.
enum Planned {
    /// A write, answered now: its records are queued and its answer does
    /// not depend on them being applied.
    Answered(Value),
    /// A read, answered once the request's writes are in, so that a bulk
    /// sees its own creates and deletes.
    Read(Read),
    /// A bulk inside the request: its commands, planned into the same unit.
    List(Vec<Planned>),
}

/// The reads a request can make.
enum Read {
    Events {
        statuses: Vec<Status>,
        order: Order,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    },
    Invocations {
        event_id: InvocationsOf,
        order: Order,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    },
}

/// What one request has planned so far, beyond its records.
#[derive(Default)]
struct Scope {
    /// The events this request's deletes cancel: a second delete of one
    /// (in the same bulk) is answered as the first was, with no record.
    cancelled: HashSet<EventId>,
}

/// Whether `command` (or a command of a bulk it is) deletes an event
/// `busy` says is being cancelled by another request.
fn deletes_any(command: &Command, busy: &dyn Fn(&EventId) -> bool) -> bool {
    match command {
        Command::DeleteScheduledEvent { event_id } => busy(event_id),
        Command::Bulk(commands) => commands.iter().any(|c| deletes_any(c, busy)),
        Command::BulkKeepGoing(items) => items.iter().flatten().any(|c| deletes_any(c, busy)),
        _ => false,
    }
}

/// Plans one command of a request: a write is checked against
/// `projection` (and the cancels this request made earlier, in `scope`)
/// and its records queued in `records`; a read is kept for later. Nothing
/// here fails: every refusal was made while parsing, so a request's
/// commands are all planned and its writes appended as one batch.
///
/// A bulk inside the request is planned into the same unit, its answer a
/// nested list. A `bulk_keep_going` inside one answers the commands that
/// did not parse (or that the env policy refused) with their errors in
/// place, and plans the others into the unit.
fn plan(
    projection: &Projection,
    scope: &mut Scope,
    command: Command,
    now: UnixMicros,
    records: &mut Vec<Record>,
) -> Planned {
    match command {
        Command::CreateScheduledEvent(new) => {
            let id = EventId::new_v4();
            records.push(Record::EventCreated(new.into_record(id, now)));
            Planned::Answered(hasura::created(id))
        }
        Command::DeleteScheduledEvent { event_id } => {
            // The same delete twice in one request is one cancel: the
            // projection does not show this request's own writes yet.
            if scope.cancelled.contains(&event_id) {
                return Planned::Answered(hasura::success());
            }
            // An id that names no live event (never created, or deleted
            // already) is answered `success` with nothing written, as Hasura
            // runs its delete without checking the row count.
            if projection.event(event_id).is_none() {
                return Planned::Answered(hasura::success());
            }
            records.push(Record::EventCancelled { event_id, at: now });
            scope.cancelled.insert(event_id);
            Planned::Answered(hasura::success())
        }
        Command::GetScheduledEvents {
            statuses,
            order,
            limit,
            offset,
            get_rows_count,
        } => Planned::Read(Read::Events {
            statuses,
            order,
            limit,
            offset,
            get_rows_count,
        }),
        Command::GetScheduledEventInvocations {
            event_id,
            order,
            limit,
            offset,
            get_rows_count,
        } => Planned::Read(Read::Invocations {
            event_id,
            order,
            limit,
            offset,
            get_rows_count,
        }),
        Command::Bulk(commands) => Planned::List(
            commands
                .into_iter()
                .map(|command| plan(projection, scope, command, now, records))
                .collect(),
        ),
        Command::BulkKeepGoing(items) => Planned::List(
            items
                .into_iter()
                .map(|item| match item {
                    Ok(command) => plan(projection, scope, command, now, records),
                    Err(e) => Planned::Answered(e.to_json()),
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_secret_matches_only_itself_whatever_the_length() {
        let secret = AdminSecret::new("s3cret-s3cret-s3cret");
        assert!(secret.matches(b"s3cret-s3cret-s3cret"));
        for guess in ["", "s", "s3cret-s3cret-s3cre", "s3cret-s3cret-s3cret!", "S3cret-s3cret-s3cret"] {
            assert!(!secret.matches(guess.as_bytes()), "{guess:?}");
        }
        assert_eq!(format!("{secret:?}"), "AdminSecret(..)", "Debug hides it");
    }

    #[test]
    fn origins_are_read_as_browsers_send_them() {
        assert_eq!(parse_origin("HTTPS://App.Example/").unwrap(), "https://app.example");
        assert_eq!(parse_origin("http://127.0.0.1:3000").unwrap(), "http://127.0.0.1:3000");
        for bad in ["app.example", "ftp://x", "http://", "http://x/path", "https://u@x"] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("example"), "example");
        let door = |hosts| FrontDoor {
            hosts,
            ..FrontDoor::default()
        };
        assert!(door(HostRule::Loopback).host_allowed("127.0.0.2:1"));
        assert!(door(HostRule::Loopback).host_allowed("app.localhost"));
        assert!(!door(HostRule::Loopback).host_allowed("10.0.0.1:1"));
        assert!(!door(HostRule::Loopback).host_allowed("localhost.evil.example"));
        assert!(door(HostRule::LoopbackOrAddress).host_allowed("10.0.0.1:1"));
        assert!(!door(HostRule::LoopbackOrAddress).host_allowed("evil.example"));
        assert!(door(HostRule::Any).host_allowed("evil.example"));
    }
}
