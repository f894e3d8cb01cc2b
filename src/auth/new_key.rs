//! New keys: a fresh random key and the `TROUPE_API_KEYS` entry that accepts it, for
//! `troupe hash-key NAME SCOPES`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::SysRng;
use rand::TryRng as _;
use sha2::{Digest as _, Sha256};

use super::keys::{is_key_name, KeyProblem};
use super::scope::{Scopes, ScopesError};
use crate::digest::hex;

/// Random bytes in a generated key (256 bits of entropy).
pub const KEY_BYTES: usize = 32;

/// A fresh key: [`KEY_BYTES`] bytes from the operating system's generator, in URL-safe
/// base64 without padding (43 characters, safe in a header, a URL and a shell).
pub fn generate_key() -> Result<String, NewKeyError> {
    let mut bytes = [0u8; KEY_BYTES];
    SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| NewKeyError::Random(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The `TROUPE_API_KEYS` entry for `key`: `NAME:SCOPES:DIGEST`, DIGEST the lowercase hex
/// SHA-256 of the key's bytes (what `printf %s KEY | sha256sum` prints).
pub fn entry_line(name: &str, scopes: Scopes, key: &str) -> String {
    format!("{name}:{scopes}:{}", hex(&Sha256::digest(key.as_bytes())))
}

/// A new key and the entry that accepts it.
pub struct NewKey {
    /// The key, for the client: shown once, kept nowhere by troupe.
    pub key: String,
    /// The `NAME:SCOPES:DIGEST` line for `TROUPE_API_KEYS`.
    pub entry: String,
}

impl std::fmt::Debug for NewKey {
    /// The entry only: a key stays out of any log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

/// What `troupe hash-key NAME SCOPES` prints: a fresh key named `name` with `scopes`
/// (`SCOPE+SCOPE…`), both checked as `TROUPE_API_KEYS` would check them.
pub fn new_key(name: &str, scopes: &str) -> Result<NewKey, NewKeyError> {
    if !is_key_name(name) {
        return Err(NewKeyError::Name(KeyProblem::Name));
    }
    let scopes = Scopes::parse(scopes).map_err(NewKeyError::Scopes)?;
    let key = generate_key()?;
    let entry = entry_line(name, scopes, &key);
    Ok(NewKey { key, entry })
}

/// Why no key could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewKeyError {
    /// NAME is not a key name.
    #[error("NAME: {0}")]
    Name(KeyProblem),
    /// SCOPES is not a scope list.
    #[error("SCOPES: {0}")]
    Scopes(ScopesError),
    /// The operating system gave no random bytes.
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ApiKeys, Authentication, Scope};

    #[test]
    fn a_generated_key_is_43_url_safe_characters_of_32_random_bytes() {
        let key = generate_key().unwrap();
        assert_eq!(key.len(), 43);
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(&key).unwrap().len(), KEY_BYTES);
    }

    #[test]
    fn generated_keys_differ() {
        let keys: std::collections::HashSet<String> =
            (0..64).map(|_| generate_key().unwrap()).collect();
        assert_eq!(keys.len(), 64);
    }

    #[test]
    fn the_entry_line_is_name_scopes_and_the_sha256_of_the_key() {
        let line = entry_line("ci", Scopes::of(&[Scope::Fetch, Scope::UsersRead]), "abc");
        assert_eq!(
            line,
            "ci:users:read+fetch:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_new_key_is_accepted_by_the_entry_printed_with_it() {
        let made = new_key("deploy-bot", "uploads:read+uploads:write").unwrap();
        let keys = ApiKeys::parse(&made.entry).unwrap();
        let header = format!("Bearer {}", made.key);
        let Authentication::Key(access) = keys.authenticate_value(header.as_bytes()) else {
            panic!("the printed entry accepts the printed key");
        };
        assert_eq!(access.name(), "deploy-bot");
        assert!(access.require(Scope::UploadsWrite).is_ok());
        assert!(access.require(Scope::UsersRead).is_err());
        assert!(!made.entry.contains(&made.key));
        assert!(!format!("{made:?}").contains(&made.key));
    }

    #[test]
    fn a_bad_name_or_scope_list_makes_no_key() {
        assert_eq!(
            new_key("bad name", "admin").unwrap_err(),
            NewKeyError::Name(KeyProblem::Name)
        );
        let err = new_key("ci", "users:rw").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SCOPES: unknown scope \"users:rw\""),
            "{err}"
        );
        assert_eq!(
            new_key("ci", "").unwrap_err(),
            NewKeyError::Scopes(ScopesError::Empty)
        );
    }
}
