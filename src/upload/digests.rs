//! The SHA-256 of unfinished tus uploads, kept in memory between PATCHes.
//!
//! A PATCH hashes the bytes it writes as they stream (`OpenFile::digest`), so the digest
//! of a whole upload is ready when its last byte is on disk instead of being read back
//! from the file afterwards. Between PATCHes the state waits here, keyed by the upload and
//! the offset it covers; the bytes below a recorded offset never change, so a state
//! covering exactly the offset a PATCH starts from is that file's digest so far. A state
//! that is missing (another process wrote the upload, a restart, a full cache) only means
//! the file is digested from disk at the end, as before.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::digest::Hasher;
use crate::ids::UploadId;

/// How many unfinished uploads' states are kept (about 200 bytes each).
pub const DIGEST_CACHE_CAPACITY: usize = 4096;

/// Digest states of unfinished tus uploads, each with the offset it covers.
#[derive(Debug)]
pub struct DigestCache {
    states: Mutex<HashMap<UploadId, (u64, Box<Hasher>)>>,
    capacity: usize,
}

impl DigestCache {
    /// An empty cache holding at most `capacity` states.
    pub fn new(capacity: usize) -> Self {
        Self {
            states: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Takes the state of upload `id` if it covers exactly its first `offset` bytes. Any
    /// state of `id` is removed either way: the PATCH about to run changes what follows.
    pub fn take(&self, id: &UploadId, offset: u64) -> Option<Box<Hasher>> {
        let mut states = self.states.lock().ok()?;
        match states.remove(id) {
            Some((covers, hasher)) if covers == offset => Some(hasher),
            _ => None,
        }
    }

    /// Keeps `hasher` as upload `id`'s state over its first `offset` bytes, once that
    /// offset is recorded; nothing is kept when the cache is full.
    pub fn put(&self, id: UploadId, offset: u64, hasher: Box<Hasher>) {
        let Ok(mut states) = self.states.lock() else {
            return;
        };
        if states.len() < self.capacity || states.contains_key(&id) {
            states.insert(id, (offset, hasher));
        }
    }

    /// Drops upload `id`'s state (the upload is removed or finished).
    pub fn forget(&self, id: &UploadId) {
        if let Ok(mut states) = self.states.lock() {
            states.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{digest_hex, hex, Algorithm};

    fn hashed(data: &[u8]) -> Box<Hasher> {
        let mut hasher = Box::new(Hasher::new(Algorithm::Sha256));
        hasher.update(data);
        hasher
    }

    #[test]
    fn a_state_is_taken_once_and_only_at_its_offset() {
        let cache = DigestCache::new(8);
        let id = UploadId::new();
        cache.put(id, 3, hashed(b"abc"));
        assert!(cache.take(&id, 2).is_none(), "another offset");
        assert!(
            cache.take(&id, 3).is_none(),
            "a miss removed the stale state"
        );
        cache.put(id, 3, hashed(b"abc"));
        let mut state = cache.take(&id, 3).unwrap();
        assert!(cache.take(&id, 3).is_none(), "taken once");
        state.update(b"def");
        assert_eq!(
            hex(&state.finish()),
            digest_hex(Algorithm::Sha256, b"abcdef")
        );
    }

    #[test]
    fn a_full_cache_keeps_what_it_has_and_forget_frees_a_place() {
        let cache = DigestCache::new(1);
        let (a, b) = (UploadId::new(), UploadId::new());
        cache.put(a, 1, hashed(b"a"));
        cache.put(b, 1, hashed(b"b"));
        assert!(cache.take(&b, 1).is_none(), "no room for b");
        cache.put(a, 2, hashed(b"aa"));
        assert!(cache.take(&a, 2).is_some(), "a's own place is reused");
        cache.put(a, 1, hashed(b"a"));
        cache.forget(&a);
        cache.put(b, 1, hashed(b"b"));
        assert!(cache.take(&b, 1).is_some());
    }
}
