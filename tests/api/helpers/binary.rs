//! The real binary, running: its port, every line it writes to stderr (its log), the
//! signals it is sent and how it exits.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::app::troupe;

/// A running `troupe` process, stopped when dropped.
pub struct RunningBinary {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
}

impl RunningBinary {
    /// Starts the binary in `dir` with `vars` (on 127.0.0.1 port 0 unless `vars` set
    /// `TROUPE_BIND`), and waits until it serves.
    pub fn start(dir: &std::path::Path, vars: &[(&str, &str)]) -> Self {
        let mut cmd = troupe();
        cmd.current_dir(dir)
            .env("TROUPE_BIND", "127.0.0.1:0")
            .stderr(Stdio::piped());
        for (key, value) in vars {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().expect("start the binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut running = Self {
            child,
            lines,
            address: String::new(),
        };
        let serving = running
            .wait_for_line("serving on", Duration::from_secs(30))
            .expect("the binary never said it was serving");
        // `serving on HOST:PORT with …`; whatever HOST, loopback reaches it.
        let port = serving
            .split("serving on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|addr| addr.rsplit(':').next())
            .expect("a port in the serving line");
        running.address = format!("http://127.0.0.1:{port}");
        running
    }

    /// The first log line containing `needle`, waiting up to `wait` for it.
    pub fn wait_for_line(&self, needle: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return Some(line);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every log line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The address it listens on, for raw sockets.
    pub fn socket_addr(&self) -> SocketAddr {
        self.address
            .trim_start_matches("http://")
            .parse()
            .expect("a socket address")
    }

    /// Sends it a real signal (`libc::SIGTERM`, `libc::SIGINT`, ...).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid, which it keeps until we wait for it.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it exited, waiting up to `wait`; `None` while it still runs.
    pub fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Where in the log the first line containing each needle is, in order; the test fails
    /// naming a needle no line contains.
    pub fn line_positions(&self, needles: &[&str]) -> Vec<usize> {
        let lines = self.lines();
        needles
            .iter()
            .map(|needle| {
                lines
                    .iter()
                    .position(|l| l.contains(needle))
                    .unwrap_or_else(|| {
                        panic!("no log line with {needle:?} in:\n{}", lines.join("\n"))
                    })
            })
            .collect()
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
