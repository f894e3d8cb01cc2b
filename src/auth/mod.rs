//! Access control: API keys with scopes (`TROUPE_API_KEYS`), the check of a request's
//! `Authorization: Bearer KEY`, and the answers it leads to.
//!
//! A request is first [authenticated](ApiKeys::authenticate) into an [`Authentication`]; the
//! route's [`Scope`] is then [required](Authentication::require) of it, which gives the
//! key's [`Access`] or the `AppError` to answer with:
//!
//! | the request | answer |
//! |---|---|
//! | no `Authorization` | 401 `unauthorized`, `WWW-Authenticate: Bearer realm="troupe"` |
//! | not `Bearer KEY`, or a key not configured | 401 `unauthorized`, `… error="invalid_token"` |
//! | a key without the route's scope | 403 `forbidden`, naming the scope |
//! | a key with it | the route runs, as that key |
//!
//! troupe never holds a key: only its SHA-256 digest, compared in constant time. A key's
//! name is what logs and answers show. New keys come from [`new_key`] (`troupe hash-key`).

mod keys;
mod new_key;
mod scope;

use std::fmt;
use std::sync::Arc;

pub use keys::{
    bearer_token, is_key_name, ApiKeys, KeyProblem, KeysError, API_KEYS_VAR, MAX_KEY_LEN,
    MAX_NAME_LEN,
};
pub use new_key::{entry_line, generate_key, new_key, NewKey, NewKeyError, KEY_BYTES};
pub use scope::{Scope, Scopes, ScopesError, UnknownScope};

use crate::db::uploads::Upload;
use crate::error::AppError;

/// Who a request is, as far as its `Authorization` header tells.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not one `Bearer KEY`, or a key that is not
    /// configured.
    Invalid,
    /// A configured key.
    Key(Access),
}

impl Authentication {
    /// The key's access when it holds `scope` (or `admin`); else the 401 or 403 to answer.
    pub fn require(&self, scope: Scope) -> Result<&Access, AppError> {
        match self {
            Self::Missing => Err(AppError::Unauthorized {
                invalid_token: false,
            }),
            Self::Invalid => Err(AppError::Unauthorized {
                invalid_token: true,
            }),
            Self::Key(access) => access.require(scope).map(|()| access).map_err(Into::into),
        }
    }

    /// The key's access, whatever its scopes; `None` unless a configured key was sent. The
    /// rate limiter counts a request by this key's name.
    pub fn access(&self) -> Option<&Access> {
        match self {
            Self::Key(access) => Some(access),
            Self::Missing | Self::Invalid => None,
        }
    }
}

/// What one configured key may do: its name and its scopes. Cheap to clone (the name is
/// shared), so it can ride in a request's extensions.
#[derive(Clone, PartialEq, Eq)]
pub struct Access {
    name: Arc<str>,
    scopes: Scopes,
}

impl Access {
    /// The access of the key named `name` with `scopes`.
    pub fn new(name: Arc<str>, scopes: Scopes) -> Self {
        Self { name, scopes }
    }

    /// The key's name: what the access log, and an upload's owner, record.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key's name, shared (for a rate-limit bucket or an upload's owner).
    pub fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The key's scopes.
    pub fn scopes(&self) -> Scopes {
        self.scopes
    }

    /// `Ok` when the key holds `scope` (or `admin`), else which scope it lacks.
    pub fn require(&self, scope: Scope) -> Result<(), Denied> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(Denied { missing: scope })
        }
    }

    /// Whether this key may see and change an upload recorded as made by `owner` (`None`:
    /// made before keys, or in open mode): `admin` may use every upload, any other key only
    /// its own. A route answers 404 when it may not, so that ids cannot be probed.
    pub fn may_use_upload(&self, owner: Option<&str>) -> bool {
        self.scopes.is_admin() || owner == Some(self.name())
    }
}

/// Whether a request with `access` (`None`: open mode) may use `upload`: its creator's key
/// or `admin` may; anyone may in open mode.
pub fn may_use(access: Option<&Access>, upload: &Upload) -> bool {
    access.is_none_or(|access| access.may_use_upload(upload.owner.as_deref()))
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Access({}: {})", self.name, self.scopes)
    }
}

/// A key without the scope a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The scope the key lacks.
    pub missing: Scope,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this key lacks the scope {} that this route needs",
            self.missing
        )
    }
}

impl std::error::Error for Denied {}

impl From<Denied> for AppError {
    /// 403 `forbidden`, naming the missing scope.
    fn from(denied: Denied) -> Self {
        AppError::Forbidden(denied.to_string())
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::{header, StatusCode};

    use super::*;

    fn access(name: &str, scopes: &[Scope]) -> Access {
        Access::new(name.into(), Scopes::of(scopes))
    }

    #[test]
    fn no_key_is_401_with_the_bearer_challenge() {
        let err = Authentication::Missing.require(Scope::Fetch).unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
        let res = err.to_response("r");
        assert_eq!(
            res.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            r#"Bearer realm="troupe""#
        );
    }

    #[test]
    fn an_unknown_key_is_401_with_invalid_token() {
        let err = Authentication::Invalid.require(Scope::Fetch).unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
        let res = err.to_response("r");
        assert_eq!(
            res.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            r#"Bearer realm="troupe", error="invalid_token""#
        );
    }

    #[test]
    fn a_key_without_the_scope_is_403_naming_it() {
        let auth = Authentication::Key(access("ci", &[Scope::UsersRead]));
        let err = auth.require(Scope::UploadsWrite).unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::FORBIDDEN, "forbidden")
        );
        assert!(err.message().contains("uploads:write"), "{}", err.message());
        let res = err.to_response("r");
        assert!(!res.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(auth.require(Scope::UsersRead).unwrap().name(), "ci");
        assert_eq!(auth.access().map(Access::name), Some("ci"));
        assert!(Authentication::Invalid.access().is_none());
    }

    #[test]
    fn admin_passes_every_scope() {
        let auth = Authentication::Key(access("root", &[Scope::Admin]));
        for scope in Scope::ALL {
            assert!(auth.require(scope).is_ok(), "{scope}");
        }
    }

    #[test]
    fn only_admin_uses_other_keys_uploads_and_ownerless_ones() {
        let ci = access("ci", &[Scope::UploadsRead, Scope::UploadsWrite]);
        assert!(ci.may_use_upload(Some("ci")));
        assert!(!ci.may_use_upload(Some("other")));
        assert!(!ci.may_use_upload(None));
        let root = access("root", &[Scope::Admin]);
        assert!(root.may_use_upload(Some("ci")));
        assert!(root.may_use_upload(None));
    }
}
