//! Bytes to send and files to look for: deterministic noise, its digests, what is left on disk.

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::helpers::TestApp;

/// The SHA-256 of `data` in lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes, generated chunk by chunk (xorshift).
pub struct Noise(u64);

impl Noise {
    /// The stream for `seed` (the same seed, the same bytes).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next `len` bytes.
    pub fn chunk(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Waits until no file is left under the upload dir (cleanup runs after the response).
pub async fn assert_no_files_left(app: &TestApp) {
    let dir = app.dir.path().join("uploads");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let files = files_under(&dir);
        if files.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "files left behind: {files:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}
