//! HTTP/1.1 by hand over a plain `TcpStream`, as a keep-alive client or a load balancer
//! speaks it, with every way a request can fail told apart: refused, reset, broken pipe,
//! or written and never answered.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a client waits for an answer before calling it lost.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens: the connection was refused.
    Refused,
    /// The connection was reset while the request was written or its answer read.
    Reset,
    /// The request was written to a connection the server had closed.
    BrokenPipe,
    /// The request was written and the connection ended without a whole answer.
    NoAnswer,
    /// Anything else (a timeout, an answer that is not HTTP).
    Other(String),
}

impl Failure {
    fn of(err: &std::io::Error) -> Self {
        match err.kind() {
            ErrorKind::ConnectionRefused => Self::Refused,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => Self::Reset,
            ErrorKind::BrokenPipe => Self::BrokenPipe,
            ErrorKind::UnexpectedEof => Self::NoAnswer,
            _ => Self::Other(err.to_string()),
        }
    }
}

/// An answer as it came.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server closes the connection after this answer (`Connection: close`).
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A client that keeps its connection open between requests, opens one when it has none,
/// and lets it go after an answer that says `Connection: close`.
pub struct KeepAlive {
    addr: SocketAddr,
    stream: Option<TcpStream>,
}

impl KeepAlive {
    /// A client of `addr`, not connected yet.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, stream: None }
    }

    /// Whether it holds an open connection.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Sends one request (on the open connection, or a new one) and reads its answer. A
    /// failure drops the connection.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, Failure> {
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => connect(self.addr)?,
        };
        let mut stream = stream;
        let answer = exchange(&mut stream, method, path, headers, body)?;
        if !answer.closes() {
            self.stream = Some(stream);
        }
        Ok(answer)
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect(addr).map_err(|e| Failure::of(&e))?;
    stream
        .set_read_timeout(Some(ANSWER_WAIT))
        .map_err(|e| Failure::of(&e))?;
    stream.set_nodelay(true).map_err(|e| Failure::of(&e))?;
    Ok(stream)
}

/// The request's head: `Host`, `Content-Length` when there is a body, then `headers`.
fn head(method: &str, path: &str, headers: &[(&str, &str)], body_len: Option<usize>) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(len) = body_len {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

fn exchange(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer, Failure> {
    let len = (!body.is_empty() || method == "POST" || method == "PATCH").then_some(body.len());
    let mut request = head(method, path, headers, len).into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).map_err(|e| Failure::of(&e))?;
    read_answer(stream, method == "HEAD")
}

/// Reads one answer whose length is its `Content-Length` (troupe's short answers all have
/// one); nothing after it is read.
fn read_answer(stream: &mut TcpStream, head_only: bool) -> Result<Answer, Failure> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, &mut buf)?;
    };
    let text = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Failure::Other(format!("not an HTTP answer: {text:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = match headers.iter().find(|(n, _)| n == "content-length") {
        _ if head_only => 0,
        Some((_, v)) => v
            .parse::<usize>()
            .map_err(|_| Failure::Other(format!("bad Content-Length {v:?}")))?,
        None if status == 204 || status == 304 => 0,
        None => return Err(Failure::Other(format!("no Content-Length: {text:?}"))),
    };
    while buf.len() < head_end + length {
        read_more(stream, &mut buf)?;
    }
    Ok(Answer {
        status,
        headers,
        body: buf[head_end..head_end + length].to_vec(),
    })
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Failure> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) => Err(Failure::NoAnswer),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
            Err(Failure::Other("no answer in time".into()))
        }
        Err(e) => Err(Failure::of(&e)),
    }
}

/// Opens a connection and writes a request whose body is `declared` bytes long but only
/// `part` of it, then holds the connection: a body in flight.
pub fn send_partial(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    declared: usize,
    part: &[u8],
) -> TcpStream {
    let mut stream = connect(addr).expect("connect");
    let mut request = head(method, path, headers, Some(declared)).into_bytes();
    request.extend_from_slice(part);
    stream
        .write_all(&request)
        .expect("write the partial request");
    stream
}

/// Whether the connection ends (EOF or reset) within `wait` without a byte of answer.
pub fn ends_unanswered(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => matches!(Failure::of(&e), Failure::Reset),
    }
}

/// Waits until every byte written on `stream` (a loopback connection to the server) has been
/// read by the server process: none left in the client's send queue nor in the server's
/// receive queue, as `/proc/net/tcp` shows them. Bytes the server has read are its to keep;
/// bytes still in a socket buffer are not yet received.
pub async fn wait_until_read(stream: &tokio::net::TcpStream) {
    let ends = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !all_read(ends, deadline) {
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_until_read`] for a blocking socket ([`send_partial`]'s).
pub fn wait_until_read_blocking(stream: &TcpStream) {
    let ends = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !all_read(ends, deadline) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the server has read everything the client end of `(client, server)` sent; fails
/// the test past `deadline`.
fn all_read((client, server): (SocketAddr, SocketAddr), deadline: std::time::Instant) -> bool {
    let (client, server) = (client.port(), server.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    // Columns: sl, local, remote, state, tx_queue:rx_queue (hex), …
    let queue = |local: u16, remote: u16, column: usize| {
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
            (port(fields[1]) == Some(local) && port(fields[2]) == Some(remote))
                .then(|| fields[4].split(':').nth(column))
                .flatten()
                .and_then(|n| u64::from_str_radix(n, 16).ok())
        })
    };
    let unsent = queue(client, server, 0);
    let unread = queue(server, client, 1);
    if unsent == Some(0) && unread == Some(0) {
        return true;
    }
    assert!(
        std::time::Instant::now() < deadline,
        "the server never read what was sent: {unsent:?} unsent, {unread:?} unread"
    );
    false
}

/// Reads the answer a request written on `stream` (by [`send_partial`]) gets.
pub fn answer_on(stream: &mut TcpStream) -> Result<Answer, Failure> {
    stream
        .set_read_timeout(Some(ANSWER_WAIT))
        .map_err(|e| Failure::of(&e))?;
    read_answer(stream, false)
}
