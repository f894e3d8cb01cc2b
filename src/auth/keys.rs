//! The configured API keys (`TROUPE_API_KEYS`) and the check of a request's
//! `Authorization: Bearer KEY` against them.
//!
//! troupe holds only each key's SHA-256 digest. A presented key is hashed once and compared
//! with every digest in constant time, every entry every time, so the time a check takes says
//! nothing about which entry (if any) matched or how much of a digest did.

use std::fmt;
use std::sync::Arc;

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use super::scope::{Scopes, ScopesError};
use super::{Access, Authentication};
use crate::config::ConfigError;

/// The environment variable the keys come from.
pub const API_KEYS_VAR: &str = "TROUPE_API_KEYS";

/// Longest name a key may have.
pub const MAX_NAME_LEN: usize = 64;

/// Longest key taken from a request, in bytes: far above a generated key (43), low enough
/// that hashing it costs nothing worth measuring.
pub const MAX_KEY_LEN: usize = 1024;

/// One configured key: its name, its scopes and the SHA-256 of the key.
#[derive(Clone)]
struct Entry {
    name: Arc<str>,
    scopes: Scopes,
    digest: [u8; 32],
}

/// The keys troupe accepts, parsed from `TROUPE_API_KEYS`.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Vec<Entry>,
}

impl fmt::Debug for ApiKeys {
    /// Names and scopes only: the digests stay out of any log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|e| (&*e.name, e.scopes)))
            .finish()
    }
}

impl ApiKeys {
    /// Parses `NAME:SCOPES:DIGEST,…`: entries separated by `,` (blanks around an entry are
    /// ignored), SCOPES joined by `+`, DIGEST the 64-digit hex SHA-256 of the key (lowercase
    /// as `sha256sum` prints it; uppercase is taken too). Names follow [`is_key_name`] and are
    /// unique, and so are keys. An empty or blank value is no keys at all.
    pub fn parse(raw: &str) -> Result<Self, KeysError> {
        let mut entries: Vec<Entry> = Vec::new();
        if raw.trim().is_empty() {
            return Ok(Self { entries });
        }
        for (i, text) in raw.split(',').enumerate() {
            let position = i + 1;
            let bad = |name: Option<&str>, problem| KeysError {
                position,
                name: name.map(str::to_owned),
                problem,
            };
            let text = text.trim();
            if text.is_empty() {
                return Err(bad(None, KeyProblem::Empty));
            }
            // NAME has no `:` and DIGEST none, so SCOPES (which has) is what lies between
            // the first and the last.
            let Some((name, (scopes, digest))) = text
                .split_once(':')
                .and_then(|(name, rest)| Some((name, rest.rsplit_once(':')?)))
            else {
                return Err(bad(None, KeyProblem::Shape));
            };
            if !is_key_name(name) {
                return Err(bad(None, KeyProblem::Name));
            }
            let scopes =
                Scopes::parse(scopes).map_err(|e| bad(Some(name), KeyProblem::Scopes(e)))?;
            let digest = parse_digest(digest).ok_or_else(|| bad(Some(name), KeyProblem::Digest))?;
            if let Some(first) = entries.iter().position(|e| &*e.name == name) {
                return Err(bad(
                    Some(name),
                    KeyProblem::DuplicateName { first: first + 1 },
                ));
            }
            if let Some(first) = entries.iter().position(|e| e.digest == digest) {
                return Err(bad(
                    Some(name),
                    KeyProblem::DuplicateKey { first: first + 1 },
                ));
            }
            entries.push(Entry {
                name: name.into(),
                scopes,
                digest,
            });
        }
        Ok(Self { entries })
    }

    /// Whether no key is configured (troupe runs open, where that is allowed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The names of the configured keys, in their order (for the start-up log line).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| &*e.name)
    }

    /// Authenticates a request by its `Authorization` header: none is
    /// [`Authentication::Missing`]; more than one, one that is not `Bearer KEY`, or a key
    /// that is not configured is [`Authentication::Invalid`]; a configured key is its
    /// [`Access`].
    pub fn authenticate(&self, headers: &HeaderMap) -> Authentication {
        let mut values = headers.get_all(AUTHORIZATION);
        match (values.next(), values.next()) {
            (None, _) => Authentication::Missing,
            (Some(value), None) => self.authenticate_value(value.as_bytes()),
            (Some(_), Some(_)) => Authentication::Invalid,
        }
    }

    /// Authenticates one `Authorization` header value (see [`ApiKeys::authenticate`]).
    pub fn authenticate_value(&self, value: &[u8]) -> Authentication {
        match bearer_token(value) {
            Some(key) => self.check_key(key),
            None => Authentication::Invalid,
        }
    }

    /// The access `key` gives, if it is one of the configured keys. The key is hashed once;
    /// every entry's digest is then compared in constant time and the match selected without
    /// a branch, so the work done is the same whichever entry matches, or none.
    fn check_key(&self, key: &[u8]) -> Authentication {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let same = entry.digest.ct_eq(&digest);
            // Entries are few (a parse of u32::MAX entries would not fit in memory).
            index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), same);
            found |= same;
        }
        if !bool::from(found) {
            return Authentication::Invalid;
        }
        match usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
        {
            Some(entry) => Authentication::Key(Access::new(entry.name.clone(), entry.scopes)),
            None => Authentication::Invalid,
        }
    }
}

/// The key in an `Authorization` value: `Bearer` (any case), one or more spaces, and a
/// token68 (RFC 7235: letters, digits, `-._~+/`, then any `=`) of at most [`MAX_KEY_LEN`]
/// bytes. Blanks around the value are ignored.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let rest = &value[6..];
    let token = rest.trim_ascii_start();
    if token.len() == rest.len() || token.is_empty() || token.len() > MAX_KEY_LEN {
        return None;
    }
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let token68 = body_len > 0
        && token[..body_len]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(b));
    token68.then_some(token)
}

/// Whether `name` may name a key: 1 to [`MAX_NAME_LEN`] of `A-Z a-z 0-9 _ . -`, starting with
/// a letter or digit. A name shows in logs and error messages, so it stays plain.
pub fn is_key_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
}

/// The 32 bytes of a 64-digit hex digest (either case).
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// A malformed `TROUPE_API_KEYS` entry: which one, and what is wrong. Its text names the
/// entry by position, and by name once the entry has the `NAME:SCOPES:DIGEST` shape and a
/// valid name; it never shows a digest, or anything that could be a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysError {
    /// The entry's position in the list, from 1.
    pub position: usize,
    /// The entry's name, when it could be read.
    pub name: Option<String>,
    /// What is wrong.
    pub problem: KeyProblem,
}

impl fmt::Display for KeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}", self.position)?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for KeysError {}

impl From<KeysError> for ConfigError {
    /// `TROUPE_API_KEYS: entry N (NAME): …`, the one line start-up fails with.
    fn from(err: KeysError) -> Self {
        ConfigError {
            var: API_KEYS_VAR,
            problem: err.to_string(),
        }
    }
}

/// What is wrong with one key entry (or with a `troupe hash-key` argument).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// Nothing between two commas, or after the last.
    #[error("an empty entry (two commas in a row, or one at the end)")]
    Empty,
    /// Not three `:`-separated fields.
    #[error("expected NAME:SCOPES:DIGEST")]
    Shape,
    /// The name breaks [`is_key_name`].
    #[error(
        "the name must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ . -, starting with a letter or digit"
    )]
    Name,
    /// A bad scope list.
    #[error("{0}")]
    Scopes(ScopesError),
    /// The digest is not 64 hex digits.
    #[error(
        "DIGEST must be the SHA-256 of the key as 64 hex digits (`troupe hash-key` prints it), \
         not the key itself"
    )]
    Digest,
    /// The name of an earlier entry.
    #[error("the name is already used by entry {first}")]
    DuplicateName {
        /// The earlier entry's position.
        first: usize,
    },
    /// The digest of an earlier entry: one key under two names.
    #[error("the same key as entry {first}")]
    DuplicateKey {
        /// The earlier entry's position.
        first: usize,
    },
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;
    use crate::auth::Scope;
    use crate::digest::hex;

    fn digest_of(key: &str) -> String {
        hex(&Sha256::digest(key.as_bytes()))
    }

    fn keys(entries: &[(&str, &str, &str)]) -> ApiKeys {
        let raw: Vec<String> = entries
            .iter()
            .map(|(name, scopes, key)| format!("{name}:{scopes}:{}", digest_of(key)))
            .collect();
        ApiKeys::parse(&raw.join(",")).unwrap()
    }

    fn bearer(key: &str) -> Vec<u8> {
        format!("Bearer {key}").into_bytes()
    }

    #[test]
    fn an_empty_or_blank_value_is_no_keys() {
        for raw in ["", "   ", "\t\n"] {
            let keys = ApiKeys::parse(raw).unwrap();
            assert!(keys.is_empty());
            assert_eq!(keys.len(), 0);
        }
        let none = ApiKeys::default();
        assert!(matches!(
            none.authenticate_value(b"Bearer abc"),
            Authentication::Invalid
        ));
    }

    #[test]
    fn entries_parse_with_their_scopes_in_order() {
        let raw = format!(
            " ci:users:read+uploads:write:{} , ops.admin-1:admin:{}",
            digest_of("k1"),
            digest_of("k2").to_uppercase()
        );
        let keys = ApiKeys::parse(&raw).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.names().collect::<Vec<_>>(), ["ci", "ops.admin-1"]);
        let Authentication::Key(ci) = keys.authenticate_value(&bearer("k1")) else {
            panic!("k1 is ci's key");
        };
        assert_eq!(ci.name(), "ci");
        assert_eq!(ci.scopes().to_string(), "users:read+uploads:write");
        let Authentication::Key(ops) = keys.authenticate_value(&bearer("k2")) else {
            panic!("an uppercase digest is taken");
        };
        assert_eq!(ops.name(), "ops.admin-1");
        assert!(ops.scopes().is_admin());
    }

    #[test]
    fn the_debug_form_shows_names_and_scopes_but_no_digest() {
        let keys = keys(&[("ci", "fetch", "secret-key")]);
        let text = format!("{keys:?}");
        assert_eq!(text, r#"{"ci": Scopes(fetch)}"#);
        assert!(!text.contains(&digest_of("secret-key")[..8]));
    }

    #[test]
    fn every_configured_key_authenticates_as_its_own_entry() {
        let entries: Vec<(String, String)> = (0..20)
            .map(|i| (format!("key{i}"), format!("secret-{i}")))
            .collect();
        let list: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|(n, k)| (n.as_str(), "users:read", k.as_str()))
            .collect();
        let keys = keys(&list);
        for (name, key) in &entries {
            match keys.authenticate_value(&bearer(key)) {
                Authentication::Key(access) => assert_eq!(access.name(), name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(matches!(
            keys.authenticate_value(&bearer("secret-20")),
            Authentication::Invalid
        ));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_key_is_not() {
        let keys = keys(&[("ci", "fetch", "AbC-123_x")]);
        for header in [
            "Bearer AbC-123_x",
            "bearer AbC-123_x",
            "BEARER   AbC-123_x  ",
        ] {
            assert!(
                matches!(
                    keys.authenticate_value(header.as_bytes()),
                    Authentication::Key(_)
                ),
                "{header:?}"
            );
        }
        assert!(matches!(
            keys.authenticate_value(b"Bearer abc-123_x"),
            Authentication::Invalid
        ));
    }

    #[test]
    fn malformed_authorization_values_are_invalid() {
        let keys = keys(&[("ci", "fetch", "key")]);
        for header in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Bearerkey",
            b"Basic a2V5",
            b"Bearer key extra",
            b"Bearer k\xffy",
            b"Bearer ==",
            b"Bearer k=ey",
            b"Token key",
        ] {
            assert!(
                matches!(keys.authenticate_value(header), Authentication::Invalid),
                "{:?}",
                String::from_utf8_lossy(header)
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_KEY_LEN + 1));
        assert!(matches!(
            keys.authenticate_value(long.as_bytes()),
            Authentication::Invalid
        ));
    }

    #[test]
    fn token68_padding_and_punctuation_are_part_of_the_key() {
        assert_eq!(
            bearer_token(b"Bearer a+b/c~d.e=="),
            Some(&b"a+b/c~d.e=="[..])
        );
        let keys = keys(&[("ci", "fetch", "a+b/c==")]);
        assert!(matches!(
            keys.authenticate_value(b"Bearer a+b/c=="),
            Authentication::Key(_)
        ));
        assert!(matches!(
            keys.authenticate_value(b"Bearer a+b/c"),
            Authentication::Invalid
        ));
    }

    #[test]
    fn headers_without_authorization_are_missing_and_two_are_invalid() {
        let keys = keys(&[("ci", "fetch", "key")]);
        let mut headers = HeaderMap::new();
        assert!(matches!(
            keys.authenticate(&headers),
            Authentication::Missing
        ));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer key"));
        assert!(matches!(
            keys.authenticate(&headers),
            Authentication::Key(_)
        ));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer key"));
        assert!(matches!(
            keys.authenticate(&headers),
            Authentication::Invalid
        ));
    }

    #[test]
    fn names_follow_the_grammar() {
        for good in ["a", "CI", "ci-2", "ops.team_1", &"x".repeat(MAX_NAME_LEN)] {
            assert!(is_key_name(good), "{good:?}");
        }
        for bad in [
            "",
            "-ci",
            ".ci",
            "_ci",
            "c i",
            "ci:x",
            "c,i",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_key_name(bad), "{bad:?}");
        }
    }

    fn parse_err(raw: &str) -> KeysError {
        ApiKeys::parse(raw).unwrap_err()
    }

    #[test]
    fn a_malformed_entry_is_named_by_position_and_name() {
        let d = digest_of("k");
        let good = format!("ok:fetch:{d}");

        let err = parse_err(&format!("{good},ci:users:red:{}", digest_of("k2")));
        assert_eq!((err.position, err.name.as_deref()), (2, Some("ci")));
        assert_eq!(
            ConfigError::from(err).to_string(),
            "TROUPE_API_KEYS: entry 2 (ci): unknown scope \"users:red\" (scopes are users:read, \
             users:write, uploads:read, uploads:write, fetch, metrics, admin, joined by +)"
        );

        let err = parse_err(&format!("{good},ci::{}", digest_of("k2")));
        assert_eq!(err.problem, KeyProblem::Scopes(ScopesError::Empty));

        let err = parse_err(&format!("{good},ci:fetch:{}", &d[..63]));
        assert_eq!(err.problem, KeyProblem::Digest);
        assert_eq!(err.to_string().lines().count(), 1);

        let err = parse_err(&format!("{good},-ci:fetch:{d}"));
        assert_eq!(
            (err.position, err.name, err.problem),
            (2, None, KeyProblem::Name)
        );

        let err = parse_err(&format!("{good},{good}"));
        assert_eq!(err.problem, KeyProblem::DuplicateName { first: 1 });
        assert_eq!(
            err.to_string(),
            "entry 2 (ok): the name is already used by entry 1"
        );

        let err = parse_err(&format!("{good},other:admin:{d}"));
        assert_eq!(err.problem, KeyProblem::DuplicateKey { first: 1 });

        let err = parse_err(&format!("{good},,{good}"));
        assert_eq!((err.position, err.problem), (2, KeyProblem::Empty));

        let err = parse_err(&format!("{good},"));
        assert_eq!((err.position, err.problem), (2, KeyProblem::Empty));

        let err = parse_err(&format!("{good},ci:fetch"));
        assert_eq!(
            (err.position, err.name, err.problem),
            (2, None, KeyProblem::Shape)
        );

        let err = parse_err(&format!("ci:fetch:{}", "g".repeat(64)));
        assert_eq!(err.problem, KeyProblem::Digest);
    }

    #[test]
    fn an_error_never_shows_a_key_or_a_digest() {
        let key = "hJ3k_9dQ-2wXyZ0aBcDeFgHiJkLmNoPqRsTuVwXyZ01";
        let d = digest_of(key);
        for raw in [
            key.to_owned(),
            format!("ci:fetch:{key}"),
            format!("ci:{key}:{d}"),
            format!("{key}:fetch"),
            format!("ci:fetch:{d}:{key}"),
            format!("ci:fetch:{d},ci2:fetch:{d}"),
            format!("ci:fetch:{}", d.replace('a', "z")),
        ] {
            let text = parse_err(&raw).to_string();
            assert!(!text.contains(key), "{text}");
            assert!(!text.contains(&d[..16]), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
        }
    }

    #[test]
    fn access_requires_its_scopes() {
        let keys = keys(&[("reader", "users:read", "r"), ("root", "admin", "a")]);
        let Authentication::Key(reader) = keys.authenticate_value(&bearer("r")) else {
            panic!("r is reader's key");
        };
        assert_eq!(reader.require(Scope::UsersRead), Ok(()));
        let denied = reader.require(Scope::UsersWrite).unwrap_err();
        assert_eq!(denied.missing, Scope::UsersWrite);
        let Authentication::Key(root) = keys.authenticate_value(&bearer("a")) else {
            panic!("a is root's key");
        };
        assert!(Scope::ALL.iter().all(|&s| root.require(s).is_ok()));
    }
}
