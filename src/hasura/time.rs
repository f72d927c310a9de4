//! Times as requests spell them: `schedule_at` parsed into UTC
//! microseconds, with exactly the grammar Hasura accepts.

use crate::record::UnixMicros;

/// The most fraction digits Hasura reads in a time (picoseconds).
const MAX_FRACTION_DIGITS: usize = 12;
/// The largest zone offset Hasura accepts, in minutes (±14:00).
const MAX_OFFSET_MINUTES: i32 = 14 * 60;

/// Parses `schedule_at` into UTC microseconds.
///
/// Exactly the grammar Hasura v2.48 accepts (docs: hasura-compat.md):
/// `YYYY-MM-DD` (`T` | ` `) `HH:MM` [`:SS` [`.fraction`]] zone, where the
/// fraction has 1 to 12 digits and the zone, directly after the time, is
/// `Z`, `±HH`, `±HHMM` or `±HH:MM` with an offset of at most ±14:00. A
/// zone is required; lower-case `t` and `z`, a space before the zone and
/// a date alone are refused. A second of 60 (a leap second, `23:59:60`) is
/// accepted and counts as the first second of the next minute, as Hasura's
/// time library reads it. A hand-written grammar rather than jiff's
/// parser, which takes forms Hasura refuses (basic `20200101T...`, `[UTC]`
/// annotations, date only); jiff checks the calendar (no February 30th)
/// and applies the offset. The result is floored to microseconds.
pub(super) fn parse_time(text: &str) -> Option<UnixMicros> {
    let mut p = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let year = p.digits(4)?;
    p.eat(b'-').then_some(())?;
    let month = p.digits(2)?;
    p.eat(b'-').then_some(())?;
    let day = p.digits(2)?;
    (p.eat(b'T') || p.eat(b' ')).then_some(())?;
    let hour = p.digits(2)?;
    p.eat(b':').then_some(())?;
    let minute = p.digits(2)?;
    let (mut second, mut nanos) = (0, 0);
    if p.eat(b':') {
        second = p.digits(2)?;
        if p.eat(b'.') {
            let start = p.at;
            let mut scale = 100_000_000;
            while let Some(d) = p.digit() {
                nanos += d * scale;
                scale /= 10;
            }
            let digits = p.at - start;
            if digits == 0 || digits > MAX_FRACTION_DIGITS {
                return None;
            }
        }
    }
    let offset_seconds = if p.eat(b'Z') {
        0
    } else {
        let sign = if p.eat(b'+') {
            1
        } else if p.eat(b'-') {
            -1
        } else {
            return None;
        };
        let hours = p.digits(2)?;
        let minutes = if p.eat(b':') {
            p.digits(2)?
        } else if p.at_end() {
            0
        } else {
            p.digits(2)?
        };
        if minutes > 59 || hours * 60 + minutes > MAX_OFFSET_MINUTES {
            return None;
        }
        sign * (hours * 3600 + minutes * 60)
    };
    if !p.at_end() {
        return None;
    }
    // A leap second is read as second 59 plus one second.
    let leap = second == 60;
    let civil = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(if leap { 59 } else { second }).ok()?,
        nanos,
    )
    .ok()?;
    let offset = jiff::tz::Offset::from_seconds(offset_seconds).ok()?;
    let mut instant = offset.to_timestamp(civil).ok()?;
    if leap {
        instant = instant.checked_add(jiff::SignedDuration::from_secs(1)).ok()?;
    }
    Some(UnixMicros::from_timestamp(instant))
}

/// A read position in the text being parsed.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.bytes.get(self.at) == Some(&b);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn digit(&mut self) -> Option<i32> {
        let b = *self.bytes.get(self.at)?;
        b.is_ascii_digit().then(|| {
            self.at += 1;
            i32::from(b - b'0')
        })
    }

    /// Exactly `n` digits (n ≤ 4, so the value fits an i32).
    fn digits(&mut self, n: usize) -> Option<i32> {
        (0..n).try_fold(0, |acc, _| Some(acc * 10 + self.digit()?))
    }
}
