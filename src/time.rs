//! Time as troupe stores and shows it: UTC, to the microsecond (what both databases keep),
//! written as RFC 3339 in JSON and as an HTTP date in headers.
//!
//! RFC 3339 is written by hand ([`Rfc3339Text`]), exactly what chrono's
//! `%Y-%m-%dT%H:%M:%S%.6fZ` prints: list pages carry two timestamps per row, and chrono's
//! `format` interprets its pattern anew for every value (under `GET /users` load that was a
//! fifth of the server's CPU time).

use std::fmt;

use chrono::{Datelike as _, NaiveDateTime, SubsecRound, Timelike as _, Utc};
use serde::{Serialize, Serializer};

/// Now, in UTC, to the microsecond: a row written with it equals the row read back.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// A UTC time that serializes as RFC 3339 with microseconds and a `Z`
/// (`2026-12-01T20:00:00.000000Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub NaiveDateTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Rfc3339Text::new(&self.0).as_str())
    }
}

/// A UTC time as an HTTP date (RFC 9110 IMF-fixdate), for `Upload-Expires`.
pub fn http_date(at: NaiveDateTime) -> String {
    at.and_utc().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Room for the longest text: a signed six-digit year, `+262142-12-31T23:59:60.999999Z`.
const MAX_LEN: usize = 32;

/// One timestamp's RFC 3339 text, built on the stack.
#[derive(Clone, Copy)]
pub struct Rfc3339Text {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl Rfc3339Text {
    /// The text of `at`, read as UTC. Years outside 0..=9999 get a sign and at least four
    /// digits, a leap second (nanoseconds ≥ 10⁹) is second 60, as chrono writes them.
    pub fn new(at: &NaiveDateTime) -> Self {
        let mut out = Self {
            buf: [0; MAX_LEN],
            len: 0,
        };
        let year = at.year();
        if (0..=9999).contains(&year) {
            out.digits(year.unsigned_abs(), 4);
        } else {
            out.push(if year < 0 { b'-' } else { b'+' });
            out.digits(year.unsigned_abs(), 4);
        }
        out.push(b'-');
        out.digits(at.month(), 2);
        out.push(b'-');
        out.digits(at.day(), 2);
        out.push(b'T');
        out.digits(at.hour(), 2);
        out.push(b':');
        out.digits(at.minute(), 2);
        out.push(b':');
        let nanos = at.nanosecond();
        out.digits(at.second() + nanos / 1_000_000_000, 2);
        out.push(b'.');
        out.digits(nanos % 1_000_000_000 / 1_000, 6);
        out.push(b'Z');
        out
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// `value` in decimal, zero-padded to at least `width` digits.
    fn digits(&mut self, mut value: u32, width: usize) {
        let mut tmp = [b'0'; 10];
        let mut n = 0;
        while value > 0 || n < width {
            tmp[n] = b'0' + (value % 10) as u8;
            value /= 10;
            n += 1;
        }
        for &d in tmp[..n].iter().rev() {
            self.push(d);
        }
    }
}

impl fmt::Display for Rfc3339Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Rfc3339Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDate, NaiveTime};

    fn chrono_text(at: &NaiveDateTime) -> String {
        at.and_utc().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    fn assert_same(at: &NaiveDateTime) {
        assert_eq!(Rfc3339Text::new(at).as_str(), chrono_text(at), "{at:?}");
    }

    /// splitmix64: a fixed sequence, so a failure is reproducible.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn matches_chrono_over_its_whole_range() {
        let min = NaiveDateTime::MIN.and_utc().timestamp();
        let max = NaiveDateTime::MAX.and_utc().timestamp();
        let span = (max - min) as u64;
        let mut state = 7;
        for _ in 0..200_000 {
            let secs = min + (next(&mut state) % span) as i64;
            let nanos = (next(&mut state) % 1_000_000_000) as u32;
            let at = DateTime::from_timestamp(secs, nanos).unwrap().naive_utc();
            assert_same(&at);
        }
    }

    #[test]
    fn matches_chrono_near_today_with_microseconds() {
        // What the database hands back: microsecond precision, recent years.
        let mut state = 11;
        let base = 1_600_000_000;
        for _ in 0..100_000 {
            let secs = base + (next(&mut state) % 400_000_000) as i64;
            let micros = (next(&mut state) % 1_000_000) as u32;
            let at = DateTime::from_timestamp(secs, micros * 1000)
                .unwrap()
                .naive_utc();
            assert_same(&at);
        }
    }

    #[test]
    fn matches_chrono_at_the_edges() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let time = |h, mi, s, n| NaiveTime::from_hms_nano_opt(h, mi, s, n).unwrap();
        let mut cases = vec![NaiveDateTime::MIN, NaiveDateTime::MAX];
        for year in [
            -262_000, -10_000, -9999, -1000, -999, -1, 0, 1, 9, 10, 99, 100, 999, 1000, 1970, 2024,
            9999, 10_000, 99_999, 100_000, 262_000,
        ] {
            for (m, d) in [(1, 1), (2, 28), (12, 31)] {
                cases.push(day(year, m, d).and_time(time(0, 0, 0, 0)));
                cases.push(day(year, m, d).and_time(time(23, 59, 59, 999_999_999)));
            }
        }
        cases.push(day(2024, 2, 29).and_time(time(12, 34, 56, 1_000)));
        cases.push(day(2024, 2, 29).and_time(time(12, 34, 56, 999)));
        cases.push(day(2024, 2, 29).and_time(time(12, 34, 56, 123_456_789)));
        // Leap seconds: chrono keeps them as nanoseconds ≥ 10⁹ in second 59.
        for nanos in [1_000_000_000, 1_000_000_999, 1_000_001_000, 1_999_999_999] {
            cases.push(day(2016, 12, 31).and_time(time(23, 59, 59, nanos)));
            cases.push(day(-5, 6, 30).and_time(time(23, 59, 59, nanos)));
            cases.push(day(12_345, 6, 30).and_time(time(23, 59, 59, nanos)));
        }
        for at in &cases {
            assert_same(at);
        }
        assert_eq!(
            Rfc3339Text::new(&cases[cases.len() - 1]).as_str(),
            "+12345-06-30T23:59:60.999999Z"
        );
    }

    #[test]
    fn serializes_as_a_json_string() {
        #[derive(serde::Serialize)]
        struct Row {
            at: Rfc3339,
        }
        let at = NaiveDate::from_ymd_opt(2024, 5, 1)
            .unwrap()
            .and_hms_micro_opt(12, 0, 0, 42)
            .unwrap();
        assert_eq!(
            serde_json::to_string(&Row { at: Rfc3339(at) }).unwrap(),
            r#"{"at":"2024-05-01T12:00:00.000042Z"}"#
        );
    }
}
