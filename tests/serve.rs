//! `chime serve` as a real process: readiness, the data-dir lock, SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use chime::testing::{ChildServer, Receiver, Reply, from_now};
use serde_json::json;

/// Starts `chime serve` on a free port; returns it and its address.
fn spawn(data_dir: &std::path::Path) -> (ChildServer, String) {
    let server = ChildServer::start(data_dir, &[]);
    let addr = server.addr.to_string();
    (server, addr)
}

fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn serves_healthz_refuses_a_second_server_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = spawn(dir.path());
    assert!(get(&addr, "/healthz").starts_with("HTTP/1.1 200"));

    // A second server on the same data dir fails at once, saying why.
    let start = Instant::now();
    let second = Command::new(env!("CARGO_BIN_EXE_chime"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("locked by another chime process"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));

    server.terminate();
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "SIGTERM is a clean stop"
    );

    // The lock died with the process: the data dir opens again.
    let (mut server, addr) = spawn(dir.path());
    assert!(get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    server.kill();
}

#[test]
fn bad_flags_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_chime"))
        .args(["serve", "--segment-bytes", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_chime"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .env_remove("CHIME_ADMIN_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without an admin secret"), "{err}");
}

/// The permission bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn data_files_are_private_under_umask_022_and_an_open_data_dir_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ChildServer::start_with_umask(&data, &[], 0o022);
    assert!(get(&server.addr.to_string(), "/healthz").starts_with("HTTP/1.1 200"));
    assert_eq!(mode(&data), 0o700, "data dir");
    assert_eq!(mode(&data.join("log")), 0o700, "log dir");
    assert_eq!(mode(&data.join("LOCK")), 0o600, "lock");
    let segments: Vec<_> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!segments.is_empty());
    for seg in &segments {
        assert_eq!(mode(seg), 0o600, "{}", seg.display());
    }
    assert!(
        !server
            .stderr()
            .contains("open to users other than its owner"),
        "a private data dir is not warned of"
    );
    server.kill();

    // Opened up by hand: serve still starts, and says so.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut server = ChildServer::start_with_umask(&data, &[], 0o022);
    chime::testing::eventually("the warning about an open data dir", || {
        let err = server.stderr();
        async move {
            err.contains("open to users other than its owner")
                .then_some(())
        }
    })
    .await;
    server.kill();
}

/// chime honours the proxy variables, except for loopback webhooks, which
/// it always calls directly (no `NO_PROXY` needed), and `NO_PROXY` hosts.
#[tokio::test]
async fn a_proxy_in_the_environment_does_not_carry_deliveries_to_loopback_webhooks() {
    // A "proxy" that answers every request it is handed with 502: a
    // delivery that reaches it went through the proxy, not to its webhook.
    let proxy = Receiver::start(vec![], Reply::status(502)).await;
    let webhook = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy_url = proxy.url("");
    // No NO_PROXY but the test's own (neither the tester's nor the one
    // ChildServer gives other tests): loopback must be chime's own rule.
    let server = ChildServer::start_with_proxy_env(
        dir.path(),
        &[],
        &[
            ("HTTP_PROXY", proxy_url.as_str()),
            ("http_proxy", proxy_url.as_str()),
            ("HTTPS_PROXY", proxy_url.as_str()),
            ("ALL_PROXY", proxy_url.as_str()),
            ("all_proxy", proxy_url.as_str()),
            ("NO_PROXY", "direct.invalid"),
        ],
    );
    // A 1 s timeout: a call that is not answered (a resolver that hangs
    // on .invalid) still ends soon.
    let create = |webhook: String| {
        server.api.create(json!({
            "webhook": webhook, "schedule_at": from_now(0), "payload": {},
            "retry_conf": {"timeout_seconds": 1},
        }))
    };
    let local = create(webhook.url("/hook")).await;
    let localhost = create(format!("http://localhost:{}/by-name", webhook.addr.port())).await;
    // Another host goes through the proxy: the variables are read, so the
    // loopback calls below did not miss the proxy by accident.
    let remote = create("http://proxied.invalid/via-proxy".to_owned()).await;
    // A NO_PROXY host is called directly (and, being .invalid, not found).
    let direct = create("http://direct.invalid/direct".to_owned()).await;

    let got = webhook.wait_for(2).await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut want = vec![local.clone(), localhost.clone()];
    want.sort();
    assert_eq!(ids, want);
    for id in [&local, &localhost] {
        server.api.wait_status(id, "delivered").await;
    }
    for id in [&remote, &direct] {
        server.api.wait_status(id, "error").await;
    }
    let through_proxy = proxy.received();
    assert_eq!(through_proxy.len(), 1, "{through_proxy:?}");
    assert_eq!(through_proxy[0].path, "/via-proxy");
    assert_eq!(through_proxy[0].header_values("host"), ["proxied.invalid"]);
    let message =
        chime::testing::client_error(&chime::testing::only_invocation(&server.api, &direct).await);
    assert!(
        !message.is_empty(),
        "the direct call failed on its own: {message}"
    );
}
