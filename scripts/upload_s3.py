#!/usr/bin/env python3
"""Uploads to the file store against uploads to S3 (moto), on the release binary: 8 clients
POSTing 8 MiB files for S seconds to each store, in MiB/s; then the server's RSS growth while
one 1 GiB file goes to S3 as a form upload and one as a tus PATCH.

    cargo build --release && TROUPE_MOTO_SERVER=…/moto_server python3 scripts/upload_s3.py [S]

moto (Python) runs on the same cores as troupe and the clients, so the S3 figure is the
service and its store together on this machine, not troupe alone.
"""
import http.client, os, socket, subprocess, sys, tempfile, threading, time, urllib.request

from release_server import create_tus, form_part_head, free_port, rss_kib, start

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 15
CLIENTS, FILE_MIB, BIG_MIB = 8, 8, 1024
BOUNDARY = "upload-s3-boundary"


def start_moto():
    port = free_port()
    moto = subprocess.Popen([os.environ["TROUPE_MOTO_SERVER"], "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/bench", method="PUT"))
    return moto, port


def s3_env(port):
    return dict(TROUPE_STORAGE="s3://bench/uploads", AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench-secret", AWS_REGION="us-east-1",
                AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")


def form_body(data):
    return form_part_head(BOUNDARY, "f.bin") + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def load(port, body, until, counts, i):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < until:
        conn.request("POST", "/upload", body=body,
                     headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        res = conn.getresponse()
        res.read()
        counts[i][0 if res.status == 201 else 1] += 1


def throughput(port):
    body = form_body(os.urandom(FILE_MIB << 20))
    counts = [[0, 0] for _ in range(CLIENTS)]
    started = time.monotonic()
    until = started + SECONDS
    threads = [threading.Thread(target=load, args=(port, body, until, counts, i))
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ok, failed = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return ok, failed, ok * FILE_MIB / elapsed


def peak_during(pid, work):
    """What `work()` answers, and the RSS of `pid` at its peak meanwhile."""
    peak, done = [rss_kib(pid)], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        answer = work()
    finally:
        done.set()
        sampler.join()
    return answer, peak[0]


def curl(*args):
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args],
                          capture_output=True, text=True).stdout


def big_uploads(base, pid, path):
    """Status, RSS before and RSS at its peak while `path` goes up as a form upload, then as
    one PATCH."""

    def form():
        return curl("-F", f"file=@{path}", base + "/upload")

    def tus():
        location = create_tus(base, BIG_MIB << 20)
        return curl("-X", "PATCH", "-T", path, "-H", "Tus-Resumable: 1.0.0",
                    "-H", "Upload-Offset: 0",
                    "-H", "Content-Type: application/offset+octet-stream", base + location)

    results = {}
    for kind, work in (("form upload", form), ("tus PATCH", tus)):
        before = rss_kib(pid)
        results[kind] = (before, *peak_during(pid, work))
    return results


def main():
    work = tempfile.mkdtemp(prefix="troupe-upload-s3-")
    moto, moto_port = start_moto()
    rows = []
    try:
        for name, env in (("file", {}), ("s3 (moto)", s3_env(moto_port))):
            server, base, port = start(work, name.split()[0], TROUPE_MAX_UPLOAD_BYTES=str(4 << 30),
                                       **env)
            try:
                rows.append((name, *throughput(port)))
            finally:
                server.terminate()
                server.wait()
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            for _ in range(BIG_MIB):
                f.write(os.urandom(1 << 20))
        server, base, _ = start(work, "big", TROUPE_MAX_UPLOAD_BYTES=str(4 << 30),
                                **s3_env(moto_port))
        try:
            time.sleep(1)
            rss = big_uploads(base, server.pid, big)
        finally:
            server.terminate()
            server.wait()
    finally:
        moto.kill()
    print(f"| store | 8 MiB uploads in {SECONDS:.0f} s ({CLIENTS} clients) | failed | MiB/s |")
    print("|---|---|---|---|")
    for name, ok, failed, mib in rows:
        print(f"| {name} | {ok} | {failed} | {mib:.0f} |")
    print(f"\n| 1 GiB to S3 | status | RSS before (MiB) | peak (MiB) | growth (MiB) |")
    print("|---|---|---|---|---|")
    for kind, (before, code, peak) in rss.items():
        print(f"| {kind} | {code} | {before / 1024:.1f} | {peak / 1024:.1f} | "
              f"{(peak - before) / 1024:.1f} |")


if __name__ == "__main__":
    main()
