//! tus 1.0 (<https://tus.io/protocols/resumable-upload>): the header grammar, as plain
//! functions the `/files/` handlers call.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::digest::Algorithm;

/// The protocol version served (`Tus-Resumable`, `Tus-Version`).
pub const VERSION: &str = "1.0.0";
/// The extensions served (`Tus-Extension`).
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
/// The checksum algorithms served (`Tus-Checksum-Algorithm`).
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// The media type of a PATCH body.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Longest `Upload-Metadata` header taken, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;

/// One `Upload-Metadata` pair: a key and its decoded value (a key may come alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataPair {
    /// ASCII, no spaces or commas.
    pub key: String,
    /// The base64-decoded value, if any.
    pub value: Option<Vec<u8>>,
}

/// Parses `Upload-Metadata`: comma-separated `key base64value` or `key`; keys unique.
pub fn parse_metadata(raw: &str) -> Result<Vec<MetadataPair>, String> {
    if raw.len() > MAX_METADATA_BYTES {
        return Err(format!(
            "Upload-Metadata is over {MAX_METADATA_BYTES} bytes"
        ));
    }
    let mut pairs: Vec<MetadataPair> = Vec::new();
    for item in raw.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut parts = item.split(' ');
        let key = parts.next().unwrap_or_default();
        let value = parts.next();
        if parts.next().is_some() {
            return Err("an Upload-Metadata pair has more than a key and a value".into());
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err("an Upload-Metadata key is empty or not plain ASCII".into());
        }
        if pairs.iter().any(|p| p.key == key) {
            return Err(format!("Upload-Metadata repeats the key {key:?}"));
        }
        let value = match value {
            None => None,
            Some(v) => Some(
                STANDARD
                    .decode(v)
                    .map_err(|_| format!("the Upload-Metadata value of {key:?} is not base64"))?,
            ),
        };
        pairs.push(MetadataPair {
            key: key.to_owned(),
            value,
        });
    }
    Ok(pairs)
}

/// The value of `key` as UTF-8 text, if present and valid.
pub fn metadata_text<'a>(pairs: &'a [MetadataPair], keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|key| {
        pairs
            .iter()
            .find(|p| p.key == *key)
            .and_then(|p| p.value.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    })
}

/// A parsed `Upload-Checksum`: the algorithm and the expected raw digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// sha1 or sha256.
    pub algorithm: Algorithm,
    /// The digest the body must have.
    pub digest: Vec<u8>,
}

/// Parses `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn parse_checksum(raw: &str) -> Result<Checksum, String> {
    let (name, value) = raw
        .trim()
        .split_once(' ')
        .ok_or("Upload-Checksum must be `<algorithm> <base64 digest>`")?;
    let algorithm = match name.to_ascii_lowercase().as_str() {
        "sha1" => Algorithm::Sha1,
        "sha256" => Algorithm::Sha256,
        _ => {
            return Err(format!(
                "checksum algorithm {name:?} is not supported; use sha1 or sha256"
            ))
        }
    };
    let digest = STANDARD
        .decode(value.trim())
        .map_err(|_| "the Upload-Checksum digest is not base64".to_owned())?;
    Ok(Checksum { algorithm, digest })
}

/// Parses a non-negative integer header (`Upload-Offset`, `Upload-Length`): digits only.
pub fn parse_size(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_decode_and_bad_ones_are_refused() {
        let pairs = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(
            metadata_text(&pairs, &["filename"]),
            Some("world_domination_plan.pdf")
        );
        assert_eq!(pairs[1].value, None);
        assert!(parse_metadata("filename !!!").is_err());
        assert!(parse_metadata("a YQ==,a Yg==").is_err());
        assert!(parse_metadata("a YQ== extra").is_err());
        assert_eq!(parse_metadata("").unwrap(), vec![]);
    }

    #[test]
    fn checksums_parse_sha1_and_sha256_only() {
        let c = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha1);
        assert_eq!(c.digest.len(), 20);
        assert!(parse_checksum("md5 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").is_err());
        assert!(parse_checksum("sha256").is_err());
    }

    #[test]
    fn sizes_are_digits_only() {
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("+1"), None);
        assert_eq!(parse_size("1e3"), None);
        assert_eq!(parse_size(""), None);
    }
}
