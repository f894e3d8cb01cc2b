"""The release binary as a child process on a free loopback port, for the measuring scripts
beside this file."""
import os, socket, subprocess, time, urllib.request

BINARY = os.path.join(os.path.dirname(__file__), "..", "target", "release", "troupe")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    """The resident set of process `pid`, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def form_part_head(boundary, filename):
    """The opening of a multipart/form-data body: `boundary`, then the file part's headers."""
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()


def create_tus(base, length):
    """Creates a tus upload of `length` bytes on the server at `base`; answers its path."""
    req = urllib.request.Request(base + "/files/", method="POST",
                                 headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(length)})
    return urllib.request.urlopen(req).headers["Location"]


def start(work, name, **env):
    """Starts troupe on an SQLite file and (unless `env` names a TROUPE_STORAGE) an upload dir
    under `work` named `name`, with `env` on top of an environment cleared of TROUPE_*
    (RUST_LOG=warn unless given); answers the process, its base URL and its port once /ping
    answers."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("TROUPE_")}
    full.update(TROUPE_BIND=f"127.0.0.1:{port}", DATABASE_URL=f"sqlite://{work}/{name}.db",
                RUST_LOG="warn")
    if "TROUPE_STORAGE" not in env:
        full.update(TROUPE_UPLOAD_DIR=f"{work}/{name}-uploads")
    full.update(env)
    server = subprocess.Popen([BINARY], env=full)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/ping", timeout=1)
            return server, base, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"troupe ({name}) did not start")
