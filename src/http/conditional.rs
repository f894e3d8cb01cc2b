//! Conditional and range requests on upload content served from an object store, answered
//! as actix-files answers them for a file (RFC 9110 §13 and §14): `If-Match` and
//! `If-Unmodified-Since` → 412, `If-None-Match` and `If-Modified-Since` → 304, one byte
//! range (with `If-Range`) → 206, a range past the end → 416. The validators come from the
//! upload's row (its SHA-256 and creation time), so nothing is asked of the store for a
//! request that ends here.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_files::HttpRange;
use actix_web::http::header::{self, EntityTag, HttpDate};
use actix_web::http::Method;
use actix_web::{HttpMessage as _, HttpRequest};

/// What a representation is known by.
#[derive(Debug, Clone)]
pub struct Validators {
    /// A strong tag: the content's digest.
    pub etag: EntityTag,
    /// When it was stored.
    pub last_modified: HttpDate,
}

/// How to answer a `GET` or `HEAD` of a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 412: `If-Match` or `If-Unmodified-Since` failed.
    PreconditionFailed,
    /// 304: `If-None-Match` or `If-Modified-Since` says the client has it.
    NotModified,
    /// 200 with every byte.
    Whole,
    /// 206 with `length` bytes from `start`.
    Part {
        /// The first byte.
        start: u64,
        /// How many.
        length: u64,
    },
    /// 416: the range starts at or past the end.
    Unsatisfiable,
}

/// Seconds since the epoch, the precision of HTTP dates.
fn secs(date: HttpDate) -> Option<u64> {
    SystemTime::from(date)
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// The answer to `req` (a `Range` it should not act on already taken off) for content of
/// `size` bytes known by `validators`.
pub fn evaluate(req: &HttpRequest, validators: &Validators, size: u64) -> Answer {
    let Validators {
        etag,
        last_modified,
    } = validators;
    let modified = secs(*last_modified);
    let if_match_fails = match req.get_header::<header::IfMatch>() {
        None | Some(header::IfMatch::Any) => false,
        Some(header::IfMatch::Items(items)) => !items.iter().any(|i| i.strong_eq(etag)),
    };
    let unmodified_since_fails = !req.headers().contains_key(header::IF_MATCH)
        && match (modified, req.get_header::<header::IfUnmodifiedSince>()) {
            (Some(m), Some(header::IfUnmodifiedSince(since))) => {
                secs(since).is_some_and(|since| m > since)
            }
            _ => false,
        };
    if if_match_fails || unmodified_since_fails {
        return Answer::PreconditionFailed;
    }
    let none_match_fails = match req.get_header::<header::IfNoneMatch>() {
        None => false,
        Some(header::IfNoneMatch::Any) => true,
        Some(header::IfNoneMatch::Items(items)) => items.iter().any(|i| i.weak_eq(etag)),
    };
    let not_modified_since = !req.headers().contains_key(header::IF_NONE_MATCH)
        && match (modified, req.get_header::<header::IfModifiedSince>()) {
            (Some(m), Some(header::IfModifiedSince(since))) => {
                secs(since).is_some_and(|since| m <= since)
            }
            _ => false,
        };
    if none_match_fails || not_modified_since {
        return Answer::NotModified;
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .filter(|_| req.method() == Method::GET)
        .filter(|_| if_range_matches(req, validators))
        .and_then(|r| r.to_str().ok());
    let Some(range) = range else {
        return Answer::Whole;
    };
    match HttpRange::parse(range, size)
        .ok()
        .and_then(|ranges| ranges.first().copied())
    {
        Some(r) => Answer::Part {
            start: r.start,
            length: r.length,
        },
        None => Answer::Unsatisfiable,
    }
}

/// Whether `req` has no `If-Range`, or one whose validator is the representation's.
fn if_range_matches(
    req: &HttpRequest,
    Validators {
        etag,
        last_modified,
    }: &Validators,
) -> bool {
    if !req.headers().contains_key(header::IF_RANGE) {
        return true;
    }
    match req.get_header::<header::IfRange>() {
        Some(header::IfRange::EntityTag(tag)) => etag.strong_eq(&tag),
        Some(header::IfRange::Date(date)) => {
            secs(date).is_some() && secs(date) == secs(*last_modified)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use std::time::Duration;

    fn validators() -> Validators {
        Validators {
            etag: EntityTag::new_strong("abc".into()),
            last_modified: HttpDate::from(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        }
    }

    fn answer(headers: &[(&str, &str)]) -> Answer {
        let mut req = TestRequest::get();
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        evaluate(&req.to_http_request(), &validators(), 10)
    }

    #[test]
    fn conditions_and_ranges_answer_as_for_a_file() {
        let date = validators().last_modified.to_string();
        let earlier = HttpDate::from(UNIX_EPOCH + Duration::from_secs(1_600_000_000)).to_string();
        assert_eq!(answer(&[]), Answer::Whole);
        assert_eq!(answer(&[("if-match", "\"x\"")]), Answer::PreconditionFailed);
        assert_eq!(answer(&[("if-match", "\"abc\"")]), Answer::Whole);
        assert_eq!(
            answer(&[("if-unmodified-since", &earlier)]),
            Answer::PreconditionFailed
        );
        assert_eq!(
            answer(&[("if-none-match", "W/\"abc\"")]),
            Answer::NotModified
        );
        assert_eq!(answer(&[("if-none-match", "*")]), Answer::NotModified);
        assert_eq!(answer(&[("if-modified-since", &date)]), Answer::NotModified);
        assert_eq!(answer(&[("if-modified-since", &earlier)]), Answer::Whole);
        assert_eq!(
            answer(&[("range", "bytes=2-4")]),
            Answer::Part {
                start: 2,
                length: 3
            }
        );
        assert_eq!(
            answer(&[("range", "bytes=-3")]),
            Answer::Part {
                start: 7,
                length: 3
            }
        );
        assert_eq!(answer(&[("range", "bytes=10-")]), Answer::Unsatisfiable);
        assert_eq!(
            answer(&[("range", "bytes=2-4"), ("if-range", "\"other\"")]),
            Answer::Whole
        );
        assert_eq!(
            answer(&[("range", "bytes=2-4"), ("if-range", &date)]),
            Answer::Part {
                start: 2,
                length: 3
            }
        );
    }
}
