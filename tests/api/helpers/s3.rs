//! A real S3-compatible server for a test: moto in server mode (`TROUPE_MOTO_SERVER` names
//! its `moto_server`; `.ci/run` installs it), on a free loopback port, with a bucket made in
//! it. The test reads the bucket through the S3 API itself (objects, unfinished multipart
//! uploads), never through troupe.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket every test's troupe writes to, and the prefix its uploads are named under.
pub const BUCKET: &str = "troupe-test";
pub const PREFIX: &str = "uploads/v1";

fn s3_required() -> bool {
    std::env::var("TROUPE_REQUIRE_S3").is_ok_and(|v| v == "1")
}

/// A running `moto_server`; killed when dropped.
pub struct Moto {
    server: PathBuf,
    port: u16,
    child: Option<Child>,
    client: awc::Client,
}

impl Moto {
    /// Starts moto on a free port and makes [`BUCKET`] in it; `None` (the case skips, with
    /// its line) when `TROUPE_MOTO_SERVER` is unset, unless `TROUPE_REQUIRE_S3=1`.
    pub async fn start() -> Option<Self> {
        let Some(server) = std::env::var_os("TROUPE_MOTO_SERVER").map(PathBuf::from) else {
            assert!(
                !s3_required(),
                "TROUPE_REQUIRE_S3=1 but TROUPE_MOTO_SERVER is unset"
            );
            super::skip(
                "no S3-compatible server",
                "pip install 'moto[server]==5.2.5' and set TROUPE_MOTO_SERVER to its \
                 moto_server; TROUPE_REQUIRE_S3=1 makes this fail",
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut moto = Self {
            server,
            port,
            child: None,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish(),
        };
        moto.run();
        moto.make_bucket().await;
        Some(moto)
    }

    /// Starts the server process (again) on its port and waits until it accepts.
    fn run(&mut self) {
        let child = Command::new(&self.server)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.server.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL): the store is down, its contents gone with it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty, and makes the bucket again.
    pub async fn restart(&mut self) {
        self.kill();
        self.run();
        self.make_bucket().await;
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The variables that point troupe at this server's bucket.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TROUPE_STORAGE", format!("s3://{BUCKET}/{PREFIX}")),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    async fn make_bucket(&self) {
        let res = self
            .client
            .put(format!("{}/{BUCKET}", self.endpoint()))
            .send()
            .await
            .expect("creating the bucket");
        assert!(res.status().is_success(), "creating the bucket: {res:?}");
    }

    /// A bucket listing (`query` after `?`), as XML.
    async fn list(&self, query: &str) -> String {
        let mut res = self
            .client
            .get(format!("{}/{BUCKET}?{query}", self.endpoint()))
            .send()
            .await
            .expect("listing the bucket");
        let body = res.body().limit(16 << 20).await.expect("the listing");
        assert!(res.status().is_success(), "listing {query}: {res:?}");
        String::from_utf8_lossy(&body).into_owned()
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

    /// An object's bytes, read from the store directly (a signed request: moto refuses an
    /// anonymous read of a private object).
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt as _;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing-secret")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .build()
            .expect("an S3 client");
        match store.get(&object_store::path::Path::from(key)).await {
            Ok(got) => Some(got.bytes().await.expect("the object").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(err) => panic!("reading {key}: {err}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
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
