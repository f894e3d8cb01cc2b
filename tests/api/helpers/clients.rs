//! Real third-party tus clients (tuspy, tus-js-client) run as child processes against a
//! [`TestApp`].

use troupe::auth::{entry_line, Scopes};

use crate::helpers::{spawn_app_with, Backend, Noise, TestApp};

/// The key a real client presents when a test runs it with keys set (`tus-client`, allowed
/// to read and write uploads), and a second key of the same scopes that owns nothing.
pub const CLIENT_KEY: &str = "tus-client-test-key-0123456789abcdefghij";
pub const OTHER_KEY: &str = "other-test-key-0123456789abcdefghijklmnop";

/// Whether the real-client tests must run (`TROUPE_REQUIRE_TUS_CLIENT=1`) instead of skipping.
pub fn tus_client_required() -> bool {
    std::env::var("TROUPE_REQUIRE_TUS_CLIENT").is_ok_and(|v| v == "1")
}

/// How a real client meets the server: open (no keys set, as `cargo run` serves), or with
/// keys set and the client sending [`CLIENT_KEY`] as a bearer token on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Keyed,
}

impl Access {
    /// The `Authorization` value the client sends, if any.
    pub fn authorization(self) -> Option<String> {
        (self == Self::Keyed).then(|| format!("Bearer {CLIENT_KEY}"))
    }
}

/// A server on SQLite and a 5 MB file for a real client to upload: the app (whose own client
/// presents [`CLIENT_KEY`] when `access` is keyed), the bytes and the file's path.
pub async fn client_source(
    seed: u64,
    name: &str,
    access: Access,
) -> (TestApp, Vec<u8>, std::path::PathBuf) {
    let rw = Scopes::parse("uploads:read+uploads:write").unwrap();
    let keys = [
        entry_line("tus-client", rw, CLIENT_KEY),
        entry_line("other", rw, OTHER_KEY),
    ]
    .join(",");
    // Browsers' clients (tus-js-client's script sends an Origin) need CORS on.
    let mut vars = vec![("TROUPE_CORS_ORIGINS", "*")];
    if access == Access::Keyed {
        vars.push(("TROUPE_API_KEYS", &keys));
    }
    let app = spawn_app_with(Backend::Sqlite, &vars).await.unwrap();
    let app = match access {
        Access::Open => app,
        Access::Keyed => app.presenting(CLIENT_KEY),
    };
    let data = Noise::new(seed).chunk(5_000_000);
    let file = app.dir.path().join(name);
    std::fs::write(&file, &data).unwrap();
    (app, data, file)
}

/// Runs a real client (`program` `args`) off the async workers, with `TUS_AUTHORIZATION` set
/// to the header its requests must carry (if any); fails the test with its output unless it
/// succeeds, else answers its stdout.
pub async fn run_client(name: &str, program: String, args: Vec<String>, access: Access) -> String {
    let out = actix_web::rt::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).env_remove("TUS_AUTHORIZATION");
        if let Some(value) = access.authorization() {
            cmd.env("TUS_AUTHORIZATION", value);
        }
        cmd.output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The interpreter with tuspy (`TROUPE_PYTHON`, else `python3`), or `None` (skipped, said
/// out loud) when it has none and the client is not required.
pub fn tuspy_python() -> Option<String> {
    let python = std::env::var("TROUPE_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_tuspy = std::process::Command::new(&python)
        .args(["-c", "import tusclient"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_tuspy {
        return Some(python);
    }
    assert!(
        !tus_client_required(),
        "TROUPE_REQUIRE_TUS_CLIENT=1 but `{python} -c 'import tusclient'` fails: pip install tuspy==1.1.0"
    );
    super::skip(
        "tuspy missing",
        format_args!(
            "`{python} -c 'import tusclient'` fails: pip install tuspy==1.1.0, TROUPE_PYTHON \
             names the interpreter; TROUPE_REQUIRE_TUS_CLIENT=1 makes this fail"
        ),
    );
    None
}
