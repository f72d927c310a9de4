//! The HTTP side of a delivery: chime's webhook client, the request built
//! from an event, and the one call that turns the webhook's answer (or its
//! absence) into an [`Invocation`]. What the answer means for the event is
//! decided in [`rules`](super::rules), not here.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue as HttpHeaderValue};

use super::DispatchConfig;
use super::rules::retry_after;
use crate::hasura;
use crate::record::{EventCreated, HeaderValue, Invocation, InvocationResponse};

/// The `User-Agent` chime sends.
pub fn user_agent() -> String {
    format!("chime/{}", env!("CARGO_PKG_VERSION"))
}

/// The process environment, as the dispatcher reads it.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A request ready to send, and how it is shown in the invocation log.
struct Prepared {
    url: String,
    headers: HeaderMap,
    body: String,
    /// The headers as logged: values read from the environment are not
    /// written to the log, only the variable's name.
    logged_headers: Vec<(String, String)>,
    /// Why the request cannot be sent (a missing environment variable, a
    /// header value that is not valid HTTP): a failed attempt.
    problem: Option<String>,
}

fn prepare(created: &EventCreated, env: &dyn Fn(&str) -> Option<String>) -> Prepared {
    let body = hasura::webhook_body(created);
    let mut headers = HeaderMap::new();
    let mut logged = Vec::new();
    let mut problem = None;
    for h in &created.headers {
        let (value, shown) = match &h.value {
            HeaderValue::Value(v) => (Some(v.clone()), v.clone()),
            HeaderValue::FromEnv(var) => {
                let value = env(var);
                if value.is_none() && problem.is_none() {
                    problem = Some(format!(
                        "environment variable {var:?} for header {:?} is not set",
                        h.name
                    ));
                }
                (value, format!("<from env {var}>"))
            }
        };
        logged.push((h.name.clone(), shown));
        let Some(value) = value else { continue };
        match (
            HeaderName::from_bytes(h.name.as_bytes()),
            HttpHeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => {
                problem.get_or_insert_with(|| {
                    format!("header {:?} has a value that is not valid in HTTP", h.name)
                });
            }
        }
    }
    // These two win over user headers of the same name.
    headers.insert(
        http::header::CONTENT_TYPE,
        HttpHeaderValue::from_static("application/json"),
    );
    logged.retain(|(n, _)| {
        !n.eq_ignore_ascii_case("content-type") && !n.eq_ignore_ascii_case("user-agent")
    });
    logged.push(("Content-Type".into(), "application/json".into()));
    let ua = user_agent();
    if let Ok(v) = HttpHeaderValue::from_str(&ua) {
        headers.insert(http::header::USER_AGENT, v);
    }
    logged.push(("User-Agent".into(), ua));
    let (url, problem) = match hasura::resolve_webhook(&created.webhook, env) {
        Ok(url) => (url, problem),
        Err(p) => (String::new(), problem.or(Some(p))),
    };
    Prepared {
        url,
        headers,
        body,
        logged_headers: logged,
        problem,
    }
}

/// The client webhooks are called with, and what it keeps of an answer.
pub(super) struct WebhookClient {
    /// One pool for every webhook; redirects are not followed (a 3xx is a
    /// failed attempt).
    client: reqwest::Client,
    /// Response bodies are kept up to this many bytes.
    response_body_cap: usize,
}

impl WebhookClient {
    /// Builds the client for `config`.
    pub(super) fn new(config: &DispatchConfig) -> Result<Self, reqwest::Error> {
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(config.max_in_flight)
            .tcp_nodelay(true)
            .build()?;
        Ok(WebhookClient {
            client,
            response_body_cap: config.response_body_cap,
        })
    }

    /// Makes the HTTP call and describes it as an invocation, with the
    /// `Retry-After` the webhook sent (which only a failed attempt uses).
    pub(super) async fn call(&self, created: &EventCreated) -> (Invocation, Option<u64>) {
        let prepared = prepare(created, &process_env);
        if let Some(message) = prepared.problem {
            return (
                Invocation {
                    request_body: prepared.body,
                    request_headers: prepared.logged_headers,
                    response: InvocationResponse::ClientError { message },
                },
                None,
            );
        }
        let timeout = Duration::from_secs(u64::from(created.retry_conf.timeout_seconds));
        let cap = self.response_body_cap;
        let request = self
            .client
            .post(&prepared.url)
            .headers(prepared.headers)
            .body(prepared.body.clone());
        let outcome = tokio::time::timeout(timeout, async move {
            let mut response = request.send().await.map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            let mut truncated = false;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = cap - body.len();
                        if chunk.len() > room {
                            body.extend_from_slice(&chunk[..room]);
                            truncated = true;
                            break;
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(format!(
                            "the webhook answered {status} but its body could not be read: {}",
                            error_chain(&e)
                        ));
                    }
                }
            }
            Ok((status, headers, body, truncated))
        })
        .await;
        let (response, retry_after) = match outcome {
            Err(_) => (
                InvocationResponse::ClientError {
                    message: format!(
                        "timed out after {} s waiting for the webhook's response",
                        timeout.as_secs()
                    ),
                },
                None,
            ),
            Ok(Err(message)) => (InvocationResponse::ClientError { message }, None),
            Ok(Ok((status, headers, body, truncated))) => {
                let retry = retry_after(&headers);
                (
                    InvocationResponse::Webhook {
                        status,
                        headers: headers
                            .iter()
                            .map(|(n, v)| {
                                (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                        body,
                        truncated,
                    },
                    retry,
                )
            }
        };
        (
            Invocation {
                request_body: prepared.body,
                request_headers: prepared.logged_headers,
                response,
            },
            retry_after,
        )
    }
}

/// An error and its causes in one line: reqwest's own message alone says
/// "error sending request" and hides whether it was a refusal or TLS.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
