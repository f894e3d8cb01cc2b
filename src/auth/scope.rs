//! Scopes: what a key may do. One scope per kind of route; `admin` holds every one.

use std::fmt;
use std::str::FromStr;

/// One thing a key may do. Scopes are separate (`users:write` does not grant `users:read`),
/// except `admin`, which grants every scope and sees every key's uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `users:read`: `GET /users`, `GET /users/{id}`.
    UsersRead,
    /// `users:write`: creating, changing and deleting users.
    UsersWrite,
    /// `uploads:read`: `GET /uploads…`.
    UploadsRead,
    /// `uploads:write`: `POST /upload`, `DELETE /uploads/{id}` and every tus request.
    UploadsWrite,
    /// `fetch`: `/aggregate` and `/parallel`.
    Fetch,
    /// `metrics`: `/metrics`.
    Metrics,
    /// `admin`: every scope, and every key's uploads.
    Admin,
}

impl Scope {
    /// Every scope, in the order the docs list them.
    pub const ALL: [Scope; 7] = [
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::UploadsRead,
        Scope::UploadsWrite,
        Scope::Fetch,
        Scope::Metrics,
        Scope::Admin,
    ];

    /// The scope's name as `TROUPE_API_KEYS` and the 403 answer spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UsersRead => "users:read",
            Self::UsersWrite => "users:write",
            Self::UploadsRead => "uploads:read",
            Self::UploadsWrite => "uploads:write",
            Self::Fetch => "fetch",
            Self::Metrics => "metrics",
            Self::Admin => "admin",
        }
    }

    /// The scope named `name` (exactly, lowercase), if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope")]
pub struct UnknownScope;

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or(UnknownScope)
    }
}

/// The scopes of one key: a set of [`Scope`]s, copied freely (one byte).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const NONE: Scopes = Scopes(0);

    /// The set holding `scopes`.
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Parses `SCOPE+SCOPE…` (at least one; a scope named twice counts once). The error
    /// quotes an unknown scope only when it looks like a scope name (lowercase letters and
    /// `:`), so that a key pasted in the wrong place is never echoed.
    pub fn parse(list: &str) -> Result<Self, ScopesError> {
        if list.is_empty() {
            return Err(ScopesError::Empty);
        }
        let mut bits = 0;
        for name in list.split('+') {
            match Scope::parse(name) {
                Some(scope) => bits |= scope.bit(),
                None => {
                    let quotable = !name.is_empty()
                        && name.len() <= 32
                        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b':');
                    return Err(ScopesError::Unknown(quotable.then(|| name.to_owned())));
                }
            }
        }
        Ok(Self(bits))
    }

    /// Whether a key with these scopes may do what `scope` allows: it holds `scope`, or
    /// `admin`.
    pub const fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// Whether `admin` is among these scopes.
    pub const fn is_admin(self) -> bool {
        self.0 & Scope::Admin.bit() != 0
    }

    /// The scopes in the set, in [`Scope::ALL`] order (`admin` is not expanded).
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Scopes {
    /// `SCOPE+SCOPE…`, as `TROUPE_API_KEYS` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

/// What is wrong with a `SCOPE+SCOPE…` list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopesError {
    /// No scope was given.
    #[error("no scopes (give one or more of {}, joined by +)", scope_names())]
    Empty,
    /// A name that is not a scope (quoted when it is safe to show).
    #[error("{} (scopes are {}, joined by +)", unknown(.0), scope_names())]
    Unknown(Option<String>),
}

fn unknown(name: &Option<String>) -> String {
    match name {
        Some(name) => format!("unknown scope {name:?}"),
        None => "an unknown scope".to_owned(),
    }
}

fn scope_names() -> String {
    Scope::ALL.map(Scope::as_str).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_parses_from_its_own_name() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope));
        }
        assert_eq!(Scope::parse("Users:Read"), None);
        assert_eq!(Scope::parse("users"), None);
        assert_eq!("".parse::<Scope>(), Err(UnknownScope));
    }

    #[test]
    fn admin_allows_every_scope_and_others_only_their_own() {
        let admin = Scopes::of(&[Scope::Admin]);
        assert!(Scope::ALL.iter().all(|&s| admin.allows(s)));
        assert!(admin.is_admin());

        let writer = Scopes::of(&[Scope::UsersWrite]);
        assert!(writer.allows(Scope::UsersWrite));
        assert!(
            !writer.allows(Scope::UsersRead),
            "write does not imply read"
        );
        assert!(!writer.allows(Scope::Admin));
        assert!(!writer.is_admin());
        assert!(!Scopes::NONE.allows(Scope::Fetch));
    }

    #[test]
    fn a_scope_list_round_trips_in_canonical_order() {
        let scopes = Scopes::parse("fetch+users:read+fetch").unwrap();
        assert_eq!(scopes.to_string(), "users:read+fetch");
        assert_eq!(Scopes::parse(&scopes.to_string()), Ok(scopes));
        assert_eq!(
            scopes.iter().collect::<Vec<_>>(),
            [Scope::UsersRead, Scope::Fetch]
        );
    }

    #[test]
    fn bad_scope_lists_say_why_without_echoing_what_could_be_a_key() {
        assert_eq!(Scopes::parse(""), Err(ScopesError::Empty));
        assert_eq!(
            Scopes::parse("users:read+"),
            Err(ScopesError::Unknown(None))
        );
        let typo = Scopes::parse("users:red").unwrap_err();
        assert_eq!(typo, ScopesError::Unknown(Some("users:red".into())));
        assert!(typo
            .to_string()
            .starts_with("unknown scope \"users:red\" (scopes are users:read, "));
        let key = Scopes::parse("Zm9vYmFyLWtleS0xMjM0NTY3ODkw").unwrap_err();
        assert_eq!(key, ScopesError::Unknown(None));
        assert!(!key.to_string().contains("Zm9v"), "{key}");
    }
}
