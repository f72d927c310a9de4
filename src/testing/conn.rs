//! Raw connections to a server, for the connection-limit tests: idle ones
//! that hold a place, half-sent requests, and whether the server closed
//! them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `n` TCP connections to `addr` that send nothing. A connection
/// the server has not accepted yet still opens: it waits in the kernel's
/// backlog.
pub async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    held
}

/// Opens a connection and sends `bytes` (say, half a request head).
pub async fn send_partial(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Whether the server closes `stream` within `limit`: reads (and drops
/// whatever the server says, a 408 say) until end of file or a reset.
/// `false` if the connection is still open at the deadline.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, closed).await.is_ok()
}

/// `GET /healthz` on a fresh connection: `Some(status)` if answered within
/// `limit`, `None` if not (still waiting in the backlog, say).
pub async fn healthz_within(addr: SocketAddr, limit: Duration) -> Option<u16> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let response = tokio::time::timeout(limit, client.get(format!("http://{addr}/healthz")).send())
        .await
        .ok()?
        .ok()?;
    Some(response.status().as_u16())
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, written as
/// `cert.pem` and `key.pem` into `dir`: the paths for `ServeConfig::tls`.
pub fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// While held, this process may open no new file descriptor: its soft
/// `RLIMIT_NOFILE` is 0, so every `socket`, `accept` and `open` fails with
/// `EMFILE` while those already open keep working (the limit bounds new
/// descriptor numbers, so one freed meanwhile cannot be taken again
/// either). Dropping it restores the limit. It limits the whole process:
/// only for a test binary with a single test.
pub struct NoNewDescriptors {
    before: rustix::process::Rlimit,
}

impl NoNewDescriptors {
    pub fn take() -> NoNewDescriptors {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(0),
                maximum: before.maximum,
            },
        )
        .unwrap();
        NoNewDescriptors { before }
    }
}

impl Drop for NoNewDescriptors {
    fn drop(&mut self) {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: self.before.current,
                maximum: self.before.maximum,
            },
        );
    }
}
