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
use crate::projection::Status;
use crate::record::{EventId, Record};
use crate::service::{Service, ServiceError};

/// What the handlers share.
pub struct Api {
    pub service: Arc<Service>,
    /// When set, every `/v1/*` call must carry it in `X-Hasura-Admin-Secret`.
    pub admin_secret: Option<String>,
    /// The body limit, for the 413 message.
    pub max_body_bytes: usize,
}

/// The routes, with a body limit of `max_body_bytes`.
pub fn router(api: Arc<Api>) -> Router {
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
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(api.handle(Endpoint::Metadata, &headers, body).await)
}

async fn query(
    State(api): State<Arc<Api>>,
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

impl Api {
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
        // Each command's answer, or the read it still has to make once the
        // writes are in.
        let mut planned = Vec::with_capacity(commands.len());
        {
            let projection = service.projection();
            for (i, command) in commands.into_iter().enumerate() {
                match command {
                    Command::CreateScheduledEvent(new) => {
                        let id = EventId::new_v4();
                        let record = new.into_record(id, now);
                        records.push(Record::EventCreated(record));
                        planned.push((i, Ok(hasura::created(id))));
                    }
                    Command::DeleteScheduledEvent { event_id } => {
                        if projection.event(event_id).is_none() {
                            return Err(ApiError::not_found(
                                path(i, "event_id"),
                                format!("scheduled event {event_id} does not exist"),
                            ));
                        }
                        records.push(Record::EventCancelled { event_id, at: now });
                        planned.push((i, Ok(hasura::success())));
                    }
                    Command::Bulk(_) => {
                        // Refused before anything is appended, so the
                        // outer bulk stays all-or-nothing.
                        return Err(ApiError::not_supported(
                            format!("$.args[{i}]"),
                            "a bulk inside a bulk is not supported",
                        ));
                    }
                    read => planned.push((i, Err(read))),
                }
            }
        }
        if !records.is_empty() {
            service.append(&records).await.map_err(unavailable)?;
        }
        let mut answers = Vec::with_capacity(planned.len());
        for (i, plan) in planned {
            let command = match plan {
                Ok(answer) => {
                    answers.push(answer);
                    continue;
                }
                Err(read) => read,
            };
            answers.push(match command {
                Command::GetScheduledEvents {
                    statuses,
                    limit,
                    offset,
                    get_rows_count,
                } => self.events(&statuses, limit, offset, get_rows_count)?,
                Command::GetScheduledEventInvocations {
                    event_id,
                    limit,
                    offset,
                    get_rows_count,
                } => {
                    self.invocations(event_id, limit, offset, get_rows_count, path(i, "event_id"))?
                }
                // Writes and nested bulks were dealt with in the first pass.
                Command::CreateScheduledEvent(_)
                | Command::DeleteScheduledEvent { .. }
                | Command::Bulk(_) => continue,
            });
        }
        Ok(answers)
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
