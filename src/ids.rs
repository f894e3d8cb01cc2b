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

/// An upload's id: a random UUID, also the name of its file. Its text form is always the
/// canonical lowercase hyphenated one, so it sorts the same as text and as an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadId(pub Uuid);

impl UploadId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
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
    fn ids_serialize_as_the_api_shows_them() {
        assert_eq!(serde_json::to_string(&UserId(7)).unwrap(), "7");
        let id = UploadId::new();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
    }
}
