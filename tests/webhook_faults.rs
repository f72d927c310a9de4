//! Hostile webhooks: each misbehaviour ends as the documented failure (or,
//! for a 2xx with an oversized body, as a capped delivery) with an
//! invocation log that says what happened, and the dispatcher keeps going.
//!
//! The misbehaving webhooks are raw `TcpListener`s on 127.0.0.1:0 that write
//! bytes by hand, so they can do what no well-behaved HTTP server would.
//! Hosts that do not resolve are not tested: there is no DNS here.
//!
//! States are awaited by bounded polling of the API (see the harness); the
//! only fixed waits are in the hostile servers themselves (a trickle's pace,
//! a pause before a reset).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use chime::testing::{
    ApiClient, Receiver, Reply, TestServer, WAIT, client_error, in_seconds, only_invocation,
    secs_between, stored_response_bytes, ts,
};

/// The dispatcher's default response body cap, which the answer's headers
/// and body share.
const CAP: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Hostile webhooks

/// A webhook on 127.0.0.1:0 that reads each request in full, notes when it
/// arrived, and then hands the connection to a misbehaviour.
struct Hostile {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<jiff::Timestamp>>>,
}

impl Hostile {
    async fn start<F, Fut>(behave: F) -> Hostile
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        let behave = Arc::new(behave);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    break;
                };
                let (seen, behave) = (seen.clone(), behave.clone());
                tokio::spawn(async move {
                    if read_request(&mut stream).await.is_ok() {
                        seen.lock().unwrap().push(jiff::Timestamp::now());
                        behave(stream).await;
                    }
                });
            }
        });
        Hostile { addr, arrivals }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// When the requests arrived.
    fn arrivals(&self) -> Vec<jiff::Timestamp> {
        self.arrivals.lock().unwrap().clone()
    }
}

/// Reads one request: its head, then as many body bytes as its
/// `Content-Length` says (chime always sends one).
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(buf);
            }
        }
        let n = stream.read(&mut piece).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&piece[..n]);
    }
}

/// Writes `head`, then `piece` over and over until `limit` bytes of pieces
/// are written or the peer goes away. Returns the bytes of pieces written
/// and whether the peer went away (a write failed).
async fn pour(stream: &mut TcpStream, head: &[u8], piece: &[u8], limit: u64) -> (u64, bool) {
    if stream.write_all(head).await.is_err() {
        return (0, true);
    }
    let mut written = 0u64;
    while written < limit {
        if stream.write_all(piece).await.is_err() {
            return (written, true);
        }
        written += piece.len() as u64;
    }
    (written, false)
}

/// Writes `head`, then `drip` every 100 ms, until the peer goes away (or a
/// minute has passed, so a broken test leaves nothing running for long).
async fn trickle(mut stream: TcpStream, head: &'static [u8], drip: &'static [u8]) {
    if stream.write_all(head).await.is_err() {
        return;
    }
    for _ in 0..600 {
        if stream.write_all(drip).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 200 whose body trickles in one byte at a time, far slower than any
/// timeout.
async fn slow_body() -> Hostile {
    Hostile::start(|s| {
        trickle(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
            b"x",
        )
    })
    .await
}

/// A head that never ends: one more header line every 100 ms.
async fn slow_head() -> Hostile {
    Hostile::start(|s| trickle(s, b"HTTP/1.1 200 OK\r\n", b"X-Slow: yes\r\n")).await
}

/// A 200 promising 100 000 bytes that sends 10 and then resets the
/// connection (`SO_LINGER` 0: an RST, not a FIN) or just closes it.
async fn cut_mid_body(reset: bool) -> Hostile {
    Hostile::start(move |mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
            .await;
        let _ = s.flush().await;
        // Give the client time to read the head, so the cut falls inside
        // the body rather than before the answer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if reset {
            // tokio's own call (it uses socket2, already in the tree).
            s.set_zero_linger().unwrap();
        }
        drop(s);
    })
    .await
}

/// What a pouring webhook saw: bytes of body written and whether the
/// client went away, once its writing is over.
type Poured = watch::Receiver<Option<(u64, bool)>>;

/// A 200 with a chunked body that never ends, as fast as the client takes it.
async fn endless_body() -> (Hostile, Poured) {
    let (tx, rx) = watch::channel(None);
    let tx = Arc::new(tx);
    let hostile = Hostile::start(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut chunk = b"4000\r\n".to_vec();
            chunk.extend_from_slice(&[b'z'; 0x4000]);
            chunk.extend_from_slice(b"\r\n");
            let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            // "Forever": far more than any client should read.
            let outcome = pour(&mut s, head, &chunk, 1 << 40).await;
            tx.send_replace(Some(outcome));
        }
    })
    .await;
    (hostile, rx)
}

/// A 200 with a 50 MiB `Content-Length`, sent as fast as the client takes it.
async fn huge_body() -> (Hostile, Poured) {
    const SIZE: u64 = 50 * 1024 * 1024;
    let (tx, rx) = watch::channel(None);
    let tx = Arc::new(tx);
    let hostile = Hostile::start(move |mut s| {
        let tx = tx.clone();
        async move {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n");
            let outcome = pour(&mut s, head.as_bytes(), &[b'h'; 1 << 20], SIZE).await;
            tx.send_replace(Some(outcome));
        }
    })
    .await;
    (hostile, rx)
}

/// A 500 whose body and one header value are not UTF-8.
async fn non_utf8() -> Hostile {
    Hostile::start(|mut s| async move {
        let mut answer = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nX-Bytes: a\xff\xfeb\r\nConnection: close\r\n\r\n".to_vec();
        answer.extend_from_slice(&[0xff, 0xfe, 0x00, 0x80]);
        let _ = s.write_all(&answer).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// Reads the request, then closes without a word.
async fn empty_reply() -> Hostile {
    Hostile::start(|mut s| async move {
        let _ = s.shutdown().await;
    })
    .await
}

/// Answers with something that is not HTTP at all.
async fn not_http() -> Hostile {
    Hostile::start(|mut s| async move {
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        let _ = s.shutdown().await;
    })
    .await
}

/// A 200 whose head is a megabyte of headers.
async fn huge_head() -> Hostile {
    Hostile::start(|mut s| async move {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for n in 0..16 * 1024 {
            head.extend_from_slice(format!("X-Filler-{n}: {}\r\n", "f".repeat(48)).as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let _ = s.write_all(&head).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// A webhook on `https://127.0.0.1:PORT` whose certificate is self-signed
/// (for 127.0.0.1, so only the issuer is wrong): its URL, the receiver
/// behind it (which counts the requests that got past the handshake), and
/// the certificate in PEM.
struct SelfSigned {
    url: String,
    behind: Receiver,
    cert_pem: String,
    _dir: tempfile::TempDir,
}

async fn self_signed_tls() -> SelfSigned {
    chime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let config = chime::tls::server_config(&cert, &key).unwrap();
    // A plain receiver, to count requests that got through, behind a TLS
    // front that forwards decrypted bytes to it.
    let behind = Receiver::ok().await;
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let target = behind.addr;
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    SelfSigned {
        url: format!("https://{addr}/secure"),
        behind,
        cert_pem: generated.cert.pem(),
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------
// Reading the outcome

/// Creates an event due now for `webhook`.
async fn due_now(api: &ApiClient, webhook: &str, retry_conf: Value) -> String {
    api.create(json!({
        "webhook": webhook,
        "schedule_at": in_seconds(0.0).to_string(),
        "retry_conf": retry_conf,
    }))
    .await
}

/// Waits for the event to fail for good on its only try and returns the
/// `client_error` message of its one invocation.
async fn failed_with_client_error(api: &ApiClient, id: &str) -> String {
    let event = api.wait_status(id, "error").await;
    assert_eq!(event["tries"], 1, "{event}");
    client_error(&only_invocation(api, id).await)
}

/// Waits for the outcome of a pour: `(bytes written, client went away)`.
async fn poured(rx: &mut Poured) -> (u64, bool) {
    let seen = tokio::time::timeout(WAIT, rx.wait_for(Option::is_some))
        .await
        .expect("the webhook was still writing: the connection was never closed")
        .unwrap();
    seen.unwrap()
}

/// Seconds from the request's arrival to the invocation being recorded.
fn attempt_took(hostile: &Hostile, invocation: &Value) -> f64 {
    let arrivals = hostile.arrivals();
    assert_eq!(arrivals.len(), 1, "{arrivals:?}");
    secs_between(arrivals[0], ts(&invocation["created_at"]))
}

// ---------------------------------------------------------------------------
// One misbehaviour at a time

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_slower_than_the_timeout_is_a_timeout() {
    let body = slow_body().await;
    let head = slow_head().await;
    // Speaking TLS to a server that waits for an HTTP request: the
    // handshake never finishes.
    let black_hole = slow_body().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let conf = json!({"timeout_seconds": 1});
    let ids = [
        due_now(api, &body.url("/body"), conf.clone()).await,
        due_now(api, &head.url("/head"), conf.clone()).await,
        due_now(api, &format!("https://{}/tls", black_hole.addr), conf).await,
    ];
    for id in &ids {
        let message = failed_with_client_error(api, id).await;
        assert!(message.contains("timed out after 1 s"), "{message}");
        // The timeout covers the whole response, from connecting to the
        // last byte of the body: bytes still arriving do not extend it.
        let event = api.find_event(id).await.unwrap();
        let invocation = only_invocation(api, id).await;
        let took = secs_between(ts(&event["scheduled_time"]), ts(&invocation["created_at"]));
        assert!((0.9..3.0).contains(&took), "gave up after {took} s");
    }
    assert_eq!(body.arrivals().len(), 1);
    assert_eq!(head.arrivals().len(), 1);
    assert_eq!(black_hole.arrivals().len(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_whose_body_is_cut_short_is_a_failure() {
    // The status line said 200, but the body could not be read to its
    // end: dispatch.rs turns a body read error into a client error, so
    // this is a failed attempt (sent again if tries are left), never a
    // delivery.
    let reset = cut_mid_body(true).await;
    let closed = cut_mid_body(false).await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let by_reset = due_now(api, &reset.url("/rst"), json!({})).await;
    let by_close = due_now(api, &closed.url("/fin"), json!({})).await;
    for (id, how) in [(&by_reset, "reset"), (&by_close, "end of file")] {
        let message = failed_with_client_error(api, id).await;
        assert!(
            message.contains("answered 200 but its body could not be read"),
            "{message}"
        );
        assert!(message.to_lowercase().contains(how), "{message}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_body_is_capped_and_the_attempt_ends_promptly() {
    let (hostile, mut pour) = endless_body().await;
    // Run against an in-process server: the bound below holds for the
    // process that runs this test.
    let server = TestServer::fresh().await;
    let api = &server.api;
    // The default timeout (60 s) is far beyond the wait: the attempt must
    // end because the dispatcher stops reading, not because it times out.
    let id = due_now(api, &hostile.url("/endless"), json!({})).await;
    let event = api.wait_status(&id, "delivered").await;
    assert_eq!(event["tries"], 1);
    let invocation = only_invocation(api, &id).await;
    assert_eq!(invocation["status"], 200);
    let data = &invocation["response"]["data"];
    assert_eq!(data["truncated"], true);
    // Chunk framing is gone: exactly the first bytes of content that fit
    // beside the headers under the cap.
    let (header_bytes, _) = stored_response_bytes(&invocation);
    assert_eq!(data["body"], "z".repeat(CAP - header_bytes));
    let took = attempt_took(&hostile, &invocation);
    assert!(took < 2.0, "the attempt took {took} s");
    // Memory is bounded by construction: the dispatcher's buffer only ever
    // grows by the room left under the cap, each chunk it holds is one
    // read of hyper's bounded buffer, and on reaching the cap it drops the
    // response, which closes the connection instead of draining it. So no
    // more than the cap (plus one read buffer) is held per attempt. The
    // observable half of that: the webhook sees the connection closed
    // after writing no more than what the socket buffers hold.
    let (written, client_left) = poured(&mut pour).await;
    assert!(client_left, "the webhook stopped on its own");
    assert!(
        written < 32 * 1024 * 1024,
        "{written} bytes were taken from an endless body"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_200_is_delivered_with_its_body_capped() {
    // dispatch.rs stops reading at the cap and decides on the status:
    // a 2xx whose first CAP bytes were read is a delivery. That is the
    // documented rule (any 2xx is a success): the webhook has answered,
    // and the rest of the body is only ever kept for the log, which would
    // not keep it anyway. The flip side: a body cut short *past* the cap
    // goes unseen (a delivery), one cut short before it is a failure (see
    // above). Both are within at-least-once, and reading on past the cap
    // just to look for a cut would cost time and bandwidth for nothing.
    let (hostile, mut pour) = huge_body().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = due_now(api, &hostile.url("/huge"), json!({})).await;
    let event = api.wait_status(&id, "delivered").await;
    assert_eq!(event["tries"], 1);
    let invocation = only_invocation(api, &id).await;
    assert_eq!(invocation["status"], 200);
    let data = &invocation["response"]["data"];
    assert_eq!(data["truncated"], true);
    let (header_bytes, _) = stored_response_bytes(&invocation);
    assert_eq!(data["body"], "h".repeat(CAP - header_bytes));
    let took = attempt_took(&hostile, &invocation);
    assert!(took < 2.0, "the attempt took {took} s");
    // The 50 MiB were not all read: the connection was closed under them.
    let (written, client_left) = poured(&mut pour).await;
    assert!(client_left, "all {written} bytes were taken");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_of_exactly_the_cap_is_not_truncated() {
    // The cap holds headers and body together. A probe well under it shows
    // how many bytes the receiver's headers take (`date` is fixed width,
    // `content-length` has as many digits for every body tried here).
    let probe_body = CAP - 100;
    let receiver =
        Receiver::start(vec![Reply::ok().body(vec![b'p'; probe_body])], Reply::ok()).await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let probe = due_now(api, &receiver.url("/probe"), json!({})).await;
    api.wait_status(&probe, "delivered").await;
    let (header_bytes, body_bytes) = stored_response_bytes(&only_invocation(api, &probe).await);
    assert_eq!(body_bytes, probe_body);
    let fits = CAP - header_bytes;
    drop(receiver);
    let receiver = Receiver::start(
        vec![Reply::ok().body(vec![b'a'; fits])],
        Reply::ok().body(vec![b'b'; fits + 1]),
    )
    .await;
    let exact = due_now(api, &receiver.url("/exact"), json!({})).await;
    api.wait_status(&exact, "delivered").await;
    let over = due_now(api, &receiver.url("/over"), json!({})).await;
    api.wait_status(&over, "delivered").await;
    let invocation = only_invocation(api, &exact).await;
    assert_eq!(stored_response_bytes(&invocation), (header_bytes, fits));
    let data = &invocation["response"]["data"];
    assert_eq!(data["body"], "a".repeat(fits));
    assert_eq!(data.get("truncated"), None, "{}", data["truncated"]);
    let data = only_invocation(api, &over).await["response"]["data"].clone();
    assert_eq!(data["body"], "b".repeat(fits));
    assert_eq!(data["truncated"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificate_is_a_failure_naming_the_certificate() {
    let tls = self_signed_tls().await;
    // The control: a client that trusts the certificate gets through, so
    // the failure below is the certificate's and nothing else's.
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(tls.cert_pem.as_bytes()).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let control = trusting.post(&tls.url).body("{}").send().await.unwrap();
    assert_eq!(control.status(), 200);
    assert_eq!(tls.behind.count(), 1);

    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = due_now(api, &tls.url, json!({})).await;
    let message = failed_with_client_error(api, &id).await;
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    // Nothing got past the handshake.
    assert_eq!(tls.behind.count(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_answer_is_logged_lossily_and_the_api_stays_json() {
    let hostile = non_utf8().await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = due_now(api, &hostile.url("/bytes"), json!({})).await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1);
    // The API's answer, as bytes: valid UTF-8 and valid JSON.
    let raw = api
        .http
        .post(format!("{}/v1/metadata", api.base))
        .header("Content-Type", "application/json")
        .body(
            json!({
                "type": "get_scheduled_event_invocations",
                "args": {"type": "one_off", "event_id": id},
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let text = std::str::from_utf8(&raw).expect("the API answered invalid UTF-8");
    let answer: Value = serde_json::from_str(text).expect("the API answered invalid JSON");
    let invocations = answer["invocations"].as_array().unwrap();
    assert_eq!(invocations.len(), 1, "{answer:#}");
    let invocation = &invocations[0];
    assert_eq!(invocation["status"], 500);
    let data = &invocation["response"]["data"];
    assert_eq!(data["message"], "\u{FFFD}\u{FFFD}\u{0}\u{FFFD}");
    let header = data["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "x-bytes")
        .unwrap_or_else(|| panic!("no x-bytes header: {data:#}"));
    assert_eq!(header["value"], "a\u{FFFD}\u{FFFD}b");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_redirect_with_a_body_is_not_followed() {
    // delivery.rs covers a 302. A 307 is the one a following client would
    // answer by POSTing the payload again, to wherever Location says.
    let elsewhere = Receiver::ok().await;
    let redirector = Receiver::start(
        vec![],
        Reply::status(307)
            .header("Location", &elsewhere.url("/elsewhere"))
            .body("moved, go there"),
    )
    .await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let id = due_now(api, &redirector.url("/moved"), json!({})).await;
    let event = api.wait_status(&id, "error").await;
    assert_eq!(event["tries"], 1);
    let invocation = only_invocation(api, &id).await;
    assert_eq!(invocation["status"], 307);
    assert_eq!(invocation["response"]["data"]["message"], "moved, go there");
    assert_eq!(redirector.count(), 1);
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_http_are_failures_with_a_message() {
    let empty = empty_reply().await;
    let garbage = not_http().await;
    let big_head = huge_head().await;
    // hyper, under reqwest, also refuses more than 100 headers, however
    // small: such an answer is unreadable like the others.
    let many_headers = Hostile::start(|mut s| async move {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for n in 0..150 {
            head.extend_from_slice(format!("X-{n}: a\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let _ = s.write_all(&head).await;
        let _ = s.shutdown().await;
    })
    .await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let cases = [
        (&empty, "connection closed before message completed"),
        (&garbage, "invalid http version"),
        (&big_head, "message head is too large"),
        (&many_headers, "message head is too large"),
    ];
    let mut ids = Vec::new();
    for (hostile, _) in &cases {
        ids.push(due_now(api, &hostile.url("/"), json!({})).await);
    }
    for (id, (hostile, expected)) in ids.iter().zip(&cases) {
        let message = failed_with_client_error(api, id).await;
        assert!(message.to_lowercase().contains(expected), "{message}");
        assert!(message.contains(&hostile.url("/")), "{message}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informational_answers_are_skipped_but_an_unasked_upgrade_is_a_failure() {
    // 1xx answers before the real one are legal: the 200 after them counts.
    let early = Hostile::start(|mut s| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                  HTTP/1.1 100 Continue\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            )
            .await;
        let _ = s.shutdown().await;
    })
    .await;
    // A 101 nobody asked for is the final answer, and not a 2xx.
    let upgrade = Hostile::start(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await;
        // Holds the connection: the attempt must end on the answer alone.
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let server = TestServer::fresh().await;
    let api = &server.api;
    let hinted = due_now(api, &early.url("/"), json!({})).await;
    let upgraded = due_now(api, &upgrade.url("/"), json!({"timeout_seconds": 10})).await;
    api.wait_status(&hinted, "delivered").await;
    let invocation = only_invocation(api, &hinted).await;
    assert_eq!(invocation["status"], 200);
    assert_eq!(invocation["response"]["data"]["body"], "ok");
    let event = api.wait_status(&upgraded, "error").await;
    assert_eq!(event["tries"], 1);
    let invocation = only_invocation(api, &upgraded).await;
    assert_eq!(invocation["status"], 101);
    let took = attempt_took(&upgrade, &invocation);
    assert!(took < 2.0, "the attempt took {took} s");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// All at once, and then business as usual

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_keeps_going_after_hostile_webhooks() {
    let good = Receiver::ok().await;
    let slow_b = slow_body().await;
    let slow_h = slow_head().await;
    let reset = cut_mid_body(true).await;
    let closed = cut_mid_body(false).await;
    let (endless, _) = endless_body().await;
    let (huge, _) = huge_body().await;
    let bytes = non_utf8().await;
    let empty = empty_reply().await;
    let garbage = not_http().await;
    let big_head = huge_head().await;
    let tls = self_signed_tls().await;
    // Two slots: the two slow webhooks take both for a second, and
    // everything else queues behind them.
    let server = TestServer::fresh_with(|c| c.dispatch.max_in_flight = 2).await;
    let api = &server.api;
    let timeout = json!({"timeout_seconds": 1});
    let mut failing = Vec::new();
    for url in [slow_b.url("/"), slow_h.url("/")] {
        failing.push(due_now(api, &url, timeout.clone()).await);
    }
    for url in [
        reset.url("/"),
        closed.url("/"),
        bytes.url("/"),
        empty.url("/"),
        garbage.url("/"),
        big_head.url("/"),
        tls.url.clone(),
    ] {
        failing.push(due_now(api, &url, timeout.clone()).await);
    }
    let mut capped = Vec::new();
    for url in [endless.url("/"), huge.url("/")] {
        capped.push(due_now(api, &url, timeout.clone()).await);
    }
    let among = due_now(api, &good.url("/among"), json!({})).await;
    for id in &failing {
        let event = api.wait_status(id, "error").await;
        assert_eq!(event["tries"], 1, "{event}");
        // Each says what went wrong: a message, or the non-2xx answer.
        let invocation = only_invocation(api, id).await;
        let explained = match invocation["status"].as_u64() {
            None => !client_error(&invocation).is_empty(),
            Some(status) => !(200..300).contains(&status),
        };
        assert!(explained, "{invocation:#}");
    }
    for id in &capped {
        api.wait_status(id, "delivered").await;
        let invocation = only_invocation(api, id).await;
        assert_eq!(invocation["response"]["data"]["truncated"], true);
    }
    api.wait_status(&among, "delivered").await;

    // Every slot came back: a good event now goes out at once.
    let after = in_seconds(0.0);
    let id = api
        .create(json!({"webhook": good.url("/after"), "schedule_at": after.to_string()}))
        .await;
    let got = good.wait_for(2).await;
    let sent = got.iter().find(|r| r.path == "/after").unwrap().at;
    let late = secs_between(after, sent);
    assert!(late < 0.5, "sent {late} s after its time");
    api.wait_status(&id, "delivered").await;
    server.stop().await;
}
