//! A streaming `multipart/form-data` reader (RFC 7578 framing, RFC 2046 delimiters) that hands
//! a part's data on as slices of the chunks the payload delivered.
//!
//! Only the bytes that may be the start of a delimiter split across two chunks (fewer than
//! the delimiter's length) are ever copied, and a part's header block while it spans chunks.
//! The next chunk is read only when the part's data is polled, so a slow consumer slows the
//! client instead of filling memory.

use std::fmt::Display;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::http::header::{ContentDisposition, DispositionType, HeaderValue};
use actix_web::mime::{self, Mime};
use bytes::{Buf as _, Bytes};
use futures::Stream;
use memchr::memmem::Finder;

use crate::error::AppError;

/// Longest boundary RFC 2046 allows, in bytes.
pub const MAX_BOUNDARY_BYTES: usize = 70;
/// Most headers one part may have.
pub const MAX_PART_HEADERS: usize = 16;
/// Largest header block of one part, its closing blank line included.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most bytes before the first boundary (read and dropped).
pub const MAX_PREAMBLE_BYTES: usize = 64 * 1024;
/// Most spaces and tabs between a boundary and its line break.
const MAX_PADDING_BYTES: usize = 256;

/// The media type of a request body if it is `multipart/form-data`, else 415.
pub fn form_data_type(content_type: Option<&HeaderValue>) -> Result<Mime, AppError> {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Mime>().ok())
        .filter(|m| m.type_() == mime::MULTIPART && m.subtype() == mime::FORM_DATA)
        .ok_or_else(|| {
            AppError::UnsupportedMediaType("expected Content-Type: multipart/form-data".into())
        })
}

/// A multipart boundary known to be usable: 1 to 70 bytes, without CR or LF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boundary(String);

impl Boundary {
    /// The `boundary` parameter of a media type (quoted or not), or 400.
    pub fn of(media_type: &Mime) -> Result<Self, AppError> {
        let raw = media_type
            .get_param(mime::BOUNDARY)
            .ok_or_else(|| AppError::BadRequest("the multipart boundary is missing".into()))?;
        Self::new(raw.as_str())
    }

    /// Checks a boundary's length (RFC 2046) and that it has no line break, which the
    /// delimiter search relies on: a delimiter's only CR is its first byte.
    pub fn new(raw: &str) -> Result<Self, AppError> {
        if raw.is_empty() || raw.len() > MAX_BOUNDARY_BYTES || raw.contains(['\r', '\n']) {
            return Err(AppError::BadRequest(format!(
                "the multipart boundary must be 1 to {MAX_BOUNDARY_BYTES} characters on one line"
            )));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// What a part's headers say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHeaders {
    /// The form field's name (`Content-Disposition: form-data; name=...`).
    pub name: String,
    /// The client's file name, as sent (`filename*` when it decodes, else `filename`); not
    /// sanitised.
    pub filename: Option<String>,
    /// The part's `Content-Type`, when present and well-formed.
    pub content_type: Option<Mime>,
}

impl PartHeaders {
    fn from_headers(headers: &[httparse::Header<'_>]) -> Result<Self, AppError> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        // RFC 7578 §4.2: every part has `Content-Disposition: form-data` with a name.
        let disposition = header("content-disposition")
            .and_then(|v| HeaderValue::from_bytes(v).ok())
            .and_then(|v| ContentDisposition::from_raw(&v).ok())
            .filter(|cd| cd.disposition == DispositionType::FormData);
        let Some(disposition) = disposition else {
            return Err(malformed(
                "a part has no well-formed Content-Disposition: form-data",
            ));
        };
        let Some(name) = disposition.get_name() else {
            return Err(malformed("a part's Content-Disposition has no name"));
        };
        let content_type = header("content-type")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<Mime>().ok());
        if content_type
            .as_ref()
            .is_some_and(|m| m.type_() == mime::MULTIPART)
        {
            return Err(malformed("nested multipart parts are not supported"));
        }
        Ok(Self {
            name: name.to_owned(),
            filename: extended_filename(&disposition)
                .or_else(|| disposition.get_filename().map(str::to_owned)),
            content_type,
        })
    }
}

/// `filename*=UTF-8''r%C3%A9sum%C3%A9.pdf` (RFC 5987; also ISO-8859-1), if it decodes.
fn extended_filename(disposition: &ContentDisposition) -> Option<String> {
    let ext = disposition.get_filename_ext()?;
    let charset = ext.charset.to_string();
    if charset.eq_ignore_ascii_case("UTF-8") {
        String::from_utf8(ext.value.clone()).ok()
    } else if charset.eq_ignore_ascii_case("ISO-8859-1") {
        Some(ext.value.iter().map(|&b| char::from(b)).collect())
    } else {
        None
    }
}

/// Where the reader is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary: bytes are dropped.
    Preamble,
    /// Just after a boundary; the number of padding bytes seen.
    AfterBoundary(After),
    /// In a part's header block.
    Headers,
    /// In a part's data.
    Body,
    /// After the close delimiter: the epilogue is never read.
    End,
    /// An error was returned; it is returned again.
    Failed,
}

/// What has been read of the line after a boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Nothing yet.
    Start,
    /// The first `-` of a close delimiter.
    Dash,
    /// Spaces and tabs (transport padding), this many.
    Padding(usize),
    /// The CR of the line break.
    Cr,
}

/// Reads a `multipart/form-data` body part by part: [`MultipartReader::next_part`] gives a
/// part's headers, [`MultipartReader::part_body`] its data.
pub struct MultipartReader<S> {
    payload: S,
    /// `\r\n--boundary`: a part's data ends where this starts.
    delimiter: Vec<u8>,
    finder: Finder<'static>,
    /// The unread rest of the last chunk (a slice of it).
    buf: Bytes,
    /// A copy of a chunk's end that may be the start of a delimiter: always
    /// `delimiter[..tail.len()]` and shorter than the delimiter.
    tail: Vec<u8>,
    /// A part's header block while it spans chunks.
    head: Vec<u8>,
    state: State,
    /// Bytes of preamble dropped so far.
    preamble: usize,
    /// Whether the first boundary has been read: before it, a would-be boundary followed by
    /// something else is only more preamble.
    opened: bool,
    /// The error that stopped the reader.
    failure: Option<AppError>,
}

impl<S, E> MultipartReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display + Into<AppError>,
{
    /// A reader of `payload`, a body framed by `boundary`.
    pub fn new(boundary: &Boundary, payload: S) -> Self {
        let delimiter = [b"\r\n--", boundary.0.as_bytes()].concat();
        let finder = Finder::new(&delimiter).into_owned();
        Self {
            payload,
            delimiter,
            finder,
            buf: Bytes::new(),
            // The first boundary may open the body without a line break before it: reading
            // starts as if one had been seen.
            tail: b"\r\n".to_vec(),
            head: Vec::new(),
            state: State::Preamble,
            preamble: 0,
            opened: false,
            failure: None,
        }
    }

    /// The next part's headers, `None` after the close delimiter. The rest of a part whose
    /// data was not read to its end is read and dropped first.
    pub async fn next_part(&mut self) -> Result<Option<PartHeaders>, AppError> {
        futures::future::poll_fn(|cx| self.poll_next_part(cx)).await
    }

    /// The current part's data, as slices of the payload's chunks; ends at the part's end
    /// (at once if there is no current part). Read one chunk at a time, only when polled.
    pub fn part_body(&mut self) -> PartBody<'_, S> {
        PartBody { reader: self }
    }

    /// The error that stopped the reader, if one did (the part's stream gives it to its
    /// consumer, which may only keep its text).
    pub fn failure(&self) -> Option<&AppError> {
        self.failure.as_ref()
    }

    fn fail(&mut self, err: &AppError) {
        self.state = State::Failed;
        self.failure = Some(err.clone());
    }

    fn poll_next_part(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<PartHeaders>, AppError>> {
        let result = ready!(self.poll_next_part_inner(cx));
        if let Err(err) = &result {
            self.fail(err);
        }
        Poll::Ready(result)
    }

    fn poll_next_part_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<PartHeaders>, AppError>> {
        loop {
            match self.state {
                State::Preamble => {
                    if let Some(dropped) = ready!(self.poll_scan(cx))? {
                        self.preamble += dropped.len();
                        if self.preamble > MAX_PREAMBLE_BYTES {
                            return Poll::Ready(Err(malformed(
                                "the body has too much before its first boundary",
                            )));
                        }
                    }
                }
                State::Body => {
                    ready!(self.poll_scan(cx))?;
                }
                State::AfterBoundary(after) => ready!(self.poll_after_boundary(cx, after))?,
                State::Headers => return self.poll_headers(cx).map_ok(Some),
                State::End => return Poll::Ready(Ok(None)),
                State::Failed => {
                    return Poll::Ready(Err(self.failure.clone().unwrap_or_else(truncated)))
                }
            }
        }
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, AppError>>> {
        if self.state != State::Body {
            return Poll::Ready(None);
        }
        match ready!(self.poll_scan(cx)) {
            Ok(data) => Poll::Ready(data.map(Ok)),
            Err(err) => {
                self.fail(&err);
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    /// The next chunk of the payload that is not empty; `None` at its end.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, AppError>> {
        loop {
            match ready!(Pin::new(&mut self.payload).poll_next(cx)) {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => return Poll::Ready(Ok(Some(chunk))),
                // The body's own error (a timeout is 408, not a truncated form).
                Some(Err(err)) => return Poll::Ready(Err(err.into())),
                None => return Poll::Ready(Ok(None)),
            }
        }
    }

    /// Makes sure `buf` has bytes; the end of the payload here is a truncated body.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), AppError>> {
        if self.buf.is_empty() {
            match ready!(self.poll_chunk(cx))? {
                Some(chunk) => self.buf = chunk,
                None => return Poll::Ready(Err(truncated())),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The next run of data before the delimiter (preamble or a part's data), or `None` once
    /// the delimiter is read (the state is then `AfterBoundary`).
    fn poll_scan(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, AppError>> {
        loop {
            ready!(self.poll_fill(cx))?;
            if !self.tail.is_empty() {
                // The last chunk ended with the start of a delimiter: see if this one goes on.
                let rest = &self.delimiter[self.tail.len()..];
                let n = rest.len().min(self.buf.len());
                if self.buf[..n] == rest[..n] {
                    self.buf.advance(n);
                    if n == rest.len() {
                        self.tail.clear();
                        self.state = State::AfterBoundary(After::Start);
                        return Poll::Ready(Ok(None));
                    }
                    self.tail.extend_from_slice(&rest[..n]);
                    continue;
                }
                // Data after all. The tail holds one CR, at its start (the boundary has
                // none), so no delimiter can start later in it.
                let data = Bytes::copy_from_slice(&self.tail);
                self.tail.clear();
                return Poll::Ready(Ok(Some(data)));
            }
            if let Some(at) = self.finder.find(&self.buf) {
                let data = self.buf.split_to(at);
                self.buf.advance(self.delimiter.len());
                self.state = State::AfterBoundary(After::Start);
                return Poll::Ready(Ok((!data.is_empty()).then_some(data)));
            }
            let keep = partial_delimiter_len(&self.buf, &self.delimiter);
            let data = self.buf.split_to(self.buf.len() - keep);
            self.tail.extend_from_slice(&self.buf);
            self.buf = Bytes::new();
            if !data.is_empty() {
                return Poll::Ready(Ok(Some(data)));
            }
        }
    }

    /// Reads what follows a boundary: `--` (the close delimiter) ends the form; optional
    /// padding and a line break start a part's headers.
    fn poll_after_boundary(
        &mut self,
        cx: &mut Context<'_>,
        mut after: After,
    ) -> Poll<Result<(), AppError>> {
        loop {
            ready!(self.poll_fill(cx))?;
            let next = match (after, self.buf[0]) {
                (After::Start, b'-') => After::Dash,
                (After::Dash, b'-') => {
                    self.buf.advance(1);
                    self.opened = true;
                    self.state = State::End;
                    return Poll::Ready(Ok(()));
                }
                (After::Start, b' ' | b'\t') => After::Padding(1),
                (After::Padding(n), b' ' | b'\t') if n < MAX_PADDING_BYTES => After::Padding(n + 1),
                (After::Start | After::Padding(_), b'\r') => After::Cr,
                (After::Cr, b'\n') => {
                    self.buf.advance(1);
                    self.opened = true;
                    self.state = State::Headers;
                    return Poll::Ready(Ok(()));
                }
                // Left unread: it may start the real first boundary.
                _ if !self.opened => {
                    self.state = State::Preamble;
                    return Poll::Ready(Ok(()));
                }
                _ => {
                    return Poll::Ready(Err(malformed(
                        "a boundary is followed by neither `--` nor a line break",
                    )))
                }
            };
            self.buf.advance(1);
            after = next;
            self.state = State::AfterBoundary(after);
        }
    }

    /// Reads a part's header block; the part's data follows.
    fn poll_headers(&mut self, cx: &mut Context<'_>) -> Poll<Result<PartHeaders, AppError>> {
        loop {
            ready!(self.poll_fill(cx))?;
            if self.head.is_empty() {
                // Usually the whole block is in one chunk: parsed in place, nothing copied.
                if let Some((len, part)) = parse_head(&self.buf)? {
                    self.buf.advance(len);
                    self.state = State::Body;
                    return Poll::Ready(Ok(part));
                }
                if self.buf.len() >= MAX_HEADER_BYTES {
                    return Poll::Ready(Err(head_too_large()));
                }
                self.head.extend_from_slice(&self.buf);
                self.buf = Bytes::new();
                continue;
            }
            // The block spans chunks: copy no more of this one than the limit allows, and
            // leave what follows the block where it is.
            let before = self.head.len();
            let take = self.buf.len().min(MAX_HEADER_BYTES + 1 - before);
            self.head.extend_from_slice(&self.buf[..take]);
            // A block can only end with a line feed.
            if memchr::memchr(b'\n', &self.buf[..take]).is_some() {
                if let Some((len, part)) = parse_head(&self.head)? {
                    self.buf.advance(len.saturating_sub(before));
                    self.head.clear();
                    self.state = State::Body;
                    return Poll::Ready(Ok(part));
                }
            }
            if self.head.len() > MAX_HEADER_BYTES {
                return Poll::Ready(Err(head_too_large()));
            }
            self.buf.advance(take);
        }
    }
}

/// A part's data, borrowed from its reader (see [`MultipartReader::part_body`]). Dropping it
/// before its end is fine: the next [`MultipartReader::next_part`] skips the rest.
pub struct PartBody<'a, S> {
    reader: &'a mut MultipartReader<S>,
}

impl<S, E> Stream for PartBody<'_, S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display + Into<AppError>,
{
    type Item = Result<Bytes, AppError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.reader.poll_body(cx)
    }
}

/// The length of the longest end of `buf` that is the start of `delimiter` (but not all of
/// it). The delimiter's only CR is its first byte, so such an end starts at a CR.
fn partial_delimiter_len(buf: &[u8], delimiter: &[u8]) -> usize {
    let window = &buf[buf.len() - buf.len().min(delimiter.len() - 1)..];
    memchr::memchr_iter(b'\r', window)
        .map(|at| &window[at..])
        .find(|end| delimiter.starts_with(end))
        .map_or(0, <[u8]>::len)
}

/// A complete header block at the start of `block`: its length and what it says.
fn parse_head(block: &[u8]) -> Result<Option<(usize, PartHeaders)>, AppError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
    match httparse::parse_headers(block, &mut headers) {
        Ok(httparse::Status::Complete((len, _))) if len > MAX_HEADER_BYTES => Err(head_too_large()),
        Ok(httparse::Status::Complete((len, headers))) => {
            Ok(Some((len, PartHeaders::from_headers(headers)?)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(malformed(&format!(
            "a part has more than {MAX_PART_HEADERS} headers"
        ))),
        Err(err) => Err(malformed(&format!(
            "a part's headers are malformed ({err})"
        ))),
    }
}

fn malformed(what: &str) -> AppError {
    AppError::BadRequest(format!("malformed multipart body: {what}"))
}

fn head_too_large() -> AppError {
    malformed(&format!(
        "a part's headers are over {MAX_HEADER_BYTES} bytes"
    ))
}

fn truncated() -> AppError {
    AppError::BadRequest("the upload was interrupted or is truncated".into())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use futures::executor::block_on;
    use futures::StreamExt as _;

    use actix_web::error::PayloadError;

    use super::*;

    const BOUNDARY: &str = "b0undary-XyZ";

    fn boundary() -> Boundary {
        Boundary::new(BOUNDARY).unwrap()
    }

    /// A part as read: its headers and its data chunks.
    type Read = (PartHeaders, Vec<Bytes>);

    fn reader(
        chunks: &[Bytes],
    ) -> MultipartReader<impl Stream<Item = Result<Bytes, PayloadError>> + Unpin> {
        let stream = futures::stream::iter(Vec::from(chunks).into_iter().map(Ok));
        MultipartReader::new(&boundary(), stream)
    }

    /// Reads every part of a body delivered as `chunks`.
    fn read_all(chunks: &[Bytes]) -> Result<Vec<Read>, AppError> {
        let mut form = reader(chunks);
        block_on(async {
            let mut parts = Vec::new();
            while let Some(headers) = form.next_part().await? {
                let mut data = Vec::new();
                let mut body = form.part_body();
                while let Some(chunk) = body.next().await {
                    data.push(chunk?);
                }
                parts.push((headers, data));
            }
            Ok(parts)
        })
    }

    fn concat(chunks: &[Bytes]) -> Vec<u8> {
        chunks.concat()
    }

    /// `body` cut at every byte into two chunks, and into one-byte chunks.
    fn splits(body: &[u8]) -> Vec<Vec<Bytes>> {
        let mut out: Vec<Vec<Bytes>> = (0..=body.len())
            .map(|at| {
                vec![
                    Bytes::copy_from_slice(&body[..at]),
                    Bytes::copy_from_slice(&body[at..]),
                ]
            })
            .collect();
        out.push(body.iter().map(|&b| Bytes::copy_from_slice(&[b])).collect());
        out
    }

    /// Every data chunk is a slice of an input chunk, or a copy shorter than the delimiter
    /// (the held-back start of a would-be delimiter), at most one per input chunk.
    fn assert_zero_copy(input: &[Bytes], parts: &[Read]) {
        let delimiter_len = BOUNDARY.len() + 4;
        let mut copies = 0;
        for data in parts.iter().flat_map(|(_, data)| data) {
            let start = data.as_ptr() as usize;
            let inside = input.iter().any(|chunk| {
                let from = chunk.as_ptr() as usize;
                start >= from && start + data.len() <= from + chunk.len()
            });
            if !inside {
                assert!(data.len() < delimiter_len, "a copy of {} bytes", data.len());
                copies += 1;
            }
        }
        assert!(
            copies <= input.len(),
            "{copies} copies of {} chunks",
            input.len()
        );
    }

    fn part(name: &str, filename: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut out = format!("Content-Disposition: form-data; name=\"{name}\"").into_bytes();
        if let Some(filename) = filename {
            out.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
            out.extend_from_slice(b"\r\nContent-Type: application/pdf");
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(data);
        out
    }

    /// A body of `parts`, with a preamble and what follows the close delimiter.
    fn body(preamble: &[u8], parts: &[Vec<u8>], epilogue: &[u8]) -> Vec<u8> {
        let mut out = preamble.to_vec();
        for part in parts {
            out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{BOUNDARY}--").as_bytes());
        out.extend_from_slice(epilogue);
        out
    }

    /// Reads `body` split every way and checks the parts' names and data each time.
    fn assert_reads(body: &[u8], want: &[(&str, &[u8])]) {
        for chunks in splits(body) {
            let parts = read_all(&chunks).unwrap_or_else(|e| panic!("{e} in {chunks:?}"));
            let got: Vec<(&str, Vec<u8>)> = parts
                .iter()
                .map(|(h, data)| (h.name.as_str(), concat(data)))
                .collect();
            let want: Vec<(&str, Vec<u8>)> = want.iter().map(|(n, d)| (*n, d.to_vec())).collect();
            assert_eq!(got, want, "{chunks:?}");
            assert_zero_copy(&chunks, &parts);
        }
    }

    fn assert_fails(body: &[u8], message: &str) {
        for chunks in splits(body) {
            match read_all(&chunks) {
                Err(AppError::BadRequest(got)) => assert!(got.contains(message), "{got}"),
                other => panic!("{other:?} for {chunks:?}"),
            }
        }
    }

    #[test]
    fn one_file_part_reads_back_exactly() {
        let data = b"%PDF-1.7 \x00\xff binary\r\n stuff";
        let body = body(b"", &[part("file", Some("r.pdf"), data)], b"\r\n");
        assert_reads(&body, &[("file", data)]);
        let parts = read_all(&[Bytes::from(body)]).unwrap();
        assert_eq!(
            parts[0].0,
            PartHeaders {
                name: "file".into(),
                filename: Some("r.pdf".into()),
                content_type: Some(mime::APPLICATION_PDF),
            }
        );
    }

    #[test]
    fn plain_fields_before_and_after_the_file_are_read_too() {
        let body = body(
            b"",
            &[
                part("note", None, b"hello"),
                part("file", Some("a.bin"), b"0123456789"),
                part("tag", None, b""),
            ],
            b"",
        );
        assert_reads(
            &body,
            &[("note", b"hello"), ("file", b"0123456789"), ("tag", b"")],
        );
    }

    #[test]
    fn an_empty_file_has_no_data() {
        let body = body(b"", &[part("file", Some("e"), b"")], b"\r\n");
        assert_reads(&body, &[("file", b"")]);
    }

    #[test]
    fn delimiter_lookalikes_in_the_data_are_data() {
        let mut data = Vec::new();
        for cut in 0..BOUNDARY.len() {
            data.extend_from_slice(b"\r\n--");
            data.extend_from_slice(&BOUNDARY.as_bytes()[..cut]);
            data.push(b'!');
        }
        data.extend_from_slice(format!("--{BOUNDARY}\r\n x--{BOUNDARY}--\r\r\n-\r").as_bytes());
        let body = body(b"", &[part("file", Some("l"), &data)], b"\r\n");
        assert_reads(&body, &[("file", &data)]);
        // Cut at every pair of places, too.
        let short = format!("\r\n-\r\n--{}\r\r\n-\n--{BOUNDARY} \r", &BOUNDARY[..5]);
        let body = body_of_file(short.as_bytes());
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let chunks = [&body[..i], &body[i..j], &body[j..]].map(Bytes::copy_from_slice);
                let parts = read_all(&chunks).unwrap();
                assert_eq!(concat(&parts[0].1), short.as_bytes(), "{chunks:?}");
                assert_zero_copy(&chunks, &parts);
            }
        }
    }

    fn body_of_file(data: &[u8]) -> Vec<u8> {
        body(b"", &[part("file", Some("f"), data)], b"")
    }

    #[test]
    fn preamble_and_epilogue_are_ignored() {
        let preamble = format!("This is a preamble.\r\n--{BOUNDARY}x is not a boundary\r\n");
        let body = body(
            preamble.as_bytes(),
            &[part("file", Some("p"), b"data")],
            b"\r\nepilogue --b0undary-XyZ\r\n garbage",
        );
        assert_reads(&body, &[("file", b"data")]);
        // A preamble that ends in a line break right before the first boundary.
        let body = body_with_preamble(b"\r\n");
        assert_reads(&body, &[("file", b"data")]);
        // Would-be boundaries before the first one are preamble, whatever follows them.
        for preamble in ["--{B}x\r\n", "--{B}\r\r\n", "--{B}-\r\n--{B} x\r\n"] {
            let body = body_with_preamble(preamble.replace("{B}", BOUNDARY).as_bytes());
            assert_reads(&body, &[("file", b"data")]);
        }
    }

    fn body_with_preamble(preamble: &[u8]) -> Vec<u8> {
        body(preamble, &[part("file", Some("p"), b"data")], b"")
    }

    #[test]
    fn the_close_delimiter_may_end_the_body_or_be_followed_by_crlf() {
        for end in [&b""[..], b"\r\n", b"  \r\n"] {
            let body = body(b"", &[part("file", Some("c"), b"x")], end);
            assert_reads(&body, &[("file", b"x")]);
        }
    }

    #[test]
    fn transport_padding_after_a_boundary_is_allowed() {
        let body = format!(
            "--{BOUNDARY} \t\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--{BOUNDARY}--"
        );
        assert_reads(body.as_bytes(), &[("file", b"x")]);
    }

    #[test]
    fn a_form_without_parts_has_none() {
        assert_reads(format!("--{BOUNDARY}--\r\n").as_bytes(), &[]);
    }

    #[test]
    fn truncated_bodies_fail() {
        let whole = body(b"", &[part("file", Some("t"), b"some data")], b"");
        // Every proper prefix (the close delimiter's `--` is what ends a form).
        for len in 0..whole.len() {
            assert_fails(&whole[..len], "interrupted or is truncated");
        }
    }

    #[test]
    fn an_interrupted_payload_fails_and_is_remembered() {
        let head = body_of_file(b"0123456789");
        let stream = futures::stream::iter([
            Ok(Bytes::copy_from_slice(&head[..head.len() - 20])),
            Err(PayloadError::Incomplete(None)),
        ]);
        let mut form = MultipartReader::new(&boundary(), stream);
        block_on(async {
            form.next_part().await.unwrap().unwrap();
            let mut body = form.part_body();
            let mut failed = false;
            while let Some(chunk) = body.next().await {
                failed |= chunk.is_err();
            }
            assert!(failed);
            assert!(form.failure().is_some());
            assert!(form.next_part().await.is_err());
        });
    }

    #[test]
    fn malformed_headers_fail() {
        for head in [
            "Content-Disposition form-data; name=\"file\"\r\n\r\n",
            "Content-Disposition: form-data; name=\"file\"\r\nBad Header: x\r\n\r\n",
            "Content-Type: text/plain\r\n\r\n",
            "Content-Disposition: attachment; name=\"file\"\r\n\r\n",
            "Content-Disposition: form-data; filename=\"a\"\r\n\r\n",
            "Content-Disposition: form-data; name=\"file\r\n\r\n",
            "Content-Disposition: form-data; name=\"file\"\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n",
        ] {
            let body = format!("--{BOUNDARY}\r\n{head}data\r\n--{BOUNDARY}--");
            assert_fails(body.as_bytes(), "malformed multipart body");
        }
        for after in ["x\r\n", "-x", "\rx", " x", "\r\r\n"] {
            let body = format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--{BOUNDARY}{after}"
            );
            assert_fails(body.as_bytes(), "neither `--` nor a line break");
        }
    }

    #[test]
    fn too_many_or_too_large_headers_fail() {
        let mut many = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"\r\n");
        for i in 0..MAX_PART_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str(&format!("\r\nx\r\n--{BOUNDARY}--"));
        assert_fails(many.as_bytes(), "more than 16 headers");

        let block = |filler: usize| {
            let mut head =
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"\r\nX-Filler: ");
            head.push_str(&"a".repeat(filler));
            head.push_str("\r\n\r\n");
            // The block follows `--boundary\r\n`.
            let block_len = head.len() - (BOUNDARY.len() + 4);
            head.push_str(&format!("x\r\n--{BOUNDARY}--"));
            (head, block_len)
        };
        let (_, bare) = block(0);
        let (fits, len) = block(MAX_HEADER_BYTES - bare);
        assert_eq!(len, MAX_HEADER_BYTES);
        let (over, _) = block(MAX_HEADER_BYTES + 1 - bare);
        // Long bodies: two-chunk splits only at a few places, one-byte chunks once.
        for body in [fits.as_bytes(), over.as_bytes()] {
            let ok = body.len() == fits.len();
            for at in (0..body.len()).step_by(97).chain([body.len() - 20]) {
                let chunks = [&body[..at], &body[at..]].map(Bytes::copy_from_slice);
                let result = read_all(&chunks);
                assert_eq!(result.is_ok(), ok, "{at}: {result:?}");
            }
            let bytes: Vec<Bytes> = body.iter().map(|&b| Bytes::copy_from_slice(&[b])).collect();
            assert_eq!(read_all(&bytes).is_ok(), ok);
        }
    }

    #[test]
    fn too_much_preamble_fails() {
        // The limit counts the line break before the first boundary.
        for (len, ok) in [
            (MAX_PREAMBLE_BYTES - 2, true),
            (MAX_PREAMBLE_BYTES - 1, false),
        ] {
            let mut preamble = vec![b'p'; len];
            preamble.extend_from_slice(b"\r\n");
            let body = body_with_preamble(&preamble);
            assert_eq!(read_all(&[Bytes::from(body)]).is_ok(), ok, "{len}");
        }
    }

    #[test]
    fn filenames_unquote_and_prefer_the_extended_form() {
        for (disposition, want) in [
            (
                r#"name="file"; filename="a\"b\\c.txt""#,
                Some(r#"a"b\c.txt"#),
            ),
            (
                r#"name="file"; filename="semi;colon.txt""#,
                Some("semi;colon.txt"),
            ),
            ("name=file; filename=plain.txt", Some("plain.txt")),
            (
                r#"name="file"; filename="resume.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"#,
                Some("résumé.pdf"),
            ),
            (
                "name=\"file\"; filename=\"r\u{e9}sum\u{e9}.pdf\"",
                Some("résumé.pdf"),
            ),
            ("name=\"file\"", None),
        ] {
            let body = format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\r\nx\r\n--{BOUNDARY}--"
            );
            let parts = read_all(&[Bytes::from(body)]).unwrap();
            assert_eq!(parts[0].0.name, "file");
            assert_eq!(parts[0].0.filename.as_deref(), want, "{disposition}");
        }
    }

    #[test]
    fn part_data_is_read_only_when_polled_and_the_rest_is_skipped() {
        let pulled = Rc::new(Cell::new(0));
        let counter = pulled.clone();
        let chunks = vec![
            Bytes::from(format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n"
            )),
            Bytes::from_static(b"one"),
            Bytes::from_static(b"two"),
            Bytes::from_static(b"three"),
            Bytes::from(format!(
                "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"next\"\r\n\r\nn\r\n--{BOUNDARY}--"
            )),
        ];
        let stream = futures::stream::iter(chunks).map(move |c| {
            counter.set(counter.get() + 1);
            Ok::<_, PayloadError>(c)
        });
        let mut form = MultipartReader::new(&boundary(), stream);
        block_on(async {
            assert_eq!(form.next_part().await.unwrap().unwrap().name, "file");
            assert_eq!(pulled.get(), 1);
            let first = form.part_body().next().await.unwrap().unwrap();
            assert_eq!(first, "one");
            assert_eq!(pulled.get(), 2);
            // The rest of `file` is skipped.
            assert_eq!(form.next_part().await.unwrap().unwrap().name, "next");
            assert_eq!(pulled.get(), 5);
            assert!(form.next_part().await.unwrap().is_none());
            assert!(form.part_body().next().await.is_none());
        });
    }

    #[test]
    fn boundaries_come_from_the_media_type() {
        let of = |ct: &str| {
            form_data_type(Some(&HeaderValue::from_str(ct).unwrap())).and_then(|m| Boundary::of(&m))
        };
        assert_eq!(
            of("multipart/form-data; boundary=abc").unwrap(),
            Boundary("abc".into())
        );
        assert_eq!(
            of("multipart/form-data; boundary=\"a b:c\"").unwrap(),
            Boundary("a b:c".into())
        );
        assert_eq!(
            of(&format!("multipart/form-data; boundary={}", "x".repeat(70))).unwrap(),
            Boundary("x".repeat(70))
        );
        let status = |ct: &str| of(ct).unwrap_err().status().as_u16();
        assert_eq!(status("multipart/form-data"), 400);
        assert_eq!(
            status(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            400
        );
        assert_eq!(status("multipart/mixed; boundary=abc"), 415);
        assert_eq!(status("application/json"), 415);
        assert_eq!(
            form_data_type(None).unwrap_err().code(),
            "unsupported_media_type"
        );
    }

    /// Mangled forms (bytes flipped, cut, doubled, boundary fragments dropped in) read in
    /// random chunks: the reader answers data or an error, never panics, and every data byte
    /// it hands on is one the body holds.
    #[test]
    fn mangled_bodies_never_panic_the_reader() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below.max(1) as u64) as usize
        };
        let fragments: [&[u8]; 6] = [
            b"\r\n",
            b"--",
            BOUNDARY.as_bytes(),
            b"\r\n--b0und",
            b"Content-Disposition: form-data; name=\"file\"\r\n\r\n",
            b"\r\n\r\n",
        ];
        let seeds = [
            body_of_file(b"some file data"),
            body(
                b"pre",
                &[part("a", None, b"1"), part("file", Some("x"), &[0xAB; 300])],
                b"epi",
            ),
        ];
        for round in 0..3000 {
            let mut mangled = seeds[round % seeds.len()].clone();
            for _ in 0..1 + next(4) {
                let at = next(mangled.len() + 1);
                match next(4) {
                    0 if !mangled.is_empty() => {
                        let i = at.min(mangled.len() - 1);
                        mangled[i] ^= 1 << next(8);
                    }
                    1 => mangled.truncate(at),
                    2 => {
                        let piece = mangled[at..].to_vec();
                        mangled.splice(at..at, piece.into_iter().take(next(40)));
                    }
                    _ => {
                        let fragment = fragments[next(fragments.len())];
                        mangled.splice(at..at, fragment.iter().copied());
                    }
                }
            }
            let mut chunks = Vec::new();
            let mut rest = mangled.as_slice();
            while !rest.is_empty() {
                let take = 1 + next(rest.len().min(64));
                chunks.push(Bytes::copy_from_slice(&rest[..take]));
                rest = &rest[take..];
            }
            if let Ok(parts) = read_all(&chunks) {
                let total: usize = parts.iter().flat_map(|(_, d)| d).map(Bytes::len).sum();
                assert!(total <= mangled.len(), "round {round}: more data than body");
            }
        }
    }
}
