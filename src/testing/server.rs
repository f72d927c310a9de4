//! chime in the test's own runtime, on 127.0.0.1:0.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::client::ApiClient;
use crate::api::CancelsInFlight;
use crate::server::{ServeConfig, ServeError, Server};
use crate::service::Service;

/// A server running in this process, stopped with [`TestServer::stop`] (or
/// when dropped, if a test fails first).
pub struct TestServer {
    pub addr: SocketAddr,
    /// A client of this server, with its admin secret.
    pub api: ApiClient,
    /// The running server's service, to look at its projections without a
    /// connection (when the test has taken every descriptor, say).
    pub service: Arc<Service>,
    /// The cancels the API has planned and not yet applied: lets a test
    /// wait until a delete has been planned (it is then queued for the log).
    pub cancels: Arc<CancelsInFlight>,
    /// Asks the server to stop; taken by `stop` or `drop`.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    /// The data directory the server made for itself, if it did; removed
    /// after the server is dropped.
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Opens a server for `config` (which must not use TLS) and serves it
    /// on a fresh 127.0.0.1 port.
    pub async fn start(config: ServeConfig) -> TestServer {
        let secret = config.admin_secret.clone();
        let server = Server::open(config).expect("Server::open");
        Self::serve(server, secret).await
    }

    /// [`TestServer::start`] with an injected clock (a
    /// [`crate::clock::ManualClock`], say) for the API, the dispatcher and
    /// retention.
    pub async fn start_with_clock(
        config: ServeConfig,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> TestServer {
        let secret = config.admin_secret.clone();
        let server = Server::open_with_clock(config, clock).expect("Server::open_with_clock");
        Self::serve(server, secret).await
    }

    /// A server with default settings over a fresh temporary data directory.
    pub async fn fresh() -> TestServer {
        Self::fresh_with(|_| {}).await
    }

    /// [`TestServer::fresh`] after `configure` has adjusted its settings.
    pub async fn fresh_with(configure: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let mut config = ServeConfig::new(dir.path());
        configure(&mut config);
        let mut server = Self::start(config).await;
        server._dir = Some(dir);
        server
    }

    /// A server over a fresh temporary data directory whose log already
    /// holds `records`, written straight through the service (records the
    /// API would refuse, as an older release may have written them), after
    /// `configure` has adjusted its settings.
    pub async fn over_records(
        records: &[crate::record::Record],
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary data directory");
        {
            let (service, _) = Service::open(
                &crate::datadir::log_dir(dir.path()),
                &crate::log::LogOptions::default(),
                Arc::new(crate::clock::SystemClock),
            )
            .expect("open the log");
            service
                .append(records.to_vec())
                .await
                .expect("append the records");
        }
        let mut config = ServeConfig::new(dir.path());
        configure(&mut config);
        let mut server = Self::start(config).await;
        server._dir = Some(dir);
        server
    }

    /// Serves an already opened server on a fresh 127.0.0.1 port.
    pub async fn serve(server: Server, secret: Option<String>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listening = server.listening(&listener).expect("local_addr");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let service = server.service().clone();
        let cancels = server.cancels().clone();
        let task = tokio::spawn(server.run(listener, async {
            stop_rx.await.ok();
        }));
        let mut api = ApiClient::new(listening.url());
        api.secret = secret;
        TestServer {
            addr: listening.addr,
            api,
            service,
            cancels,
            stop: Some(stop_tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// Asks the server to stop and waits until it has (its data directory
    /// is unlocked once this returns).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops within 15 s")
                .expect("server task did not panic")
                .expect("server ran without error");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
