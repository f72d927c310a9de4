//! The HTTP connection loop: accepts from a listener (plain TCP or TLS),
//! serves each connection with hyper, and on shutdown stops accepting and
//! lets open connections finish their requests.
//!
//! It replaces `axum::serve` because that one always negotiates HTTP/2
//! prior knowledge (h2c) when hyper's `http2` feature is compiled in, which
//! the HTTP client does; here h2c is served only when asked for
//! (`--http2`), and connections speak HTTP/1.1 otherwise.

use std::future::Future;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// Serves `app` on `listener` until `stop` completes, then waits for the
/// open connections to finish.
pub(super) async fn serve<L>(
    mut listener: L,
    app: Router,
    http2: bool,
    stop: impl Future<Output = ()>,
) where
    L: Listener,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !http2 {
        // A connection opening with the HTTP/2 preface is then refused by
        // the HTTP/1.1 parser and closed.
        builder = builder.http1_only();
    }
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // A client that goes away or speaks something else is its
                // own business, not the server's.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
