//! Standard Webhooks signatures (`--signing-secret`), checked by the
//! Standard Webhooks project's own verifier (the `standardwebhooks`
//! package from PyPI, installed by this test into a venv under `target/`),
//! not only by chime's code. Without Python, pip or PyPI the test fails
//! rather than skips: a signature no receiver can verify must not pass.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use chime::testing::{ChildServer, Receiver, Reply, WAIT, in_seconds};
use serde_json::json;

/// Two keys, as during a rotation: the old and the new.
const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_bmV3LWtleS1vZi10aGUtcm90YXRpb24tMDEyMzQ1";
/// A key chime was not given.
const OTHER: &str = "whsec_c29tZS1vdGhlci1rZXktbm90LWdpdmVuLXRvLWNoaW1l";

/// The venv's python, with `standardwebhooks` installed (once per target
/// dir; pip runs again only if the import fails).
fn verifier_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("py-standardwebhooks");
    let python = venv.join("bin/python");
    let imports = || {
        python.exists()
            && Command::new(&python)
                .args(["-c", "import standardwebhooks"])
                .status()
                .is_ok_and(|s| s.success())
    };
    if !imports() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs (needed for the reference verifier)");
        assert!(made.success(), "python3 -m venv {}", venv.display());
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "standardwebhooks==1.0.0"])
            .output()
            .expect("pip runs");
        assert!(
            out.status.success(),
            "pip install standardwebhooks failed (PyPI is needed for this test):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        imports(),
        "standardwebhooks does not import from {}",
        venv.display()
    );
    python
}

/// Whether the reference verifier accepts `body` with `headers` under
/// `secret` (it also checks the timestamp is within five minutes of now).
fn verifies(python: &PathBuf, secret: &str, headers: &serde_json::Value, body: &[u8]) -> bool {
    use std::io::Write as _;
    let script = "import sys, json\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  Webhook(sys.argv[1]).verify(sys.stdin.buffer.read(), json.loads(sys.argv[2]))\n";
    let mut child = Command::new(python)
        .args(["-c", script, secret, &headers.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python runs");
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait().unwrap().success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_try_is_signed_with_each_key_and_the_reference_verifier_accepts_it() {
    let python = tokio::task::spawn_blocking(verifier_python).await.unwrap();
    // The first try fails, so a retry shows the id stays the same.
    let receiver = Receiver::start(vec![Reply::status(500)], Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = format!("{OLD},{NEW}");
    let mut child = tokio::task::spawn_blocking({
        let data = dir.path().to_owned();
        move || {
            ChildServer::start_with_env(
                &data,
                &["--min-retry-interval", "10ms"],
                &[("CHIME_SIGNING_SECRET", &secrets)],
            )
        }
    })
    .await
    .unwrap();
    let id = child
        .api
        .create(json!({
            "webhook": receiver.url("/signed"),
            "schedule_at": in_seconds(0.0).to_string(),
            "payload": {"text": "émoji ✓, \"quotes\" and\nnewlines"},
            "retry_conf": {"num_retries": 1, "retry_interval_seconds": 0},
        }))
        .await;
    child.api.wait_status(&id, "delivered").await;
    let calls = receiver.wait_for_within(2, WAIT).await;
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(
            call.header_values("webhook-id"),
            std::slice::from_ref(&id),
            "the event id, every try"
        );
        let signature = call.header_values("webhook-signature");
        assert_eq!(signature.len(), 1);
        assert_eq!(
            signature[0]
                .split(' ')
                .filter(|s| s.starts_with("v1,"))
                .count(),
            2,
            "one signature per key: {signature:?}"
        );
        let headers = json!({
            "webhook-id": call.header_values("webhook-id")[0],
            "webhook-timestamp": call.header_values("webhook-timestamp")[0],
            "webhook-signature": signature[0],
        });
        // A receiver holding either key verifies; one holding another
        // does not; a changed byte of the body does not verify.
        assert!(verifies(&python, OLD, &headers, &call.body), "{headers}");
        assert!(verifies(&python, NEW, &headers, &call.body), "{headers}");
        assert!(!verifies(&python, OTHER, &headers, &call.body), "{headers}");
        let mut changed = call.body.clone();
        changed[1] ^= 1;
        assert!(!verifies(&python, NEW, &headers, &changed), "{headers}");
    }
    child.terminate();
    child.wait_exit(WAIT).await.expect("stops on SIGTERM");
    // Never logged, never in the log.
    let keys = [&OLD[6..], &NEW[6..], OLD, NEW];
    let stderr = child.stderr();
    let dump = Command::new(env!("CARGO_BIN_EXE_chime"))
        .args(["log", "dump", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8(dump.stdout).unwrap();
    assert!(dump.contains(&id));
    for key in keys {
        assert!(!stderr.contains(key), "{stderr}");
        assert!(!dump.contains(key), "{dump}");
    }
    for entry in std::fs::read_dir(chime::datadir::log_dir(dir.path())).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for key in keys {
            assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_calls_carry_no_signature_and_a_bad_secret_is_refused() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let child = ChildServer::spawn(dir.path(), &[]).await;
    let id = child
        .api
        .create(
            json!({"webhook": receiver.url("/plain"), "schedule_at": in_seconds(0.0).to_string()}),
        )
        .await;
    child.api.wait_status(&id, "delivered").await;
    let call = &receiver.wait_for(1).await[0];
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert!(call.header_values(name).is_empty(), "{name}");
    }
    for bad in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_not base64!",
        "whsec_",
    ] {
        let (status, stderr) =
            chime::testing::serve_to_exit(&dir.path().join("other"), &["--signing-secret", bad]);
        assert_eq!(status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--signing-secret"), "{bad}: {stderr}");
        assert!(
            stderr.contains("whsec_<base64 key>")
                || stderr.contains("base64")
                || stderr.contains("empty"),
            "{stderr}"
        );
    }
}
