//! Times as the API reads and shows them, and a port nobody listens on.

use serde_json::Value;

/// An ISO 8601 UTC time `seconds` from now (negative: in the past).
pub fn from_now(seconds: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds)).to_string()
}

/// Now plus `seconds`, to the microsecond (what chime keeps).
pub fn in_seconds(seconds: f64) -> jiff::Timestamp {
    let now = jiff::Timestamp::now().as_microsecond();
    jiff::Timestamp::from_microsecond(now + (seconds * 1e6) as i64).unwrap()
}

/// Parses a time as the API shows it.
pub fn ts(value: &Value) -> jiff::Timestamp {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap()
}

/// Seconds from `a` to `b` (negative when `b` is earlier).
pub fn secs_between(a: jiff::Timestamp, b: jiff::Timestamp) -> f64 {
    (b.as_microsecond() - a.as_microsecond()) as f64 / 1e6
}

/// A port that was bound and released: nothing listens there, so a
/// connection to it is refused, and a child process may bind it.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
