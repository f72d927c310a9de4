//! The dispatcher's own limits, over real sockets: no event is left
//! `locked` by a panicking attempt, no retry comes sooner than
//! `--min-retry-interval`, no attempt waits longer than
//! `--max-webhook-timeout`, a silent host holds only its
//! `--max-in-flight-per-host` slots, and response headers count against
//! `--response-body-cap`.
//!
//! Each test has its own data directory, server and receivers on
//! 127.0.0.1:0; states are awaited by bounded polling. Time is asserted
//! only as lower bounds (a gap at least so long), which a loaded machine
//! cannot break.

use std::time::Duration;

use serde_json::json;

use chime::record::{EventCreated, EventId, HeaderConf, HeaderSource, Record, UnixMicros};
use chime::testing::{
    Receiver, Reply, TestServer, client_error, in_seconds, only_invocation, secs_between,
};

/// A grace short enough that a test stopping with attempts still hanging
/// does not wait the default ten seconds.
const SHORT_GRACE: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_attempt_is_recorded_as_failed_and_leaves_nothing_locked() {
    let receiver = Receiver::ok().await;
    // The create-time rules leave no input known to make an attempt panic
    // (30,000 header names once did, in `http::HeaderMap`), so the event
    // asks for one with the testing feature's header; it is written
    // straight into the log, as an event from an older release would be.
    let id = EventId::new_v4();
    let created = EventCreated {
        headers: vec![HeaderConf {
            name: chime::testing::PANIC_HEADER.into(),
            value: HeaderSource::Value("v".into()),
        }],
        created_at: UnixMicros::from_timestamp(in_seconds(0.0)),
        ..chime::record::fixtures::event(
            id,
            receiver.url("/hook"),
            UnixMicros::from_timestamp(in_seconds(0.0)),
        )
    };
    let server = TestServer::over_records(&[Record::EventCreated(created)], |_| {}).await;
    let api = &server.api;
    let id = id.to_string();
    // Failed with the panic's reason, in this run: not `locked` until a
    // restart turns it into `error` with a wrong reason.
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1, "{event}");
    let message = client_error(&only_invocation(api, &id).await);
    assert!(message.contains("panicked"), "{message}");
    assert_eq!(receiver.count(), 0);
    // The dispatcher goes on: a good event after it is delivered.
    let good = api
        .create(
            json!({"webhook": receiver.url("/good"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    api.wait_status(&good, "delivered").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_comes_sooner_than_the_min_retry_interval() {
    let receiver = Receiver::start(vec![], Reply::status(500)).await;
    let server = TestServer::fresh_with(|c| {
        c.dispatch.min_retry_interval = Duration::from_millis(500);
    })
    .await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/fail"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"num_retries": 1000, "retry_interval_seconds": 0},
        }))
        .await;
    let got = receiver.wait_for(3).await;
    // Without the minimum, retry_interval_seconds 0 retries at once: a
    // storm of attempts milliseconds apart.
    for pair in got.windows(2) {
        let gap = secs_between(pair[0].at, pair[1].at);
        assert!(gap >= 0.45, "retried {gap} s after a failure: {got:?}");
    }
    // The third call's outcome may not be recorded yet: two tries at least.
    let event = api.event(&id).await;
    assert!(event["tries"].as_u64() >= Some(2), "{event}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_timeout_is_cut_to_the_max_webhook_timeout() {
    let receiver = Receiver::start(vec![], Reply::Hang).await;
    let server = TestServer::fresh_with(|c| {
        c.dispatch.max_webhook_timeout = Duration::from_secs(1);
    })
    .await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/silent"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"timeout_seconds": 4_294_967_295u64},
        }))
        .await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1);
    let message = client_error(&only_invocation(api, &id).await);
    assert!(message.contains("timed out after 1 s"), "{message}");
    server.stop().await;
}

/// Hasura takes fractional `retry_conf` seconds: a quarter-second timeout
/// cuts the call at 0.25 s, and the retry is due exactly half a second
/// after the failure, not rounded to whole seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fractional_retry_conf_seconds_are_kept_to_the_microsecond() {
    let receiver = Receiver::start(vec![], Reply::Hang).await;
    let server = TestServer::fresh_with(|c| {
        c.dispatch.min_retry_interval = Duration::ZERO;
        c.dispatch.shutdown_grace = SHORT_GRACE;
    })
    .await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/silent"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"num_retries": 1, "retry_interval_seconds": 0.5, "timeout_seconds": 0.25},
        }))
        .await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(
        event["retry_conf"],
        json!({"num_retries": 1, "retry_interval_seconds": 0.5, "timeout_seconds": 0.25, "tolerance_seconds": 21600})
    );
    assert_eq!(event["tries"], 2);
    let invocations = api.invocations_of(&id).await;
    assert_eq!(invocations.len(), 2, "{invocations:?}");
    for invocation in &invocations {
        let message = client_error(invocation);
        assert!(message.contains("timed out after 0.25 s"), "{message}");
    }
    // The event keeps the retry time its first failure set (as Hasura
    // does after the last try): the first failure's time plus 0.5 s.
    let time = |v: &serde_json::Value| -> jiff::Timestamp {
        v.as_str().expect("a time").parse().expect("RFC 3339")
    };
    let first_failure = invocations
        .iter()
        .map(|i| time(&i["created_at"]))
        .min()
        .expect("an invocation time");
    let gap = secs_between(first_failure, time(&event["next_retry_at"]));
    assert!((gap - 0.5).abs() < 1e-6, "retry {gap} s after the failure");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_host_holds_only_its_own_slots() {
    let silent = Receiver::start(vec![], Reply::Hang).await;
    let good = Receiver::ok().await;
    let server = TestServer::fresh_with(|c| {
        c.dispatch.max_in_flight = 4;
        c.dispatch.max_in_flight_per_host = 2;
        c.dispatch.shutdown_grace = SHORT_GRACE;
    })
    .await;
    let api = &server.api;
    for n in 0..5 {
        api.create(json!({
            "webhook": silent.url(&format!("/silent/{n}")),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {"timeout_seconds": 3600},
        }))
        .await;
    }
    silent.wait_for(2).await;
    // Without a per-host share the silent host takes all four slots and
    // this event waits for an hour.
    let id = api
        .create(json!({"webhook": good.url("/good"), "schedule_at": in_seconds(0.0).to_string()}))
        .await;
    api.wait_status(&id, "delivered").await;
    assert_eq!(silent.count(), 2, "the silent host got more than its share");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_parked_for_one_host_do_not_hold_up_another() {
    // 40,000 events due for a silent host, straight in the log: all but one
    // are parked. The loop must not walk the parked ones again for every
    // pick (that was quadratic: minutes for this many); the good host's
    // event, due after all of them, is sent within seconds.
    let silent = Receiver::start(vec![], Reply::Hang).await;
    let good = Receiver::ok().await;
    let due = UnixMicros::from_timestamp(in_seconds(-1.0));
    let records: Vec<Record> = (0..40_000)
        .map(|_| {
            let mut created =
                chime::record::fixtures::event(EventId::new_v4(), silent.url("/silent"), due);
            created.retry_conf.timeout_seconds = chime::record::Seconds::whole(3600);
            Record::EventCreated(created)
        })
        .collect();
    let server = TestServer::over_records(&records, |c| {
        c.dispatch.max_in_flight = 4;
        c.dispatch.max_in_flight_per_host = 1;
        c.dispatch.shutdown_grace = SHORT_GRACE;
    })
    .await;
    let api = &server.api;
    api.create(json!({"webhook": good.url("/good"), "schedule_at": in_seconds(0.0).to_string()}))
        .await;
    // Watched at the receiver: listing 40,000 events to poll a status
    // would be most of the work.
    let got = good.wait_for_within(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "the good host's event was not sent");
    assert_eq!(silent.count(), 1, "the silent host got more than its share");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_are_sent_as_their_host_frees_its_slot() {
    let slow = Receiver::start(vec![], Reply::ok().after(Duration::from_millis(100))).await;
    let server = TestServer::fresh_with(|c| {
        c.dispatch.max_in_flight = 4;
        c.dispatch.max_in_flight_per_host = 1;
    })
    .await;
    let api = &server.api;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(
            api.create(json!({
                "webhook": slow.url(&format!("/slow/{n}")),
                "schedule_at": in_seconds(0.0).to_string(),
            }))
            .await,
        );
    }
    for id in &ids {
        api.wait_status(id, "delivered").await;
    }
    // One at a time: each call arrived after the one before was answered.
    let got = slow.received();
    assert_eq!(got.len(), 4);
    let mut arrivals: Vec<_> = got.iter().map(|r| r.at).collect();
    arrivals.sort();
    for pair in arrivals.windows(2) {
        let gap = secs_between(pair[0], pair[1]);
        assert!(
            gap >= 0.09,
            "two calls in flight to one host: {gap} s apart"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_count_against_the_response_body_cap() {
    const CAP: usize = 10 * 1024;
    // 60 headers of 5 KB: 300 KB of head, and a 4 KB body.
    let receiver = Receiver::start(
        vec![],
        Reply::ok().padded_headers(60, 5_000).body(vec![b'b'; 4096]),
    )
    .await;
    let server = TestServer::fresh_with(|c| c.dispatch.response_body_cap = CAP).await;
    let api = &server.api;
    let id = api
        .create(
            json!({"webhook": receiver.url("/heavy"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    api.wait_status(&id, "delivered").await;
    let invocation = only_invocation(api, &id).await;
    let data = &invocation["response"]["data"];
    let headers = data["headers"].as_array().unwrap();
    let header_bytes: usize = headers
        .iter()
        .map(|h| h["name"].as_str().unwrap().len() + h["value"].as_str().unwrap().len())
        .sum();
    let body_bytes = data["body"].as_str().unwrap().len();
    assert!(
        header_bytes + body_bytes <= CAP,
        "stored {header_bytes} bytes of headers and {body_bytes} of body, cap {CAP}"
    );
    assert_eq!(data["truncated"], true);
    // Kept in order while they fit: the first ones are there.
    assert!(
        headers.iter().any(|h| h["name"] == "x-pad-0"),
        "{:?}",
        headers.iter().map(|h| &h["name"]).collect::<Vec<_>>()
    );
    server.stop().await;
}

/// `retry_backoff: "exponential"`: each retry waits twice the one before,
/// up to `max_retry_interval_seconds`, less at most a tenth (as the failed
/// attempts' records say, to the microsecond), and the listing shows the
/// backoff in `retry_conf`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_doubles_each_wait_up_to_its_cap() {
    let receiver = Receiver::start(vec![], Reply::status(503)).await;
    let server = TestServer::fresh_with(|c| {
        c.dispatch.min_retry_interval = Duration::ZERO;
        c.dispatch.shutdown_grace = SHORT_GRACE;
    })
    .await;
    let api = &server.api;
    let id = api
        .create(json!({
            "webhook": receiver.url("/down"),
            "schedule_at": in_seconds(0.0).to_string(),
            "retry_conf": {
                "num_retries": 4,
                "retry_interval_seconds": 0.1,
                "retry_backoff": "exponential",
                "max_retry_interval_seconds": 0.3,
            },
        }))
        .await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 5);
    assert_eq!(
        event["retry_conf"],
        json!({"num_retries": 4, "retry_interval_seconds": 0.1, "timeout_seconds": 60,
               "tolerance_seconds": 21600, "retry_backoff": "exponential",
               "max_retry_interval_seconds": 0.3})
    );
    let waits: Vec<i64> = chime::testing::replay_all(&server.service.log)
        .iter()
        .filter_map(|(_, bytes)| match Record::decode(bytes).expect("decodes") {
            Record::AttemptFailed {
                at,
                next_retry_at: Some(next),
                ..
            } => Some(next.0 - at.0),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 4, "{waits:?}");
    for (wait, full) in waits.iter().zip([100_000, 200_000, 300_000, 300_000]) {
        assert!(
            (full - full / 10..=full).contains(wait),
            "waited {wait} µs where {full} less a tenth was due: {waits:?}"
        );
    }
    // The calls came no sooner than the records said.
    let calls = receiver.wait_for(5).await;
    for (pair, wait) in calls.windows(2).zip(&waits) {
        let gap = secs_between(pair[0].at, pair[1].at);
        assert!(
            gap * 1e6 >= *wait as f64 * 0.9,
            "{gap} s between calls, {wait} µs due"
        );
    }
    server.stop().await;
}
