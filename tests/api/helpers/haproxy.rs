//! HAProxy (Debian's `haproxy`, 2.6) in front of troupe replicas, running the committed
//! `deploy/haproxy.cfg` with loopback addresses put in: its `bind`, one `server` line per
//! replica in place of each `server-template`, its stats socket in a temp dir, and no
//! Docker DNS. Each backend also names the replica that answered in `X-Served-By` (the
//! tests' only addition). The runtime API on the stats socket says which replica HAProxy
//! has UP; what HAProxy logs (one `option httplog` line per request, naming its
//! `backend/server` and termination state) is kept for a failing test to show.
//!
//! The binary is `TROUPE_HAPROXY`, else `haproxy` on `PATH` (or in `/usr/sbin`). Without it
//! the test skips, unless `TROUPE_REQUIRE_HAPROXY=1` (as `.ci/run` sets) makes that a
//! failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The committed configuration the tests run.
const COMMITTED: &str = include_str!("../../../deploy/haproxy.cfg");

/// Whether HAProxy must be there (`TROUPE_REQUIRE_HAPROXY=1`) instead of the test skipping.
pub fn haproxy_required() -> bool {
    std::env::var("TROUPE_REQUIRE_HAPROXY").is_ok_and(|v| v == "1")
}

/// The HAProxy binary: `TROUPE_HAPROXY`, else `haproxy` on `PATH` or in the sbin
/// directories (root's `PATH` has them; a user's may not).
pub fn haproxy_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TROUPE_HAPROXY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file())
}

/// The committed configuration with `listen` for the frontend, one server per port in
/// `replicas` (named `troupe1`, `troupe2`, … as `server-template` names them), the stats
/// socket at `socket`, and `X-Served-By` on every answer.
pub fn test_config(listen: u16, replicas: &[u16], socket: &Path) -> String {
    let mut out = String::new();
    let mut in_resolvers = false;
    for line in COMMITTED.lines() {
        let trimmed = line.trim_start();
        // Sections start at column 0; the resolvers section goes whole.
        if !line.starts_with(' ') && !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_resolvers = trimmed.starts_with("resolvers ");
        }
        if in_resolvers {
            continue;
        }
        if trimmed.starts_with("bind ") {
            out.push_str(&format!("    bind 127.0.0.1:{listen}\n"));
        } else if trimmed.starts_with("stats socket ") {
            out.push_str(&format!(
                "    stats socket {} mode 600 level admin\n",
                socket.display()
            ));
        } else if trimmed.starts_with("server-template ") {
            out.push_str("    http-response set-header X-Served-By %s\n");
            for (n, port) in replicas.iter().enumerate() {
                out.push_str(&format!("    server troupe{} 127.0.0.1:{port}\n", n + 1));
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        out.contains("bind 127.0.0.1:") && out.contains("server troupe1 "),
        "deploy/haproxy.cfg no longer has the lines the tests replace:\n{out}"
    );
    out
}

/// The status of a request's log line (`option httplog`: the field after the timers
/// `TR/Tw/Tc/Tr/Ta`, `-1` when no answer was sent), `None` for other lines.
pub fn logged_status(line: &str) -> Option<&str> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let timers = fields.iter().position(|f| {
        f.matches('/').count() == 4
            && f.chars()
                .all(|c| c.is_ascii_digit() || c == '/' || c == '-')
    })?;
    fields.get(timers + 1).copied()
}

/// One server as the runtime API's `show stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub backend: String,
    pub server: String,
    /// `UP`, `DOWN`, `UP 1/2` (failing), `DOWN 1/2` (recovering), `MAINT`, …
    pub status: String,
}

/// A running HAProxy, stopped when dropped.
pub struct Haproxy {
    child: Child,
    _dir: TempDir,
    socket: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    /// The frontend, `127.0.0.1:PORT`.
    pub addr: SocketAddr,
}

impl Haproxy {
    /// Starts HAProxy in front of the replicas listening on `replicas` (loopback ports), on
    /// a free port of its own, and waits until it accepts connections; `None` (the test
    /// skips, said out loud) when there is no HAProxy and it is not required.
    pub fn start(replicas: &[u16]) -> Option<Self> {
        let Some(binary) = haproxy_binary() else {
            assert!(
                !haproxy_required(),
                "TROUPE_REQUIRE_HAPROXY=1 but no HAProxy: apt-get install haproxy, or set \
                 TROUPE_HAPROXY"
            );
            super::skip(
                "HAProxy missing",
                "no haproxy on PATH or in /usr/sbin, or TROUPE_HAPROXY names no file: \
                 apt-get install haproxy; TROUPE_REQUIRE_HAPROXY=1 makes this fail",
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let port = super::free_port();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, test_config(port, replicas, &socket)).expect("write config");
        // -db: in the foreground, logging to our pipe; -W not needed (one process).
        let mut child = Command::new(&binary)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let haproxy = Self {
            child,
            _dir: dir,
            socket,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        haproxy.wait_listening();
        Some(haproxy)
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr).is_err() || !self.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "HAProxy never listened on {}:\n{}",
                self.addr,
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line HAProxy wrote so far (its request log and its warnings).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// What HAProxy logged that is not a 2xx answer: its warnings, and the requests it
    /// answered otherwise or not at all.
    pub fn unusual_lines(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| !logged_status(line).is_some_and(|s| s.starts_with('2')))
            .collect()
    }

    /// Sends one command to the runtime API and answers its whole reply.
    pub fn command(&self, command: &str) -> String {
        let mut stream = UnixStream::connect(&self.socket).expect("connect the stats socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(format!("{command}\n").as_bytes())
            .expect("write a command");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read the reply");
        reply
    }

    /// Every server of every backend, as `show stat` has them now.
    pub fn servers(&self) -> Vec<ServerState> {
        let stat = self.command("show stat");
        let mut lines = stat.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|c| *c == name)
                .unwrap_or_else(|| panic!("no {name} column in show stat: {stat}"))
        };
        let (px, sv, status) = (column("pxname"), column("svname"), column("status"));
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > status && f[sv] != "FRONTEND" && f[sv] != "BACKEND")
            .map(|f| ServerState {
                backend: f[px].to_owned(),
                server: f[sv].to_owned(),
                status: f[status].to_owned(),
            })
            .collect()
    }

    /// Waits until `server` (`troupe1`, …) is `UP` (`up`) or `DOWN` (not `up`) in every
    /// backend; answers how long that took.
    pub fn wait_for(&self, server: &str, up: bool, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let states: Vec<ServerState> = self
                .servers()
                .into_iter()
                .filter(|s| s.server == server)
                .collect();
            let there = !states.is_empty()
                && states.iter().all(|s| {
                    if up {
                        s.status == "UP"
                    } else {
                        s.status.starts_with("DOWN")
                    }
                });
            if there {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{server} never became {} in HAProxy: {states:?}\n{}",
                if up { "UP" } else { "DOWN" },
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every one of `count` replicas is UP in every backend.
    pub fn wait_all_up(&self, count: usize, within: Duration) {
        for n in 1..=count {
            self.wait_for(&format!("troupe{n}"), true, within);
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
