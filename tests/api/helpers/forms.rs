//! Multipart bodies for `POST /upload`: one `file` part, framed by a fixed boundary.

/// The boundary of every body [`form`] and [`framing`] make.
pub const BOUNDARY: &str = "troupe-test-boundary-7MA4YWxkTrZu0gW";

/// The multipart framing around one `file` part.
pub fn framing(filename: &str, content_type: &str) -> (Vec<u8>, Vec<u8>) {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    (head.into_bytes(), tail.into_bytes())
}

/// A whole multipart body with one `file` part.
pub fn form(filename: &str, data: &[u8]) -> Vec<u8> {
    let (mut body, tail) = framing(filename, "application/octet-stream");
    body.extend_from_slice(data);
    body.extend_from_slice(&tail);
    body
}

/// The `Content-Type` of a body [`form`] or [`framing`] made.
pub fn content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}
