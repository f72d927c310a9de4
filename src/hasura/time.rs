//! Times as requests spell them: `schedule_at` parsed into UTC
//! microseconds, with the grammar Hasura accepts and hardly more.

use crate::record::UnixMicros;

/// Parses `schedule_at` into UTC microseconds.
///
/// The grammar is the one Hasura's JSON library (aeson) reads times with,
/// so chime accepts what Hasura accepts and hardly more:
/// `YYYY-MM-DD` (`T` | ` `) `HH:MM` [`:SS` [`.fraction`]] [` `] [zone], where
/// zone is `Z`, `±HH`, `±HHMM` or `±HH:MM`, and no zone means UTC. The only
/// extras are lowercase `t` and `z`, which RFC 3339 allows. A hand-written
/// grammar rather than jiff's Temporal parser, because that one also takes
/// forms Hasura refuses (basic `20200101T...`, `[UTC]` annotations, date
/// only). jiff checks the calendar (no February 30th, no leap second) and
/// applies the offset. Digits beyond nanoseconds are dropped; the result is
/// floored to microseconds.
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
    (p.eat(b'T') || p.eat(b't') || p.eat(b' ')).then_some(())?;
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
            if p.at == start {
                return None;
            }
        }
    }
    let spaced = p.eat(b' ');
    let offset_seconds = if p.at_end() {
        if spaced {
            return None;
        }
        0
    } else if p.eat(b'Z') || p.eat(b'z') {
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
        if hours > 23 || minutes > 59 {
            return None;
        }
        sign * (hours * 3600 + minutes * 60)
    };
    if !p.at_end() {
        return None;
    }
    let civil = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    let offset = jiff::tz::Offset::from_seconds(offset_seconds).ok()?;
    let instant = offset.to_timestamp(civil).ok()?;
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
