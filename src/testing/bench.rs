//! The benches' knobs: where they write, how long they run, which cases,
//! their runtime, and memory as /proc reports it. The server under test
//! runs as a [`ChildServer`] (the bench-profile binary, see [`serve`]),
//! so the load generator's CPU is not counted as the server's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ChildServer;

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

/// `RssAnon` from a /proc status file, in bytes.
pub fn rss_anon_bytes_of(status_path: &str) -> u64 {
    status_bytes(status_path, "RssAnon:")
}

/// `VmHWM` (the peak resident set, file-backed pages such as the log's
/// memory map included) from a /proc status file, in bytes.
pub fn peak_rss_bytes_of(status_path: &str) -> u64 {
    status_bytes(status_path, "VmHWM:")
}

/// Starts `VmHWM` of process `pid` over from its current RSS (Linux's
/// `clear_refs` 5), so a peak measures one phase only.
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
}

fn status_bytes(status_path: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(status_path).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in {status_path}"))
        * 1024
}

/// `chime serve` on 127.0.0.1:0 over `data_dir` as a child process, killed
/// on drop: logging only warnings (the benches measure the server, not its
/// log lines), and given minutes to replay a large log.
pub fn serve(data_dir: &Path, extra: &[&str]) -> ChildServer {
    ChildServer::start_with(data_dir, extra, "warn", Duration::from_secs(300))
}
