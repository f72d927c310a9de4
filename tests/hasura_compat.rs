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
    /// A create's answer: `{"message":"success","event_id":<a UUID>}`.
    Created,
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
        let headers: Vec<(&str, &str)> =
            case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
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
            failures.push(format!(
                "{what}: status {status}, expected {}: {answer}",
                case.status
            ));
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
            Expect::Created => {
                let keys: Vec<&String> = answer
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                let id_ok = answer["event_id"]
                    .as_str()
                    .is_some_and(|id| chime::record::EventId::parse_str(id).is_ok());
                if keys != ["event_id", "message"] || answer["message"] != "success" || !id_ok {
                    failures.push(format!(
                        "{what}: answered {answer}, expected a create's answer"
                    ));
                }
            }
            Expect::Error { code, path, error } => {
                let keys: Vec<&String> = answer
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
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
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
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
    let cancels_before = record_counts(dir.path())
        .get(&RecordKind::EventCancelled)
        .copied();
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
                invocations(
                    json!({"type": "one_off", "event_id": unknown, "get_rows_count": true}),
                ),
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
        record_counts(dir.path())
            .get(&RecordKind::EventCancelled)
            .copied(),
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
        Expect::Exactly(
            json!({"code": "not-found", "error": "resource does not exist", "path": "$"}),
        )
    };
    check(
        &server,
        vec![
            Case::post("not JSON", "/v1/metadata", "not json").fails(400, "invalid-json", "$"),
            Case::post(
                "cut short",
                "/v1/metadata",
                r#"{"type": "get_scheduled_events", "#,
            )
            .fails(400, "invalid-json", "$"),
            Case::post("not JSON on /v1/query", "/v1/query", "{").fails(400, "invalid-json", "$"),
            Case::post("empty body", "/v1/metadata", "").fails(400, "invalid-json", "$"),
            Case::post("not UTF-8", "/v1/metadata", b"{\"type\":\"\xff\"}".to_vec()).fails(
                400,
                "invalid-json",
                "$",
            ),
            Case::post("JSON, but not a request", "/v1/metadata", "[]").fails(
                400,
                "parse-failed",
                "$",
            ),
            Case::metadata("an unknown command", json!({"type": "X", "args": {}})).fails_with(
                400,
                "parse-failed",
                "$",
                r#"unknown metadata command "X""#,
            ),
            Case::bare("GET /v1/metadata", Method::GET, "/v1/metadata").answers(404, not_found()),
            Case::bare("GET /v1/query", Method::GET, "/v1/query").answers(404, not_found()),
            Case::bare("PUT /v1/metadata", Method::PUT, "/v1/metadata").answers(404, not_found()),
            Case::bare("POST to an unknown path", Method::POST, "/v1/graphql")
                .answers(404, not_found()),
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
                .with_headers(&[
                    ("x-hasura-admin-secret", SECRET),
                    ("x-hasura-role", "admin"),
                ])
                .answers(200, listed()),
            Case::metadata("the secret and another role", list())
                .with_headers(&[("x-hasura-admin-secret", SECRET), ("x-hasura-role", "user")])
                .fails_with(
                    400,
                    "access-denied",
                    "$.args",
                    "restricted access : admin only",
                ),
            Case::metadata("the access key and another role", list())
                .with_headers(&[("x-hasura-access-key", SECRET), ("x-hasura-role", "user")])
                .fails_with(
                    400,
                    "access-denied",
                    "$.args",
                    "restricted access : admin only",
                ),
            Case::metadata("a wrong secret and another role: the secret first", list())
                .with_headers(&[
                    ("x-hasura-admin-secret", "wrong"),
                    ("x-hasura-role", "user"),
                ])
                .fails_with(401, "access-denied", "$", invalid),
            Case::post("refused before the body is parsed", "/v1/metadata", "{")
                .with_headers(&[])
                .fails_with(401, "access-denied", "$", required),
        ],
    )
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Point 4: keys Hasura knows

#[tokio::test]
async fn keys_hasura_knows_are_accepted_and_others_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let id = create_event(&server, "one").await;
    let with = |key: &str, value: Value| {
        let mut body = create("with a key");
        body["args"][key] = value;
        body
    };
    check(
        &server,
        vec![
            Case::metadata("request_transform: null", with("request_transform", Value::Null))
                .answers(200, Expect::Created),
            Case::metadata("response_transform: null", with("response_transform", Value::Null))
                .answers(200, Expect::Created),
            Case::metadata("request_transform set", with("request_transform", json!({"method": "PUT"})))
                .fails(400, "not-supported", "$.args.request_transform"),
            Case::metadata("response_transform set", with("response_transform", json!({})))
                .fails(400, "not-supported", "$.args.response_transform"),
            Case::metadata("a typo is refused", with("retry_config", json!({})))
                .fails(400, "parse-failed", "$.args.retry_config"),
            Case::metadata(
                "trigger_name is ignored for one_off",
                json!({"type": "get_scheduled_events", "args": {"type": "one_off", "trigger_name": "t", "status": ["dead"]}}),
            )
            .answers(200, Expect::Exactly(json!({"events": []}))),
            Case::metadata(
                "trigger_name on invocations",
                invocations(json!({"type": "one_off", "event_id": id, "trigger_name": "t"})),
            )
            .answers(200, Expect::Exactly(json!({"invocations": []}))),
            Case::metadata(
                "order_by on invocations",
                invocations(json!({"type": "one_off", "order_by": [{"column": "created_at", "type": "asc", "nulls": "first"}]})),
            )
            .answers(200, Expect::Exactly(json!({"invocations": []}))),
            Case::metadata(
                "an unknown order_by column",
                json!({"type": "get_scheduled_events", "args": {"order_by": [{"column": "webhook"}]}}),
            )
            .fails(400, "parse-failed", "$.args.order_by[0].column"),
            Case::metadata(
                "an unknown key of get_scheduled_events",
                json!({"type": "get_scheduled_events", "args": {"where": {}}}),
            )
            .fails(400, "parse-failed", "$.args.where"),
        ],
    )
    .await;

    // Every event has Hasura's 13 keys, the transforms null.
    let events = server.api.all_events().await;
    assert_eq!(
        events.len(),
        3,
        "the two creates with null transforms were made"
    );
    for event in &events {
        let mut keys: Vec<&str> = event
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, chime::testing::EVENT_KEYS, "{event}");
        assert_eq!(
            (&event["request_transform"], &event["response_transform"]),
            (&Value::Null, &Value::Null)
        );
    }
    // The refused ones wrote nothing.
    assert_eq!(
        record_counts(dir.path())
            .get(&RecordKind::EventCreated)
            .copied(),
        Some(3)
    );
    server.stop().await;
}

/// An event of [`order_by_sorts_events_across_pages`]: id, scheduled
/// time, place in creation order.
type Row = (String, String, usize);

/// More events than one page of a listing (`LISTING_PAGE_ROWS`), so every
/// order is read across pages; times in pairs, so ties are broken by the
/// next column.
#[tokio::test]
async fn order_by_sorts_events_across_pages() {
    const EVENTS: usize = chime::api::LISTING_PAGE_ROWS + 150;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    // Creation order differs from time order: a fixed permutation, two
    // events per second.
    let args: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let slot = (i * 7919) % EVENTS;
            json!({"webhook": "http://127.0.0.1:9/never",
                   "schedule_at": format!("2099-01-01T{:02}:{:02}:{:02}Z", slot / 2 / 3600, slot / 2 / 60 % 60, slot / 2 % 60)})
        })
        .collect();
    let ids = server.api.create_all(&args).await;
    // (id, scheduled_time, creation index) of every event.
    let rows: Vec<Row> = ids
        .iter()
        .zip(&args)
        .enumerate()
        .map(|(i, (id, a))| {
            (
                id.clone(),
                a["schedule_at"].as_str().expect("time").to_owned(),
                i,
            )
        })
        .collect();
    let expect = |cmp: &dyn Fn(&Row, &Row) -> std::cmp::Ordering| {
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| cmp(a, b));
        sorted.into_iter().map(|r| r.0).collect::<Vec<_>>()
    };
    let by_time_then_id = expect(&|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let by_time_desc_then_id_desc = expect(&|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let created = expect(&|a, b| a.2.cmp(&b.2));
    let created_desc = expect(&|a, b| b.2.cmp(&a.2));
    let by_time_then_newest = expect(&|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
    let by_time_desc_then_oldest = expect(&|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));

    let listed = |order_by: Value, offset: usize, limit: Option<usize>| {
        let api = server.api.clone();
        async move {
            let mut args = json!({"type": "one_off", "offset": offset, "order_by": order_by});
            if let Some(limit) = limit {
                args["limit"] = json!(limit);
            }
            let answer = api.events(args).await;
            answer["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let col = |c: &str, t: &str| json!({"column": c, "type": t});
    for (why, order_by, expected) in [
        ("default", json!([]), &by_time_then_id),
        (
            "scheduled_time",
            json!([{"column": "scheduled_time"}]),
            &by_time_then_id,
        ),
        (
            "scheduled_time desc",
            json!([col("scheduled_time", "desc")]),
            &by_time_desc_then_id_desc,
        ),
        ("created_at", json!([col("created_at", "asc")]), &created),
        (
            "created_at desc, nulls first",
            json!([{"column": "created_at", "type": "desc", "nulls": "first"}]),
            &created_desc,
        ),
        (
            "scheduled_time, then created_at desc",
            json!([col("scheduled_time", "asc"), col("created_at", "desc")]),
            &by_time_then_newest,
        ),
        (
            "scheduled_time desc, then created_at",
            json!([col("scheduled_time", "desc"), col("created_at", "asc")]),
            &by_time_desc_then_oldest,
        ),
    ] {
        assert_eq!(
            &listed(order_by.clone(), 0, None).await,
            expected,
            "{why}: the whole listing"
        );
        let window = listed(order_by, 7, Some(EVENTS - 20)).await;
        assert_eq!(
            window,
            expected[7..EVENTS - 13],
            "{why}: offset 7, limit {}",
            EVENTS - 20
        );
    }
    server.stop().await;
}

/// Invocations by `created_at` either way and by their events'
/// `scheduled_time`.
#[tokio::test]
async fn order_by_sorts_invocations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let receiver = chime::testing::Receiver::ok().await;
    let mut ids = Vec::new();
    // Due in the past, in this order of times: the latest first.
    for ago in [30, 10, 20] {
        let id = server
            .api
            .create(json!({"webhook": receiver.url("/"), "schedule_at": chime::testing::from_now(-ago)}))
            .await;
        ids.push(id);
    }
    for id in &ids {
        server.api.wait_status(id, "delivered").await;
    }
    let listed = |order_by: Value| {
        let api = server.api.clone();
        async move {
            let answer = api
                .invocations(json!({"type": "one_off", "order_by": order_by}))
                .await;
            answer["invocations"]
                .as_array()
                .expect("invocations")
                .iter()
                .map(|i| i["event_id"].as_str().expect("event_id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let newest_first = listed(json!([])).await;
    assert_eq!(newest_first.len(), 3);
    let mut oldest_first = newest_first.clone();
    oldest_first.reverse();
    assert_eq!(
        listed(json!([{"column": "created_at", "type": "desc"}])).await,
        newest_first
    );
    assert_eq!(
        listed(json!([{"column": "created_at", "type": "asc"}])).await,
        oldest_first
    );
    // ids[0] is due earliest (30 s ago), then ids[2], then ids[1].
    let by_time = vec![ids[0].clone(), ids[2].clone(), ids[1].clone()];
    assert_eq!(listed(json!([{"column": "scheduled_time"}])).await, by_time);
    let mut by_time_desc = by_time.clone();
    by_time_desc.reverse();
    assert_eq!(
        listed(json!([{"column": "scheduled_time", "type": "desc"}])).await,
        by_time_desc
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Point 2: batches

/// `answer` with what differs from run to run written out of it: each
/// `event_id` becomes `"<id>"` (after checking it is a UUID), each `events`
/// list its length.
fn shape(answer: &Value) -> Value {
    match answer {
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("event_id", Value::String(id)) => {
                            assert!(chime::record::EventId::parse_str(id).is_ok(), "{id}");
                            json!("<id>")
                        }
                        ("events", Value::Array(events)) => json!(events.len()),
                        _ => shape(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn list_events() -> Value {
    json!({"type": "get_scheduled_events", "args": {"type": "one_off", "get_rows_count": true}})
}

fn bad_create() -> Value {
    json!({"type": "create_scheduled_event", "args": {"webhook": "http://127.0.0.1:9/", "schedule_at": "soon"}})
}

#[tokio::test]
async fn bulk_bulk_atomic_and_bulk_keep_going_run_as_hasura_runs_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let api = &server.api;
    let created = || json!({"message": "success", "event_id": "<id>"});
    let success = json!({"message": "success"});

    // `bulk` on /v1/metadata and `bulk_atomic`: one answer per command,
    // the reads seeing the writes.
    for ty in ["bulk", "bulk_atomic"] {
        let count = api.count().await;
        let (status, answer) = api
            .metadata(json!({"type": ty, "args": [create("a"), create("b"), list_events()]}))
            .await;
        assert_eq!(status, 200, "{ty}: {answer}");
        assert_eq!(
            shape(&answer),
            json!([created(), created(), {"count": count + 2, "events": count + 2}]),
            "{ty}"
        );
    }
    // All or nothing: one bad command fails the whole, at its path, and
    // no create of it happens.
    for ty in ["bulk", "bulk_atomic"] {
        let count = api.count().await;
        let (status, err) = api
            .metadata(json!({"type": ty, "args": [create("c"), bad_create(), create("d")]}))
            .await;
        assert_eq!(status, 400, "{ty}: {err}");
        assert_eq!(
            (&err["code"], &err["path"]),
            (&json!("parse-failed"), &json!("$.args[1].args.schedule_at")),
            "{ty}"
        );
        assert_eq!(api.count().await, count, "{ty} wrote nothing");
    }

    // Keep going: each command on its own, errors in their places.
    let count = api.count().await;
    let (status, answer) = api
        .metadata(json!({"type": "bulk_keep_going", "args": [
            create("e"),
            bad_create(),
            {"type": "nope", "args": {}},
            delete("00000000-0000-4000-8000-000000000000"),
            {"type": "create_scheduled_event", "args": {
                "webhook": "http://127.0.0.1:9/", "schedule_at": "2099-01-01T00:00:00Z",
                "headers": [{"name": "X-Token", "value_from_env": "CHIME_ADMIN_SECRET"}]}},
            create("f"),
            list_events(),
        ]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let items = answer.as_array().expect("a list");
    assert_eq!(items.len(), 7, "{answer}");
    assert_eq!(shape(&items[0]), created());
    for (i, code, path) in [
        (1, "parse-failed", "$.args[1].args.schedule_at"),
        (2, "parse-failed", "$.args[2]"),
        (
            4,
            "validation-failed",
            "$.args[4].args.headers[0].value_from_env",
        ),
    ] {
        let keys: Vec<&String> = items[i]
            .as_object()
            .expect("an error object")
            .keys()
            .collect();
        assert_eq!(keys, ["code", "error", "path"], "{}", items[i]);
        assert_eq!(
            (&items[i]["code"], &items[i]["path"]),
            (&json!(code), &json!(path)),
            "{}",
            items[i]
        );
    }
    assert_eq!(items[3], success);
    assert_eq!(shape(&items[5]), created());
    assert_eq!(
        shape(&items[6]),
        json!({"count": count + 2, "events": count + 2})
    );
    assert_eq!(
        api.count().await,
        count + 2,
        "the good creates ran, the bad ones did not"
    );

    // A bulk inside a bulk runs, its answer nested; so does a keep-going
    // one (its bad command answered in place).
    let count = api.count().await;
    let (status, answer) = api
        .metadata(json!({"type": "bulk", "args": [
            create("g"),
            {"type": "bulk", "args": [create("h"), list_events()]},
            {"type": "bulk_keep_going", "args": [bad_create(), create("i")]},
            {"type": "bulk_atomic", "args": []},
        ]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let nested = shape(&answer);
    assert_eq!(nested[0], created());
    // The reads of one bulk are answered once all its writes are in.
    assert_eq!(
        nested[1],
        json!([created(), {"count": count + 3, "events": count + 3}])
    );
    assert_eq!(
        nested[2][0]["path"], "$.args[2].args[0].args.schedule_at",
        "{answer}"
    );
    assert_eq!(nested[2][1], created());
    assert_eq!(nested[3], json!([]));
    assert_eq!(api.count().await, count + 3);
    // On /v1/query too, with /v1/query's commands.
    let (status, answer) = api
        .query(json!({"type": "bulk", "args": [{"type": "bulk", "args": [list_events()]}]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        shape(&answer),
        json!([[{"count": count + 3, "events": count + 3}]])
    );

    check(
        &server,
        vec![
            Case::query(
                "bulk_keep_going is /v1/metadata's",
                json!({"type": "bulk_keep_going", "args": []}),
            )
            .fails_with(
                400,
                "parse-failed",
                "$",
                r#"unknown metadata command "bulk_keep_going""#,
            ),
            Case::query(
                "bulk_atomic is /v1/metadata's",
                json!({"type": "bulk_atomic", "args": []}),
            )
            .fails_with(
                400,
                "parse-failed",
                "$",
                r#"unknown metadata command "bulk_atomic""#,
            ),
            Case::metadata(
                "keep going needs a list",
                json!({"type": "bulk_keep_going", "args": {}}),
            )
            .fails(400, "parse-failed", "$.args"),
            Case::metadata(
                "an empty keep-going bulk",
                json!({"type": "bulk_keep_going", "args": []}),
            )
            .answers(200, Expect::Exactly(json!([]))),
        ],
    )
    .await;
    server.stop().await;
}
