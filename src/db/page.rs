//! Keyset pagination, written once: a page is at most `limit` rows with keys above `after`,
//! in key order, and says where the next one starts.

use crate::error::FieldError;

/// Page size when the client gives none.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size a client may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// One page asked for: at most `limit` rows with keys above `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<K> {
    /// 1..=[`MAX_LIMIT`].
    pub limit: u32,
    /// Only keys above this one.
    pub after: K,
}

/// A `limit` query parameter: absent is [`DEFAULT_LIMIT`], else 1..=[`MAX_LIMIT`].
pub fn parse_limit(limit: Option<i64>) -> Result<u32, FieldError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    u32::try_from(limit)
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| FieldError::new("limit", format!("must be from 1 to {MAX_LIMIT}")))
}

impl<K> PageRequest<K> {
    /// The rows a query reads: one past the page tells whether another page exists.
    pub fn rows_to_read(&self) -> i64 {
        i64::from(self.limit) + 1
    }
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
    /// The page in `rows`, read with a limit of [`PageRequest::rows_to_read`]; `key` names
    /// a row's key.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> Self {
        let limit = limit as usize;
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
        assert_eq!(parse_limit(Some(1000)), Ok(MAX_LIMIT));
        assert!(parse_limit(Some(0)).is_err());
        assert!(parse_limit(Some(-1)).is_err());
        assert!(parse_limit(Some(1001)).is_err());
    }
}
