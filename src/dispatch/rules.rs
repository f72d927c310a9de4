//! The rules that decide an attempt's outcome, as pure functions of times,
//! the event's retry configuration and the webhook's answer: too late
//! ([`expired`]), delivered ([`succeeded`]: the one 2xx rule), when to try
//! again ([`next_retry_at`], [`retry_after`]). No IO and no clock: callers
//! pass "now", and the tests below use explicit times.

use std::time::Duration;

use http::HeaderMap;

use crate::record::{Backoff, InvocationResponse, RetryConf, Seconds, UnixMicros};

/// Whether an event is too late to send at `now`.
pub fn expired(schedule_at: UnixMicros, retry: &RetryConf, now: UnixMicros) -> bool {
    now.0.saturating_sub(schedule_at.0) > retry.tolerance_seconds.as_micros_i64()
}

/// Whether the webhook's answer delivers the event: any 2xx. Anything
/// else (another status, no answer at all) is a failed attempt.
pub fn succeeded(response: &InvocationResponse) -> bool {
    matches!(response, InvocationResponse::Webhook { status, .. } if (200..300).contains(status))
}

/// When to try again after a failed attempt, or `None` when no tries are
/// left. `tries` counts attempts made including the one that just failed;
/// `retry_after` is a `Retry-After` the webhook sent, which replaces the
/// configured interval.
///
/// No retry comes sooner than `min_interval` after the failure, whatever
/// the event asks (`retry_interval_seconds` 0) or the webhook says: an
/// event with a huge `num_retries` would otherwise retry in a busy loop
/// and fill the log (`--min-retry-interval`).
///
/// The wait before retry number `tries` (1 for the first) comes from the
/// event's backoff ([`retry_interval`]); `jitter` in `0.0..1.0` takes up to
/// 10% off an exponential one, so that events that failed together do not
/// all retry at once.
///
/// A retry never waits past the first instant the event is too late
/// (`schedule_at + tolerance_seconds`, plus a microsecond): by then it
/// would be `dead` at its next try anyway, and a huge `Retry-After` would
/// otherwise park it as `scheduled` for centuries.
pub fn next_retry_at(
    retry: &RetryConf,
    schedule_at: UnixMicros,
    tries: u32,
    now: UnixMicros,
    retry_after: Option<u64>,
    min_interval: Duration,
    jitter: f64,
) -> Option<UnixMicros> {
    let too_late = UnixMicros(
        schedule_at
            .plus(retry.tolerance_seconds)
            .0
            .saturating_add(1),
    );
    let asked = now.plus(retry_after.map_or_else(
        || retry_interval(retry, tries, jitter),
        Seconds::whole,
    ));
    let min_micros = i64::try_from(min_interval.as_micros()).unwrap_or(i64::MAX);
    let earliest = UnixMicros(now.0.saturating_add(min_micros));
    // The tolerance still wins: at `too_late` the event is only found dead,
    // nothing is sent, so the minimum interval is kept either way.
    (tries <= retry.num_retries).then(|| asked.max(earliest).min(too_late))
}

/// How long retry number `tries` (1 for the first) waits by the event's
/// backoff: `retry_interval_seconds` when fixed; when exponential,
/// `min(max_retry_interval_seconds, retry_interval_seconds × 2^(tries−1))`
/// less `jitter` (`0.0..1.0`, clamped) times 10% of it.
pub fn retry_interval(retry: &RetryConf, tries: u32, jitter: f64) -> Seconds {
    match retry.backoff {
        Backoff::Fixed => retry.retry_interval_seconds,
        Backoff::Exponential => {
            let doublings = tries.saturating_sub(1).min(63);
            let grown = retry
                .retry_interval_seconds
                .as_micros()
                .saturating_mul(1u64 << doublings);
            let capped = grown.min(retry.max_retry_interval_seconds.as_micros());
            // At most a tenth off; `as` saturates a float outside u64's range.
            let off = (capped as f64 * 0.1 * jitter.clamp(0.0, 1.0)) as u64;
            Seconds::from_micros(capped - off.min(capped))
        }
    }
}

/// A `Retry-After` value in whole seconds greater than zero; anything else
/// (an HTTP date, zero, garbage) is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&s| s > 0)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue as HttpHeaderValue;

    use super::*;

    const S: i64 = 1_000_000;

    /// No minimum retry interval, for the rules that do not test it.
    const NO_MIN: Duration = Duration::ZERO;

    fn conf(num_retries: u32) -> RetryConf {
        RetryConf {
            num_retries,
            ..RetryConf::default()
        }
    }

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap_less_up_to_a_tenth() {
        let retry = RetryConf {
            num_retries: 10,
            retry_interval_seconds: Seconds::whole(10),
            backoff: Backoff::Exponential,
            max_retry_interval_seconds: Seconds::whole(60),
            ..RetryConf::default()
        };
        let waits: Vec<Seconds> = (1..=5).map(|n| retry_interval(&retry, n, 0.0)).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60].map(Seconds::whole));
        // Jitter takes off at most a tenth, never adds.
        assert_eq!(retry_interval(&retry, 2, 0.5), Seconds::whole(19));
        assert_eq!(retry_interval(&retry, 2, 0.999_999), Seconds::from_micros(18_000_002));
        assert_eq!(retry_interval(&retry, 2, 7.0), Seconds::whole(18));
        assert_eq!(retry_interval(&retry, 2, -1.0), Seconds::whole(20));
        // Huge retry numbers saturate at the cap.
        assert_eq!(retry_interval(&retry, u32::MAX, 0.0), Seconds::whole(60));
        // Fixed ignores the retry number and the jitter: Hasura's rule.
        let fixed = RetryConf {
            backoff: Backoff::Fixed,
            ..retry
        };
        assert_eq!(retry_interval(&fixed, 5, 0.9), Seconds::whole(10));
        // Through next_retry_at: Retry-After still wins, and the tolerance
        // still ends it.
        let (at, now) = (UnixMicros(1_000 * S), UnixMicros(1_000 * S));
        assert_eq!(
            next_retry_at(&retry, at, 3, now, None, NO_MIN, 0.0),
            Some(UnixMicros(1_040 * S))
        );
        assert_eq!(
            next_retry_at(&retry, at, 3, now, Some(2), NO_MIN, 0.0),
            Some(UnixMicros(1_002 * S))
        );
        let short = RetryConf {
            tolerance_seconds: Seconds::whole(30),
            ..retry
        };
        assert_eq!(
            next_retry_at(&short, at, 3, now, None, NO_MIN, 0.0),
            Some(UnixMicros(1_030 * S + 1))
        );
    }

    #[test]
    fn tolerance_is_strictly_greater_than() {
        let retry = RetryConf {
            tolerance_seconds: Seconds::whole(60),
            ..RetryConf::default()
        };
        let at = UnixMicros(1000 * S);
        assert!(!expired(at, &retry, UnixMicros(1000 * S)));
        assert!(!expired(at, &retry, UnixMicros(1060 * S)));
        assert!(expired(at, &retry, UnixMicros(1060 * S + 1)));
        // Early is never expired.
        assert!(!expired(at, &retry, UnixMicros(0)));
        // Created in 2020 with the default 6 h tolerance: dead.
        let y2020 = UnixMicros(1_577_836_800 * S);
        assert!(expired(
            y2020,
            &RetryConf::default(),
            UnixMicros(1_800_000_000 * S)
        ));
    }

    #[test]
    fn only_a_2xx_answer_succeeds() {
        let answer = |status| InvocationResponse::Webhook {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            truncated: false,
        };
        assert!(succeeded(&answer(200)));
        assert!(succeeded(&answer(299)));
        assert!(!succeeded(&answer(199)));
        assert!(!succeeded(&answer(300)));
        assert!(!succeeded(&answer(503)));
        assert!(!succeeded(&InvocationResponse::ClientError {
            message: "connection refused".into()
        }));
    }

    #[test]
    fn retries_until_num_retries_plus_one_tries() {
        let now = UnixMicros(50 * S);
        let at = UnixMicros(40 * S);
        // num_retries 1: after the first failure retry in 10 s, after the second give up.
        assert_eq!(
            next_retry_at(&conf(1), at, 1, now, None, NO_MIN, 0.0),
            Some(UnixMicros(60 * S))
        );
        assert_eq!(next_retry_at(&conf(1), at, 2, now, None, NO_MIN, 0.0), None);
        // num_retries 0 (the default): the first failure is final.
        assert_eq!(next_retry_at(&conf(0), at, 1, now, None, NO_MIN, 0.0), None);
        // Retry-After replaces the interval.
        assert_eq!(
            next_retry_at(&conf(3), at, 1, now, Some(7), NO_MIN, 0.0),
            Some(UnixMicros(57 * S))
        );
    }

    #[test]
    fn a_retry_never_waits_past_the_tolerance() {
        let retry = RetryConf {
            num_retries: 5,
            tolerance_seconds: Seconds::whole(60),
            ..RetryConf::default()
        };
        let at = UnixMicros(1000 * S);
        let now = UnixMicros(1050 * S);
        let too_late = UnixMicros(1060 * S + 1);
        // A Retry-After of ~292,000 years is cut to the tolerance...
        let next = next_retry_at(&retry, at, 1, now, Some(9_223_372_036_854), NO_MIN, 0.0).unwrap();
        assert_eq!(next, too_late);
        // ...where the event is expired, so the next look makes it dead.
        assert!(expired(at, &retry, next));
        assert!(!expired(at, &retry, UnixMicros(next.0 - 1)));
        // Within the tolerance nothing changes.
        assert_eq!(
            next_retry_at(&retry, at, 1, now, Some(5), NO_MIN, 0.0),
            Some(UnixMicros(1055 * S))
        );
    }

    #[test]
    fn no_retry_comes_sooner_than_the_minimum_interval() {
        let retry = RetryConf {
            num_retries: 1000,
            retry_interval_seconds: Seconds::whole(0),
            tolerance_seconds: Seconds::whole(3600),
            ..RetryConf::default()
        };
        let at = UnixMicros(1000 * S);
        let now = UnixMicros(1010 * S);
        let min = Duration::from_millis(500);
        // An interval of 0 waits the minimum...
        assert_eq!(
            next_retry_at(&retry, at, 3, now, None, min, 0.0),
            Some(UnixMicros(1010 * S + S / 2))
        );
        // ...and so does a Retry-After shorter than it...
        assert_eq!(
            next_retry_at(&retry, at, 3, now, Some(1), Duration::from_secs(5), 0.0),
            Some(UnixMicros(1015 * S))
        );
        // ...while a longer interval or Retry-After is kept.
        assert_eq!(
            next_retry_at(&retry, at, 3, now, Some(7), min, 0.0),
            Some(UnixMicros(1017 * S))
        );
        let slow = RetryConf {
            retry_interval_seconds: Seconds::whole(20),
            ..retry
        };
        assert_eq!(
            next_retry_at(&slow, at, 3, now, None, min, 0.0),
            Some(UnixMicros(1030 * S))
        );
        // The tolerance still ends it: at its end the event is dead, not sent.
        let short = RetryConf {
            tolerance_seconds: Seconds::whole(10),
            ..retry
        };
        let too_late = UnixMicros(1010 * S + 1);
        assert_eq!(
            next_retry_at(&short, at, 3, now, None, min, 0.0),
            Some(too_late)
        );
        assert!(expired(at, &short, too_late));
    }

    #[test]
    fn retry_after_takes_positive_integer_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HttpHeaderValue::from_static(" 5 "));
        assert_eq!(retry_after(&h), Some(5));
        h.insert("retry-after", HttpHeaderValue::from_static("0"));
        assert_eq!(retry_after(&h), None);
        h.insert(
            "retry-after",
            HttpHeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
