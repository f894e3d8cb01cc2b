//! Time as troupe stores and shows it: UTC, to the microsecond (what both databases keep),
//! written as RFC 3339 in JSON and as an HTTP date in headers.

use chrono::{NaiveDateTime, SubsecRound, Utc};
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
        s.collect_str(&self.0.and_utc().format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

/// A UTC time as an HTTP date (RFC 9110 IMF-fixdate), for `Upload-Expires`.
pub fn http_date(at: NaiveDateTime) -> String {
    at.and_utc().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}
