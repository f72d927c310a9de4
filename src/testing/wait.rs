//! The one bounded wait: poll something observable until it holds.

use std::future::Future;
use std::time::Duration;

/// The longest a wait for a state takes by default.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a wait looks again.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, for at most [`WAIT`]; panics
/// naming `what` if it never does.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(WAIT, what, check).await
}

/// [`eventually`] with a deadline of `limit`.
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
