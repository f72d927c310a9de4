//! Shared by the benchmarks: where they write, how long they run, and the
//! server under test as a separate process (the bench-profile `chime`
//! binary), so the load generator's CPU is not counted as the server's.

#![allow(dead_code)] // each bench uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where benchmarks put their data: `CHIME_BENCH_DIR`, or `target/bench-tmp`.
pub fn bench_dir() -> PathBuf {
    let base = std::env::var_os("CHIME_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"));
    std::fs::create_dir_all(&base).expect("create bench dir");
    base
}

/// Seconds per case: `CHIME_BENCH_SECS`, or `default`.
pub fn secs(default: f64) -> f64 {
    std::env::var("CHIME_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Which cases to run: `cargo bench --bench NAME -- FILTER` runs the cases
/// whose name contains FILTER (all without one; `cargo bench` itself passes
/// `--bench`, which is not a filter).
pub fn cases() -> impl Fn(&str) -> bool {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    move |name: &str| filter.as_deref().is_none_or(|f| name.contains(f))
}

/// The multi-threaded runtime the benchmarks drive their load from.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `chime serve` on 127.0.0.1:0 over `data_dir`, killed on drop.
pub struct ServerProcess {
    child: Child,
    pub url: String,
}

impl ServerProcess {
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chime"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn,chime::server=info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chime");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(300))
            .expect("chime did not start");
        ServerProcess {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl ServerProcess {
    /// Anonymous resident memory of the server process (its heap), from
    /// /proc: file-backed pages of the memory-mapped log are the page
    /// cache's, not the server's.
    pub fn rss_anon_bytes(&self) -> u64 {
        rss_anon_bytes_of(&format!("/proc/{}/status", self.child.id()))
    }
}

/// `RssAnon` from a /proc status file, in bytes.
pub fn rss_anon_bytes_of(status_path: &str) -> u64 {
    let status = std::fs::read_to_string(status_path).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("RssAnon")
        * 1024
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
