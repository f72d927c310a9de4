//! The HTTP API: Hasura's `/v1/metadata` and `/v1/query`, `/healthz`, and
//! the console's assets.
//!
//! A request is authenticated, parsed and validated as a whole
//! ([`crate::hasura`]) before anything is appended; writes are answered
//! only once their records are durable and applied.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::hasura::{self, ApiError, Command, Endpoint};
use crate::projection::{Projection, Status};
use crate::record::{EventId, Record, UnixMicros};
use crate::service::{Service, ServiceError};

/// What the handlers share.
pub struct ApiState {
    pub service: Arc<Service>,
    /// When set, every `/v1/*` call must carry it in `X-Hasura-Admin-Secret`.
    pub admin_secret: Option<String>,
    /// The body limit, for the 413 message.
    pub max_body_bytes: usize,
    /// Which environment variables creates may name (`--webhook-env-allow`).
    pub env_policy: crate::webhook::EnvPolicy,
}

/// The routes, with a body limit of `max_body_bytes`.
pub fn router(api: Arc<ApiState>) -> Router {
    let max_body_bytes = api.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/metadata", post(metadata))
        .route("/v1/query", post(query))
        .merge(crate::console::routes())
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(api)
}

async fn healthz() -> &'static str {
    "OK"
}

async fn metadata(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(api.handle(Endpoint::Metadata, &headers, body).await)
}

async fn query(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(api.handle(Endpoint::Query, &headers, body).await)
}

fn answer(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(e.to_json())).into_response()
        }
    }
}

impl ApiState {
    async fn handle(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Value, ApiError> {
        self.authorize(headers)?;
        let body = body.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(self.max_body_bytes)
            } else {
                ApiError::parse_failed("$", r.body_text())
            }
        })?;
        let command = hasura::parse_request(&body, endpoint)?;
        hasura::check_env_policy(&command, &self.env_policy)?;
        self.execute(command).await
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(secret) = &self.admin_secret {
            let given = headers
                .get("x-hasura-admin-secret")
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            // Constant time, so the answer's timing does not tell how much
            // of a guess was right.
            if !bool::from(given.ct_eq(secret.as_bytes())) {
                return Err(ApiError::access_denied(
                    "invalid x-hasura-admin-secret/x-hasura-access-key",
                ));
            }
        }
        if let Some(role) = headers.get("x-hasura-role")
            && role.as_bytes() != b"admin"
        {
            return Err(ApiError::access_denied(
                "restricted access: only the admin role may use the metadata API",
            ));
        }
        Ok(())
    }

    async fn execute(&self, command: Command) -> Result<Value, ApiError> {
        match command {
            Command::Bulk(commands) => {
                let answers = self.execute_all(commands, true).await?;
                Ok(Value::Array(answers))
            }
            single => {
                let mut answers = self.execute_all(vec![single], false).await?;
                Ok(answers.pop().unwrap_or(Value::Null))
            }
        }
    }

    /// Runs commands as one unit: every write is checked first, then all
    /// writes are appended as one batch (all or nothing), then the reads
    /// are answered.
    async fn execute_all(
        &self,
        commands: Vec<Command>,
        bulk: bool,
    ) -> Result<Vec<Value>, ApiError> {
        // JSON paths name the sub-request inside a bulk.
        let path = |i: usize, key: &str| {
            if bulk {
                format!("$.args[{i}].args.{key}")
            } else {
                format!("$.args.{key}")
            }
        };
        let service = &self.service;
        let now = service.clock.now();
        let mut records = Vec::new();
        let planned = {
            let projection = service.projection();
            commands
                .into_iter()
                .enumerate()
                .map(|(i, command)| plan(&projection, i, command, now, &path, &mut records))
                .collect::<Result<Vec<_>, _>>()?
        };
        if !records.is_empty() {
            service.append(&records).await.map_err(unavailable)?;
        }
        planned
            .into_iter()
            .map(|plan| match plan {
                Planned::Answered(answer) => Ok(answer),
                Planned::Read(read) => self.read(read),
            })
            .collect()
    }

    /// Answers a read, once the request's writes are in.
    fn read(&self, read: Read) -> Result<Value, ApiError> {
        match read {
            Read::Events {
                statuses,
                limit,
                offset,
                get_rows_count,
            } => self.events(&statuses, limit, offset, get_rows_count),
            Read::Invocations {
                event_id,
                limit,
                offset,
                get_rows_count,
                id_path,
            } => self.invocations(event_id, limit, offset, get_rows_count, id_path),
        }
    }

    fn events(
        &self,
        statuses: &[Status],
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    ) -> Result<Value, ApiError> {
        let (views, count) = {
            let p = self.service.projection();
            let views = p.list(statuses, offset, limit);
            (views, get_rows_count.then(|| p.count(statuses)))
        };
        let mut events = Vec::with_capacity(views.len());
        for view in views {
            match self.service.read(view.loc).map_err(internal)? {
                Record::EventCreated(created) => {
                    events.push(hasura::render_event(&created, &view));
                }
                other => {
                    return Err(internal(format!(
                        "event {} points at a {} record",
                        view.id,
                        other.kind()
                    )));
                }
            }
        }
        Ok(hasura::events_answer(events, count))
    }

    fn invocations(
        &self,
        event_id: Option<EventId>,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
        id_path: String,
    ) -> Result<Value, ApiError> {
        let (refs, count) = {
            let p = self.service.projection();
            if let Some(id) = event_id
                && p.event(id).is_none()
            {
                return Err(ApiError::not_found(
                    id_path,
                    format!("scheduled event {id} does not exist"),
                ));
            }
            (
                p.invocations(event_id, offset, limit),
                get_rows_count.then(|| p.invocation_count(event_id)),
            )
        };
        let mut invocations = Vec::with_capacity(refs.len());
        for r in refs {
            let record = self.service.read(r.loc).map_err(internal)?;
            if let Some(v) = hasura::render_invocation(&r, &record) {
                invocations.push(v);
            }
        }
        Ok(hasura::invocations_answer(invocations, count))
    }
}

/// A write the log could not take: 503, and the server keeps serving reads.
fn unavailable(e: ServiceError) -> ApiError {
    tracing::error!(error = %e, "append failed");
    ApiError::unavailable(format!("the log cannot accept writes: {e}"))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "read failed");
    ApiError::unexpected(e.to_string())
}

/// What one command of a request comes to, before anything is appended.
enum Planned {
    /// A write, answered now: its records are queued and its answer does
    /// not depend on them being applied.
    Answered(Value),
    /// A read, answered once the request's writes are in, so that a bulk
    /// sees its own creates and deletes.
    Read(Read),
}

/// The reads a request can make.
enum Read {
    Events {
        statuses: Vec<Status>,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
    },
    Invocations {
        event_id: Option<EventId>,
        limit: Option<usize>,
        offset: usize,
        get_rows_count: bool,
        /// Where `event_id` is in the request, for its `not-found`.
        id_path: String,
    },
}

/// Plans command `i` of a request: a write is checked against `projection`
/// and its records queued in `records`; a read is kept for later. `path`
/// names a key of command `i` in the request.
///
/// This is the one place that owns the nested-bulk rule: a bulk inside a
/// bulk parses ([`crate::hasura::MAX_BULK_DEPTH`] levels, so errors inside
/// it get their paths) but is refused here, in order with the other
/// commands' refusals and before anything is appended, so the outer bulk
/// stays all-or-nothing.
fn plan(
    projection: &Projection,
    i: usize,
    command: Command,
    now: UnixMicros,
    path: &dyn Fn(usize, &str) -> String,
    records: &mut Vec<Record>,
) -> Result<Planned, ApiError> {
    Ok(match command {
        Command::CreateScheduledEvent(new) => {
            let id = EventId::new_v4();
            records.push(Record::EventCreated(new.into_record(id, now)));
            Planned::Answered(hasura::created(id))
        }
        Command::DeleteScheduledEvent { event_id } => {
            if projection.event(event_id).is_none() {
                return Err(ApiError::not_found(
                    path(i, "event_id"),
                    format!("scheduled event {event_id} does not exist"),
                ));
            }
            records.push(Record::EventCancelled { event_id, at: now });
            Planned::Answered(hasura::success())
        }
        Command::GetScheduledEvents {
            statuses,
            limit,
            offset,
            get_rows_count,
        } => Planned::Read(Read::Events {
            statuses,
            limit,
            offset,
            get_rows_count,
        }),
        Command::GetScheduledEventInvocations {
            event_id,
            limit,
            offset,
            get_rows_count,
        } => Planned::Read(Read::Invocations {
            event_id,
            limit,
            offset,
            get_rows_count,
            id_path: path(i, "event_id"),
        }),
        Command::Bulk(_) => {
            return Err(ApiError::not_supported(
                format!("$.args[{i}]"),
                "a bulk inside a bulk is not supported",
            ));
        }
    })
}
