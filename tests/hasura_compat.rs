//! Hasura fidelity, table-driven: each row sends one request of
//! `hasura-compat.md` (Hasura v2.48.10's behaviour) over a real socket and
//! checks the status, the `Content-Type`, and the answer: Hasura's error
//! object (code, path, and the message where Hasura's is fixed text) or the
//! exact JSON Hasura answers.
//!
//! Rows are grouped by the point of issue 13 they pin: 3 (unknown ids), 9
//! (transport), 8 (auth). Every server here has an admin secret, so the
//! auth rows and the others run against the same configuration.

use chime::record::RecordKind;
use chime::server::ServeConfig;
use chime::testing::{TestServer, record_counts};
use reqwest::Method;
use serde_json::{Value, json};

const SECRET: &str = "hasura-compat-admin-secret";

/// Hasura's `Content-Type` for every JSON answer.
const JSON_UTF8: &str = "application/json; charset=utf-8";

/// What a row expects back.
enum Expect {
    /// Hasura's error object `{"code","error","path"}` with this code and
    /// path, and exactly this message when one is given.
    Error {
        code: &'static str,
        path: &'static str,
        error: Option<&'static str>,
    },
    /// Exactly this answer.
    Exactly(Value),
}

/// One request and what Hasura answers to it.
struct Case {
    why: &'static str,
    method: Method,
    path: &'static str,
    /// Every header sent: the secret is one of them unless a row says so.
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    expect: Expect,
}

impl Case {
    /// POST `body` to `path` with the admin secret; answered `{"message":"success"}`
    /// unless [`Case::answers`] says otherwise.
    fn post(why: &'static str, path: &'static str, body: impl Into<Vec<u8>>) -> Case {
        Case {
            why,
            method: Method::POST,
            path,
            headers: vec![
                ("content-type", "application/json".into()),
                ("x-hasura-admin-secret", SECRET.into()),
            ],
            body: body.into(),
            status: 200,
            expect: Expect::Exactly(json!({"message": "success"})),
        }
    }

    /// POST the JSON `body` to `/v1/metadata`.
    fn metadata(why: &'static str, body: Value) -> Case {
        Case::post(why, "/v1/metadata", body.to_string())
    }

    /// POST the JSON `body` to `/v1/query`.
    fn query(why: &'static str, body: Value) -> Case {
        Case::post(why, "/v1/query", body.to_string())
    }

    /// `method` on `path`, no body.
    fn bare(why: &'static str, method: Method, path: &'static str) -> Case {
        Case {
            method,
            ..Case::post(why, path, Vec::new())
        }
    }

    /// Sends exactly `headers` (plus `content-type`) instead of the secret.
    fn with_headers(mut self, headers: &[(&'static str, &str)]) -> Case {
        self.headers = vec![("content-type", "application/json".into())];
        self.headers
            .extend(headers.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self
    }

    fn answers(mut self, status: u16, expect: Expect) -> Case {
        self.status = status;
        self.expect = expect;
        self
    }

    fn fails(self, status: u16, code: &'static str, path: &'static str) -> Case {
        self.answers(
            status,
            Expect::Error {
                code,
                path,
                error: None,
            },
        )
    }

    fn fails_with(
        self,
        status: u16,
        code: &'static str,
        path: &'static str,
        error: &'static str,
    ) -> Case {
        self.answers(
            status,
            Expect::Error {
                code,
                path,
                error: Some(error),
            },
        )
    }
}

/// Sends every row to `server` and checks its answer; all rows run, and
/// the failures are reported together.
async fn check(server: &TestServer, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, response_headers, answer) = server
            .api
            .exchange(case.method.clone(), case.path, &headers, case.body.clone())
            .await;
        let content_type = response_headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let body = String::from_utf8_lossy(&case.body);
        let what = format!("{} ({} {} {body})", case.why, case.method, case.path);
        if status != case.status {
            failures.push(format!("{what}: status {status}, expected {}: {answer}", case.status));
            continue;
        }
        if content_type != JSON_UTF8 {
            failures.push(format!("{what}: Content-Type {content_type:?}"));
        }
        match &case.expect {
            Expect::Exactly(expected) => {
                if &answer != expected {
                    failures.push(format!("{what}: answered {answer}, expected {expected}"));
                }
            }
            Expect::Error { code, path, error } => {
                let keys: Vec<&String> = answer.as_object().map(|o| o.keys().collect()).unwrap_or_default();
                let shape_ok = keys == ["code", "error", "path"];
                let message_ok = match error {
                    Some(error) => answer["error"] == *error,
                    None => answer["error"].as_str().is_some_and(|e| !e.is_empty()),
                };
                if !shape_ok || answer["code"] != *code || answer["path"] != *path || !message_ok {
                    failures.push(format!(
                        "{what}: answered {answer}, expected code {code} at {path}{}",
                        error.map(|e| format!(" saying {e:?}")).unwrap_or_default()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
}

fn create(comment: &str) -> Value {
    json!({"type": "create_scheduled_event", "args": {
        "webhook": "http://127.0.0.1:9/never", "schedule_at": "2099-01-01T00:00:00Z",
        "comment": comment,
    }})
}

fn delete(id: &str) -> Value {
    json!({"type": "delete_scheduled_event", "args": {"type": "one_off", "event_id": id}})
}

fn invocations(args: Value) -> Value {
    json!({"type": "get_scheduled_event_invocations", "args": args})
}

/// A server with the admin secret over `dir`.
async fn start(dir: &std::path::Path) -> TestServer {
    let mut config = ServeConfig::new(dir);
    config.admin_secret = Some(SECRET.into());
    TestServer::start(config).await
}

async fn create_event(server: &TestServer, comment: &str) -> String {
    let (status, answer) = server.api.metadata(create(comment)).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().expect("event_id").to_owned()
}

// ---------------------------------------------------------------------------
// Point 3: ids that name no event

#[tokio::test]
async fn unknown_and_deleted_ids_are_success_and_empty_lists_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let deleted = create_event(&server, "deleted").await;
    server.api.delete(&deleted).await;
    let unknown = "00000000-0000-4000-8000-000000000000";
    let cancels_before = record_counts(dir.path()).get(&RecordKind::EventCancelled).copied();
    assert_eq!(cancels_before, Some(1));

    check(
        &server,
        vec![
            Case::metadata("delete an id that never existed", delete(unknown)),
            Case::metadata("delete an event already deleted", delete(&deleted)),
            Case::query("delete an unknown id on /v1/query", delete(unknown)),
            Case::metadata(
                "invocations of an unknown id",
                invocations(json!({"type": "one_off", "event_id": unknown})),
            )
            .answers(200, Expect::Exactly(json!({"invocations": []}))),
            Case::metadata(
                "invocations of a deleted event",
                invocations(json!({"type": "one_off", "event_id": deleted})),
            )
            .answers(200, Expect::Exactly(json!({"invocations": []}))),
            Case::metadata(
                "invocations of a malformed id",
                invocations(json!({"type": "one_off", "event_id": "not-a-uuid"})),
            )
            .answers(200, Expect::Exactly(json!({"invocations": []}))),
            Case::metadata(
                "invocations of a malformed id, counted",
                invocations(json!({"type": "one_off", "event_id": "", "get_rows_count": true})),
            )
            .answers(200, Expect::Exactly(json!({"count": 0, "invocations": []}))),
            Case::metadata(
                "invocations of an unknown id, counted",
                invocations(json!({"type": "one_off", "event_id": unknown, "get_rows_count": true})),
            )
            .answers(200, Expect::Exactly(json!({"count": 0, "invocations": []}))),
            Case::metadata(
                "an event_id that is not even a string",
                invocations(json!({"type": "one_off", "event_id": 7})),
            )
            .fails(400, "parse-failed", "$.args.event_id"),
        ],
    )
    .await;
    assert_eq!(
        record_counts(dir.path()).get(&RecordKind::EventCancelled).copied(),
        cancels_before,
        "a delete of no live event writes no record"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Point 9: transport

#[tokio::test]
async fn bodies_that_are_not_json_and_unknown_routes_get_hasuras_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let not_found = || {
        Expect::Exactly(json!({"code": "not-found", "error": "resource does not exist", "path": "$"}))
    };
    check(
        &server,
        vec![
            Case::post("not JSON", "/v1/metadata", "not json").fails(400, "invalid-json", "$"),
            Case::post("cut short", "/v1/metadata", r#"{"type": "get_scheduled_events", "#)
                .fails(400, "invalid-json", "$"),
            Case::post("not JSON on /v1/query", "/v1/query", "{").fails(400, "invalid-json", "$"),
            Case::post("empty body", "/v1/metadata", "").fails(400, "invalid-json", "$"),
            Case::post("not UTF-8", "/v1/metadata", b"{\"type\":\"\xff\"}".to_vec())
                .fails(400, "invalid-json", "$"),
            Case::post("JSON, but not a request", "/v1/metadata", "[]").fails(400, "parse-failed", "$"),
            Case::metadata("an unknown command", json!({"type": "X", "args": {}})).fails_with(
                400,
                "parse-failed",
                "$",
                r#"unknown metadata command "X""#,
            ),
            Case::bare("GET /v1/metadata", Method::GET, "/v1/metadata").answers(404, not_found()),
            Case::bare("GET /v1/query", Method::GET, "/v1/query").answers(404, not_found()),
            Case::bare("PUT /v1/metadata", Method::PUT, "/v1/metadata").answers(404, not_found()),
            Case::bare("POST to an unknown path", Method::POST, "/v1/graphql").answers(404, not_found()),
            Case::bare("GET an unknown path", Method::GET, "/nowhere").answers(404, not_found()),
            Case::bare("an unknown path, no secret", Method::GET, "/v2/metadata")
                .with_headers(&[])
                .answers(404, not_found()),
            Case::metadata(
                "a success is JSON in UTF-8 too",
                json!({"type": "get_scheduled_events", "args": {"type": "one_off"}}),
            )
            .answers(200, Expect::Exactly(json!({"events": []}))),
        ],
    )
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Point 8: auth

#[tokio::test]
async fn secrets_and_roles_are_checked_as_hasura_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let list = || json!({"type": "get_scheduled_events", "args": {"type": "one_off"}});
    let listed = || Expect::Exactly(json!({"events": []}));
    let required = r#""x-hasura-admin-secret"/"x-hasura-access-key" required, but not found"#;
    let invalid = r#"invalid "x-hasura-admin-secret"/"x-hasura-access-key""#;
    check(
        &server,
        vec![
            Case::metadata("no secret", list())
                .with_headers(&[])
                .fails_with(401, "access-denied", "$", required),
            Case::query("no secret on /v1/query", list())
                .with_headers(&[])
                .fails_with(401, "access-denied", "$", required),
            Case::metadata("a wrong admin secret", list())
                .with_headers(&[("x-hasura-admin-secret", "wrong")])
                .fails_with(401, "access-denied", "$", invalid),
            Case::metadata("an empty admin secret", list())
                .with_headers(&[("x-hasura-admin-secret", "")])
                .fails_with(401, "access-denied", "$", invalid),
            Case::metadata("the secret as X-Hasura-Access-Key", list())
                .with_headers(&[("x-hasura-access-key", SECRET)])
                .answers(200, listed()),
            Case::metadata("a wrong X-Hasura-Access-Key", list())
                .with_headers(&[("x-hasura-access-key", "wrong")])
                .fails_with(401, "access-denied", "$", invalid),
            Case::metadata("the secret and role admin", list())
                .with_headers(&[("x-hasura-admin-secret", SECRET), ("x-hasura-role", "admin")])
                .answers(200, listed()),
            Case::metadata("the secret and another role", list())
                .with_headers(&[("x-hasura-admin-secret", SECRET), ("x-hasura-role", "user")])
                .fails_with(400, "access-denied", "$.args", "restricted access : admin only"),
            Case::metadata("the access key and another role", list())
                .with_headers(&[("x-hasura-access-key", SECRET), ("x-hasura-role", "user")])
                .fails_with(400, "access-denied", "$.args", "restricted access : admin only"),
            Case::metadata("a wrong secret and another role: the secret first", list())
                .with_headers(&[("x-hasura-admin-secret", "wrong"), ("x-hasura-role", "user")])
                .fails_with(401, "access-denied", "$", invalid),
            Case::post("refused before the body is parsed", "/v1/metadata", "{")
                .with_headers(&[])
                .fails_with(401, "access-denied", "$", required),
        ],
    )
    .await;
    server.stop().await;
}
