//! `chime serve`: locks the data directory, replays the log, then runs the
//! API and the dispatcher until asked to stop.
//!
//! [`Server::open`] does everything that can fail before serving; [`Server::run`]
//! takes an already bound listener and a shutdown future, so tests bind
//! 127.0.0.1:0 and stop the server when they choose.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

mod conn;

pub use conn::{
    Accept, Admitted, BodyTimeout, ConnLimits, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_HEADER_TIMEOUT, FD_RESERVE, Gate, PlainAccept,
};

use crate::api::{AdminSecret, ApiState, CancelsInFlight, FrontDoor, HostRule, router};
use crate::clock::{Clock, SystemClock};
use crate::datadir::{DataDir, DataDirError};
use crate::dispatch::{DispatchConfig, DispatchError, Dispatcher};
use crate::log::LogOptions;
use crate::service::{Service, ServiceError, Startup};
use crate::snapshot::SnapshotStore;
use crate::tls::{TlsError, TlsListener};

/// The address served on by default (`--listen`): loopback only, so that a
/// server started without an admin secret is not reachable from elsewhere.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

/// The largest request body accepted by default (`--max-body-bytes`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// An admin secret shorter than this gets a warning at start: it can be
/// guessed.
pub const MIN_ADMIN_SECRET_CHARS: usize = 16;

/// Everything `serve` needs, resolved from flags and environment.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_secret: Option<String>,
    /// Serve without a secret on a non-loopback address anyway.
    pub allow_unauthenticated: bool,
    pub log: LogOptions,
    /// Largest request body accepted (413 past it).
    pub max_body_bytes: usize,
    pub dispatch: DispatchConfig,
    /// PEM certificate chain and key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Browser origins besides the server's own that may call `/v1/*`
    /// (`--allow-origin`), as [`crate::api::parse_origin`] writes them.
    pub allow_origins: Vec<String>,
    /// Serve HTTP/2 prior knowledge (h2c) besides HTTP/1.1 (`--http2`).
    pub http2: bool,
    /// The admin secret came as `--admin-secret` on the command line, where
    /// other users of the machine can read it (`ps`): warned about at start.
    pub admin_secret_on_command_line: bool,
    /// Connection cap and timeouts, for plain and TLS listeners alike.
    pub conn: ConnLimits,
    /// Which environment variables templates may read, at create and at
    /// delivery (`--webhook-env-allow`).
    pub env_policy: crate::webhook::EnvPolicy,
    /// How long finished events stay in view (`--retain-finished`); `None`
    /// keeps them forever.
    pub retain_finished: Option<Duration>,
    /// How often retention looks for events to retire: a constant for
    /// `serve`, shorter in tests.
    pub retire_every: Duration,
    /// A snapshot is written once this many records were applied since the
    /// last one (`--snapshot-every`), and at every clean stop.
    pub snapshot_every: u64,
    /// How often the log is compacted (`--compaction-interval`); `None`:
    /// never in the background.
    pub compaction_interval: Option<Duration>,
}

impl ServeConfig {
    /// Defaults for a data directory: [`DEFAULT_LISTEN`], no secret.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServeConfig {
            data_dir: data_dir.into(),
            listen: DEFAULT_LISTEN,
            admin_secret: None,
            allow_unauthenticated: false,
            log: LogOptions::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            dispatch: DispatchConfig::default(),
            tls: None,
            allow_origins: Vec::new(),
            http2: false,
            admin_secret_on_command_line: false,
            conn: ConnLimits::default(),
            env_policy: crate::webhook::EnvPolicy::default(),
            retain_finished: Some(crate::retention::DEFAULT_RETAIN_FINISHED),
            retire_every: crate::retention::DEFAULT_RETIRE_EVERY,
            snapshot_every: crate::snapshot::DEFAULT_SNAPSHOT_EVERY,
            compaction_interval: Some(crate::compaction::DEFAULT_COMPACTION_INTERVAL),
        }
    }

    /// Refuses to expose an API without a secret beyond this machine; warns
    /// about a weak or visible secret.
    pub fn check(&self) -> Result<(), ServeError> {
        if let Some(secret) = &self.admin_secret {
            if secret.chars().count() < MIN_ADMIN_SECRET_CHARS {
                tracing::warn!(
                    "the admin secret is shorter than {MIN_ADMIN_SECRET_CHARS} characters: it can be guessed; use a long random one"
                );
            }
            if self.admin_secret_on_command_line {
                tracing::warn!(
                    "the admin secret was given as --admin-secret, which other users of this machine can read in the process list: prefer the environment variable CHIME_ADMIN_SECRET"
                );
            }
        }
        if self.admin_secret.is_none() {
            if !self.listen.ip().is_loopback() && !self.allow_unauthenticated {
                return Err(ServeError::Unauthenticated(self.listen));
            }
            tracing::warn!(
                listen = %self.listen,
                "NO ADMIN SECRET IS SET: anyone who can reach this address can create and delete events. Set --admin-secret or CHIME_ADMIN_SECRET."
            );
        }
        Ok(())
    }
}

/// Errors of `serve`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "refusing to listen on {0} without an admin secret: set --admin-secret (or CHIME_ADMIN_SECRET), or pass --allow-unauthenticated"
    )]
    Unauthenticated(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// A server whose log is replayed and ready to serve.
pub struct Server {
    config: ServeConfig,
    service: Arc<Service>,
    pub startup: Startup,
    /// Cancels planned by the API and not yet applied: shared with the
    /// dispatcher, which lets such a cancel win over an attempt it is about
    /// to send.
    cancels: Arc<CancelsInFlight>,
    /// `DATA/snapshots/`: restored from at open, written while running and
    /// at a clean stop.
    snapshots: SnapshotStore,
    /// Held for the lock it carries until the server is dropped.
    _data_dir: DataDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The log's writer ends before the data directory's lock is let go
        // (the fields drop after this): a server that opens the directory
        // next, in this process or another, never shares a segment with a
        // writer still draining this one's queue (an attempt finishing
        // after the stop, say). Appends after this get `LogError::Closed`.
        self.service.log.close();
    }
}

impl Server {
    /// Locks the data directory and replays the log, with the system clock.
    pub fn open(config: ServeConfig) -> Result<Server, ServeError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// [`Server::open`] with an injected clock.
    pub fn open_with_clock(
        config: ServeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Server, ServeError> {
        config.check()?;
        let data_dir = DataDir::lock_on(&*config.log.fs, &config.data_dir, true)?;
        let snapshots = SnapshotStore::open(
            config.log.fs.clone(),
            &crate::snapshot::snapshot_dir(data_dir.root()),
        )
        .map_err(crate::service::ServiceError::from)?;
        let (service, startup) =
            Service::open_restoring(&data_dir.log_dir(), &config.log, clock, Some(&snapshots))?;
        tracing::info!(
            data_dir = %config.data_dir.display(),
            segments = startup.recovery.segments,
            snapshot_seq = %startup.snapshot_seq.map_or("none".to_owned(), |s| s.to_string()),
            records = startup.replayed,
            events = service.projection().len(),
            seconds = startup.replay_seconds,
            "log replayed"
        );
        Ok(Server {
            config,
            service: Arc::new(service),
            startup,
            cancels: Default::default(),
            snapshots,
            _data_dir: data_dir,
        })
    }

    /// The service, for tests and tools that look inside.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// The API's cancels in flight, for tests that wait until a delete has
    /// been planned (only `chime::testing` calls it).
    #[cfg(feature = "testing")]
    pub(crate) fn cancels(&self) -> &Arc<CancelsInFlight> {
        &self.cancels
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener, ServeError> {
        TcpListener::bind(self.config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: self.config.listen,
                source,
            })
    }

    /// Serves on `listener` until `shutdown` completes, then stops taking
    /// requests, lets in-flight deliveries finish within the grace period,
    /// and returns. Everything acknowledged is already durable.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let local = listener.local_addr().map_err(ServeError::Http)?;
        let dispatcher = Dispatcher::new(self.service.clone(), self.config.dispatch.clone())?
            .with_env_policy(self.config.env_policy.clone())
            .with_cancels(self.cancels.clone());
        dispatcher.recover_interrupted().await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let retiring = tokio::spawn(crate::retention::run(
            self.service.clone(),
            self.config.retain_finished,
            self.config.retire_every,
            stop_rx.clone(),
        ));
        let snapshotting = tokio::spawn(crate::service::keep_snapshots(
            self.service.clone(),
            self.snapshots.clone(),
            self.config.snapshot_every,
            self.startup.snapshot_seq,
            stop_rx.clone(),
        ));
        let compacting = self.config.compaction_interval.map(|every| {
            tokio::spawn(crate::compaction::keep_compacting(
                self.service.clone(),
                self.snapshots.clone(),
                every,
                stop_rx.clone(),
            ))
        });
        let dispatching = tokio::spawn(dispatcher.run(stop_rx));
        let hosts = match (
            &self.config.admin_secret,
            self.config.listen.ip().is_loopback(),
        ) {
            (Some(_), _) => HostRule::Any,
            (None, true) => HostRule::Loopback,
            (None, false) => HostRule::LoopbackOrAddress,
        };
        let api = Arc::new(ApiState {
            service: self.service.clone(),
            admin_secret: self.config.admin_secret.as_deref().map(AdminSecret::new),
            max_body_bytes: self.config.max_body_bytes,
            front_door: FrontDoor {
                tls: self.config.tls.is_some(),
                allowed_origins: self.config.allow_origins.clone(),
                hosts,
            },
            env_policy: self.config.env_policy.clone(),
            cancels: self.cancels.clone(),
        });
        let app = router(api);
        let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("stopping: no new requests or deliveries");
            let _ = stop_tx.send(true);
            let _ = http_stop_tx.send(());
        });
        let http_stopped = async {
            let _ = http_stop_rx.await;
        };
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!("listening on {scheme}://{local}");
        // The soft descriptor limit is raised before the budget is taken
        // from it, so the budget is as large as the system allows.
        let nofile = conn::raise_nofile_limit();
        let places = self.config.conn.budget(
            nofile,
            conn::open_descriptors(),
            self.config.dispatch.max_in_flight,
        );
        if places < self.config.conn.max_connections {
            tracing::warn!(
                max_connections = self.config.conn.max_connections,
                places,
                nofile,
                "the open-file limit leaves room for fewer connections than --max-connections; descriptors are kept for deliveries and the log"
            );
        }
        let gate = Gate::new(places);
        let limits = self.config.conn;
        let http2 = self.config.http2;
        match &self.config.tls {
            Some((cert, key)) => {
                let tls = crate::tls::server_config(cert, key)?;
                let listener = TlsListener::new(listener, tls, gate, limits.request_header_timeout)
                    .map_err(ServeError::Http)?;
                conn::serve(listener, app, limits, http2, http_stopped).await;
            }
            None => {
                let listener = PlainAccept {
                    tcp: listener,
                    gate,
                };
                conn::serve(listener, app, limits, http2, http_stopped).await;
            }
        }
        if let Err(e) = dispatching.await {
            tracing::error!(error = %e, "dispatcher task failed");
        }
        // Before the log is closed (when the server drops): a pass in the
        // middle of its append finishes it.
        if let Err(e) = retiring.await {
            tracing::error!(error = %e, "retention task failed");
        }
        // A compaction under way finishes first, so that the snapshot of a
        // clean stop is taken over the segments it installed.
        if let Some(compacting) = compacting
            && let Err(e) = compacting.await
        {
            tracing::error!(error = %e, "compaction task failed");
        }
        // Last, once nothing else appends: the snapshot of a clean stop
        // holds every record, so the next start replays none.
        match snapshotting.await {
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write the snapshot at stop"),
            Err(e) => tracing::error!(error = %e, "snapshot task failed"),
            Ok(Ok(())) => {}
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves when SIGTERM or SIGINT arrives. The handlers are installed
/// when this is called, not when the future is first polled: call it
/// before telling anyone the server is up (the listening line), or a
/// signal sent at once would take its default action and kill the process
/// instead of stopping it gracefully. Call it inside the runtime.
pub fn stop_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (term, int) => {
                for e in [term.err(), int.err()].into_iter().flatten() {
                    tracing::error!(error = %e, "cannot listen for SIGTERM and SIGINT");
                }
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The line `chime serve` prints on stdout once it is bound, for scripts
/// and tests that start it on port 0:
///
/// ```text
/// listening addr=127.0.0.1:8080 scheme=https
/// ```
///
/// Written with [`Display`](std::fmt::Display) and read back with
/// [`Listening::parse`], so the two cannot drift apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The bound address (the real port when `--listen` asked for port 0).
    pub addr: SocketAddr,
    /// Whether the address serves HTTPS.
    pub tls: bool,
}

impl Listening {
    const PREFIX: &'static str = "listening";

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The base URL of the API: `SCHEME://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr)
    }

    /// Reads a line written by `Display`; `None` for any other line.
    pub fn parse(line: &str) -> Option<Listening> {
        let mut words = line.split_whitespace();
        if words.next()? != Self::PREFIX {
            return None;
        }
        let addr = words.next()?.strip_prefix("addr=")?.parse().ok()?;
        let tls = match words.next()?.strip_prefix("scheme=")? {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        words.next().is_none().then_some(Listening { addr, tls })
    }
}

impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} addr={} scheme={}",
            Self::PREFIX,
            self.addr,
            self.scheme()
        )
    }
}

impl Server {
    /// Whether [`Server::run`] will serve HTTPS.
    pub fn tls_enabled(&self) -> bool {
        self.config.tls.is_some()
    }

    /// What `chime serve` announces for `listener` (see [`Listening`]).
    pub fn listening(&self, listener: &TcpListener) -> Result<Listening, ServeError> {
        Ok(Listening {
            addr: listener.local_addr().map_err(ServeError::Http)?,
            tls: self.tls_enabled(),
        })
    }
}

#[cfg(test)]
mod listening_tests {
    use super::Listening;

    #[test]
    fn the_listening_line_reads_back() {
        for tls in [false, true] {
            let line = Listening {
                addr: "127.0.0.1:8080".parse().unwrap(),
                tls,
            };
            assert_eq!(Listening::parse(&line.to_string()), Some(line));
        }
        assert_eq!(
            Listening {
                addr: "[::1]:443".parse().unwrap(),
                tls: true
            }
            .to_string(),
            "listening addr=[::1]:443 scheme=https"
        );
        assert_eq!(Listening::parse("listening on http://127.0.0.1:1"), None);
        assert_eq!(
            Listening::parse("listening addr=127.0.0.1:1 scheme=ftp"),
            None
        );
    }
}
