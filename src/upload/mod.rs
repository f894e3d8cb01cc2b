//! Uploads on disk, as plain code the upload actor calls: the directory ([`store`]), the
//! blocking file operations ([`mod@file`]), direct I/O ([`direct`]), the digests of unfinished
//! tus uploads between PATCHes ([`digests`]), safe file names
//! ([`filename`]) and the tus header grammar ([`tus`]).

pub mod digests;
pub mod direct;
pub mod file;
pub mod filename;
pub mod handover;
pub mod store;
pub mod tus;

pub use store::Store;
