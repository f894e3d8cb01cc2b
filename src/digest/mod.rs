//! Digests (SHA-256, SHA-1): of bytes, chunk by chunk, or of a stored file; the CPU-heavy
//! work the `CpuActor` runs on its `SyncArbiter` threads.

use std::io::Read as _;
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest as _, Sha256};

/// A content digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-1 (tus checksums).
    Sha1,
    /// SHA-256 (upload metadata, tus checksums).
    Sha256,
}

/// The lowercase hex digest of `data`.
pub fn digest_hex(algorithm: Algorithm, data: &[u8]) -> String {
    match algorithm {
        Algorithm::Sha1 => hex(&Sha1::digest(data)),
        Algorithm::Sha256 => hex(&Sha256::digest(data)),
    }
}

/// A digest in progress: fed chunk by chunk, so a file is never held whole in memory.
/// It travels inside messages (`HashChunk`), one CPU job per batch of chunks.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// SHA-1 state.
    Sha1(Sha1),
    /// SHA-256 state.
    Sha256(Sha256),
}

impl Hasher {
    /// A fresh digest of `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha1 => Self::Sha1(Sha1::new()),
            Algorithm::Sha256 => Self::Sha256(Sha256::new()),
        }
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// The raw digest bytes.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// Digests a whole file, reading it in 1 MiB blocks (never whole in memory).
pub fn digest_file(algorithm: Algorithm, path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc_matches_the_standard_vector() {
        assert_eq!(
            digest_hex(Algorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest_hex(Algorithm::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn chunked_hashing_equals_one_shot_and_a_file_digest() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = Hasher::new(Algorithm::Sha256);
        for chunk in data.chunks(65_537) {
            hasher.update(chunk);
        }
        let chunked = hex(&hasher.finish());
        assert_eq!(chunked, digest_hex(Algorithm::Sha256, &data));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        assert_eq!(
            hex(&digest_file(Algorithm::Sha256, &path).unwrap()),
            chunked
        );
    }
}
