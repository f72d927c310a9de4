//! The front door over real sockets: what is refused from the headers
//! alone, before a byte of the body is read (a wrong secret or role, a
//! foreign browser origin, a rebound DNS name without a secret), which
//! protocols a connection may speak (HTTP/1.1; h2c only with `--http2`),
//! what error bodies do not show, and the warnings about a weak secret.

use chime::log::LogOptions;
use chime::server::ServeConfig;
use chime::testing::{
    ChildServer, TestServer, eventually, from_now, h2c_client, http_client, raw_exchange,
};
use serde_json::{Value, json};

fn create_body() -> String {
    json!({"type": "create_scheduled_event",
           "args": {"webhook": "http://127.0.0.1:9/", "schedule_at": from_now(3600)}})
    .to_string()
}

/// A POST to `/v1/metadata` with `headers` (each `name: value`) and the
/// whole of `body`.
fn post(headers: &[&str], body: &str) -> Vec<u8> {
    let mut request =
        String::from("POST /v1/metadata HTTP/1.1\r\ncontent-type: application/json\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    request.into_bytes()
}

/// Status code and JSON body of a raw answer.
fn status_and_json(answer: &str) -> (u16, Value) {
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------
// Point 1: auth before the body

/// A request announcing a large body, of which only the first bytes are
/// ever sent: with a wrong secret it is answered 401 at once (a role other
/// than admin 400, Hasura's status for it). Were the body read first, the
/// server would wait for bytes that never come and `raw_exchange` would
/// time out.
#[tokio::test]
async fn a_wrong_secret_or_role_is_refused_before_the_body_is_read() {
    let server =
        TestServer::fresh_with(|c| c.admin_secret = Some("a-long-enough-admin-secret".into()))
            .await;
    let host = format!("host: {}", server.addr);
    for (why, auth, expected) in [
        ("no secret", vec![], 401),
        ("wrong secret", vec!["x-hasura-admin-secret: wrong"], 401),
        (
            "right secret, user role",
            vec![
                "x-hasura-admin-secret: a-long-enough-admin-secret",
                "x-hasura-role: user",
            ],
            400,
        ),
    ] {
        let mut request = format!(
            "POST /v1/metadata HTTP/1.1\r\n{host}\r\ncontent-type: application/json\r\ncontent-length: 900000\r\n"
        );
        for h in &auth {
            request.push_str(h);
            request.push_str("\r\n");
        }
        request.push_str("\r\n{\"type\": \"create_scheduled_event\", \"args\": {\"payload\": \"");
        request.push_str(&"x".repeat(4096));
        let answer = raw_exchange(server.addr, request.as_bytes()).await;
        let (status, err) = status_and_json(&answer);
        assert_eq!(status, expected, "{why}: {answer}");
        assert_eq!(err["code"], "access-denied", "{why}");
    }
    assert_eq!(server.api.count().await, 0);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Point 3: browsers cannot drive the API

#[tokio::test]
async fn a_browser_request_from_a_foreign_origin_gets_403() {
    let server =
        TestServer::fresh_with(|c| c.allow_origins = vec!["https://app.example".into()]).await;
    let host = format!("host: {}", server.addr);
    let own = format!("origin: http://{}", server.addr);
    for (why, origin) in [
        ("another site", "origin: http://evil.example"),
        (
            "another port of this host",
            &format!("origin: http://{}:1", server.addr.ip()),
        ),
        (
            "https instead of http",
            &format!("origin: https://{}", server.addr),
        ),
        ("an opaque origin", "origin: null"),
    ] {
        let answer = raw_exchange(server.addr, &post(&[&host, origin], &create_body())).await;
        let (status, err) = status_and_json(&answer);
        assert_eq!(status, 403, "{why}: {answer}");
        assert_eq!(err["code"], "access-denied", "{why}");
        assert_eq!(err["path"], "$", "{why}");
    }
    assert_eq!(server.api.count().await, 0, "nothing was created");
    // The server's own origin (the console), a listed one, and clients
    // that send no Origin at all (curl, SDKs) are served.
    for (why, headers) in [
        ("own origin", vec![host.as_str(), own.as_str()]),
        (
            "listed origin",
            vec![host.as_str(), "origin: https://app.example"],
        ),
        ("no origin", vec![host.as_str()]),
    ] {
        let answer = raw_exchange(server.addr, &post(&headers, &create_body())).await;
        assert_eq!(status_and_json(&answer).0, 200, "{why}: {answer}");
    }
    assert_eq!(server.api.count().await, 3);
    server.stop().await;
}

/// DNS rebinding: a page on `evil.example`, whose name now resolves to
/// 127.0.0.1, is same-origin with the server as far as the browser knows.
/// Without an admin secret only loopback host names are served; with one,
/// the secret guards the API.
#[tokio::test]
async fn without_a_secret_a_host_that_is_not_loopback_gets_403() {
    let server = TestServer::fresh().await;
    let port = server.addr.port();
    let evil_host = format!("host: evil.example:{port}");
    let evil_origin = format!("origin: http://evil.example:{port}");
    let answer = raw_exchange(
        server.addr,
        &post(&[&evil_host, &evil_origin], &create_body()),
    )
    .await;
    let (status, err) = status_and_json(&answer);
    assert_eq!(
        (status, err["code"].as_str()),
        (403, Some("access-denied")),
        "{answer}"
    );
    assert_eq!(server.api.count().await, 0);
    // Pages opened through a loopback name or address are served.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_string(),
    ] {
        let headers = [format!("host: {host}"), format!("origin: http://{host}")];
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let answer = raw_exchange(server.addr, &post(&headers, &create_body())).await;
        assert_eq!(status_and_json(&answer).0, 200, "{host}: {answer}");
    }
    // No Origin: not a web page (every browser POST carries one), so the
    // host name is not the question.
    let answer = raw_exchange(server.addr, &post(&[&evil_host], &create_body())).await;
    assert_eq!(status_and_json(&answer).0, 200, "{answer}");
    server.stop().await;

    let secret = "a-long-enough-admin-secret";
    let server = TestServer::fresh_with(|c| c.admin_secret = Some(secret.into())).await;
    let evil_host = format!("host: evil.example:{}", server.addr.port());
    let with_secret = format!("x-hasura-admin-secret: {secret}");
    let answer = raw_exchange(
        server.addr,
        &post(&[&evil_host, &with_secret], &create_body()),
    )
    .await;
    assert_eq!(status_and_json(&answer).0, 200, "{answer}");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Point 4: h2c only with --http2

#[tokio::test]
async fn h2c_is_refused_by_default_and_served_with_http2() {
    let server = TestServer::fresh().await;
    let url = format!("http://{}/healthz", server.addr);
    assert!(
        h2c_client().get(&url).send().await.is_err(),
        "an HTTP/2 prior-knowledge request was answered without --http2"
    );
    let response = http_client()
        .get(&url)
        .send()
        .await
        .expect("HTTP/1.1 works");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    server.stop().await;

    let server = TestServer::fresh_with(|c| c.http2 = true).await;
    let url = format!("http://{}/healthz", server.addr);
    let response = h2c_client().get(&url).send().await.expect("h2c served");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    // The front door and the API work over it the same way.
    let response = h2c_client()
        .post(format!("http://{}/v1/metadata", server.addr))
        .header("origin", "http://evil.example")
        .body(create_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    let response = http_client()
        .get(&url)
        .send()
        .await
        .expect("HTTP/1.1 still works");
    assert_eq!(response.status(), 200);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Point 8: error bodies and the secret

/// A write the log refuses (its directory moved away) is answered 503
/// with the OS error but without the data directory's path or file names:
/// those go to the server's log.
#[tokio::test]
async fn a_refused_write_does_not_show_server_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServeConfig::new(dir.path());
    // Every append after the first rolls to a new segment file.
    config.log = LogOptions::with_segment_bytes(64);
    let server = TestServer::start(config).await;
    let args = json!({"webhook": "http://example.invalid/", "schedule_at": "2099-01-01T00:00:00Z"});
    server.api.create(args.clone()).await;
    let log_dir = chime::datadir::log_dir(dir.path());
    std::fs::rename(&log_dir, dir.path().join("log-away")).expect("move the log dir away");
    let (status, err) = server
        .api
        .metadata(json!({"type": "create_scheduled_event", "args": args}))
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (503, Some("unavailable")),
        "{err}"
    );
    let text = err.to_string();
    let dir_name = dir
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        !text.contains(&dir_name),
        "the error shows the data dir: {text}"
    );
    assert!(
        !text.contains(".seg"),
        "the error names a segment file: {text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_short_secret_on_the_command_line_gets_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = ChildServer::spawn(dir.path(), &["--admin-secret", "short"]).await;
    eventually("both warnings are logged", || {
        let stderr = child.stderr();
        async move {
            (stderr.contains("shorter than 16 characters")
                && stderr.contains("prefer the environment variable CHIME_ADMIN_SECRET"))
            .then_some(())
        }
    })
    .await;
    child.kill();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = ChildServer::spawn(
        dir.path(),
        &["--admin-secret", "a-long-enough-admin-secret"],
    )
    .await;
    eventually("the command-line note is logged", || {
        let stderr = child.stderr();
        async move { stderr.contains("CHIME_ADMIN_SECRET").then_some(()) }
    })
    .await;
    assert!(
        !child.stderr().contains("shorter than"),
        "{}",
        child.stderr()
    );
    child.kill();
}
