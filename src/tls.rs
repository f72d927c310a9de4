//! TLS with rustls and the `ring` provider: the server's certificate, and
//! the listener that hands the serve loop finished TLS connections, under
//! the same connection budget as a plain listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::server::{Accept, Admitted, Gate};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Errors loading the certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM certificates from {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read a PEM private key from {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate and key do not go together: {0}")]
    Config(rustls::Error),
}

/// Makes `ring` the process's rustls provider (reqwest is built without
/// one, to avoid building aws-lc). Calling it again does nothing.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.to_path_buf(),
            reason: "no certificate found".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections have finished the TLS handshake.
/// Handshakes run in their own tasks so a slow client cannot hold up
/// others; each takes its place in the [`Gate`] before it is accepted, so
/// connections still in their handshake count against the budget too.
pub struct TlsListener {
    ready: mpsc::Receiver<Admitted<TlsStream<TcpStream>>>,
}

impl TlsListener {
    /// Accepts on `tcp` under `gate`; a client gets `handshake_timeout`
    /// (the request-header timeout) to finish its handshake.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        gate: Gate,
        handshake_timeout: Duration,
    ) -> std::io::Result<Self> {
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer, permit) = tokio::select! {
                    accepted = gate.accept_tcp(&tcp) => accepted,
                    () = tx.closed() => break,
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, ready_tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(io)) => {
                            let _ = ready_tx.send(Admitted { io, peer, permit }).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready })
    }
}

impl Accept for TlsListener {
    type Io = TlsStream<TcpStream>;

    async fn accept(&mut self) -> Admitted<Self::Io> {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }
}
