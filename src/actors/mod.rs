//! The actors, one module each with its messages and its handle: `Db` (`DbActor`),
//! `Uploads` (`UploadActor`), `Fetch` (`FetchActor`, one per HTTP worker) and `CpuPool`
//! (`CpuActor` on `SyncArbiter` threads). Nothing outside this module speaks actix: callers
//! use the handles, which own each actor's address, timeout and admission.

pub mod cpu;
pub mod db;
pub mod fetch;
pub mod supervise;
pub mod upload;
