//! The web console in a real browser: Debian's headless Chromium, driven
//! through chromedriver (WebDriver) by fantoccini, against chime running
//! in-process and a local webhook receiver.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them the test fails
//! rather than skips: a skipped browser test would let a broken console
//! through CI.
//!
//! Every wait polls the page with a bound ([`WAIT`]); nothing sleeps to let
//! things settle. The browser runs in Europe/Paris, so the page's local
//! times and the UTC it sends really differ.
//!
//! `cargo test --test console -- --ignored screenshots` retakes the
//! pictures in `docs/img/`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chime::testing::{Receiver, Reply, TestServer, eventually_within};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";
const INSTALL: &str = "install them with `apt-get install chromium chromium-driver`";
/// The longest any wait on the page lasts.
const WAIT: Duration = Duration::from_secs(15);
/// The browser's zone: not UTC, so a missed conversion shows.
const ZONE: &str = "Europe/Paris";
const SECRET: &str = "console-test-secret";

/// The webhook both console tests schedule against: `/fail` answers 500
/// with a JSON error, every other path 200 with JSON.
async fn webhook() -> Receiver {
    Receiver::routed(
        vec![(
            "/fail",
            Reply::status(500).json(&json!({"error": "database unavailable"})),
        )],
        Reply::ok().json(&json!({"ok": true})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_watch_and_inspect_an_event_in_a_browser() {
    let receiver = webhook().await;
    let chime = TestServer::fresh_with(|c| c.admin_secret = Some(SECRET.into())).await;
    let browser = Browser::start(1280, 800).await;
    let page = &browser.client;
    page.goto(&format!("{}/console", chime.api.base))
        .await
        .unwrap();
    wait_js(page, "the page's modules", "return document.querySelector('.zone-name').textContent.startsWith('Europe/Paris') || null").await;

    // The page's own checks: nothing is sent, each message sits by its field.
    set_value(page, "#payload", "{not json").await;
    click(page, "#schedule-submit").await;
    let message = text_when_shown(page, "#payload-error").await;
    assert!(message.contains("Not valid JSON"), "{message}");
    text_when_shown(page, "#webhook-error").await;
    text_when_shown(page, "#schedule-at-error").await;

    // chime's checks: the first call meets a 401, the page asks for the
    // secret, retries, and shows the error by the field its path names.
    set_value(page, "#webhook", "ftp://example.com/hook").await;
    set_value(page, "#payload", r#"{"hello": "console"}"#).await;
    click(page, "#time-in").await; // "5 minutes from now"
    let in_five = js(page, "return document.getElementById('schedule-at').value").await;
    assert!(in_five.as_str().is_some_and(|v| v.len() == 19), "{in_five}");
    click(page, "#schedule-submit").await;
    wait_js(
        page,
        "the secret dialog",
        "return document.getElementById('secret-dialog').open || null",
    )
    .await;
    set_value(page, "#secret-input", SECRET).await;
    click(page, "#secret-form button[value=ok]").await;
    let message = text_when_shown(page, "#webhook-error").await;
    assert!(message.contains("http or https"), "{message}");
    let stored = js(page, "return sessionStorage.getItem('chime.adminSecret')").await;
    assert_eq!(stored, json!(SECRET));
    assert_eq!(js(page, "return localStorage.length").await, json!(0));

    // A good event, a few seconds ahead, with a header from Advanced.
    set_value(page, "#webhook", &format!("http://{}/hook", receiver.addr)).await;
    click(page, "#advanced > summary").await;
    click(page, "#add-header").await;
    set_value(page, ".header-row .h-name", "X-Console-Test").await;
    set_value(page, ".header-row .h-value", "yes").await;
    set_value(page, "#num_retries", "2").await;
    set_value(page, "#retry_interval_seconds", "1.5").await;
    set_value(page, "#comment", "from the browser test").await;
    let expected_time = js(page, SET_TIME_AHEAD).await;
    let expected_time = expected_time.as_str().unwrap().to_owned();
    click(page, "#schedule-submit").await;
    let id = wait_js(
        page,
        "the new event's id",
        "return document.getElementById('form-status').dataset.eventId || null",
    )
    .await;
    let id = id.as_str().unwrap().to_owned();

    // Pending: there before its time.
    click(page, "#tab-pending").await;
    let row = format!("#panel-pending tr[data-event-id='{id}']");
    let status = text_when_shown(page, &format!("{row} .badge")).await;
    assert_eq!(status, "scheduled");

    // Delivered to the receiver, as it was filled in.
    let delivered = eventually_within(WAIT, "the webhook call", || async {
        receiver.received().first().cloned()
    })
    .await;
    assert_eq!(delivered.json()["id"], json!(id));
    assert_eq!(delivered.json()["payload"], json!({"hello": "console"}));
    assert_eq!(delivered.json()["comment"], json!("from the browser test"));
    assert_eq!(delivered.json()["scheduled_time"], json!(expected_time));
    let event = chime.api.event(&id).await;
    assert_eq!(event["retry_conf"]["num_retries"], json!(2));
    assert_eq!(event["retry_conf"]["retry_interval_seconds"], json!(1.5));
    assert_eq!(
        delivered
            .headers
            .get("x-console-test")
            .map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );

    // Processed: delivered after one try, shown by the auto refresh.
    click(page, "#tab-processed").await;
    let row = format!("#panel-processed tr[data-event-id='{id}'][data-status='delivered']");
    let status = text_when_shown(page, &format!("{row} .badge")).await;
    assert_eq!(status, "delivered");
    // Read through text_when_shown: the auto refresh may replace the row
    // between finding the cell and reading it.
    assert_eq!(text_when_shown(page, &format!("{row} td.num")).await, "1");

    // Its invocation log, opened onto the request and the response.
    click(page, &format!("{row} a[href^='#logs/']")).await;
    let entry = format!("#panel-logs details.invocation[data-event-id='{id}']");
    click(page, &format!("{entry} > summary")).await;
    let body = text_when_shown(page, &format!("{entry} .invocation-body")).await;
    assert!(body.contains(r#""hello": "console""#), "{body}");
    assert!(body.contains("X-Console-Test"), "{body}");
    assert!(body.contains("Response 200"), "{body}");
    assert_eq!(
        js(page, "return location.hash").await,
        json!(format!("#logs/{id}"))
    );

    // Cancel: an event an hour ahead, gone from Pending after confirming.
    click(page, "#tab-schedule").await;
    set_value(page, "#in-minutes", "60").await;
    click(page, "#time-in").await;
    click(page, "#schedule-submit").await;
    let later = wait_js(page, "the second event's id", &format!("const id = document.getElementById('form-status').dataset.eventId; return id && id !== '{id}' ? id : null")).await;
    let later = later.as_str().unwrap().to_owned();
    click(page, "#tab-pending").await;
    click(
        page,
        &format!("#panel-pending tr[data-event-id='{later}'] button.danger"),
    )
    .await;
    page.accept_alert().await.unwrap();
    wait_js(page, "the cancelled event to leave Pending", &format!("return document.querySelector(\"#panel-pending tr[data-event-id='{later}']\") ? null : true")).await;
    let notice = text_when_shown(page, "#panel-pending .notice").await;
    assert!(notice.contains("cancelled"), "{notice}");

    browser.close().await;
    chime.stop().await;
}

/// Sets the time picker 8 s ahead, as the browser's local time, and returns
/// the UTC time chime should send (to the second).
const SET_TIME_AHEAD: &str = r#"
    const at = new Date(Math.floor(Date.now() / 1000) * 1000 + 8000);
    const p = (n) => String(n).padStart(2, '0');
    const input = document.getElementById('schedule-at');
    input.value = `${at.getFullYear()}-${p(at.getMonth() + 1)}-${p(at.getDate())}T${p(at.getHours())}:${p(at.getMinutes())}:${p(at.getSeconds())}`;
    input.dispatchEvent(new Event('input', { bubbles: true }));
    return at.toISOString().replace('.000Z', 'Z');
"#;

/// Retakes `docs/img/console-*.png` at 1280x800, and the same views at
/// 800 px wide in `target/console-800/` to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/img; run by hand when the console changes"]
async fn screenshots() {
    let receiver = webhook().await;
    let chime = TestServer::fresh().await;
    let hook = |path: &str| format!("http://{}/{path}", receiver.addr);
    let browser = Browser::start(1280, 800).await;
    let page = &browser.client;
    page.goto(&format!("{}/console", chime.api.base))
        .await
        .unwrap();
    wait_js(
        page,
        "the page",
        "return document.querySelector('.zone-name').textContent.startsWith('Europe') || null",
    )
    .await;

    let create = |args: Value| async move {
        js_with(
            page,
            CREATE,
            vec![json!({"type": "create_scheduled_event", "args": args})],
        )
        .await
    };
    let now = |seconds: i64| {
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(seconds))
            .unwrap()
            .to_string()
    };
    for (at, path, payload, comment) in [
        (
            3600,
            "send-email",
            json!({"email": "bob@ross.com"}),
            Some("welcome reminder"),
        ),
        (5400, "invoices/close", json!({"month": "2030-06"}), None),
        (
            7200,
            "send-email",
            json!({"email": "ann@example.com"}),
            Some("trial ends"),
        ),
        (86400, "reports/daily", json!({}), Some("daily report")),
    ] {
        let mut args = json!({"webhook": hook(path), "schedule_at": now(at), "payload": payload});
        if let Some(comment) = comment {
            args["comment"] = json!(comment);
        }
        create(args).await;
    }
    create(json!({"webhook": hook("hook"), "schedule_at": now(0), "payload": {"order": 1042, "status": "shipped"}, "comment": "order shipped"})).await;
    create(json!({"webhook": hook("hook"), "schedule_at": now(0), "payload": {"user": 7}, "headers": [{"name": "X-Source", "value": "chime"}]})).await;
    create(json!({"webhook": hook("fail"), "schedule_at": now(0), "payload": {"user": 8}, "retry_conf": {"num_retries": 1, "retry_interval_seconds": 1}, "comment": "receiver is down"})).await;
    create(json!({"webhook": hook("hook"), "schedule_at": now(-7200), "payload": null, "retry_conf": {"tolerance_seconds": 60}, "comment": "too late"})).await;
    wait_js(page, "four processed events", "return fetch('/v1/metadata', {method: 'POST', body: JSON.stringify({type: 'get_scheduled_events', args: {type: 'one_off', status: ['delivered', 'error', 'dead'], get_rows_count: true, limit: 0}})}).then(r => r.json()).then(r => r.count === 4 || null)").await;

    // The form, filled in, with Advanced open.
    set_value(page, "#webhook", "https://example.com/send-email").await;
    click(page, "#time-in").await;
    set_value(page, "#payload", "{\n  \"email\": \"bob@ross.com\"\n}").await;
    click(page, "#advanced > summary").await;
    click(page, "#add-header").await;
    set_value(page, ".header-row:nth-child(1) .h-name", "Authorization").await;
    set_value(page, ".header-row:nth-child(1) .h-value", "Bearer 4f9c…").await;
    click(page, "#add-header").await;
    set_value(page, ".header-row:nth-child(2) .h-name", "X-Api-Key").await;
    js(page, "const s = document.querySelector('.header-row:nth-child(2) .h-source'); s.value = 'env'; s.dispatchEvent(new Event('change')); return null").await;
    set_value(page, ".header-row:nth-child(2) .h-value", "EMAIL_API_KEY").await;
    set_value(page, "#num_retries", "3").await;
    set_value(page, "#comment", "sample scheduled event comment").await;
    js(
        page,
        "document.activeElement.blur(); window.scrollTo(0, 0); return null",
    )
    .await;

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    let narrow = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-800");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&narrow).unwrap();
    for (width, dir) in [(1280, &out), (800, &narrow)] {
        set_viewport(page, width, 800).await;
        click(page, "#tab-schedule").await;
        js(
            page,
            "document.activeElement.blur(); window.scrollTo(0, 0); return null",
        )
        .await;
        shoot(page, dir, "console-schedule.png").await;
        // The rest of the form, below the fold.
        js(page, "document.querySelector('#advanced fieldset:nth-of-type(2)').scrollIntoView(); return null").await;
        shoot(
            page,
            &narrow,
            &format!("console-schedule-advanced-{width}.png"),
        )
        .await;

        click(page, "#tab-pending").await;
        wait_js(
            page,
            "pending rows",
            "return document.querySelectorAll('#panel-pending tbody tr').length === 4 || null",
        )
        .await;
        js(page, "document.activeElement.blur(); return null").await;
        shoot(page, dir, "console-pending.png").await;

        click(page, "#tab-processed").await;
        wait_js(
            page,
            "processed rows",
            "return document.querySelectorAll('#panel-processed tbody tr').length === 4 || null",
        )
        .await;
        js(page, "document.activeElement.blur(); return null").await;
        shoot(page, dir, "console-processed.png").await;

        click(page, "#tab-logs").await;
        wait_js(page, "invocations", "return document.querySelectorAll('#panel-logs details.invocation').length >= 4 || null").await;
        js(page, "const d = document.querySelector('#panel-logs details.invocation:not([open])'); if (d) d.open = true; document.activeElement.blur(); return null").await;
        shoot(page, dir, "console-logs.png").await;
    }
    browser.close().await;
    chime.stop().await;
}

const CREATE: &str = "return fetch('/v1/metadata', {method: 'POST', body: JSON.stringify(arguments[0])}).then(r => r.json())";

/// Sizes the window so that the page itself (what a screenshot shows) is
/// `width` x `height`.
async fn set_viewport(page: &Client, width: u32, height: u32) {
    page.set_window_size(width, height).await.unwrap();
    let inner = js(page, "return [window.innerWidth, window.innerHeight]").await;
    let chrome =
        |i: usize, want: u32| want + want.saturating_sub(inner[i].as_u64().unwrap() as u32);
    page.set_window_size(chrome(0, width), chrome(1, height))
        .await
        .unwrap();
}

async fn shoot(page: &Client, dir: &Path, name: &str) {
    let png = page.screenshot().await.unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

// ---------------------------------------------------------------------------
// The page

async fn js(page: &Client, script: &str) -> Value {
    js_with(page, script, Vec::new()).await
}

async fn js_with(page: &Client, script: &str, args: Vec<Value>) -> Value {
    page.execute(script, args)
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Polls `script` until it returns something other than null.
async fn wait_js(page: &Client, what: &str, script: &str) -> Value {
    eventually_within(WAIT, what, || async move {
        let v = js(page, script).await;
        (!v.is_null()).then_some(v)
    })
    .await
}

/// Waits for `selector` to be displayed, then clicks it as a user would.
/// The console's auto refresh replaces list rows, so an element found a
/// moment ago can be gone ("stale") by the click: find it again and retry.
async fn click(page: &Client, selector: &str) {
    let what = format!("{selector} to be clicked");
    eventually_within(WAIT, &what, || async {
        let el = shown(page, selector).await;
        match el.click().await {
            Ok(_) => Some(()),
            Err(e) if is_stale(&e) => None,
            Err(e) => panic!("cannot click {selector}: {e}"),
        }
    })
    .await
}

/// Empties the field and types `text` into it (again, if the field was
/// replaced while typing).
async fn set_value(page: &Client, selector: &str, text: &str) {
    let what = format!("{selector} to take {text:?}");
    eventually_within(WAIT, &what, || async {
        let el = shown(page, selector).await;
        match el.clear().await {
            Ok(()) => {}
            Err(e) if is_stale(&e) => return None,
            Err(e) => panic!("cannot clear {selector}: {e}"),
        }
        match el.send_keys(text).await {
            Ok(()) => Some(()),
            Err(e) if is_stale(&e) => None,
            Err(e) => panic!("cannot type into {selector}: {e}"),
        }
    })
    .await
}

fn is_stale(e: &fantoccini::error::CmdError) -> bool {
    matches!(e, fantoccini::error::CmdError::Standard(w)
        if w.error == fantoccini::error::ErrorStatus::StaleElementReference)
}

/// The text of `selector` once it is displayed and not empty.
async fn text_when_shown(page: &Client, selector: &str) -> String {
    let what = format!("{selector} to show text");
    eventually_within(WAIT, &what, || async {
        let el = page.find(Locator::Css(selector)).await.ok()?;
        if !el.is_displayed().await.ok()? {
            return None;
        }
        let text = el.text().await.ok()?;
        (!text.trim().is_empty()).then_some(text)
    })
    .await
}

async fn shown(page: &Client, selector: &str) -> fantoccini::elements::Element {
    let what = format!("{selector} to be displayed");
    eventually_within(WAIT, &what, || async {
        let el = page.find(Locator::Css(selector)).await.ok()?;
        el.is_displayed().await.ok()?.then_some(el)
    })
    .await
}

// ---------------------------------------------------------------------------
// chime, the receiver, the browser

/// Keeps the README's quick start true on a fresh machine: where the
/// browser is missing and Debian's apt is at hand as root, install it
/// (as `.ci/run` does). Elsewhere the test fails below, saying what to
/// install; it never skips.
fn install_browser_if_missing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let have_driver = std::process::Command::new(CHROMEDRIVER)
            .arg("--version")
            .output()
            .is_ok();
        if Path::new(CHROMIUM).exists() && have_driver {
            return;
        }
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        if !root || !Path::new("/usr/bin/apt-get").exists() {
            return;
        }
        eprintln!("installing chromium and chromium-driver with apt-get for the console test");
        let apt = |args: &[&str]| {
            std::process::Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = apt(&["update", "-qq"])
            && apt(&["install", "-y", "-qq", "chromium", "chromium-driver"]);
    });
}

/// Headless Chromium under chromedriver, in a fresh profile.
struct Browser {
    client: Client,
    _driver: Driver,
    _profile: TempDir,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        install_browser_if_missing();
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the console test needs Chromium and chromedriver; {INSTALL}"
        );
        let port = chime::testing::free_port();
        let driver = Driver::start(port);
        let profile = tempfile::tempdir().unwrap();
        let client = connect(port, profile.path(), width, height).await;
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Ends the session, which closes Chromium.
    async fn close(self) {
        self.client.clone().close().await.unwrap();
    }
}

/// chromedriver, as the leader of a process group that the Chromium it
/// starts joins, so that a failing test still ends both when this drops.
struct Driver(Child);

impl Driver {
    fn start(port: u16) -> Driver {
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("TZ", ZONE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {CHROMEDRIVER} ({e}): the console test needs Chromium and chromedriver; {INSTALL}"
                )
            });
        Driver(child)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// Connects to chromedriver on `port` (polling while it starts) and opens a
/// session running headless Chromium.
async fn connect(port: u16, profile: &Path, width: u32, height: u32) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={width},{height}"),
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities);
    let mut last_error = String::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match builder.connect(&url).await {
            Ok(client) => return client,
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no WebDriver session from chromedriver on {url} within {WAIT:?}: {last_error}");
}
