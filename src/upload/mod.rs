//! Uploads in their storage ([`storage`]), as plain code the upload actor calls: the
//! directory ([`store`]) or an S3-compatible bucket ([`bucket`]), the blocking file operations ([`mod@file`]), direct I/O ([`direct`]), the digests of unfinished
//! tus uploads between PATCHes ([`digests`]), safe file names
//! ([`filename`]) and the tus header grammar ([`tus`]).

pub mod bucket;
pub mod digests;
pub mod direct;
pub mod file;
pub mod filename;
pub mod handover;
pub mod storage;
pub mod store;
pub mod tus;
pub mod tus_object;

pub use bucket::Bucket;
pub use storage::Storage;
pub use store::Store;
