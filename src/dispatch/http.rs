//! The HTTP side of a delivery: chime's webhook client, the request built
//! from an event, and the one call that turns the webhook's answer (or its
//! absence) into an [`Invocation`]. What the answer means for the event is
//! decided in [`rules`](super::rules), not here.

use std::time::Duration;

use super::DispatchConfig;
use super::rules::retry_after;
use crate::record::{EventCreated, Invocation, InvocationResponse};
use crate::webhook::{EnvPolicy, prepare, process_env, resolve_webhook};

/// The client webhooks are called with, and what it keeps of an answer.
pub(super) struct WebhookClient {
    /// One pool for every webhook; redirects are not followed (a 3xx is a
    /// failed attempt).
    client: reqwest::Client,
    /// Response headers and body are kept up to this many bytes together.
    response_body_cap: usize,
    /// No attempt waits longer than this, whatever its `timeout_seconds`.
    max_timeout: Duration,
    /// Which variables templates may read (re-checked at every attempt).
    pub(super) env_policy: EnvPolicy,
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
            max_timeout: config.max_webhook_timeout,
            env_policy: EnvPolicy::default(),
        })
    }

    /// The authority (`host:port`) an attempt at `created` calls, from its
    /// URL after templating, as [`prepare`] resolves it; `None` when the URL
    /// cannot be resolved or read, since that attempt fails without a call
    /// and needs no host slot.
    pub(super) fn authority(&self, created: &EventCreated) -> Option<String> {
        self.env_policy.check_template(&created.webhook).ok()?;
        let url = resolve_webhook(&created.webhook, process_env).ok()?;
        let url = reqwest::Url::parse(&url).ok()?;
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        Some(format!("{host}:{port}"))
    }

    /// Makes the HTTP call and describes it as an invocation, with the
    /// `Retry-After` the webhook sent (which only a failed attempt uses);
    /// `Err` if chime itself ran short of a local resource before the
    /// request left (see [`LocalFailure`]).
    pub(super) async fn call(
        &self,
        created: &EventCreated,
    ) -> Result<(Invocation, Option<u64>), LocalFailure> {
        // The create-time rules leave no input known to panic in here, so
        // the test of the dispatcher's catch asks for one (never in a
        // release build: the `testing` feature is for tests and benches).
        #[cfg(feature = "testing")]
        if created
            .headers
            .iter()
            .any(|h| h.name == crate::testing::PANIC_HEADER)
        {
            panic!("asked to by the {} header", crate::testing::PANIC_HEADER);
        }
        let prepared = prepare(created, &process_env, &self.env_policy);
        if let Some(message) = prepared.problem {
            return Ok((
                Invocation {
                    request_body: prepared.body,
                    request_headers: prepared.logged_headers,
                    response: InvocationResponse::ClientError { message },
                },
                None,
            ));
        }
        let timeout = Duration::from_secs(u64::from(created.retry_conf.timeout_seconds))
            .min(self.max_timeout);
        let cap = self.response_body_cap;
        let request = self
            .client
            .post(&prepared.url)
            .headers(prepared.headers)
            .body(prepared.body.clone());
        // A URL with placeholders filled in may hold values from the
        // environment: its errors are stored without it. A plain URL is the
        // stored template itself, so its errors keep naming it.
        let templated = prepared.url != created.webhook;
        let describe = move |e: reqwest::Error| {
            if templated {
                error_chain(&e.without_url())
            } else {
                error_chain(&e)
            }
        };
        let outcome = tokio::time::timeout(timeout, async move {
            // Ok: the webhook's failure, for the invocation log; Err: ours.
            let mut response = request.send().await.map_err(|e| match local_failure(&e) {
                Some(local) => Err(local),
                None => Ok(describe(e)),
            })?;
            let status = response.status().as_u16();
            let retry = retry_after(response.headers());
            // Headers and body share the cap: a webhook answering with
            // hundreds of kilobytes of headers would otherwise store them
            // at every attempt.
            let (kept, mut truncated) = keep_headers(response.headers(), cap);
            let body_cap = cap - kept.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
            let mut body = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = body_cap - body.len();
                        if chunk.len() > room {
                            body.extend_from_slice(&chunk[..room]);
                            truncated = true;
                            break;
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(Ok(format!(
                            "the webhook answered {status} but its body could not be read: {}",
                            describe(e)
                        )));
                    }
                }
            }
            Ok((status, retry, kept, body, truncated))
        })
        .await;
        let (response, retry_after) = match outcome {
            Err(_) => (
                InvocationResponse::ClientError {
                    message: format!(
                        "timed out after {} s waiting for the webhook's response",
                        timeout.as_secs_f64()
                    ),
                },
                None,
            ),
            Ok(Err(Err(local))) => return Err(local),
            // Belt and braces over `without_url`: any cause that still
            // spells the resolved URL shows the template instead.
            Ok(Err(Ok(message))) => {
                let message = if prepared.url.is_empty() {
                    message
                } else {
                    message.replace(&prepared.url, &created.webhook)
                };
                (InvocationResponse::ClientError { message }, None)
            }
            Ok(Ok((status, retry, kept, body, truncated))) => (
                    InvocationResponse::Webhook {
                        status,
                        headers: kept,
                        body,
                        truncated,
                    },
                    retry,
                ),
        };
        Ok((
            Invocation {
                request_body: prepared.body,
                request_headers: prepared.logged_headers,
                response,
            },
            retry_after,
        ))
    }
}

/// The response headers kept in the invocation log: in order while their
/// names and values fit in `cap` bytes, and whether any were left out (the
/// answer is then marked truncated; the body gets what room is left).
fn keep_headers(headers: &http::HeaderMap, cap: usize) -> (Vec<(String, String)>, bool) {
    let mut kept = Vec::new();
    let mut used = 0usize;
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let size = name.as_str().len() + value.len();
        if size > cap - used {
            return (kept, true);
        }
        used += size;
        kept.push((name.to_string(), value));
    }
    (kept, false)
}

/// chime could not make a call for want of a local resource (descriptors,
/// memory, socket buffers): the fault is chime's, not the webhook's, so
/// the attempt is recorded as interrupted and uses up no try.
#[derive(Debug, thiserror::Error)]
#[error("chime ran short of a local resource while sending ({0}); the attempt will be made again")]
pub(super) struct LocalFailure(pub String);

/// The errno values that mean this machine, not the webhook, failed.
fn is_local_resource_errno(errno: i32) -> bool {
    use rustix::io::Errno;
    [Errno::MFILE, Errno::NFILE, Errno::NOMEM, Errno::NOBUFS]
        .iter()
        .any(|e| e.raw_os_error() == errno)
}

/// The local resource failure somewhere in `e`'s causes, if any.
fn local_failure(e: &(dyn std::error::Error + 'static)) -> Option<LocalFailure> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(errno) = io.raw_os_error()
            && is_local_resource_errno(errno)
        {
            return Some(LocalFailure(io.to_string()));
        }
        source = s.source();
    }
    None
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
