//! [`Storage`]: where uploads live, as `TROUPE_STORAGE` says: files in a directory
//! ([`Store`]) or objects in an S3-compatible bucket ([`Bucket`]).

use std::time::Duration;

use super::bucket::Bucket;
use super::store::Store;
use crate::config::{self, AwsSettings};
use crate::error::AppError;

/// The upload storage. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Storage {
    /// `file://DIR`.
    Dir(Store),
    /// `s3://BUCKET/PREFIX`.
    Bucket(Bucket),
}

impl From<Store> for Storage {
    fn from(store: Store) -> Self {
        Self::Dir(store)
    }
}

impl Storage {
    /// Opens the storage `storage` names: a directory is created (and its stale temp files
    /// removed), a bucket's client built. The error names the variable and the cause.
    pub fn open(storage: &config::Storage, aws: &AwsSettings) -> Result<Self, String> {
        match storage {
            config::Storage::Dir(dir) => Store::open(dir)
                .map(Self::Dir)
                .map_err(|e| format!("TROUPE_STORAGE: cannot create {}: {e}", dir.display())),
            config::Storage::S3(location) => Bucket::open(location, aws)
                .map(Self::Bucket)
                .map_err(|e| format!("TROUPE_STORAGE: cannot use {storage}: {e}")),
        }
    }

    /// The directory, for what only files can do (tus).
    pub fn dir(&self) -> Option<&Store> {
        match self {
            Self::Dir(store) => Some(store),
            Self::Bucket(_) => None,
        }
    }

    /// The bucket, when uploads are objects.
    pub fn bucket(&self) -> Option<&Bucket> {
        match self {
            Self::Dir(_) => None,
            Self::Bucket(bucket) => Some(bucket),
        }
    }

    /// `file` or `s3`, for logs and `/readyz`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Dir(_) => "file",
            Self::Bucket(_) => "s3",
        }
    }

    /// Whether the storage answers within `timeout`. A directory always does (a file
    /// operation that fails is that request's error); a bucket is asked.
    pub async fn check(&self, timeout: Duration) -> Result<(), AppError> {
        match self {
            Self::Dir(_) => Ok(()),
            Self::Bucket(bucket) => bucket.check(timeout).await,
        }
    }
}
