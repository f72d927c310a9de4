//! Command-line flags: parsed and checked here, resolved into library
//! configuration once ([`ServeArgs::into_config`]). The binary does nothing
//! else with them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::dispatch::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_PER_HOST, DEFAULT_MAX_WEBHOOK_TIMEOUT,
    DEFAULT_MIN_RETRY_INTERVAL, DEFAULT_RESPONSE_BODY_CAP, DEFAULT_SHUTDOWN_GRACE, DispatchConfig,
};
use crate::log::{DEFAULT_SEGMENT_BYTES, LogOptions, MIN_SEGMENT_BYTES};
use crate::record::MAX_INTERRUPTED_ATTEMPTS;
use crate::retention::DEFAULT_RETAIN_FINISHED;
use crate::server::{
    ConnLimits, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_HEADER_TIMEOUT, ServeConfig,
};

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
    Serve(Box<ServeArgs>),
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
    #[arg(
        long,
        value_name = "DIR",
        env = "CHIME_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", env = "CHIME_LISTEN", default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Secret every /v1/* call must send in X-Hasura-Admin-Secret.
    #[arg(long, env = "CHIME_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,
    /// Listen on a non-loopback address without an admin secret.
    #[arg(long, env = "CHIME_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Roll log segments at this many bytes.
    #[arg(long, value_name = "N", env = "CHIME_SEGMENT_BYTES", default_value_t = DEFAULT_SEGMENT_BYTES,
          value_parser = clap::value_parser!(u64).range(MIN_SEGMENT_BYTES..=u32::MAX as u64))]
    pub segment_bytes: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, value_name = "N", env = "CHIME_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Webhook calls in flight at once.
    #[arg(long, value_name = "N", env = "CHIME_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Keep at most this many bytes of each webhook response in the invocation log.
    #[arg(long, value_name = "N", env = "CHIME_RESPONSE_BODY_CAP", default_value_t = DEFAULT_RESPONSE_BODY_CAP)]
    pub response_body_cap: usize,
    /// Seconds in-flight deliveries may take to finish after SIGTERM.
    #[arg(long, value_name = "SECONDS", env = "CHIME_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
    pub shutdown_grace: f64,
    /// An event whose deliveries were cut short by a server stop this many
    /// times gives up (status error), so an event that crashes the server
    /// cannot loop forever.
    #[arg(long, value_name = "N", env = "CHIME_MAX_INTERRUPTED_ATTEMPTS", default_value_t = MAX_INTERRUPTED_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_interrupted_attempts: u32,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(
        long,
        value_name = "FILE",
        env = "CHIME_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "CHIME_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// A browser origin (SCHEME://HOST[:PORT]) besides the server's own
    /// whose pages may call /v1/*; repeatable. Others get 403.
    #[arg(long, value_name = "ORIGIN", env = "CHIME_ALLOW_ORIGIN", value_delimiter = ',',
          value_parser = crate::api::parse_origin)]
    pub allow_origin: Vec<String>,
    /// Also serve HTTP/2 prior knowledge (h2c); HTTP/1.1 only without it.
    #[arg(long, env = "CHIME_HTTP2")]
    pub http2: bool,
    /// Connections held open at once; past it (or past what the open-file
    /// limit leaves after a reserve for deliveries) nothing more is accepted.
    #[arg(long, value_name = "N", env = "CHIME_MAX_CONNECTIONS",
          default_value_t = DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Time a client has to send a request's head (and a TLS handshake);
    /// also how long a kept-alive HTTP/1.1 connection waits for its next
    /// request.
    #[arg(long, value_name = "DURATION", env = "CHIME_REQUEST_HEADER_TIMEOUT",
          default_value_t = DurationArg(DEFAULT_REQUEST_HEADER_TIMEOUT))]
    pub request_header_timeout: DurationArg,
    /// A connection silent this long either way is closed.
    #[arg(long, value_name = "DURATION", env = "CHIME_IDLE_TIMEOUT",
          default_value_t = DurationArg(DEFAULT_IDLE_TIMEOUT))]
    pub idle_timeout: DurationArg,
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
    /// No retry comes sooner than this after a failed attempt, whatever
    /// `retry_interval_seconds` or a `Retry-After` says.
    #[arg(long, value_name = "DURATION", env = "CHIME_MIN_RETRY_INTERVAL",
          default_value_t = DurationArg(DEFAULT_MIN_RETRY_INTERVAL))]
    pub min_retry_interval: DurationArg,
    /// The longest one attempt waits for its webhook; a larger
    /// `timeout_seconds` is cut down to it.
    #[arg(long, value_name = "DURATION", env = "CHIME_MAX_WEBHOOK_TIMEOUT",
          default_value_t = DurationArg(DEFAULT_MAX_WEBHOOK_TIMEOUT))]
    pub max_webhook_timeout: DurationArg,
    /// Webhook calls in flight at once to one `host:port` (at most
    /// --max-in-flight; a larger value is cut down to it), so a slow host
    /// cannot take every slot.
    #[arg(long, value_name = "N", env = "CHIME_MAX_IN_FLIGHT_PER_HOST",
          default_value_t = DEFAULT_MAX_IN_FLIGHT_PER_HOST,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight_per_host: u32,
    /// The `User-Agent` header of every webhook call (default
    /// `chime/<version>`); e.g. `hasura-graphql-engine/v2.48.10` for
    /// receivers that check it.
    #[arg(long, value_name = "S", env = "CHIME_USER_AGENT", value_parser = parse_user_agent)]
    pub user_agent: Option<String>,
    /// How long a delivered, error or dead event (and its invocation logs)
    /// stays in every API view after it finished; `0` keeps them forever.
    #[arg(long, value_name = "DURATION", env = "CHIME_RETAIN_FINISHED",
          default_value_t = DurationOrNever(Some(DEFAULT_RETAIN_FINISHED)))]
    pub retain_finished: DurationOrNever,
    /// How often the log is compacted in the background: segments holding
    /// only records of cancelled or retired events are deleted, and the
    /// live records of mostly such segments carried into a smaller one;
    /// `0` never compacts (`chime log compact` still does, offline).
    #[arg(long, value_name = "DURATION", env = "CHIME_COMPACTION_INTERVAL",
          default_value_t = DurationOrNever(Some(crate::compaction::DEFAULT_COMPACTION_INTERVAL)))]
    pub compaction_interval: DurationOrNever,
    /// Write a snapshot of the replayed state after this many records (and
    /// at every clean stop), so that a restart replays at most about this
    /// many.
    #[arg(long, value_name = "N", env = "CHIME_SNAPSHOT_EVERY",
          default_value_t = crate::snapshot::DEFAULT_SNAPSHOT_EVERY,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
    /// How the server's log lines on stderr are written: `text` for people,
    /// `json` for log shippers (one object per line: timestamp, level,
    /// target, and fields with the message).
    #[arg(long, value_name = "FORMAT", env = "CHIME_LOG_FORMAT",
          value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A Standard Webhooks signing secret, `whsec_<base64 key>`: every
    /// webhook call is then signed (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`). Repeat it (or separate the variable's values
    /// with commas) to sign with each key during a rotation. Prefer the
    /// variable: a command line is visible to other users of the machine.
    #[arg(
        long,
        value_name = "whsec_KEY",
        env = "CHIME_SIGNING_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub signing_secret: Vec<crate::signing::SigningSecret>,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up the process's `tracing` output on stderr in `format`, at the
/// level `RUST_LOG` asks for (`info` when it is unset or does not parse).
/// Text gets colours only on a terminal; JSON never does.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// `--retain-finished` and `--compaction-interval`: a duration as the other
/// duration flags read it, or `0` for never (`None`): keep finished events
/// forever, never compact in the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationOrNever(pub Option<Duration>);

impl std::str::FromStr for DurationOrNever {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, DurationError> {
        if text == "0" {
            return Ok(DurationOrNever(None));
        }
        parse_duration(text).map(|d| DurationOrNever(Some(d)))
    }
}

impl std::fmt::Display for DurationOrNever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => f.write_str(&format_duration(d)),
            None => f.write_str("0"),
        }
    }
}

/// A `--user-agent` value: one HTTP accepts in a header (no control
/// characters), not empty.
fn parse_user_agent(s: &str) -> Result<String, String> {
    if s.is_empty() || http::HeaderValue::from_str(s).is_err() {
        return Err("expected a non-empty header value without control characters".into());
    }
    Ok(s.to_owned())
}

/// A duration flag's value, read by [`parse_duration`] and shown (in
/// `--help`) by [`format_duration`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl std::str::FromStr for DurationArg {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, DurationError> {
        parse_duration(text).map(DurationArg)
    }
}

impl std::fmt::Display for DurationArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Errors of a duration flag.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error(
        "`{0}` is not a duration: write a whole number and a unit, as in 500ms, 10s, 5m, 2h, 7d"
    )]
    Syntax(String),
    #[error("`{0}` is too long a duration")]
    TooLong(String),
    #[error("a duration must be more than zero")]
    Zero,
}

/// Reads a duration flag: a whole number followed by `ms`, `s`, `m`, `h`
/// or `d` (`500ms`, `10s`, `5m`, `7d`), more than zero.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_owned());
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(syntax)?;
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().map_err(|_| syntax())?;
    let millis_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(syntax()),
    };
    let millis = n
        .checked_mul(millis_per)
        .ok_or_else(|| DurationError::TooLong(text.to_owned()))?;
    if millis == 0 {
        return Err(DurationError::Zero);
    }
    Ok(Duration::from_millis(millis))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest
/// unit that divides it (for the defaults shown in `--help`).
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis > 0 && millis.is_multiple_of(per) {
            return format!("{}{unit}", millis / per);
        }
    }
    format!("{millis}ms")
}

/// Whether `secret` (the resolved `--admin-secret`) was typed on the
/// command line rather than read from `CHIME_ADMIN_SECRET`.
fn admin_secret_on_command_line(secret: Option<&str>) -> bool {
    secret.is_some_and(|s| std::env::var("CHIME_ADMIN_SECRET").ok().as_deref() != Some(s))
}

impl ServeArgs {
    /// Resolves the flags into the server's configuration.
    pub fn into_config(self) -> ServeConfig {
        let admin_secret_on_command_line =
            admin_secret_on_command_line(self.admin_secret.as_deref());
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
                min_retry_interval: self.min_retry_interval.0,
                max_webhook_timeout: self.max_webhook_timeout.0,
                // Widening, as for max_in_flight; a per-host share larger
                // than the whole is the whole.
                max_in_flight_per_host: self.max_in_flight_per_host.min(self.max_in_flight)
                    as usize,
                user_agent: self.user_agent.unwrap_or_else(crate::webhook::user_agent),
                signing: crate::signing::SigningKeys::new(&self.signing_secret),
            },
            tls: self.tls_cert.zip(self.tls_key),
            allow_origins: self.allow_origin,
            http2: self.http2,
            // The flag wins over the variable, so a value that differs from
            // the variable's came from the command line.
            admin_secret_on_command_line,
            conn: ConnLimits {
                max_connections: self.max_connections as usize,
                request_header_timeout: self.request_header_timeout.0,
                idle_timeout: self.idle_timeout.0,
                body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            },
            env_policy: crate::webhook::EnvPolicy {
                allow: self.webhook_env_allow,
            },
            retain_finished: self.retain_finished.0,
            retire_every: crate::retention::DEFAULT_RETIRE_EVERY,
            snapshot_every: self.snapshot_every,
            compaction_interval: self.compaction_interval.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_config(args: &[&str]) -> ServeConfig {
        let cli = Cli::try_parse_from(["chime", "serve"].iter().chain(args)).unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        serve.into_config()
    }

    /// interface.md: every serve flag is also `CHIME_<FLAG>`.
    #[test]
    fn every_serve_flag_reads_its_chime_variable() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("a serve command");
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let want = format!("CHIME_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "--{long}"
            );
        }
    }

    #[test]
    fn user_agent_reaches_the_dispatcher_and_a_bad_one_is_refused() {
        assert_eq!(
            serve_config(&[]).dispatch.user_agent,
            crate::webhook::user_agent()
        );
        let set = serve_config(&["--user-agent", "probe/1"]);
        assert_eq!(set.dispatch.user_agent, "probe/1");
        for bad in ["", "a\nb"] {
            assert!(
                Cli::try_parse_from(["chime", "serve", "--user-agent", bad]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn delivery_limit_flags_reach_the_dispatcher() {
        let defaults = serve_config(&[]).dispatch;
        assert_eq!(defaults.min_retry_interval, DEFAULT_MIN_RETRY_INTERVAL);
        assert_eq!(defaults.max_webhook_timeout, Duration::from_secs(1800));
        assert_eq!(defaults.max_in_flight_per_host, 64);
        let set = serve_config(&[
            "--min-retry-interval",
            "500ms",
            "--max-webhook-timeout",
            "1s",
            "--max-in-flight-per-host",
            "3",
        ])
        .dispatch;
        assert_eq!(set.min_retry_interval, Duration::from_millis(500));
        assert_eq!(set.max_webhook_timeout, Duration::from_secs(1));
        assert_eq!(set.max_in_flight_per_host, 3);
        // A host's share is never more than the whole.
        let capped = serve_config(&["--max-in-flight", "4"]).dispatch;
        assert_eq!(capped.max_in_flight_per_host, 4);
        assert!(Cli::try_parse_from(["chime", "serve", "--max-in-flight-per-host", "0"]).is_err());
    }

    #[test]
    fn retain_finished_defaults_to_30_days_and_0_keeps_forever() {
        assert_eq!(
            serve_config(&[]).retain_finished,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            serve_config(&["--retain-finished", "7d"]).retain_finished,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            serve_config(&["--retain-finished", "90m"]).retain_finished,
            Some(Duration::from_secs(90 * 60))
        );
        assert_eq!(
            serve_config(&["--retain-finished", "0"]).retain_finished,
            None
        );
        assert_eq!(
            serve_config(&[]).compaction_interval,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            serve_config(&["--compaction-interval", "0"]).compaction_interval,
            None
        );
        for bad in ["", "0s", "7", "-1d", "1.5d"] {
            assert!(
                Cli::try_parse_from(["chime", "serve", "--retain-finished", bad]).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(DurationOrNever(None).to_string(), "0");
        assert_eq!(
            DurationOrNever(Some(DEFAULT_RETAIN_FINISHED)).to_string(),
            "30d"
        );
    }

    #[test]
    fn durations_read_and_write_back() {
        for (text, d) in [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7_200)),
            ("7d", Duration::from_secs(7 * 86_400)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), d, "{text}");
            assert_eq!(format_duration(d), text);
        }
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "10sec", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("99999999999999999d").is_err());
    }
}
