//! Command-line flags: parsed and checked here, resolved into library
//! configuration once ([`ServeArgs::into_config`]). The binary does nothing
//! else with them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::dispatch::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_RESPONSE_BODY_CAP, DEFAULT_SHUTDOWN_GRACE, DispatchConfig,
};
use crate::log::{DEFAULT_SEGMENT_BYTES, LogOptions, MIN_SEGMENT_BYTES};
use crate::record::MAX_INTERRUPTED_ATTEMPTS;
use crate::server::{DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, ServeConfig};

/// chime calls an HTTP webhook at a chosen moment, reliably.
#[derive(Debug, Parser)]
#[command(name = "chime", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: replay the log, then serve the API and deliver events.
    Serve(ServeArgs),
    /// Read, check and mend the log: dump, stats, verify, repair.
    Log {
        #[command(subcommand)]
        command: crate::logcli::LogCommand,
    },
}

/// Flags of `chime serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory; the log lives in DIR/log/.
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Secret every /v1/* call must send in X-Hasura-Admin-Secret.
    #[arg(long, env = "CHIME_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,
    /// Listen on a non-loopback address without an admin secret.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Roll log segments at this many bytes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SEGMENT_BYTES,
          value_parser = clap::value_parser!(u64).range(MIN_SEGMENT_BYTES..=u32::MAX as u64))]
    pub segment_bytes: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Webhook calls in flight at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_IN_FLIGHT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Keep at most this many bytes of each webhook response in the invocation log.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RESPONSE_BODY_CAP)]
    pub response_body_cap: usize,
    /// Seconds in-flight deliveries may take to finish after SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
    pub shutdown_grace: f64,
    /// An event whose deliveries were cut short by a server stop this many
    /// times gives up (status error), so an event that crashes the server
    /// cannot loop forever.
    #[arg(long, value_name = "N", default_value_t = MAX_INTERRUPTED_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_interrupted_attempts: u32,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Only environment variables matching one of these `*` globs may be
    /// read by `{{VAR}}` and `value_from_env` (repeatable; CHIME_* and
    /// HASURA_GRAPHQL_* never).
    #[arg(
        long,
        value_name = "GLOB",
        env = "CHIME_WEBHOOK_ENV_ALLOW",
        value_delimiter = ','
    )]
    pub webhook_env_allow: Vec<String>,
}

impl ServeArgs {
    /// Resolves the flags into the server's configuration.
    pub fn into_config(self) -> ServeConfig {
        ServeConfig {
            data_dir: self.data_dir,
            listen: self.listen,
            admin_secret: self.admin_secret.filter(|s| !s.is_empty()),
            allow_unauthenticated: self.allow_unauthenticated,
            log: LogOptions::with_segment_bytes(self.segment_bytes),
            max_body_bytes: self.max_body_bytes,
            dispatch: DispatchConfig {
                max_in_flight: self.max_in_flight as usize,
                response_body_cap: self.response_body_cap,
                shutdown_grace: Duration::from_secs_f64(self.shutdown_grace.max(0.0)),
                max_interrupted_attempts: self.max_interrupted_attempts,
            },
            tls: self.tls_cert.zip(self.tls_key),
            env_policy: crate::webhook::EnvPolicy {
                allow: self.webhook_env_allow,
            },
        }
    }
}
