//! chime calls an HTTP webhook at a chosen moment, reliably: Hasura's
//! one-off scheduled events, rebuilt as an event-sourced service on an
//! append-only log.
//!
//! # Layout
//! Modules in plain code font are internal: public only with the
//! `internals` feature (tests, benches, fuzz targets).
//! - [`log`]: the segmented append-only log. Bytes and sequence numbers,
//!   not events: frames, segments, group commit, recovery.
//! - [`record`]: the records (every action chime takes) and their encoding,
//!   the one place that knows it is postcard.
//! - `projection`: pure state machine over records: statuses, the
//!   dispatch queue, invocation logs. No IO, no clock.
//! - `service`: the log plus its projections; the one append-then-apply path.
//! - `retention`: the task that retires finished events after
//!   `--retain-finished`, by appending a record; reads the clock.
//! - `hasura`: Hasura's metadata API: parsing, validation, rendering. No IO.
//! - `webhook`: webhook URL templates, the body and the request to send,
//!   shared by validation at create and by delivery.
//! - `api`: the HTTP handlers (axum).
//! - `console`: the web console at `/console`: embedded HTML, CSS and JS
//!   that use only the public API.
//! - `dispatch`: fires due events with reqwest; retries, tolerance,
//!   timeouts; its `Wakeup` is owned by the service and signalled from
//!   `append`.
//! - [`server`]: `chime serve`: lock, replay, serve, stop.
//! - [`datadir`]: the data directory's layout and lock.
//! - [`tls`]: rustls (ring) for the server.
//! - [`clock`]: injected time.
//! - [`cli`]: command-line flags.
//! - [`logcli`]: `chime log dump | stats | verify | repair`: flags and
//!   printing only, over the log's scan, reader and repair plan.
//! - [`error`]: the one IO error shape shared by the log and the data dir.
//! - `testing` (feature `testing`, for tests and benches only): servers,
//!   client, receiver, waits and a fault-injecting file system.
// A panic in the service is a bug; `unwrap` outside tests must say why it
// cannot fail (and use `expect`), so it is denied here.
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// The memory map (log::fs) is the one place that needs `unsafe`; each use
// carries a SAFETY comment.
#![deny(unsafe_op_in_unsafe_fn)]

/// Declares modules that are private, or public with the `internals`
/// feature (tests, benches, fuzz), so that one list says which they are.
macro_rules! internal_modules {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

// What the binary and every user of the library needs.
pub mod cli;
pub mod clock;
pub mod datadir;
pub mod error;
pub mod log;
pub mod logcli;
pub mod record;
pub mod server;
pub mod signing;
pub mod snapshot;
pub mod tls;

internal_modules! {
    api;
    compaction;
    console;
    dispatch;
    hasura;
    projection;
    retention;
    service;
    webhook;
}

/// Test support for the integration tests and benches (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing;
