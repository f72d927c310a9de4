//! Every `chime serve` flag through the real binary: one test per flag
//! that shows its effect (a flag parsed but never applied would pass every
//! in-process test, which builds its `ServeConfig` by hand). Flags that
//! already have such a test elsewhere are left to it; docs/reliability.md
//! ("Flags and the tests that show them") says which test covers which.

use std::time::Duration;

use chime::testing::conn::{closed_within, healthz_within, open_idle, send_partial};
use chime::testing::{
    ChildServer, Receiver, Reply, WAIT, free_port, h2c_client, http_client, https_client,
    in_seconds, only_invocation, raw_exchange, self_signed_cert, serve_to_exit,
};
use serde_json::{Value, json};

/// A create request for an event due now at `webhook`.
fn due_now(webhook: &str) -> Value {
    json!({"webhook": webhook, "schedule_at": in_seconds(0.0).to_string()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_cap_10_keeps_ten_bytes_marked_truncated() {
    let receiver = Receiver::start(vec![], Reply::ok().body(vec![b'a'; 100])).await;
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn(dir.path(), &["--response-body-cap", "10"]).await;
    let id = child.api.create(due_now(&receiver.url("/cap"))).await;
    child.api.wait_status(&id, "delivered").await;
    let invocation = only_invocation(&child.api, &id).await;
    let data = &invocation["response"]["data"];
    assert_eq!(data["body"], "a".repeat(10), "{invocation}");
    assert_eq!(data["truncated"], true, "{invocation}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_bytes_100_answers_a_longer_body_413() {
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn(dir.path(), &["--max-body-bytes", "100"]).await;
    let short = json!({"type": "get_scheduled_events", "args": {"type": "one_off"}}).to_string();
    assert!(short.len() <= 100);
    assert_eq!(child.api.post_raw("/v1/metadata", short).await.0, 200);
    // A valid request, only too long: 101 bytes of JSON.
    let empty = json!({"type": "get_scheduled_events", "args": {"type": "one_off"}, "pad": ""});
    let pad = 101 - empty.to_string().len();
    let long = json!({"type": "get_scheduled_events", "args": {"type": "one_off"}, "pad": "x".repeat(pad)})
        .to_string();
    assert_eq!(long.len(), 101);
    let (status, answer) = child.api.post_raw("/v1/metadata", long).await;
    assert_eq!(status, 413, "{answer}");
}

/// With `--max-interrupted-attempts 1` one stop mid-delivery is enough to
/// give up (the default, 3, would send it again after the restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_interrupted_attempts_1_gives_up_after_one_stop() {
    let receiver = Receiver::start(vec![Reply::Hang], Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--max-interrupted-attempts", "1"];
    let mut child = ChildServer::spawn(dir.path(), &flags).await;
    let id = child.api.create(due_now(&receiver.url("/once"))).await;
    receiver.wait_for(1).await;
    child.kill();
    let child = ChildServer::spawn(dir.path(), &flags).await;
    let event = child.api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 0, "{event}");
    let invocation = only_invocation(&child.api, &id).await;
    let message = invocation["response"]["data"]["message"].as_str().unwrap();
    assert!(message.contains("interrupted 1 times"), "{invocation}");
    assert_eq!(receiver.count(), 1, "sent again after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_secret_from_chime_admin_secret_guards_the_api() {
    let secret = "a-long-enough-admin-secret-from-env";
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn_on(
        dir.path(),
        "127.0.0.1:0",
        &[],
        &[("CHIME_ADMIN_SECRET", secret)],
    )
    .await;
    let body = json!({"type": "get_scheduled_events", "args": {"type": "one_off"}});
    let (status, answer) = child.api.metadata(body.clone()).await;
    assert_eq!(status, 401, "{answer}");
    let mut wrong = child.api.clone();
    wrong.secret = Some("not-the-secret".into());
    assert_eq!(wrong.metadata(body.clone()).await.0, 401);
    let mut with = child.api.clone();
    with.secret = Some(secret.into());
    let (status, answer) = with.metadata(body).await;
    assert_eq!(status, 200, "{answer}");
    // Read from the environment, so no warning about the command line.
    assert!(
        !child.stderr().contains("command line"),
        "{}",
        child.stderr()
    );
}

/// Without a secret a non-loopback address is refused (tests/serve.rs,
/// `bad_flags_exit_2`); `--allow-unauthenticated` serves it, with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_unauthenticated_serves_every_address_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let child =
        ChildServer::spawn_on(dir.path(), "0.0.0.0:0", &["--allow-unauthenticated"], &[]).await;
    let receiver = Receiver::ok().await;
    let id = child
        .api
        .create(
            json!({"webhook": receiver.url("/open"), "schedule_at": in_seconds(60.0).to_string()}),
        )
        .await;
    assert!(child.api.find_event(&id).await.is_some());
    assert!(
        child.stderr().contains("NO ADMIN SECRET IS SET"),
        "{}",
        child.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cert_without_key_exits_2_and_the_pair_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let data = dir.path().join("data");
    let cert_arg = cert.to_str().unwrap();
    let key_arg = key.to_str().unwrap();
    for alone in [["--tls-cert", cert_arg], ["--tls-key", key_arg]] {
        let (status, stderr) = serve_to_exit(&data, &alone);
        assert_eq!(status.code(), Some(2), "{alone:?}: {stderr}");
        let other = if alone[0] == "--tls-cert" {
            "--tls-key"
        } else {
            "--tls-cert"
        };
        assert!(stderr.contains(other), "{alone:?}: {stderr}");
    }
    let mut child =
        ChildServer::spawn(&data, &["--tls-cert", cert_arg, "--tls-key", key_arg]).await;
    assert!(child.api.base.starts_with("https://"), "{}", child.api.base);
    child.api.http = https_client(&cert);
    assert_eq!(child.api.count().await, 0);
    // Plain HTTP is not served on the TLS port.
    let plain = http_client()
        .get(format!("http://{}/healthz", child.addr))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP answered on the TLS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_bytes_rolls_segments_and_every_event_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--segment-bytes", "4096"];
    let mut child = ChildServer::spawn(dir.path(), &flags).await;
    let payload = "p".repeat(500);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            child
                .api
                .create(json!({
                    "webhook": "http://127.0.0.1:9/never",
                    "schedule_at": in_seconds(3600.0).to_string(),
                    "payload": {"pad": payload},
                }))
                .await,
        );
    }
    let segments = std::fs::read_dir(dir.path().join("log")).unwrap().count();
    // 20 creates of over 500 bytes each: at least 10 kB, in 4 kB segments.
    assert!(segments >= 3, "{segments} segment files");
    child.kill();
    let child = ChildServer::spawn(dir.path(), &flags).await;
    for id in &ids {
        assert!(child.api.find_event(id).await.is_some(), "{id} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_binds_the_port_asked_for() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn_on(dir.path(), &format!("127.0.0.1:{port}"), &[], &[]).await;
    assert_eq!(child.addr.port(), port);
    assert_eq!(healthz_within(child.addr, WAIT).await, Some(200));
}

/// With one slot, a second event due at once is sent only after the first
/// call (which hangs) has timed out: never before its timeout (a lower
/// bound, so a slow machine cannot break it). The default 256 sends both
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_1_sends_one_call_at_a_time() {
    let receiver = Receiver::start(vec![Reply::Hang], Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn(dir.path(), &["--max-in-flight", "1"]).await;
    let at = in_seconds(0.0).to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            child
                .api
                .create(json!({
                    "webhook": receiver.url("/slot"),
                    "schedule_at": at,
                    "retry_conf": {"timeout_seconds": 1},
                }))
                .await,
        );
    }
    let got = receiver.wait_for(2).await;
    let apart = got[1].at.duration_since(got[0].at).as_secs_f64();
    assert!(
        apart >= 0.9,
        "the second call came {apart} s after the first"
    );
    for id in &ids {
        child
            .api
            .wait_event(id, "finished", |e| {
                e["status"] != "scheduled" && e["status"] != "locked"
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_origin_from_chime_allow_origin_admits_that_origin_only() {
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn_on(
        dir.path(),
        "127.0.0.1:0",
        &[],
        &[("CHIME_ALLOW_ORIGIN", "https://app.example")],
    )
    .await;
    let body = json!({"type": "get_scheduled_events", "args": {"type": "one_off"}}).to_string();
    for (origin, expected) in [("https://app.example", 200), ("https://evil.example", 403)] {
        let request = format!(
            "POST /v1/metadata HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            child.addr,
            body.len()
        );
        let answer = raw_exchange(child.addr, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{origin}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_serves_h2c_only_with_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildServer::spawn(dir.path(), &[]).await;
    let url = format!("http://{}/healthz", child.addr);
    assert!(
        h2c_client().get(&url).send().await.is_err(),
        "h2c without --http2"
    );
    child.kill();
    let child = ChildServer::spawn(dir.path(), &["--http2"]).await;
    let url = format!("http://{}/healthz", child.addr);
    let response = h2c_client().get(&url).send().await.expect("h2c served");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_1_holds_a_second_connection_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn(
        dir.path(),
        &["--max-connections", "1", "--request-header-timeout", "60s"],
    )
    .await;
    let idle = open_idle(child.addr, 1).await;
    assert_eq!(
        healthz_within(child.addr, Duration::from_millis(500)).await,
        None,
        "a second connection was served past --max-connections 1"
    );
    drop(idle);
    assert_eq!(healthz_within(child.addr, WAIT).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_header_timeout_cuts_off_half_a_head() {
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn(dir.path(), &["--request-header-timeout", "200ms"]).await;
    let mut slow = send_partial(child.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    // Well under the default 10 s.
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "a half-sent head still holds its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_cuts_off_a_body_that_stops_coming() {
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn(dir.path(), &["--idle-timeout", "200ms"]).await;
    let mut stalled = send_partial(
        child.addr,
        b"POST /v1/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":",
    )
    .await;
    // Well under the default 60 s (and the 10 s header timeout does not
    // apply: the head is complete).
    assert!(
        closed_within(&mut stalled, Duration::from_secs(5)).await,
        "a stalled body still holds its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_env_allow_lets_matching_variables_through_only() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn_on(
        dir.path(),
        "127.0.0.1:0",
        &["--webhook-env-allow", "FLAGS_OK_*"],
        &[
            ("FLAGS_OK_TOKEN", "allowed-value"),
            ("FLAGS_NO_TOKEN", "refused-value"),
        ],
    )
    .await;
    let id = child
        .api
        .create(json!({
            "webhook": receiver.url("/env"),
            "schedule_at": in_seconds(0.0).to_string(),
            "headers": [{"name": "X-Token", "value_from_env": "FLAGS_OK_TOKEN"}],
        }))
        .await;
    child.api.wait_status(&id, "delivered").await;
    assert_eq!(
        receiver.received()[0].header_values("x-token"),
        ["allowed-value"]
    );
    let (status, answer) = child
        .api
        .metadata(json!({"type": "create_scheduled_event", "args": {
            "webhook": receiver.url("/env"),
            "schedule_at": in_seconds(0.0).to_string(),
            "headers": [{"name": "X-Token", "value_from_env": "FLAGS_NO_TOKEN"}],
        }}))
        .await;
    assert_ne!(status, 200, "{answer}");
    assert!(answer.to_string().contains("FLAGS_NO_TOKEN"), "{answer}");
    assert!(!answer.to_string().contains("refused-value"), "{answer}");
    assert_eq!(receiver.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_agent_is_sent_on_every_call_and_logged() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn_on(
        dir.path(),
        "127.0.0.1:0",
        &["--user-agent", "hasura-graphql-engine/v2.48.10"],
        &[],
    )
    .await;
    let id = child
        .api
        .create(json!({
            "webhook": receiver.url("/ua"),
            "schedule_at": in_seconds(0.0).to_string(),
            "headers": [{"name": "User-Agent", "value": "mine/1"}],
        }))
        .await;
    child.api.wait_status(&id, "delivered").await;
    // The flag's value, over an event's own User-Agent (the service's wins).
    assert_eq!(
        receiver.received()[0].header_values("user-agent"),
        ["hasura-graphql-engine/v2.48.10"]
    );
    let logged = format!("{:?}", child.api.invocations_of(&id).await);
    assert!(
        logged.contains("hasura-graphql-engine/v2.48.10"),
        "{logged}"
    );
}

/// `--retain-finished 1ms`: a delivered event is retired by the pass at the
/// next start (a pass runs at start, then every minute); with the default
/// (30d) it stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_finished_1ms_retires_a_delivered_event_at_the_next_start() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildServer::spawn(dir.path(), &[]).await;
    let id = child.api.create(due_now(&receiver.url("/kept"))).await;
    child.api.wait_status(&id, "delivered").await;
    child.terminate();
    child.wait_exit(WAIT).await.expect("stops on SIGTERM");
    let mut child = ChildServer::spawn(dir.path(), &[]).await;
    assert_eq!(child.api.count().await, 1);
    child.terminate();
    child.wait_exit(WAIT).await.expect("stops on SIGTERM");
    let child = ChildServer::spawn(dir.path(), &["--retain-finished", "1ms"]).await;
    chime::testing::eventually("the delivered event is retired", || async {
        (child.api.count().await == 0).then_some(())
    })
    .await;
    assert!(child.api.invocations_of(&id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_every_5_writes_snapshots_while_serving() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshots = chime::snapshot::snapshot_dir(dir.path());
    let list = || -> Vec<String> {
        std::fs::read_dir(&snapshots)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".snap"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut child = ChildServer::spawn(dir.path(), &["--snapshot-every", "5"]).await;
    for n in 0..6 {
        child
            .api
            .create(json!({"webhook": receiver.url(&format!("/{n}")), "schedule_at": in_seconds(3600.0).to_string()}))
            .await;
    }
    // Without the flag the first snapshot would come after a million
    // records or at the stop; with it, while serving.
    chime::testing::eventually("a snapshot while serving", || async {
        (!list().is_empty()).then_some(())
    })
    .await;
    child.kill();
    child.wait_exit(WAIT).await.expect("killed");
    let mut child = ChildServer::spawn(dir.path(), &[]).await;
    assert_eq!(child.api.count().await, 6);
    let stderr = child.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("log replayed"))
        .unwrap_or_else(|| panic!("no startup line in {stderr}"));
    assert!(
        line.contains("snapshot_seq=5") || line.contains("snapshot_seq=6"),
        "{line}"
    );
    child.terminate();
    child.wait_exit(WAIT).await.expect("stops on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_every_stderr_line_as_one_json_object() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildServer::spawn(dir.path(), &["--log-format", "json"]).await;
    let id = child.api.create(due_now(&receiver.url("/json"))).await;
    child.api.wait_status(&id, "delivered").await;
    child.terminate();
    child.wait_exit(WAIT).await.expect("stops on SIGTERM");
    let parse = |stderr: &str| -> Vec<Value> {
        stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let lines = parse(&child.stderr());
    for l in &lines {
        assert!(l["timestamp"].is_string(), "{l}");
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .contains(&l["level"].as_str().unwrap_or("")),
            "{l}"
        );
        assert!(
            l["target"].as_str().is_some_and(|t| t.starts_with("chime")),
            "{l}"
        );
        assert!(l["fields"]["message"].is_string(), "{l}");
    }
    let message = |m: &str| lines.iter().find(|l| l["fields"]["message"] == m);
    let replayed = message("log replayed").expect("the startup line");
    assert_eq!(replayed["fields"]["records"], 0, "fields keep their types");
    assert!(message("stopped").is_some(), "{lines:?}");
    // Without the flag the same lines are text.
    let mut child = ChildServer::spawn(dir.path(), &[]).await;
    child.terminate();
    child.wait_exit(WAIT).await.expect("stops on SIGTERM");
    let text = child.stderr();
    assert!(text.contains("INFO chime::server: log replayed"), "{text}");
    // A start that fails says why in JSON too.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let (status, stderr) = serve_to_exit(&file, &["--log-format", "json"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let last = parse(&stderr).pop().expect("a line");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(last["fields"]["error"].is_string(), "{last}");
}

/// Every flag reads `CHIME_<FLAG>` as well (`cli.rs`'s
/// `every_serve_flag_reads_its_chime_variable` walks them all); here a
/// server is started with no flag at all, configured only by variables,
/// and each variable shows its effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_configured_only_through_the_environment() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = "a-secret-long-enough-not-to-be-warned-about-0123456789";
    let data_var = data.to_str().unwrap().to_owned();
    let mut child = tokio::task::spawn_blocking(move || {
        ChildServer::start_env_only(&[
            ("CHIME_DATA_DIR", &data_var),
            ("CHIME_LISTEN", "127.0.0.1:0"),
            ("CHIME_ADMIN_SECRET", secret),
            ("CHIME_MAX_BODY_BYTES", "400"),
            ("CHIME_LOG_FORMAT", "json"),
        ])
    })
    .await
    .unwrap();
    let list = json!({"type": "get_scheduled_events", "args": {"type": "one_off"}}).to_string();
    // CHIME_ADMIN_SECRET: refused without it, served with it.
    let (status, answer) = child.api.post_raw("/v1/metadata", list.clone()).await;
    assert_eq!(status, 401, "{answer}");
    child.api.secret = Some(secret.to_owned());
    assert_eq!(child.api.post_raw("/v1/metadata", list).await.0, 200);
    let id = child.api.create(due_now(&receiver.url("/env"))).await;
    child.api.wait_status(&id, "delivered").await;
    // CHIME_MAX_BODY_BYTES.
    let long = json!({"type": "get_scheduled_events", "args": {"type": "one_off"}, "pad": "x".repeat(400)});
    assert_eq!(
        child.api.post_raw("/v1/metadata", long.to_string()).await.0,
        413
    );
    child.terminate();
    child.wait_exit(WAIT).await.expect("stops on SIGTERM");
    // CHIME_DATA_DIR: the log is there.
    assert!(chime::datadir::log_dir(&data).is_dir());
    // CHIME_LOG_FORMAT: every line is JSON.
    let stderr = child.stderr();
    assert!(!stderr.is_empty());
    for line in stderr.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_interval_100ms_compacts_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = chime::datadir::log_dir(dir.path());
    let segments = || {
        std::fs::read_dir(&log_dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".seg")
            })
            .count()
    };
    let mut child = ChildServer::spawn(
        dir.path(),
        &["--compaction-interval", "100ms", "--segment-bytes", "4096"],
    )
    .await;
    let keep = child
        .api
        .create(json!({"webhook": "http://127.0.0.1:9/never", "schedule_at": in_seconds(3600.0).to_string()}))
        .await;
    for n in 0..60 {
        let id = child
            .api
            .create(json!({
                "webhook": "http://127.0.0.1:9/never",
                "schedule_at": in_seconds(3600.0).to_string(),
                "payload": {"n": n, "pad": "c".repeat(100)},
            }))
            .await;
        child.api.delete(&id).await;
    }
    // Without the flag the first compaction would come after a minute.
    chime::testing::eventually("compactions while serving", || async {
        (child.stderr().contains("compacted the log") && segments() <= 3).then_some(())
    })
    .await;
    child.terminate();
    child.wait_exit(WAIT).await.expect("stops on SIGTERM");
    let child = ChildServer::spawn(dir.path(), &[]).await;
    assert_eq!(child.api.count().await, 1);
    assert_eq!(child.api.event(&keep).await["status"], "scheduled");
}
