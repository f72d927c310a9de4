//! Delivery over real sockets: a chime server (in-process, or the binary as a
//! child process for crashes and signals) calling a local webhook receiver.
//!
//! Each test has its own data directory, server and receiver on
//! 127.0.0.1:0. States are awaited by bounded polling of the API; the only
//! fixed waits are the ones whose point is that nothing happens.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use chime::testing::{
    ChildServer, Receiver, Reply, TestServer, WAIT, client_error, free_port, in_seconds,
    only_invocation, secs_between, stored_response_bytes, ts,
};

fn user_agent() -> String {
    format!("chime/{}", env!("CARGO_PKG_VERSION"))
}

/// A response header of a `webhook_response` invocation, by name in any case.
fn response_header(invocation: &Value, name: &str) -> Option<String> {
    invocation["response"]["data"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h["value"].as_str().unwrap().to_owned())
}

// ---------------------------------------------------------------------------
// Hasura's own one-off event tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_due_now_is_delivered_with_headers_and_hasuras_body() {
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/hook"),
            "schedule_at": in_seconds(0.0).to_string(),
            "payload": {"foo": "bar", "n": [1, 2]},
            "headers": [
                {"name": "X-Custom", "value": "v1"},
                // These two are overridden by chime's own.
                {"name": "Content-Type", "value": "text/plain"},
                {"name": "user-agent", "value": "impostor/1"},
            ],
            "comment": "hello",
        }))
        .await;
    let event = api.wait_status(&id, "delivered").await;
    assert_eq!(event["tries"], 1);
    assert_eq!(event["next_retry_at"], Value::Null);

    let got = receiver.wait_for(1).await;
    assert_eq!(got.len(), 1);
    let request = &got[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hook");
    assert_eq!(request.header_values("x-custom"), ["v1"]);
    assert_eq!(request.header_values("content-type"), ["application/json"]);
    assert_eq!(request.header_values("user-agent"), [user_agent()]);
    let body = request.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["comment", "created_at", "id", "payload", "scheduled_time"],
        "{body}"
    );
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["payload"], json!({"foo": "bar", "n": [1, 2]}));
    assert_eq!(body["comment"], "hello");
    assert_eq!(body["scheduled_time"], event["scheduled_time"]);
    assert_eq!(body["created_at"], event["created_at"]);
    for key in ["scheduled_time", "created_at"] {
        assert!(body[key].as_str().unwrap().ends_with('Z'), "{body}");
    }

    let invocation = only_invocation(api, &id).await;
    assert_eq!(invocation["event_id"], id.as_str());
    assert_eq!(invocation["status"], 200);
    assert_eq!(invocation["request"]["payload"], body);
    assert_eq!(invocation["response"]["type"], "webhook_response");
    assert_eq!(invocation["response"]["data"]["status"], 200);
    // An ordinary answer has exactly Hasura's shape: no `truncated` flag.
    assert_eq!(invocation["response"]["data"].get("truncated"), None);
    let logged: Vec<(String, String)> = invocation["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_ascii_lowercase(),
                h["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        logged.contains(&("x-custom".into(), "v1".into())),
        "{logged:?}"
    );
    assert!(
        logged.contains(&("content-type".into(), "application/json".into())),
        "{logged:?}"
    );
    assert!(
        !logged
            .iter()
            .any(|(_, v)| v == "text/plain" || v == "impostor/1")
    );

    // Without a comment the body has no `comment` key at all.
    let bare = api
        .create(
            json!({"webhook": receiver.url("/bare"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    api.wait_status(&bare, "delivered").await;
    let got = receiver.wait_for(2).await;
    let body = got.iter().find(|r| r.path == "/bare").unwrap().json();
    assert_eq!(body.get("comment"), None, "{body}");
    assert_eq!(body["payload"], Value::Null);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_scheduled_in_2020_is_dead_without_an_attempt() {
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({"webhook": receiver.url("/late"), "schedule_at": "2020-01-01T00:00:00Z"}))
        .await;
    let event = api.wait_status(&id, "dead").await;
    assert_eq!(event["tries"], 0);
    assert_eq!(event["next_retry_at"], Value::Null);
    assert_eq!(api.invocations_of(&id).await, Vec::<Value>::new());
    // `dead` is final, so no call can still be on its way.
    assert_eq!(receiver.count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answering_500_with_one_retry_ends_in_error_after_two_tries() {
    let receiver = Receiver::start(vec![], Reply::status(500).body("boom")).await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/fail"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"num_retries": 1, "retry_interval_seconds": 1},
        }))
        .await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 2);
    // As in Hasura, the final failure keeps the last retry's time: when the
    // second try was due, after the first invocation, before the second.
    let logs = api.invocations_of(&id).await;
    let retry = ts(&event["next_retry_at"]);
    assert!(
        ts(&logs[1]["created_at"]) <= retry && retry <= ts(&logs[0]["created_at"]),
        "{event} {logs:#?}"
    );
    let invocations = api.invocations_of(&id).await;
    assert_eq!(invocations.len(), 2, "{invocations:#?}");
    for invocation in &invocations {
        assert_eq!(invocation["status"], 500);
        assert_eq!(invocation["response"]["data"]["message"], "boom");
    }
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let gap = secs_between(got[0].at, got[1].at);
    assert!(gap >= 0.95, "retried after {gap} s, interval is 1 s");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Retries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_then_success_is_delivered_on_the_second_try() {
    let receiver = Receiver::start(vec![Reply::status(500)], Reply::ok()).await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/flaky"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"num_retries": 3, "retry_interval_seconds": 1},
        }))
        .await;
    let event = api.wait_status(&id, "delivered").await;
    assert_eq!(event["tries"], 2);
    let invocations = api.invocations_of(&id).await;
    let statuses: Vec<&Value> = invocations.iter().map(|i| &i["status"]).collect();
    // Newest first.
    assert_eq!(statuses, [&json!(200), &json!(500)]);
    assert_eq!(receiver.count(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_replaces_a_long_retry_interval() {
    let receiver = Receiver::start(
        vec![Reply::status(503).header("Retry-After", "1")],
        Reply::ok(),
    )
    .await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/busy"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"num_retries": 1, "retry_interval_seconds": 3600},
        }))
        .await;
    // The window between the failure and the retry is about a second.
    let waiting = api
        .wait_event(&id, "tried once", |e| e["tries"].as_u64() >= Some(1))
        .await;
    assert_eq!(
        waiting["status"], "scheduled",
        "retry window missed: {waiting}"
    );
    assert_eq!(waiting["tries"], 1);
    let next_retry_at = ts(&waiting["next_retry_at"]);
    let failed = only_invocation(api, &id).await;
    assert_eq!(failed["status"], 503);
    let failed_at = ts(&failed["created_at"]);
    let delay = secs_between(failed_at, next_retry_at);
    assert!(
        (delay - 1.0).abs() < 0.05,
        "next retry {delay} s after the failure"
    );

    let event = api.wait_status(&id, "delivered").await;
    assert_eq!(event["tries"], 2);
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let gap = secs_between(got[0].at, got[1].at);
    assert!(
        (0.95..3.0).contains(&gap),
        "retry arrived {gap} s after the first try"
    );
    assert!(
        got[1].at >= next_retry_at,
        "retry arrived at {} before its time {next_retry_at}",
        got[1].at
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Failures without an HTTP answer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_that_never_answers_times_out() {
    let receiver = Receiver::start(vec![], Reply::Hang).await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/slow"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"timeout_seconds": 1},
        }))
        .await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1);
    let invocation = only_invocation(api, &id).await;
    let message = client_error(&invocation);
    assert!(message.contains("timed out"), "{message}");
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let waited = secs_between(got[0].at, ts(&invocation["created_at"]));
    assert!(
        (0.9..5.0).contains(&waited),
        "gave up after {waited} s, timeout is 1 s"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_a_failed_attempt() {
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": format!("http://127.0.0.1:{}/nobody", free_port()),
            "schedule_at": in_seconds(0.0).to_string(),
        }))
        .await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1);
    let invocation = only_invocation(api, &id).await;
    let message = client_error(&invocation).to_ascii_lowercase();
    assert!(message.contains("refused"), "{message}");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Values from the environment

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_value_from_env_is_sent_but_not_logged() {
    let var = "DELIVERY_TEST_HEADER_SECRET";
    // SAFETY: the name is unique to this test; std serialises its own
    // environment accesses, and nothing here reads the environment via libc.
    unsafe { std::env::set_var(var, "s3cret-value") };
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/env"),
            "schedule_at": in_seconds(0.0).to_string(),
            "headers": [{"name": "X-Secret", "value_from_env": var}],
        }))
        .await;
    api.wait_status(&id, "delivered").await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].header_values("x-secret"), ["s3cret-value"]);
    // The value is never written to the log, only the variable's name.
    let invocation = only_invocation(api, &id).await;
    let shown = invocation.to_string();
    assert!(!shown.contains("s3cret-value"), "{shown}");
    // Shown as configured, as Hasura shows it.
    let headers = invocation["request"]["headers"]
        .as_array()
        .expect("headers");
    assert!(
        headers.contains(&json!({"name": "X-Secret", "value_from_env": var})),
        "{headers:?}"
    );
    server.stop().await;
}

/// A header's `value` is a template, as in Hasura: `{{VAR}}` is read
/// from the environment at delivery; the invocation log shows the template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_value_placeholders_are_resolved_at_delivery() {
    let var = "DELIVERY_TEST_HEADER_TOKEN";
    // SAFETY: as above: a name unique to this test.
    unsafe { std::env::set_var(var, "tok-123") };
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let template = format!("Bearer {{{{{var}}}}}");
    let id = api
        .create(json!({
            "webhook": receiver.url("/templated"),
            "schedule_at": in_seconds(0.0).to_string(),
            "headers": [{"name": "Authorization", "value": template}],
        }))
        .await;
    api.wait_status(&id, "delivered").await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].header_values("authorization"), ["Bearer tok-123"]);
    let shown = only_invocation(api, &id).await.to_string();
    assert!(!shown.contains("tok-123"), "{shown}");
    assert!(shown.contains(&template), "{shown}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_env_var_is_a_visible_failure() {
    let header_var = "DELIVERY_TEST_NEVER_SET_HEADER";
    let url_var = "DELIVERY_TEST_NEVER_SET_URL";
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let in_header = api
        .create(json!({
            "webhook": receiver.url("/never"),
            "schedule_at": in_seconds(0.0).to_string(),
            "headers": [{"name": "Authorization", "value_from_env": header_var}],
        }))
        .await;
    let in_url = api
        .create(json!({
            "webhook": format!("http://{{{{{url_var}}}}}/never"),
            "schedule_at": in_seconds(0.0).to_string(),
        }))
        .await;
    for (id, var) in [(&in_header, header_var), (&in_url, url_var)] {
        // Still listed: the failure is not silently dropped (Hasura #9311).
        let event = api.wait_status(id, "error").await;
        assert_eq!(event["tries"], 1);
        let invocation = only_invocation(api, id).await;
        let message = client_error(&invocation);
        assert!(
            message.contains(var),
            "message does not name {var}: {message}"
        );
        assert!(message.contains("not set"), "{message}");
    }
    assert_eq!(receiver.count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_url_placeholder_resolves_from_env() {
    let var = "DELIVERY_TEST_WEBHOOK_HOST";
    let receiver = Receiver::ok().await;
    // SAFETY: as above, a name unique to this test.
    unsafe { std::env::set_var(var, receiver.addr.to_string()) };
    let server = TestServer::fresh().await;
    let api = &server.api;
    let template = format!("http://{{{{{var}}}}}/from-env");
    let id = api
        .create(json!({"webhook": template, "schedule_at": in_seconds(0.0).to_string()}))
        .await;
    let event = api.wait_status(&id, "delivered").await;
    // Stored and shown as the template, resolved only when sending.
    assert_eq!(event["webhook_conf"], template.as_str());
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].path, "/from-env");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolved_url_secret_never_reaches_the_log() {
    let var = "DELIVERY_TEST_URL_SECRET";
    // A port nothing listens on: the delivery fails with a connection error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port();
    // SAFETY: as above, a name unique to this test.
    unsafe { std::env::set_var(var, "hunter2-envsecret") };
    let dir = tempfile::tempdir().expect("temporary data directory");
    let server = TestServer::start(chime::server::ServeConfig::new(dir.path())).await;
    let api = &server.api;
    let template = format!("http://127.0.0.1:{port}/db?s={{{{{var}}}}}");
    let id = api
        .create(json!({"webhook": template, "schedule_at": in_seconds(0.0).to_string()}))
        .await;
    api.wait_status(&id, "error").await;
    let invocation = only_invocation(api, &id).await;
    let shown = invocation.to_string();
    assert!(!shown.contains("hunter2-envsecret"), "{shown}");
    server.stop().await;
    let dump = std::process::Command::new(chime::testing::chime_binary())
        .args(["log", "dump", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run chime log dump");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.status.success(), "{text}");
    assert!(text.contains(&id), "{text}");
    assert!(!text.contains("hunter2-envsecret"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_variable_in_the_log_fails_at_delivery() {
    // Set, so only the policy can stop it from being sent.
    // SAFETY: as above, a name unique to this test.
    unsafe { std::env::set_var("DELIVERY_TEST_NOT_ALLOWED", "not-for-this-host") };
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().expect("temporary data directory");
    // Accepted by a server without an allow list, stopped before it is due.
    let open = TestServer::start(chime::server::ServeConfig::new(dir.path())).await;
    let id = open
        .api
        .create(json!({
            "webhook": receiver.url("/x"),
            "schedule_at": in_seconds(3.0).to_string(),
            "headers": [{"name": "X-S", "value_from_env": "DELIVERY_TEST_NOT_ALLOWED"}],
        }))
        .await;
    open.stop().await;
    let mut config = chime::server::ServeConfig::new(dir.path());
    config.env_policy.allow = vec!["ALLOWED_*".into()];
    let server = TestServer::start(config).await;
    let api = &server.api;
    api.wait_status(&id, "error").await;
    let message = client_error(&only_invocation(api, &id).await);
    assert!(message.contains("DELIVERY_TEST_NOT_ALLOWED"), "{message}");
    assert!(message.contains("may not be used"), "{message}");
    assert!(!message.contains("not-for-this-host"), "{message}");
    assert_eq!(receiver.count(), 0);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_events_are_never_delivered() {
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let soon = in_seconds(1.0);
    // Deleted right after creating, well before it is due.
    let near = api
        .create(json!({"webhook": receiver.url("/near"), "schedule_at": soon.to_string()}))
        .await;
    api.delete(&near).await;
    let far = api
        .create(
            json!({"webhook": receiver.url("/far"), "schedule_at": in_seconds(3600.0).to_string()}),
        )
        .await;
    api.delete(&far).await;
    // Due at the same moment and not deleted: shows the dispatcher was
    // running and the wait below was long enough to matter.
    let control = api
        .create(json!({"webhook": receiver.url("/control"), "schedule_at": soon.to_string()}))
        .await;
    let listed: Vec<Value> = api
        .all_events()
        .await
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(listed, [json!(control)]);
    for id in [&far, &near] {
        let (status, answer) = api
            .metadata(json!({
                "type": "get_scheduled_event_invocations",
                "args": {"type": "one_off", "event_id": id},
            }))
            .await;
        assert_eq!(
            (status, &answer),
            (200, &json!({"invocations": []})),
            "a deleted event has no invocations"
        );
    }
    api.wait_status(&control, "delivered").await;
    // Here the bounded wait is the point: nothing else may arrive.
    let got = receiver.wait_for_within(2, Duration::from_secs(2)).await;
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/control"]);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// What counts as an answer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_is_a_failure_not_followed_and_its_location_is_kept() {
    let receiver = Receiver::ok().await;
    let redirector = Receiver::start(
        vec![],
        Reply::status(302).header("Location", &receiver.url("/elsewhere")),
    )
    .await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({"webhook": redirector.url("/moved"), "schedule_at": in_seconds(0.0).to_string()}))
        .await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1);
    let invocation = only_invocation(api, &id).await;
    assert_eq!(invocation["status"], 302);
    assert_eq!(
        response_header(&invocation, "location"),
        Some(receiver.url("/elsewhere"))
    );
    assert_eq!(redirector.count(), 1);
    assert_eq!(receiver.count(), 0, "the redirect was followed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_is_capped_and_marked_truncated() {
    let receiver = Receiver::start(vec![], Reply::ok().body(vec![b'a'; 200 * 1024])).await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(
            json!({"webhook": receiver.url("/big"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    api.wait_status(&id, "delivered").await;
    let invocation = only_invocation(api, &id).await;
    let data = &invocation["response"]["data"];
    // The cap holds the response headers and the body together: the body
    // fills what the (few) headers leave of the 64 KiB.
    let (header_bytes, body_bytes) = stored_response_bytes(&invocation);
    assert!(header_bytes > 0, "{data}");
    assert_eq!(body_bytes, 64 * 1024 - header_bytes);
    assert_eq!(data["truncated"], true);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Timing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_events_fire_in_order_at_their_time() {
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    // A far event first, so the dispatcher plans a long sleep: each later
    // create is due sooner and must wake it.
    api.create(
        json!({"webhook": receiver.url("/far"), "schedule_at": in_seconds(3600.0).to_string()}),
    )
    .await;
    let times = [in_seconds(1.0), in_seconds(1.2), in_seconds(1.5)];
    // Created latest first, so the order of arrival is the dispatcher's.
    for (n, at) in times.iter().enumerate().rev() {
        api.create(
            json!({"webhook": receiver.url(&format!("/{n}")), "schedule_at": at.to_string()}),
        )
        .await;
    }
    let got = receiver.wait_for(3).await;
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/0", "/1", "/2"]);
    for (request, at) in got.iter().zip(times) {
        assert_eq!(request.json()["scheduled_time"], at.to_string());
        let late = secs_between(at, request.at);
        assert!(
            (0.0..1.0).contains(&late),
            "{} arrived {late} s after its time",
            request.path
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_events_are_each_delivered_once() {
    const N: usize = 20;
    let receiver = Receiver::ok().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let at = in_seconds(0.3).to_string();
    let mut ids = Vec::new();
    for n in 0..N {
        ids.push(
            api.create(json!({"webhook": receiver.url(&format!("/{n}")), "schedule_at": at}))
                .await,
        );
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let events = api.all_events().await;
        let delivered = events.iter().filter(|e| e["status"] == "delivered").count();
        if delivered == N {
            assert!(events.iter().all(|e| e["tries"] == 1), "{events:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "{delivered} of {N} delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sent: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    sent.sort();
    ids.sort();
    assert_eq!(sent, ids, "each event sent exactly once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webhook_holds_the_only_slot_until_it_times_out() {
    let slow = Receiver::start(vec![], Reply::Hang).await;
    let fast = Receiver::ok().await;
    let server = TestServer::fresh_with(|c| c.dispatch.max_in_flight = 1).await;
    let api = &server.api;
    let blocked = api
        .create(json!({
            "webhook": slow.url("/slow"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"timeout_seconds": 1},
        }))
        .await;
    slow.wait_for(1).await;
    let waiting = api
        .create(json!({"webhook": fast.url("/fast"), "schedule_at": in_seconds(0.0).to_string()}))
        .await;
    api.wait_status(&blocked, "error").await;
    api.wait_status(&waiting, "delivered").await;
    // Sent only once the slot was free again, and then at once.
    let freed = ts(&only_invocation(api, &blocked).await["created_at"]);
    let sent = fast.wait_for(1).await[0].at;
    let after = secs_between(freed, sent);
    assert!(
        (0.0..1.0).contains(&after),
        "sent {after} s after the slot was freed"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Crashes and signals (the binary as a child process)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_interrupted_by_sigkill_is_sent_again_without_using_a_try() {
    let receiver = Receiver::start(vec![Reply::Hang], Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = ChildServer::spawn(dir.path(), &[]).await;
    let id = first
        .api
        .create(
            json!({"webhook": receiver.url("/crash"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    receiver.wait_for(1).await;
    let event = first.api.find_event(&id).await.unwrap();
    assert_eq!(event["status"], "locked", "{event}");
    first.kill();

    let second = ChildServer::spawn(dir.path(), &[]).await;
    let event = second.api.wait_status(&id, "delivered").await;
    // The interrupted attempt does not use up a try: with the default
    // num_retries 0 the event is still delivered, on its one try.
    assert_eq!(event["tries"], 1, "{event}");
    let got = receiver.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].json()["id"], id.as_str());
    assert_eq!(got[1].json()["id"], id.as_str());
    let invocation = only_invocation(&second.api, &id).await;
    assert_eq!(invocation["status"], 200);
}

/// An event whose delivery is cut short by a stop every time (as one that
/// crashed the server would be) gives up after `--max-interrupted-attempts`
/// (default 3), as `error`, with the reason in its invocation log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_interrupted_three_times_gives_up_with_the_reason_logged() {
    let receiver = Receiver::start(vec![Reply::Hang, Reply::Hang, Reply::Hang], Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = ChildServer::spawn(dir.path(), &[]).await;
    let id = server
        .api
        .create(
            json!({"webhook": receiver.url("/loop"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    for sent in 1..=2 {
        receiver.wait_for(sent).await;
        server.kill();
        server = ChildServer::spawn(dir.path(), &[]).await;
    }
    // The third attempt is in flight; the third stop is the last straw.
    receiver.wait_for(3).await;
    server.kill();
    let server = ChildServer::spawn(dir.path(), &[]).await;
    let event = server.api.wait_status(&id, "error").await;
    assert_eq!(
        event["tries"], 0,
        "interrupted attempts are not tries: {event}"
    );
    let invocation = only_invocation(&server.api, &id).await;
    let message = invocation["response"]["data"]["message"].as_str().unwrap();
    assert!(message.contains("interrupted 3 times"), "{invocation}");
    assert_eq!(receiver.count(), 3, "not sent a fourth time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_blocked_delivery_exits_zero_after_the_grace() {
    let receiver = Receiver::start(vec![Reply::Hang], Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildServer::spawn(dir.path(), &["--shutdown-grace", "1"]).await;
    let id = child
        .api
        .create(
            json!({"webhook": receiver.url("/term"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    receiver.wait_for(1).await;
    let asked = Instant::now();
    child.terminate();
    let status = child.wait_exit(Duration::from_secs(5)).await;
    let took = asked.elapsed();
    let Some(status) = status else {
        panic!(
            "chime did not exit within 5 s of SIGTERM; stderr:\n{}",
            child.stderr()
        )
    };
    assert!(status.success(), "{status}; stderr:\n{}", child.stderr());
    // It waited for the in-flight delivery, up to the grace.
    assert!(took >= Duration::from_millis(900), "exited after {took:?}");

    // The attempt cut short by the stop is sent again after a restart.
    let again = ChildServer::spawn(dir.path(), &[]).await;
    let event = again.api.wait_status(&id, "delivered").await;
    assert_eq!(event["tries"], 1, "{event}");
    assert_eq!(receiver.wait_for(2).await.len(), 2);
}

/// `timeout_seconds: 0` is accepted, as in Hasura: the call times out at
/// once, a failed attempt like any timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_timeout_is_a_failed_attempt_that_times_out() {
    let receiver = Receiver::start(vec![], Reply::Hang).await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/zero"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"timeout_seconds": 0},
        }))
        .await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1);
    let message = client_error(&only_invocation(api, &id).await);
    assert!(message.contains("timed out"), "{message}");
    server.stop().await;
}
