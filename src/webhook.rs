//! Webhooks: the URL *templates* (`{{NAME}}` placeholders, checked at create
//! and resolved at delivery), the *body* POSTed to the webhook, and the
//! *request preparation* that turns an event's record into the request the
//! dispatcher sends. Validation at create ([`crate::hasura`]) and delivery
//! ([`crate::dispatch`]) both read these rules from here, so what is
//! accepted is what can be sent.
//!
//! No IO: the environment is passed in as a lookup function; the one
//! reader of the real environment is [`process_env`], which the dispatcher
//! passes in.

use http::{HeaderMap, HeaderName, HeaderValue as HttpHeaderValue};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::record::{EventCreated, HeaderSource};

/// A piece of a webhook template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part<'a> {
    Text(&'a str),
    /// `{{NAME}}`: the value of environment variable NAME at delivery.
    Var(&'a str),
}

/// Splits a webhook template into text and `{{NAME}}` placeholders, NAME
/// being `[A-Za-z_][A-Za-z0-9_]*` (which is also what an environment
/// variable can safely be called).
fn split_template(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "a \"{{\" placeholder is not closed with \"}}\"".to_owned())?;
        let name = &after[..close];
        if !is_identifier(name) {
            return Err(format!(
                "{} is not a valid placeholder name: expected letters, digits and '_', not starting with a digit",
                Value::from(name)
            ));
        }
        parts.push(Part::Var(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    Ok(parts)
}

/// Checks a webhook template, as far as it can be checked before delivery.
///
/// Placeholders must be well-formed. A template that starts with one takes
/// its scheme and host from the environment, so nothing more is known.
/// Otherwise, with each placeholder standing in for a plain token, it must be
/// an absolute `http` or `https` URL with a host. The token is `x`, or `1`
/// when `x` does not fit (a placeholder for a port); a template that needs
/// both at once is refused.
pub(crate) fn validate_webhook(template: &str) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err("the webhook URL is empty".to_owned());
    }
    let parts = split_template(template)?;
    if matches!(parts.first(), Some(Part::Var(_))) {
        return Ok(());
    }
    let with_token = |token: &str| -> String {
        parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text,
                Part::Var(_) => token,
            })
            .collect()
    };
    let check = |url: &str| -> Result<(), String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "the webhook URL must be http or https, not {}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the webhook URL has no host".to_owned());
        }
        Ok(())
    };
    check(&with_token("x")).or_else(|first| check(&with_token("1")).map_err(|_| first))
}

/// Resolves a webhook template's `{{NAME}}` placeholders with `lookup`
/// (normally the process environment; passed in to keep this module free of
/// IO). Errs with a message for the invocation log when a variable is unset
/// or the template is malformed.
pub fn resolve_webhook(
    template: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    resolve_template(template, lookup, "the webhook URL")
}

/// Checks that a header value's `{{NAME}}` placeholders are well-formed
/// (header values are templates too, as in Hasura).
pub(crate) fn validate_template(template: &str) -> Result<(), String> {
    split_template(template).map(drop)
}

/// Resolves the `{{NAME}}` placeholders of a template `used_in` something
/// (the webhook URL, a header), for [`resolve_webhook`] and header values.
fn resolve_template(
    template: &str,
    lookup: impl Fn(&str) -> Option<String>,
    used_in: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for part in split_template(template)? {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Var(name) => match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(format!(
                        "environment variable {name} (used in {used_in}) is not set"
                    ));
                }
            },
        }
    }
    Ok(out)
}

/// Prefixes of variables no template may read: chime's own configuration
/// (`CHIME_ADMIN_SECRET`) and Hasura's, whatever `--webhook-env-allow` says.
pub const RESERVED_ENV_PREFIXES: &[&str] = &["CHIME_", "HASURA_GRAPHQL_"];

/// Which environment variables `{{NAME}}` and `value_from_env` may read:
/// never a [`RESERVED_ENV_PREFIXES`] name; when `allow` is not empty, only
/// names matching one of its `*` globs. Checked at create and again at
/// delivery (events already in the log were accepted under older rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvPolicy {
    /// `--webhook-env-allow` globs; empty allows every unreserved name.
    pub allow: Vec<String>,
}

impl EnvPolicy {
    /// Errs with a message naming the variable (never its value) when
    /// `name` may not be read.
    pub fn check(&self, name: &str) -> Result<(), String> {
        if let Some(prefix) = RESERVED_ENV_PREFIXES.iter().find(|p| name.starts_with(**p)) {
            return Err(format!(
                "environment variable {name} may not be used: {prefix}* variables are reserved"
            ));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|g| glob_match(g, name)) {
            return Err(format!(
                "environment variable {name} may not be used: it matches no --webhook-env-allow pattern"
            ));
        }
        Ok(())
    }

    /// Checks every placeholder of a webhook template (a malformed
    /// template passes here; [`validate_webhook`] reports it).
    pub fn check_template(&self, template: &str) -> Result<(), String> {
        for part in split_template(template).unwrap_or_default() {
            if let Part::Var(name) = part {
                self.check(name)?;
            }
        }
        Ok(())
    }
}

/// A glob where `*` matches any run of characters and everything else
/// matches itself.
fn glob_match(glob: &str, name: &str) -> bool {
    let mut pieces = glob.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a placeholder name, and also a key Hasura
/// writes in a JSON path without quotes.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// At most this many headers per event: hyper refuses to read more than 100
/// on the receiving side anyway, and a bounded list keeps an attempt's work
/// and its invocation log bounded.
pub const MAX_EVENT_HEADERS: usize = 100;

/// At most this many bytes of header names and values per event, in total
/// (for `value_from_env`, the variable's name at create and its value at
/// delivery).
pub const MAX_EVENT_HEADER_BYTES: usize = 64 * 1024;

/// Headers chime or the HTTP layer own: framing, connection management and
/// routing. An event setting one could confuse the receiver's framing (a
/// second `Content-Length`), route the call elsewhere (`Host`) or speak for
/// a proxy, so none may be set, in any case.
const OWNED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
];

/// Checks an event header's name: one HTTP accepts (a token), and not one
/// of the headers chime or the HTTP layer own (see [`OWNED_HEADERS`], and
/// any `Proxy-*`). The message names the header, for the error at create
/// and the failed attempt at delivery.
pub(crate) fn check_header_name(name: &str) -> Result<(), String> {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "{} is not a valid HTTP header name",
            Value::from(name)
        ));
    }
    let lower = name.to_ascii_lowercase();
    if OWNED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
        return Err(format!(
            "the header {} is set by chime or the HTTP layer and may not be given",
            Value::from(name)
        ));
    }
    Ok(())
}

/// Checks an event header's value as HTTP reads it: no control characters
/// (CR, LF, NUL, ...) except tab. The message never shows the value, which
/// may be a secret.
pub(crate) fn check_header_value(value: &str) -> Result<(), String> {
    HttpHeaderValue::from_str(value).map(drop).map_err(|_| {
        "not a valid HTTP header value (control characters such as CR, LF and NUL are not allowed)"
            .to_owned()
    })
}

/// The JSON body POSTed to the webhook:
/// `{"id","scheduled_time","payload","comment","created_at"}`, `comment`
/// omitted when there is none. The payload is embedded as its exact raw
/// text, so the receiver sees the key order and number spelling it was
/// given.
pub fn webhook_body(created: &EventCreated) -> String {
    // A payload that is not valid JSON (never written by chime, but the log
    // is data from disk) is sent as a string so the body stays valid JSON.
    let payload = if serde_json::from_str::<&RawValue>(&created.payload).is_ok() {
        created.payload.clone()
    } else {
        Value::from(created.payload.as_str()).to_string()
    };
    let mut body = String::with_capacity(payload.len() + 160);
    body.push_str("{\"id\":");
    body.push_str(&Value::from(created.event_id.to_string()).to_string());
    body.push_str(",\"scheduled_time\":");
    body.push_str(&Value::from(created.schedule_at.to_rfc3339()).to_string());
    body.push_str(",\"payload\":");
    body.push_str(&payload);
    if let Some(comment) = &created.comment {
        body.push_str(",\"comment\":");
        body.push_str(&Value::from(comment.as_str()).to_string());
    }
    body.push_str(",\"created_at\":");
    body.push_str(&Value::from(created.created_at.to_rfc3339()).to_string());
    body.push('}');
    body
}

/// The `User-Agent` chime sends unless `--user-agent` says otherwise.
pub fn user_agent() -> String {
    format!("chime/{}", env!("CARGO_PKG_VERSION"))
}

/// The process environment, as the dispatcher reads it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The headers chime sets on every call, over an event's own of the same
/// name, in the order Hasura lists them in an invocation's request.
pub(crate) const SERVICE_HEADERS: [&str; 2] = ["content-type", "user-agent"];

/// Whether `name` is one of [`SERVICE_HEADERS`].
pub(crate) fn is_service_header(name: &str) -> bool {
    SERVICE_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// How a `value_from_env` header's value is written in an attempt's
/// record: the variable's name, never its value.
pub(crate) fn from_env_marker(var: &str) -> String {
    format!("<from env {var}>")
}

/// The variable a [`from_env_marker`] names, for showing the header as
/// configured (`{"name", "value_from_env"}`).
pub(crate) fn from_env_var(logged: &str) -> Option<&str> {
    logged
        .strip_prefix("<from env ")?
        .strip_suffix('>')
        .filter(|var| is_identifier(var))
}

/// A request ready to send, and how it is shown in the invocation log.
pub(crate) struct Prepared {
    pub(crate) url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
    /// The headers as logged: values read from the environment are not
    /// written to the log, only the variable's name.
    pub(crate) logged_headers: Vec<(String, String)>,
    /// Why the request cannot be sent (a missing environment variable, a
    /// header value that is not valid HTTP): a failed attempt.
    pub(crate) problem: Option<String>,
}

/// The request for `created`, with placeholders and `value_from_env`
/// headers read through `env`; a variable `policy` refuses is not read and
/// makes the attempt fail.
pub(crate) fn prepare(
    created: &EventCreated,
    env: &dyn Fn(&str) -> Option<String>,
    policy: &EnvPolicy,
    user_agent: &str,
) -> Prepared {
    let body = webhook_body(created);
    let mut headers = HeaderMap::new();
    let mut logged = Vec::new();
    let mut problem = None;
    // Events already in the log were accepted under older rules (or none):
    // the create-time limits are checked again here, so such an event fails
    // its attempt with the reason instead of being sent, and only the
    // first `MAX_EVENT_HEADERS` are even looked at (and logged).
    if created.headers.len() > MAX_EVENT_HEADERS {
        problem = Some(format!(
            "the event has {} headers; at most {MAX_EVENT_HEADERS} may be sent",
            created.headers.len()
        ));
    }
    let mut header_bytes = 0usize;
    for h in created.headers.iter().take(MAX_EVENT_HEADERS) {
        let (value, shown, var) = match &h.value {
            // A value is a template: its placeholders are read from the
            // environment under the same policy as the URL's; the log shows
            // the template, never what it resolved to.
            HeaderSource::Value(v) if v.contains("{{") => {
                let resolved = policy.check_template(v).and_then(|()| {
                    resolve_template(v, env, &format!("the value of header {:?}", h.name))
                });
                match resolved {
                    Ok(value) => (Some(value), v.clone(), None),
                    Err(p) => {
                        problem.get_or_insert(p);
                        (None, v.clone(), None)
                    }
                }
            }
            HeaderSource::Value(v) => (Some(v.clone()), v.clone(), None),
            HeaderSource::FromEnv(var) => {
                if let Err(refused) = policy.check(var) {
                    problem.get_or_insert(refused);
                    logged.push((h.name.clone(), from_env_marker(var)));
                    continue;
                }
                let value = env(var);
                if value.is_none() && problem.is_none() {
                    problem = Some(format!(
                        "environment variable {var:?} for header {:?} is not set",
                        h.name
                    ));
                }
                (value, from_env_marker(var), Some(var))
            }
        };
        logged.push((h.name.clone(), shown));
        if let Err(refused) = check_header_name(&h.name) {
            problem.get_or_insert(refused);
            continue;
        }
        let Some(value) = value else { continue };
        header_bytes = header_bytes.saturating_add(h.name.len() + value.len());
        match (
            HeaderName::from_bytes(h.name.as_bytes()),
            HttpHeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            // Never the value itself: it may come from the environment.
            _ => {
                problem.get_or_insert_with(|| match var {
                    Some(var) => format!(
                        "environment variable {var:?} for header {:?} holds a value that is not valid in HTTP (control characters such as CR, LF and NUL are not allowed)",
                        h.name
                    ),
                    None => format!("header {:?} has a value that is not valid in HTTP", h.name),
                });
            }
        }
    }
    if header_bytes > MAX_EVENT_HEADER_BYTES {
        problem.get_or_insert_with(|| {
            format!(
                "the event's header names and values come to {header_bytes} bytes; at most {MAX_EVENT_HEADER_BYTES} may be sent"
            )
        });
    }
    // These two win over user headers of the same name.
    headers.insert(
        http::header::CONTENT_TYPE,
        HttpHeaderValue::from_static("application/json"),
    );
    logged.retain(|(n, _)| !is_service_header(n));
    logged.push(("Content-Type".into(), "application/json".into()));
    // `--user-agent` is checked when the flags are read; a value that is
    // not valid in HTTP cannot reach here, and would only be left out.
    if let Ok(v) = HttpHeaderValue::from_str(user_agent) {
        headers.insert(http::header::USER_AGENT, v);
    }
    logged.push(("User-Agent".into(), user_agent.to_owned()));
    let resolved = policy
        .check_template(&created.webhook)
        .and_then(|()| resolve_webhook(&created.webhook, env));
    let (url, problem) = match resolved {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving_webhook_templates() {
        let env = |name: &str| match name {
            "BASE" => Some("http://hooks.local:81".to_owned()),
            "ID" => Some("7".to_owned()),
            _ => None,
        };
        assert_eq!(
            resolve_webhook("{{BASE}}/e/{{ID}}", env).unwrap(),
            "http://hooks.local:81/e/7"
        );
        assert_eq!(
            resolve_webhook("http://plain/", env).unwrap(),
            "http://plain/"
        );
        let missing = resolve_webhook("{{BASE}}/{{NOPE}}", env).unwrap_err();
        assert!(missing.contains("NOPE"), "{missing}");
        assert!(resolve_webhook("{{BASE", env).is_err());
    }

    /// Events already in the log may break today's create-time rules:
    /// each is a failed attempt with the reason, never a send.
    #[test]
    fn events_from_the_log_past_the_header_rules_are_not_sent() {
        use crate::record::{EventId, HeaderConf, UnixMicros, fixtures};
        let with = |headers: Vec<HeaderConf>| {
            let mut created = fixtures::event(EventId::nil(), "http://h.local/", UnixMicros(0));
            created.headers = headers;
            created
        };
        let value = |name: &str, value: &str| HeaderConf {
            name: name.into(),
            value: HeaderSource::Value(value.into()),
        };
        let env = |_: &str| Some("v".to_owned());
        let policy = EnvPolicy::default();
        let problem = |created| prepare(&created, &env, &policy, "ua").problem.unwrap_or_default();

        let many: Vec<HeaderConf> = (0..30_000).map(|i| value(&format!("x-{i}"), "v")).collect();
        let p = prepare(&with(many), &env, &policy, "ua");
        assert!(p.problem.unwrap_or_default().contains("30000 headers"));
        assert_eq!(p.headers.len(), MAX_EVENT_HEADERS + 2, "only the first are looked at");

        assert!(problem(with(vec![value("Host", "elsewhere")])).contains("\"Host\""));
        assert!(problem(with(vec![value("Proxy-Authorization", "x")])).contains("Proxy"));
        let big = "b".repeat(MAX_EVENT_HEADER_BYTES);
        assert!(problem(with(vec![value("x-big", &big)])).contains("bytes"));
        assert!(prepare(&with(vec![value("x-ok", "v")]), &env, &policy, "ua").problem.is_none());
    }

    /// Header values are templates, as in Hasura: resolved at delivery
    /// under the URL's env policy, logged as written.
    #[test]
    fn header_value_placeholders_are_resolved_at_delivery_and_logged_as_templates() {
        use crate::record::{EventId, HeaderConf, UnixMicros, fixtures};
        let mut created = fixtures::event(EventId::nil(), "http://h.local/", UnixMicros(0));
        created.headers = vec![HeaderConf {
            name: "Authorization".into(),
            value: HeaderSource::Value("Bearer {{TOKEN}}".into()),
        }];
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_owned());
        let p = prepare(&created, &env, &EnvPolicy::default(), "ua");
        assert_eq!(p.problem, None);
        assert_eq!(p.headers["authorization"], "Bearer s3cret");
        assert!(
            p.logged_headers
                .contains(&("Authorization".into(), "Bearer {{TOKEN}}".into())),
            "{:?}",
            p.logged_headers
        );
        assert!(!format!("{:?}", p.logged_headers).contains("s3cret"));

        let unset = prepare(&created, &|_: &str| None, &EnvPolicy::default(), "ua");
        let problem = unset.problem.expect("a missing variable fails the attempt");
        assert!(problem.contains("TOKEN") && problem.contains("Authorization"), "{problem}");
        assert!(unset.headers.get("authorization").is_none());

        let only_hooks = EnvPolicy {
            allow: vec!["HOOK_*".into()],
        };
        let refused = prepare(&created, &env, &only_hooks, "ua").problem.expect("refused");
        assert!(refused.contains("--webhook-env-allow"), "{refused}");
    }

    #[test]
    fn env_policy_globs_and_reserved_names() {
        let open = EnvPolicy::default();
        assert!(open.check("HOOK_TOKEN").is_ok());
        assert!(open.check("CHIME_ADMIN_SECRET").is_err());
        assert!(open.check("HASURA_GRAPHQL_ADMIN_SECRET").is_err());
        let some = EnvPolicy {
            allow: vec!["HOOK_*".into(), "A*B*C".into(), "CHIME_*".into()],
        };
        assert!(some.check("HOOK_TOKEN").is_ok());
        assert!(some.check("AxxBxxC").is_ok());
        assert!(some.check("ABC").is_ok());
        assert!(some.check("ABCD").is_err());
        assert!(some.check("OTHER").is_err());
        assert!(some.check("CHIME_ADMIN_SECRET").is_err());
    }
}
