//! Listings too large to build whole, over real sockets: the answer goes out
//! as it is rendered (chunked, no `Content-Length`), page by page from the
//! projection, and is still exactly the listing: every row once, in order,
//! `count` first, the same bytes `serde_json` writes for the parsed answer.
//!
//! The size of the answer is what these tests pin, never how long it takes:
//! no timing is asserted, only bounded waits for deliveries.

use std::collections::BTreeSet;

use chime::api::{LISTING_PAGE_ROWS, REPLY_CHUNK_BYTES};
use chime::testing::{Receiver, Reply, TestServer, eventually, from_now, ts};
use serde_json::{Value, json};

/// The answer to `body` on `path`: whether it came with a `Content-Length`
/// (sent whole) or chunked (streamed), its exact bytes and its JSON.
struct Answer {
    content_length: bool,
    chunked: bool,
    bytes: Vec<u8>,
    json: Value,
}

async fn answer(server: &TestServer, path: &str, body: Value) -> Answer {
    let response = server.api.post_response(path, &body).await;
    assert_eq!(response.status(), 200, "{body}");
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    let bytes = response.bytes().await.expect("the whole body").to_vec();
    let json: Value = serde_json::from_slice(&bytes).expect("the body is JSON");
    // The bytes are those of the answer built whole as a value: same keys,
    // same key order, same spelling.
    assert!(
        serde_json::to_vec(&json).expect("serialize") == bytes,
        "the answer is not serde_json's rendering of itself"
    );
    Answer {
        content_length: headers.contains_key("content-length"),
        chunked: headers
            .get("transfer-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked")),
        bytes,
        json,
    }
}

fn ids(rows: &Value, key: &str) -> Vec<String> {
    rows.as_array()
        .unwrap_or_else(|| panic!("not an array: {rows}"))
        .iter()
        .map(|row| row[key].as_str().expect("a string id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_large_event_listing_is_streamed_and_is_every_event_once_in_order() {
    let server = TestServer::fresh().await;
    // Several pages, and many events per scheduled time, so the order
    // within one time (by id) crosses page boundaries.
    let n = 2 * LISTING_PAGE_ROWS + 500;
    let args: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "webhook": "http://127.0.0.1:9/never",
                "schedule_at": from_now(3_600 + (i % 50) as i64),
                "payload": {"n": i},
            })
        })
        .collect();
    let created: BTreeSet<String> = server.api.create_all(&args).await.into_iter().collect();
    assert_eq!(created.len(), n);

    let all = json!({"type": "get_scheduled_events", "args": {"type": "one_off", "get_rows_count": true}});
    let listing = answer(&server, "/v1/metadata", all).await;
    assert!(
        listing.bytes.len() > 2 * REPLY_CHUNK_BYTES,
        "{} bytes",
        listing.bytes.len()
    );
    assert!(
        listing.chunked && !listing.content_length,
        "a listing of {} bytes must be streamed, not built whole",
        listing.bytes.len()
    );
    assert_eq!(listing.json["count"], n);
    let events = &listing.json["events"];
    let listed = ids(events, "id");
    assert_eq!(listed.len(), n, "every event, none twice");
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), created);
    let order: Vec<(jiff::Timestamp, String)> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                ts(&e["scheduled_time"]),
                e["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "ordered by scheduled_time, then id"
    );

    // Paged by the client, the same listing.
    let mut paged = vec![];
    for offset in (0..n).step_by(700) {
        let page = answer(
            &server,
            "/v1/metadata",
            json!({"type": "get_scheduled_events", "args": {"type": "one_off", "offset": offset, "limit": 700}}),
        )
        .await;
        paged.extend(ids(&page.json["events"], "id"));
    }
    assert_eq!(paged, listed);

    // A small answer still goes out whole.
    let small = answer(
        &server,
        "/v1/metadata",
        json!({"type": "get_scheduled_events", "args": {"type": "one_off", "limit": 3}}),
    )
    .await;
    assert!(small.content_length && !small.chunked);
    assert_eq!(ids(&small.json["events"], "id"), listed[..3]);

    // Inside a bulk, the listing is streamed too, and answers the same.
    let bulk = json!({"type": "bulk", "args": [
        {"type": "get_scheduled_events", "args": {"type": "one_off"}},
        {"type": "get_scheduled_events", "args": {"type": "one_off", "limit": 1, "get_rows_count": true}},
    ]});
    let answers = answer(&server, "/v1/query", bulk).await;
    assert!(answers.chunked && !answers.content_length);
    assert_eq!(ids(&answers.json[0]["events"], "id"), listed);
    assert_eq!(answers.json[1]["count"], n);
    assert_eq!(ids(&answers.json[1]["events"], "id"), listed[..1]);
    server.stop().await;
}

#[tokio::test]
async fn a_large_invocation_listing_is_streamed_and_is_every_invocation_once() {
    // Each invocation keeps the receiver's 2 KB answer, so a hundred make
    // an answer of several chunks.
    let receiver = Receiver::start(vec![], Reply::ok().body(vec![b'x'; 2_048])).await;
    let server = TestServer::fresh().await;
    let n = 100;
    let args: Vec<Value> = (0..n)
        .map(|i| json!({"webhook": receiver.url("/hook"), "schedule_at": from_now(-60), "payload": {"n": i}}))
        .collect();
    let created: BTreeSet<String> = server.api.create_all(&args).await.into_iter().collect();
    let count = json!({"type": "one_off", "limit": 0, "get_rows_count": true});
    eventually("every event delivered once", || async {
        (server.api.invocations(count.clone()).await["count"] == n).then_some(())
    })
    .await;

    let all = json!({"type": "get_scheduled_event_invocations", "args": {"type": "one_off", "get_rows_count": true}});
    let listing = answer(&server, "/v1/metadata", all).await;
    assert!(
        listing.bytes.len() > 2 * REPLY_CHUNK_BYTES,
        "{} bytes",
        listing.bytes.len()
    );
    assert!(listing.chunked && !listing.content_length);
    assert_eq!(listing.json["count"], n);
    let invocations = &listing.json["invocations"];
    let of = ids(invocations, "event_id");
    assert_eq!(of.len(), n);
    assert_eq!(
        of.into_iter().collect::<BTreeSet<_>>(),
        created,
        "each event's one call, once"
    );

    // Newest first, as the client pages it.
    let mut paged = vec![];
    for offset in (0..n).step_by(30) {
        let page = answer(
            &server,
            "/v1/metadata",
            json!({"type": "get_scheduled_event_invocations", "args": {"type": "one_off", "offset": offset, "limit": 30}}),
        )
        .await;
        paged.extend(ids(&page.json["invocations"], "id"));
    }
    assert_eq!(paged, ids(invocations, "id"));
    server.stop().await;
}
