//! Test support, shared by the integration tests (`tests/`) and the
//! benches (`benches/`): chime in-process ([`TestServer`]) or as a child
//! process ([`ChildServer`]), a client of its metadata API ([`ApiClient`]),
//! a webhook receiver that records and answers from a script
//! ([`Receiver`]), the one bounded wait ([`eventually`]), times, a seeded
//! generator, raw connections for the connection limits ([`conn`]), a
//! fault-injecting file system ([`faultfs`]) and a second hold on fsyncs
//! ([`gate`]), the fuzz targets' checks ([`fuzz`]), appends queued behind
//! it ([`append`]), a hold on one appender's wake-up ([`wake`]), the
//! decoded records of a data directory's log ([`records_in`],
//! [`record_counts`]) and the benches' knobs ([`bench`]).
//!
//! Compiled only with the `testing` feature, which the tests and benches
//! switch on through chime's self dev-dependency; it is never in a release
//! build. Record fixtures live beside the records, in
//! [`crate::record::fixtures`].
//!
//! Nothing here sleeps to let things settle: every wait polls something
//! observable (the API, the receiver's count) with a deadline and fails
//! loudly. Setup that fails panics, failing the test that asked for it.
// Test support: a failed setup step is the calling test's failure, so
// panicking on it (unwrap included) is the point, as in `cfg(test)` code.
#![allow(clippy::unwrap_used)]

pub mod append;
pub mod bench;
mod child;
mod client;
pub mod conn;
pub mod faultfs;
pub mod fuzz;
pub mod gate;
mod receiver;
mod records;
mod rng;
mod server;
mod time;
mod wait;
pub mod wake;

pub use child::{ChildServer, chime_binary, log_verify, serve_to_exit};
pub use client::{
    ApiClient, EVENT_KEYS, client_error, h2c_client, http_client, https_client,
    is_connection_error, only_invocation, raw_exchange, read, stored_response_bytes,
};
pub use conn::self_signed_cert;
pub use receiver::{Received, Receiver, Reply, gzip_stored};
pub use records::{record_count, record_counts, records_in, replay_all};
pub use rng::{Rng, announce_seed, seed_from_env};
pub use server::TestServer;
pub use time::{free_port, from_now, in_seconds, secs_between, ts};
pub use wait::{WAIT, eventually, eventually_within};

/// An event header by this name makes the dispatcher's call panic, in a
/// build with the `testing` feature only: the create-time rules leave no
/// real input that does, and the catch around the call needs a test.
pub const PANIC_HEADER: &str = "x-chime-testing-panic";
