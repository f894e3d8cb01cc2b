//! The HTTP plumbing under the routes: the request context middleware, the request id, request
//! bodies held to a deadline and the streaming `multipart/form-data` reader.

pub mod auth;
pub mod body;
pub mod client_ip;
pub mod conditional;
pub mod cors;
pub mod middleware;
pub mod multipart;
pub mod request_id;
