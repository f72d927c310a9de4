//! Reading a request's JSON with paths: a [`Field`] is a value still as raw
//! text together with the JSON path it was found at, and an [`Obj`] is an
//! object's members in document order. Every reader names its own path in
//! the error it returns, so no caller passes paths around. (The shape of
//! mini-redis's `Parse`: a cursor over a frame with typed `next_*` readers.)

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::ApiError;
use crate::record::{EventId, Seconds};
use crate::webhook::is_identifier;

/// A JSON value, unparsed, and where it is in the request.
pub(super) struct Field<'a> {
    raw: &'a RawValue,
    /// `$`, `$.args.headers[1]`, ...: what errors about this value name.
    path: String,
}

impl<'a> Field<'a> {
    /// The whole request body.
    pub(super) fn root(raw: &'a RawValue) -> Self {
        Field {
            raw,
            path: "$".to_owned(),
        }
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// The value's exact text as sent.
    pub(super) fn text(&self) -> &'a str {
        self.raw.get()
    }

    /// The value as an object; `what` says what was expected instead.
    pub(super) fn object(&self, what: &str) -> Result<Obj<'a>, ApiError> {
        let RawFields(fields) = serde_json::from_str(self.raw.get())
            .map_err(|_| self.parse_failed(format!("expected {what}")))?;
        Ok(Obj {
            path: self.path.clone(),
            fields,
        })
    }

    /// The value as an array, each element at `path[i]`; `expected` is the
    /// whole message when it is not one.
    pub(super) fn array(&self, expected: &str) -> Result<Vec<Field<'a>>, ApiError> {
        let items: Vec<&RawValue> =
            serde_json::from_str(self.raw.get()).map_err(|_| self.parse_failed(expected))?;
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| Field {
                raw,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    pub(super) fn string(&self) -> Result<String, ApiError> {
        serde_json::from_str(self.raw.get()).map_err(|_| self.parse_failed("expected a string"))
    }

    pub(super) fn bool(&self) -> Result<bool, ApiError> {
        serde_json::from_str(self.raw.get()).map_err(|_| self.parse_failed("expected a boolean"))
    }

    pub(super) fn uuid(&self) -> Result<EventId, ApiError> {
        let text = self.string()?;
        // A string that is not a UUID names no event, but it is the request
        // that is malformed, so this is `parse-failed` rather than `not-found`.
        EventId::parse_str(&text)
            .map_err(|_| self.parse_failed(format!("{} is not a UUID", Value::from(text.as_str()))))
    }

    /// A span of seconds, as Hasura reads `retry_conf`'s: any JSON number
    /// that is 0 or more, fractional or with an exponent (`1.5`, `15e-1`),
    /// kept to the microsecond (finer digits are cut); longer than
    /// [`Seconds`] holds, it saturates. Read from the exact text, not
    /// through a float, so `0.1` is 100,000 µs. Not a number, or negative:
    /// `parse-failed`.
    pub(super) fn seconds(&self) -> Result<Seconds, ApiError> {
        let text = self.raw.get();
        let not_a_span = || self.parse_failed("expected a number of seconds that is 0 or more");
        if text.starts_with('-') || serde_json::from_str::<serde_json::Number>(text).is_err() {
            return Err(not_a_span());
        }
        Ok(Seconds::from_micros(decimal_micros(text).ok_or_else(not_a_span)?))
    }

    /// A non-negative integer. Not a number, or a fraction: `parse-failed`.
    /// Negative, or too large for u64: `validation-failed`. An integral float
    /// such as `5.0` is accepted, as Hasura's Haskell parser accepts it.
    pub(super) fn uint(&self) -> Result<u64, ApiError> {
        let number: serde_json::Number = serde_json::from_str(self.raw.get())
            .map_err(|_| self.parse_failed("expected a non-negative integer"))?;
        if let Some(n) = number.as_u64() {
            return Ok(n);
        }
        let negative = || self.validation_failed(format!("must be 0 or more, got {number}"));
        if number.is_i64() {
            return Err(negative());
        }
        // Neither u64 nor i64: serde_json read it as a float.
        let f = number.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() || f.fract() != 0.0 {
            return Err(self.parse_failed("expected an integer"));
        }
        if f < 0.0 {
            return Err(negative());
        }
        // 2^64 is exactly representable; every integral f64 below it fits in u64.
        if f >= 18_446_744_073_709_551_616.0 {
            return Err(self.validation_failed("the number is too large"));
        }
        Ok(f as u64)
    }

    pub(super) fn u32(&self) -> Result<u32, ApiError> {
        let n = self.uint()?;
        u32::try_from(n)
            .map_err(|_| self.validation_failed(format!("must be at most {}, got {n}", u32::MAX)))
    }

    pub(super) fn usize(&self) -> Result<usize, ApiError> {
        let n = self.uint()?;
        usize::try_from(n).map_err(|_| self.validation_failed("the number is too large"))
    }

    /// The nesting depth of the value (see [`json_depth`]).
    pub(super) fn depth(&self) -> usize {
        json_depth(self.raw.get())
    }

    /// `parse-failed` at this value.
    pub(super) fn parse_failed(&self, error: impl Into<String>) -> ApiError {
        ApiError::parse_failed(&self.path, error)
    }

    /// `validation-failed` at this value.
    pub(super) fn validation_failed(&self, error: impl Into<String>) -> ApiError {
        ApiError::validation_failed(&self.path, error)
    }
}

/// The nesting depth of valid JSON text: 0 for a scalar, 1 for `[]`, ...
pub(super) fn json_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A JSON object's members in document order, values left as raw text.
///
/// Document order makes "the first error" well defined, and raw values let a
/// payload keep its exact text. Reading members one by one (rather than into
/// a `serde_json::Map`) is also what lets duplicates be noticed.
pub(super) struct Obj<'a> {
    path: String,
    fields: Vec<(String, &'a RawValue)>,
}

impl<'a> Obj<'a> {
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// The path of member `key`: `base.key`, or `base['key']` when the key is
    /// not a plain identifier, as Hasura writes paths.
    pub(super) fn key_path(&self, key: &str) -> String {
        if is_identifier(key) {
            format!("{}.{key}", self.path)
        } else {
            let escaped = key.replace('\\', "\\\\").replace('\'', "\\'");
            format!("{}['{escaped}']", self.path)
        }
    }

    /// Refuses duplicate keys and keys not in `allowed`; keys in
    /// `unsupported` are Hasura features chime refuses as `not-supported`.
    pub(super) fn check_keys(
        &self,
        allowed: &[&str],
        unsupported: &[&str],
    ) -> Result<(), ApiError> {
        let mut seen = HashSet::with_capacity(self.fields.len());
        for (key, _) in &self.fields {
            let key_path = self.key_path(key);
            if !seen.insert(key.as_str()) {
                return Err(ApiError::parse_failed(
                    key_path,
                    format!("duplicate key {}", Value::from(key.as_str())),
                ));
            }
            if allowed.contains(&key.as_str()) {
                continue;
            }
            if unsupported.contains(&key.as_str()) {
                return Err(ApiError::not_supported(
                    key_path,
                    format!("{} is not supported by chime", Value::from(key.as_str())),
                ));
            }
            return Err(ApiError::parse_failed(
                key_path,
                format!(
                    "unexpected key {}; expected one of: {}",
                    Value::from(key.as_str()),
                    allowed.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The value of `key`; `null` counts as absent, as Hasura reads optional
    /// arguments.
    pub(super) fn get(&self, key: &str) -> Option<Field<'a>> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| v.get().trim() != "null")
            .map(|raw| Field {
                raw,
                path: self.key_path(key),
            })
    }

    pub(super) fn required(&self, key: &str) -> Result<Field<'a>, ApiError> {
        self.get(key).ok_or_else(|| {
            ApiError::parse_failed(
                self.key_path(key),
                format!("missing required key {}", Value::from(key)),
            )
        })
    }

    /// The object at `key`, or an empty one when it is absent: the `args` of
    /// a command whose arguments are all optional.
    pub(super) fn object_or_empty(&self, key: &str) -> Result<Obj<'a>, ApiError> {
        match self.get(key) {
            Some(field) => field.object("an object"),
            None => Ok(Obj {
                path: self.key_path(key),
                fields: Vec::new(),
            }),
        }
    }
}

/// Deserializes a JSON object as its members in order, values unparsed.
struct RawFields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push((key, value));
                }
                Ok(RawFields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// The microseconds in a non-negative JSON number's text (`int[.frac][e±exp]`,
/// already checked to be one), cut toward zero and saturating at `u64::MAX`.
/// `None` only for text that is not such a number.
fn decimal_micros(text: &str) -> Option<u64> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, "0"),
    };
    let exponent_digits = exponent.trim_start_matches(['+', '-']);
    if exponent_digits.is_empty() || !exponent_digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Exponents past a few dozen only decide between 0 and saturation, so
    // a longer one is clamped rather than parsed.
    let magnitude: i64 = exponent_digits.parse().unwrap_or(i64::MAX).min(1_000);
    let exponent = if exponent.starts_with('-') { -magnitude } else { magnitude };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits × 10^(exponent − len(frac)) seconds; in microseconds
    // the power is 6 more.
    let frac_len = i64::try_from(frac.len()).unwrap_or(i64::MAX);
    let shift = exponent.saturating_add(6).saturating_sub(frac_len);
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    let kept = if shift >= 0 {
        digits
    } else {
        let cut = usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX);
        match digits.len().checked_sub(cut) {
            None | Some(0) => return Some(0),
            Some(keep) => &digits[..keep],
        }
    };
    // u64::MAX has 20 digits: 21 or more (with no leading zeros) saturate.
    let zeros = usize::try_from(shift.max(0)).unwrap_or(usize::MAX);
    if kept.len().saturating_add(zeros) > 20 {
        return Some(u64::MAX);
    }
    let mut micros: u128 = kept.parse().ok()?;
    for _ in 0..zeros {
        micros *= 10;
    }
    Some(u64::try_from(micros).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod decimal_tests {
    use super::decimal_micros;

    #[test]
    fn reads_seconds_to_the_microsecond_from_the_text() {
        let cases = [
            ("0", 0),
            ("10", 10_000_000),
            ("1.5", 1_500_000),
            ("0.1", 100_000),
            ("15e-1", 1_500_000),
            ("1.5E+1", 15_000_000),
            ("0.0000019", 1),
            ("0.0000001", 0),
            ("1e-7", 0),
            ("5.0", 5_000_000),
            ("00.25", 250_000),
            ("18446744073709.551615", u64::MAX),
            ("18446744073709.551616", u64::MAX),
            ("1e30", u64::MAX),
            ("1e99999999999999999999", u64::MAX),
            ("1e-99999999999999999999", 0),
            ("0e99999", 0),
        ];
        for (text, micros) in cases {
            assert_eq!(decimal_micros(text), Some(micros), "{text}");
        }
    }
}
