//! The ids that name troupe's resources, as types: a user's id is never mistaken for an
//! upload's, and a value that is not an id never becomes one.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use uuid::Uuid;

/// A user's id: assigned by the database, positive, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UserId(pub i64);

impl UserId {
    /// The id as the database stores it.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl From<i64> for UserId {
    fn from(id: i64) -> Self {
        Self(id)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

/// An upload's id: a UUID, also the name of its file. Its text form is always the
/// canonical lowercase hyphenated one, so it sorts the same as text and as an id.
///
/// New ids are UUIDv7 (RFC 9562): a millisecond timestamp first, then a counter and random
/// bits, so ids made later sort later and `/uploads` (id order) lists uploads in the order
/// they were begun. Any UUID is still an id: those made before (random, v4) keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadId(pub Uuid);

impl UploadId {
    /// A fresh id, later in order than every id this process made before it.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for UploadId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Text that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an upload id: {0:?}")]
pub struct NotAnUploadId(pub String);

impl FromStr for UploadId {
    type Err = NotAnUploadId;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| NotAnUploadId(raw.to_owned()))
    }
}

/// How the database's TEXT column becomes an id (a row holding anything else is an error,
/// never a silent default).
impl TryFrom<String> for UploadId {
    type Error = NotAnUploadId;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        raw.parse()
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> Self {
        id.to_string()
    }
}

/// An id equals its text form (tests and logs compare ids with what a client saw).
impl PartialEq<String> for UploadId {
    fn eq(&self, other: &String) -> bool {
        other.parse::<Self>().is_ok_and(|id| id == *self)
    }
}

impl Serialize for UploadId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_round_trip_as_canonical_text_and_refuse_the_rest() {
        let id = UploadId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<UploadId>(), Ok(id));
        assert_eq!(UploadId::try_from(text.to_uppercase()), Ok(id));
        assert!("not-a-uuid".parse::<UploadId>().is_err());
        assert!(UploadId::try_from(String::new()).is_err());
    }

    #[test]
    fn new_upload_ids_are_v7_and_sort_in_the_order_they_were_made() {
        let ids: Vec<UploadId> = (0..1000).map(|_| UploadId::new()).collect();
        assert!(ids.iter().all(|id| id.0.get_version_num() == 7));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // And as text, which is how the database orders them.
        let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1]));
        // An id of the kind made before (v4) is still an id.
        let old = "1b4e28ba-2fa1-4d2e-883f-0016d3cca427";
        assert_eq!(
            old.parse::<UploadId>().map(|id| id.to_string()),
            Ok(old.to_owned())
        );
    }

    #[test]
    fn ids_serialize_as_the_api_shows_them() {
        assert_eq!(serde_json::to_string(&UserId(7)).unwrap(), "7");
        let id = UploadId::new();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
    }
}
