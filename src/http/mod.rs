//! The HTTP plumbing under the routes: the request context middleware, the request id and
//! the streaming `multipart/form-data` reader.

pub mod middleware;
pub mod multipart;
pub mod request_id;
