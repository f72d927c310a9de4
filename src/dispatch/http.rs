//! The HTTP side of a delivery: chime's webhook client (with its proxy
//! rules, [`ProxyRules`]), the request built from an event, and the one call
//! that turns the webhook's answer (or its absence) into an [`Invocation`].
//! What the answer means for the event is decided in
//! [`rules`](super::rules), not here.

use std::net::IpAddr;
use std::time::Duration;

use hyper_util::client::proxy::matcher::Matcher;

use super::DispatchConfig;
use super::rules::retry_after;
use crate::record::{EventCreated, Invocation, InvocationResponse, UnixMicros};
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
    /// The `User-Agent` sent.
    user_agent: String,
    /// Signs every call when not empty.
    signing: crate::signing::SigningKeys,
}

impl WebhookClient {
    /// Builds the client for `config`.
    pub(super) fn new(config: &DispatchConfig) -> Result<Self, reqwest::Error> {
        crate::tls::install_crypto_provider();
        let proxies = ProxyRules::from_env(&process_env);
        let client = reqwest::Client::builder()
            // Replaces reqwest's own reading of the proxy variables, which
            // would send loopback webhooks to the proxy too.
            .proxy(reqwest::Proxy::custom(move |url| proxies.proxy_for(url)))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(config.max_in_flight)
            .tcp_nodelay(true)
            .build()?;
        Ok(WebhookClient {
            client,
            response_body_cap: config.response_body_cap,
            max_timeout: config.max_webhook_timeout,
            env_policy: EnvPolicy::default(),
            user_agent: config.user_agent.clone(),
            signing: config.signing.clone(),
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
        now: UnixMicros,
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
        let prepared = prepare(created, &process_env, &self.env_policy, &self.user_agent);
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
        let timeout = created.retry_conf.timeout_seconds.as_duration()
            .min(self.max_timeout);
        let cap = self.response_body_cap;
        let mut headers = prepared.headers;
        if !self.signing.is_empty() {
            sign(&mut headers, &self.signing, created, now, &prepared.body);
        }
        let request = self
            .client
            .post(&prepared.url)
            .headers(headers)
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

/// Which proxy a webhook call goes through: the standard variables, read
/// once at start as reqwest reads them (`HTTP_PROXY` for `http://`
/// webhooks and `HTTPS_PROXY` for `https://` ones, each falling back to
/// `ALL_PROXY`; the upper-case name first, then the lower-case one; hosts
/// in `NO_PROXY` called directly), except that a loopback host
/// (`localhost` and its subdomains, 127.0.0.0/8, `::1`) is always called
/// directly: a proxy elsewhere cannot reach this machine's loopback, so
/// sending such a call to it only makes the delivery fail (or reach
/// another machine's service of the same port).
///
/// Not `Debug`: a proxy URL may hold a password.
#[derive(Default)]
pub(crate) struct ProxyRules {
    /// The proxy URL for `http://` webhooks, as written (credentials
    /// included: reqwest takes them from the URL).
    http: Option<String>,
    /// The proxy URL for `https://` webhooks, as written.
    https: Option<String>,
    /// `NO_PROXY`'s hosts. hyper-util's curl-compatible host list is only
    /// public inside its `Matcher`, so it is used as one that always
    /// answers a proxy except for those hosts (reqwest uses the same list).
    no_proxy: Option<Matcher>,
}

/// The proxy given to the `NO_PROXY` matcher of [`ProxyRules`]: never
/// used, only asked whether it would be (".invalid" cannot resolve).
const NO_PROXY_PROBE: &str = "http://no-proxy.invalid";

impl ProxyRules {
    /// Reads the rules from `env` (the process environment in chime; a
    /// table in tests). A value that is not a usable proxy URL is ignored,
    /// with a warning, as if unset.
    pub(crate) fn from_env(env: &dyn Fn(&str) -> Option<String>) -> ProxyRules {
        // A CGI program (`REQUEST_METHOD` set) takes `HTTP_PROXY` from a
        // request header ("httpoxy"): reqwest ignores the proxy
        // variables there, and so does chime.
        if env("REQUEST_METHOD").is_some() {
            return ProxyRules::default();
        }
        // The upper-case name wins when set, even to nothing.
        let first = |names: [&'static str; 2]| {
            names
                .iter()
                .find_map(|name| env(name).map(|value| (*name, value)))
                .filter(|(_, value)| !value.trim().is_empty())
        };
        let proxy = |names: [&'static str; 2]| {
            let (name, value) = first(names)?;
            if let Err(e) = reqwest::Proxy::all(value.as_str()) {
                tracing::warn!(
                    variable = name,
                    error = %e,
                    "ignoring a proxy variable that is not a proxy URL"
                );
                return None;
            }
            Some(value)
        };
        let all = proxy(["ALL_PROXY", "all_proxy"]);
        let no_proxy = first(["NO_PROXY", "no_proxy"]).map(|(_, hosts)| {
            Matcher::builder()
                .all(NO_PROXY_PROBE.to_owned())
                .no(hosts)
                .build()
        });
        ProxyRules {
            http: proxy(["HTTP_PROXY", "http_proxy"]).or_else(|| all.clone()),
            https: proxy(["HTTPS_PROXY", "https_proxy"]).or(all),
            no_proxy,
        }
    }

    /// The proxy a call to `url` goes through, or `None` to call it
    /// directly.
    pub(crate) fn proxy_for(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.host_str()?;
        if is_loopback(host) {
            return None;
        }
        if let Some(no_proxy) = &self.no_proxy {
            let uri = url.as_str().parse::<http::Uri>().ok()?;
            no_proxy.intercept(&uri)?;
        }
        match url.scheme() {
            "http" => self.http.clone(),
            "https" => self.https.clone(),
            _ => None,
        }
    }
}

/// Whether `host` (a URL's host: a name, an IPv4 address or a bracketed
/// IPv6 one) is this machine's loopback: `localhost` or a name under it
/// (RFC 6761 reserves them for loopback), 127.0.0.0/8, `::1`, or an
/// IPv4-mapped loopback address.
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let name = bare.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
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

/// Adds the Standard Webhooks headers to a call of `created` made at
/// `now` with `body`: `webhook-id` (the event id, the same for every try),
/// `webhook-timestamp` (unix seconds) and `webhook-signature`. They are
/// not shown in the invocation log, which lists what the event configured.
fn sign(
    headers: &mut http::HeaderMap,
    keys: &crate::signing::SigningKeys,
    created: &EventCreated,
    now: UnixMicros,
    body: &str,
) {
    let id = created.event_id.to_string();
    let timestamp = now.0.div_euclid(1_000_000);
    let signature = keys.signature(&id, timestamp, body.as_bytes());
    // An id, a number and base64 with `,` and spaces are always valid
    // header values; were one not, the call would go unsigned, and the
    // receiver refuse it.
    for (name, value) in [
        ("webhook-id", id),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(http::HeaderName::from_static(name), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(vars: &[(&str, &str)]) -> ProxyRules {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        ProxyRules::from_env(&move |name| {
            vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        })
    }

    fn route(rules: &ProxyRules, url: &str) -> Option<String> {
        rules.proxy_for(&reqwest::Url::parse(url).expect("a test URL"))
    }

    /// Loopback webhooks are called directly whatever the variables say;
    /// other hosts go to the proxy of their scheme unless `NO_PROXY`
    /// names them.
    #[test]
    fn the_proxy_decision() {
        let proxied = rules(&[
            ("HTTP_PROXY", "http://proxy.example:3128"),
            ("HTTPS_PROXY", "http://user:pw@secure-proxy.example:3129"),
            ("ALL_PROXY", "http://all.example:1"),
            ("NO_PROXY", "direct.example, 10.0.0.0/8"),
        ]);
        for loopback in [
            "http://127.0.0.1:8080/hook",
            "http://127.9.9.9/",
            "http://[::1]:80/",
            "http://[::ffff:127.0.0.1]/",
            "https://localhost/",
            "http://LOCALHOST./",
            "http://hooks.localhost:81/",
        ] {
            assert_eq!(route(&proxied, loopback), None, "{loopback}");
        }
        assert_eq!(
            route(&proxied, "http://hooks.example/e").as_deref(),
            Some("http://proxy.example:3128")
        );
        assert_eq!(
            route(&proxied, "https://hooks.example/e").as_deref(),
            Some("http://user:pw@secure-proxy.example:3129"),
            "credentials are kept for reqwest"
        );
        for direct in [
            "http://direct.example/",
            "https://sub.direct.example/",
            "http://10.1.2.3/",
        ] {
            assert_eq!(route(&proxied, direct), None, "{direct}");
        }
        assert_eq!(
            route(&proxied, "http://notdirect.example/").as_deref(),
            Some("http://proxy.example:3128")
        );
        for remote in ["http://128.0.0.1/", "http://localhost.example/"] {
            assert_eq!(
                route(&proxied, remote).as_deref(),
                Some("http://proxy.example:3128"),
                "{remote}"
            );
        }

        // ALL_PROXY stands in for a missing scheme; lower case is read too.
        let all = rules(&[("all_proxy", "socks5://all.example:1080"), ("no_proxy", "*")]);
        assert_eq!(route(&all, "http://hooks.example/"), None, "NO_PROXY=* wins");
        let all = rules(&[("all_proxy", "http://all.example:1"), ("https_proxy", "")]);
        assert_eq!(route(&all, "http://hooks.example/").as_deref(), Some("http://all.example:1"));
        assert_eq!(route(&all, "https://hooks.example/").as_deref(), Some("http://all.example:1"));

        assert_eq!(route(&rules(&[]), "http://hooks.example/"), None);
        let cgi = rules(&[("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "http://evil.example")]);
        assert_eq!(route(&cgi, "http://hooks.example/"), None, "httpoxy");
    }
}
