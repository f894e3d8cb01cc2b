//! A real upstream HTTP/1.1 server on loopback (port 0) with every fault `/aggregate` and
//! `/parallel` must survive, on a thread and runtime of its own so its timing does not
//! depend on the server under test. It records what it saw: each request, each connection
//! the client dropped while a request was pending, each TLS ClientHello.
//!
//! Behaviour is chosen by the query of any path, combinable:
//! `delay=MS` (answer after MS, watching for the client to go), `hang=1` (never answer),
//! `status=N`, `body=garbage`, `big=N` (N bytes of valid JSON, with Content-Length),
//! `chunked=N` (same, chunked, no length), `eof=1` (the body delimited by closing the
//! connection: `Connection: close`, no length, no chunking), `close=1` (close without answering),
//! `redirect=1` (302 to `/x?tag=redirected`), `flaky=K` (the first K requests with this
//! query answer 503), `switch=1` (500 while [`Stub::set_failing`] is on), `tag=T` (echoed).
//! [`Stub::start_tls`] serves the same over https with a self-signed certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_rt::net::TcpListener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Something the stub saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A request arrived for this target (path and query).
    Request(String),
    /// The client closed the connection while this target's answer was pending, this long
    /// after the request arrived.
    Dropped(String, Duration),
    /// A TLS ClientHello arrived instead of HTTP.
    Tls,
}

#[derive(Default)]
struct Shared {
    events: Mutex<Vec<Event>>,
    /// (target, its `x-request-id`) of each request that carried one.
    request_ids: Mutex<Vec<(String, String)>>,
    failing: AtomicBool,
}

/// A running stub; dropping it stops the server and closes its connections.
pub struct Stub {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Stub {
    /// Starts a stub on 127.0.0.1, port 0.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a stub that speaks https only, with a fresh self-signed certificate for
    /// 127.0.0.1; returns it with that certificate in PEM (the root a client must trust).
    pub fn start_tls() -> (Self, String) {
        use tokio_rustls::rustls;
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(signing_key.serialize_der()),
        );
        troupe::install_crypto_provider();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (Self::start_with(Some(acceptor)), cert.pem())
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let state = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let accept = async {
                    loop {
                        let Ok((socket, _)) = listener.accept().await else {
                            continue;
                        };
                        let state = state.clone();
                        match tls.clone() {
                            None => {
                                tokio::spawn(serve(socket, state));
                            }
                            Some(acceptor) => {
                                tokio::spawn(async move {
                                    if let Ok(stream) = acceptor.accept(socket).await {
                                        serve(stream, state).await;
                                    }
                                });
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        Self {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT/x?QUERY`.
    pub fn url(&self, query: &str) -> String {
        format!("http://{}/x?{query}", self.addr)
    }

    /// While on, `switch=1` requests answer 500.
    pub fn set_failing(&self, on: bool) {
        self.shared.failing.store(on, Ordering::SeqCst);
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<Event> {
        self.shared.events.lock().unwrap().clone()
    }

    /// Requests seen whose target contains `needle`.
    pub fn requests(&self, needle: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Request(t) if t.contains(needle)))
            .count()
    }

    /// How long after its request the client dropped the first pending `needle` target.
    pub fn dropped(&self, needle: &str) -> Option<Duration> {
        self.events().iter().find_map(|e| match e {
            Event::Dropped(t, after) if t.contains(needle) => Some(*after),
            _ => None,
        })
    }

    /// Waits up to `within` for the client to drop a pending `needle` target.
    pub async fn wait_dropped(&self, needle: &str, within: Duration) -> Option<Duration> {
        let until = Instant::now() + within;
        loop {
            if let Some(after) = self.dropped(needle) {
                return Some(after);
            }
            if Instant::now() >= until {
                return None;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `x-request-id` the first request for a `needle` target carried.
    pub fn request_id(&self, needle: &str) -> Option<String> {
        let ids = self.shared.request_ids.lock().unwrap();
        ids.iter()
            .find(|(target, _)| target.contains(needle))
            .map(|(_, id)| id.clone())
    }

    /// Whether a TLS ClientHello arrived.
    pub fn saw_tls(&self) -> bool {
        self.events().contains(&Event::Tls)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A port nothing listens on (bound, then released).
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/x")
}

fn record(shared: &Shared, event: Event) {
    shared.events.lock().unwrap().push(event);
}

/// Serves one connection, keep-alive, request after request.
async fn serve<S>(mut socket: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head_end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 1024];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.first() == Some(&0x16) {
                record(&shared, Event::Tls);
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let arrived = Instant::now();
        let earlier = shared
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Request(t) if *t == target))
            .count();
        record(&shared, Event::Request(target.clone()));
        let request_id = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_owned())
        });
        if let Some(id) = request_id {
            shared
                .request_ids
                .lock()
                .unwrap()
                .push((target.clone(), id));
        }
        let q = query(&target);
        let num = |key: &str| q.get(key).and_then(|v| v.parse::<u64>().ok());

        let wait = if q.contains_key("hang") {
            Some(Duration::from_secs(3600))
        } else {
            num("delay").map(Duration::from_millis)
        };
        if let Some(wait) = wait {
            let mut probe = [0u8; 1];
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // Nothing more is sent on a connection while its request is pending, so a
                // read that ends means the client went away.
                _ = socket.read(&mut probe) => {
                    record(&shared, Event::Dropped(target, arrived.elapsed()));
                    return;
                }
            }
        }
        if q.contains_key("close") {
            return;
        }
        let tag = q.get("tag").cloned().unwrap_or_default();
        let flaky = num("flaky").is_some_and(|k| (earlier as u64) < k);
        let switched = q.contains_key("switch") && shared.failing.load(Ordering::SeqCst);
        let status = if flaky {
            503
        } else if switched {
            500
        } else if q.contains_key("redirect") {
            302
        } else {
            num("status").unwrap_or(200)
        };
        let written = if let Some(n) = num("chunked") {
            write_chunked(&mut socket, n as usize).await
        } else {
            let body = if let Some(n) = num("big") {
                json_of_len(n as usize)
            } else if q.get("body").map(String::as_str) == Some("garbage") {
                "{\"ok\": tru".to_owned()
            } else {
                format!("{{\"tag\":\"{tag}\",\"status\":{status}}}")
            };
            let location = if status == 302 {
                "Location: /x?tag=redirected\r\n"
            } else {
                ""
            };
            if q.contains_key("eof") {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                );
                // The head alone first, then the body in pieces: the client must read on
                // past what came with the head, to the end of the connection.
                let _ = write_in_pieces(&mut socket, head.as_bytes(), body.as_bytes()).await;
                return;
            }
            let res = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{location}Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(res.as_bytes()).await
        };
        if written.is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn query(target: &str) -> HashMap<String, String> {
    let q = target.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A JSON string of exactly `n` bytes (n ≥ 2).
fn json_of_len(n: usize) -> String {
    format!("\"{}\"", "x".repeat(n.saturating_sub(2)))
}

/// Writes `head`, then `body` in a few pieces with short pauses, then closes the sending side.
async fn write_in_pieces<S>(socket: &mut S, head: &[u8], body: &[u8]) -> std::io::Result<()>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    socket.write_all(head).await?;
    socket.flush().await?;
    for piece in body.chunks(body.len().div_ceil(3).max(1)) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        socket.write_all(piece).await?;
        socket.flush().await?;
    }
    socket.shutdown().await
}

async fn write_chunked<S>(socket: &mut S, n: usize) -> std::io::Result<()>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await?;
    let body = json_of_len(n);
    for chunk in body.as_bytes().chunks(8192) {
        socket
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await?;
        socket.write_all(chunk).await?;
        socket.write_all(b"\r\n").await?;
    }
    socket.write_all(b"0\r\n\r\n").await
}
