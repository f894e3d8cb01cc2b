//! Keyset pagination, written once: a page is at most `limit` rows with keys above `after`,
//! in key order, and says where the next one starts.

use crate::error::FieldError;

/// Page size when the client gives none.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size a client may ask for.
pub const MAX_LIMIT: i64 = 1000;

/// One page asked for: at most `limit` rows with keys above `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<K> {
    /// 1..=[`MAX_LIMIT`].
    pub limit: i64,
    /// Only keys above this one.
    pub after: K,
}

/// A `limit` query parameter: absent is [`DEFAULT_LIMIT`], else 1..=[`MAX_LIMIT`].
pub fn parse_limit(limit: Option<i64>) -> Result<i64, FieldError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(FieldError::new(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}

/// One page of rows in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, K> {
    /// At most `limit` rows.
    pub items: Vec<T>,
    /// The `after` of the next page, or `None` on the last page.
    pub next_after: Option<K>,
}

impl<T, K> Page<T, K> {
    /// The page in `rows`, read with a limit of `limit + 1` (the extra row tells whether
    /// another page exists); `key` names a row's key.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let next_after = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(key)
        } else {
            None
        };
        Self {
            items: rows,
            next_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extra_row_marks_a_next_page() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| *n);
        assert_eq!((page.items, page.next_after), (vec![1, 2], Some(2)));
        let last = Page::from_rows(vec![1, 2], 2, |n| *n);
        assert_eq!((last.items, last.next_after), (vec![1, 2], None));
    }

    #[test]
    fn limits_outside_one_to_max_are_refused() {
        assert_eq!(parse_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some(MAX_LIMIT)), Ok(MAX_LIMIT));
        assert!(parse_limit(Some(0)).is_err());
        assert!(parse_limit(Some(MAX_LIMIT + 1)).is_err());
    }
}
