//! `chime serve` as a child process: the real binary, its flags, its
//! signals, its exit status.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::ApiClient;
use super::wait::{POLL, WAIT};
use crate::server::Listening;

/// The `--listen` of every child but [`ChildServer::start_on`]'s.
const LOOPBACK_ANY_PORT: &str = "127.0.0.1:0";

/// The `chime` binary cargo built beside the running test or bench:
/// `target/<profile>/deps/<test>` runs, `target/<profile>/chime` is the
/// server. (A library has no `CARGO_BIN_EXE_chime`; cargo always builds the
/// binary before an integration test or bench.)
pub fn chime_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the running test's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()));
    let binary = profile_dir.join("chime");
    assert!(
        binary.is_file(),
        "no chime binary at {} (derived from {}): run the test through cargo, which builds it",
        binary.display(),
        exe.display()
    );
    binary
}

/// Runs `chime serve --data-dir DIR --listen 127.0.0.1:0 EXTRA...` that is
/// expected to refuse to start, and returns its exit status and stderr once
/// it exits. Waits at most [`WAIT`]; a child still running then (it started
/// after all) is killed and the test fails with what it wrote.
pub fn serve_to_exit(data_dir: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(chime_binary())
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chime serve");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Drained on its own thread so a chatty child never blocks on the pipe.
    let drained = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chime serve") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = drained.join().unwrap_or_default();
            panic!("chime serve did not exit within {WAIT:?}; stderr:\n{text}");
        }
        std::thread::sleep(POLL);
    };
    (status, drained.join().expect("stderr reader"))
}

/// Runs the `chime log verify` binary on `data_dir` (which no server may
/// hold: it reads the log as a tool would) and returns its exit code and
/// stdout. Verify checks every frame and decodes every record.
pub fn log_verify(data_dir: &Path) -> (Option<i32>, String) {
    let output = Command::new(chime_binary())
        .args(["log", "verify", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run chime log verify");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The `NO_PROXY` of a child server: every loopback name and address.
const LOOPBACK_NO_PROXY: &str = "localhost,127.0.0.0/8,::1";

/// Which `NO_PROXY` a child server gets.
#[derive(Clone, Copy)]
enum NoProxy {
    /// [`LOOPBACK_NO_PROXY`], whatever the tester's environment says.
    Loopback,
    /// None: only what the test's own variables set.
    AsGiven,
}

/// `chime serve` as a child process. Killed when dropped, so a failing test
/// leaves no process behind.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub api: ApiClient,
    /// Everything the child wrote to stderr so far, for failure messages.
    stderr: Arc<Mutex<String>>,
}

impl ChildServer {
    /// Starts `chime serve --data-dir DIR --listen 127.0.0.1:0 EXTRA...`
    /// (logging at `info`) and waits at most [`WAIT`] for its
    /// [`Listening`] line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ChildServer {
        Self::start_with(data_dir, extra, "info", WAIT)
    }

    /// [`ChildServer::start`] with `RUST_LOG=log_filter`, waiting at most
    /// `ready_within` for the child to listen (a large log takes a while
    /// to replay).
    pub fn start_with(
        data_dir: &Path,
        extra: &[&str],
        log_filter: &str,
        ready_within: Duration,
    ) -> ChildServer {
        Self::launch(
            Command::new(chime_binary()),
            data_dir,
            LOOPBACK_ANY_PORT,
            extra,
            &[],
            NoProxy::Loopback,
            log_filter,
            ready_within,
        )
    }

    /// [`ChildServer::start`] listening on `listen` (instead of
    /// 127.0.0.1:0) with the variables `env` added to the child's
    /// environment: for the flags that change where chime listens and those
    /// read from `CHIME_*`. The client talks to 127.0.0.1 when chime listens
    /// on every address (0.0.0.0).
    pub fn start_on(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ChildServer {
        Self::launch(
            Command::new(chime_binary()),
            data_dir,
            listen,
            extra,
            env,
            NoProxy::Loopback,
            "info",
            WAIT,
        )
    }

    /// [`ChildServer::start`] with the child's `RLIMIT_NOFILE` (soft and
    /// hard) set to `nofile` by `prlimit`, which then runs chime itself (so
    /// [`ChildServer::pid`] is chime's).
    pub fn start_with_nofile(data_dir: &Path, extra: &[&str], nofile: u64) -> ChildServer {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(chime_binary());
        Self::launch(
            command,
            data_dir,
            LOOPBACK_ANY_PORT,
            extra,
            &[],
            NoProxy::Loopback,
            "info",
            WAIT,
        )
    }

    /// [`ChildServer::start`] with the child's umask set to `umask` (a
    /// shell sets it, then execs chime in its place): the umask is
    /// per-process, so a test never changes its own.
    pub fn start_with_umask(data_dir: &Path, extra: &[&str], umask: u32) -> ChildServer {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("umask {umask:03o} && exec \"$0\" \"$@\""))
            .arg(chime_binary());
        Self::launch(
            sh,
            data_dir,
            LOOPBACK_ANY_PORT,
            extra,
            &[],
            NoProxy::Loopback,
            "info",
            WAIT,
        )
    }

    /// [`ChildServer::start`] with `vars` set in the child's environment
    /// (before the loopback exclusion below, which they cannot undo).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], vars: &[(&str, &str)]) -> ChildServer {
        Self::start_on(data_dir, LOOPBACK_ANY_PORT, extra, vars)
    }

    /// [`ChildServer::start`] with `vars` set and the child's proxy
    /// variables left as `vars` make them: no `NO_PROXY` of the tester's
    /// or of [`ChildServer`]'s own, so the proxy rules under test are
    /// chime's alone (its own clients here never use a proxy anyway).
    pub fn start_with_proxy_env(
        data_dir: &Path,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> ChildServer {
        Self::launch(
            Command::new(chime_binary()),
            data_dir,
            LOOPBACK_ANY_PORT,
            extra,
            vars,
            NoProxy::AsGiven,
            "info",
            WAIT,
        )
    }

    /// Runs `command` with chime's `serve` arguments and waits for it to
    /// listen.
    #[allow(clippy::too_many_arguments)] // one private constructor behind the public ones
    fn launch(
        mut command: Command,
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        no_proxy: NoProxy,
        log_filter: &str,
        ready_within: Duration,
    ) -> ChildServer {
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", log_filter);
        match no_proxy {
            // The webhooks of a test are on loopback: a proxy set in the
            // tester's environment must not carry the child's deliveries
            // off the machine (chime calls loopback directly by itself too;
            // this keeps the tests that are not about that independent of
            // it). Set after `env`, which cannot undo it.
            NoProxy::Loopback => command
                .env("NO_PROXY", LOOPBACK_NO_PROXY)
                .env("no_proxy", LOOPBACK_NO_PROXY),
            // The tester's removed; `env`'s own, if any, set again.
            NoProxy::AsGiven => command
                .env_remove("NO_PROXY")
                .env_remove("no_proxy")
                .envs(env.iter().copied()),
        };
        Self::run(command, ready_within)
    }

    /// `chime serve` with no flag at all, configured only by `vars`
    /// (`CHIME_DATA_DIR`, `CHIME_LISTEN`, …; `RUST_LOG=info`, loopback
    /// excluded from proxies, as [`ChildServer::start`]), waiting at most
    /// [`WAIT`] for its [`Listening`] line.
    pub fn start_env_only(vars: &[(&str, &str)]) -> ChildServer {
        let mut command = Command::new(chime_binary());
        command
            .arg("serve")
            .envs(vars.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_PROXY", LOOPBACK_NO_PROXY)
            .env("no_proxy", LOOPBACK_NO_PROXY);
        Self::run(command, WAIT)
    }

    /// Spawns `command` (a `chime serve` with its arguments and
    /// environment), drains its pipes, and waits at most `ready_within`
    /// for its [`Listening`] line.
    fn run(mut command: Command, ready_within: Duration) -> ChildServer {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chime serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (listening_tx, listening_rx) = std::sync::mpsc::channel();
        // Both pipes are drained for the child's whole life so it never
        // blocks on a full one; stdout reports the address once.
        std::thread::spawn(move || {
            let mut listening_tx = Some(listening_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(listening) = Listening::parse(&line)
                    && let Some(tx) = listening_tx.take()
                {
                    let _ = tx.send(listening);
                }
            }
        });
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        let listening = match listening_rx.recv_timeout(ready_within) {
            Ok(listening) => listening,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chime serve did not report its address ({e}); stderr:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let mut listening = listening;
        if listening.addr.ip().is_unspecified() {
            listening.addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        ChildServer {
            child,
            addr: listening.addr,
            api: ApiClient::new(listening.url()),
            stderr: log,
        }
    }

    /// [`ChildServer::start`] off the async workers (it blocks until the
    /// child is listening).
    pub async fn spawn(data_dir: &Path, extra: &[&str]) -> ChildServer {
        let data_dir = data_dir.to_owned();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            ChildServer::start(&data_dir, &extra)
        })
        .await
        .unwrap()
    }

    /// [`ChildServer::start_on`] off the async workers.
    pub async fn spawn_on(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ChildServer {
        let data_dir = data_dir.to_owned();
        let listen = listen.to_owned();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ChildServer::start_on(&data_dir, &listen, &extra, &env)
        })
        .await
        .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM: asks for a graceful stop (see [`ChildServer::wait_exit`]).
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.pid());
    }

    /// Sends SIGINT (Ctrl-C): the same graceful stop as SIGTERM.
    pub fn interrupt(&self) {
        let sent = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -INT {}", self.pid());
    }

    /// SIGKILL, and waits until the process is gone (and its lock with it).
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits at most `limit` for the child to exit on its own.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Anonymous resident memory of the child (its heap), from /proc:
    /// file-backed pages of the memory-mapped log are the page cache's, not
    /// the server's.
    pub fn rss_anon_bytes(&self) -> u64 {
        super::bench::rss_anon_bytes_of(&format!("/proc/{}/status", self.pid()))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
