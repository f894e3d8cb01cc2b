#!/usr/bin/env python3
"""How long HAProxy takes to route around a troupe replica killed with SIGKILL.

Starts N troupe replicas (the built binary) on a fresh PostgreSQL database and one shared
upload directory, HAProxy in front of them with the committed deploy/haproxy.cfg (loopback
addresses put in, as tests/api/helpers/haproxy.rs does), and C keep-alive clients through
HAProxy alternating GET /users/{id} and POST /users. Then SIGKILL to one replica, and
reports, from the kill:
  - when HAProxy's runtime API first shows it DOWN in every backend (no request goes to it
    from then on);
  - the last request that failed (no answer, or not 2xx), and how many did;
  - the slowest request started after the kill (connection retries to the dead replica).
Each round kills another replica and brings the previous one back first.

    python3 scripts/failover_time.py [--rounds 3] [--replicas 3] [--clients 8]

Environment: TROUPE_BIN (default target/release/troupe, else target/debug/troupe),
TROUPE_HAPROXY (default haproxy on PATH or /usr/sbin), TROUPE_TEST_PG_URL (default
postgres://postgres@127.0.0.1:5432/postgres; psql creates and drops the database).
Standard library only.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def troupe_binary():
    if os.environ.get("TROUPE_BIN"):
        return os.environ["TROUPE_BIN"]
    for profile in ("release", "debug"):
        path = os.path.join(ROOT, "target", profile, "troupe")
        if os.path.exists(path):
            return path
    sys.exit("no troupe binary: cargo build first, or set TROUPE_BIN")


def haproxy_binary():
    if os.environ.get("TROUPE_HAPROXY"):
        return os.environ["TROUPE_HAPROXY"]
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if not found:
        sys.exit("no haproxy: apt-get install haproxy, or set TROUPE_HAPROXY")
    return found


def haproxy_config(listen, ports, sock):
    """deploy/haproxy.cfg with loopback addresses, as the tests run it."""
    out, in_resolvers = [], False
    with open(os.path.join(ROOT, "deploy", "haproxy.cfg")) as f:
        for line in f.read().splitlines():
            stripped = line.strip()
            if line and not line[0].isspace() and not stripped.startswith("#"):
                in_resolvers = stripped.startswith("resolvers ")
            if in_resolvers:
                continue
            if stripped.startswith("bind "):
                out.append(f"    bind 127.0.0.1:{listen}")
            elif stripped.startswith("stats socket "):
                out.append(f"    stats socket {sock} mode 600 level admin")
            elif stripped.startswith("server-template "):
                out.append("    http-response set-header X-Served-By %s")
                out.extend(f"    server troupe{n + 1} 127.0.0.1:{p}" for n, p in enumerate(ports))
            else:
                out.append(line)
    return "\n".join(out) + "\n"


def admin(sock, command):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks).decode()
            chunks.append(data)


def statuses(sock, server):
    lines = admin(sock, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    sv, st = header.index("svname"), header.index("status")
    return [f[st] for f in (l.split(",") for l in lines[1:] if l) if len(f) > st and f[sv] == server]


def wait_http(port, path="/readyz", within=60):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"nothing answered 200 on {port}{path}")


class Replica:
    def __init__(self, binary, env, port, log):
        self.binary, self.env, self.port, self.log, self.proc = binary, env, port, log, None

    def start(self):
        env = dict(self.env, TROUPE_BIND=f"127.0.0.1:{self.port}")
        self.proc = subprocess.Popen([self.binary], env=env, stderr=self.log, stdout=self.log)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def client(port, seed, stop, records, n):
    conn = None
    i = 0
    while not stop.is_set():
        i += 1
        started = time.monotonic()
        if i % 2:
            method, path, body = "GET", f"/users/{seed}", None
        else:
            method, path = "POST", "/users"
            body = json.dumps({"name": "F", "email": f"f-{n}-{i}-{uuid.uuid4().hex[:8]}@example.com"})
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            res = conn.getresponse()
            res.read()
            outcome = (res.status, res.getheader("X-Served-By", "?"))
            if res.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            outcome = (type(e).__name__, "?")
            conn.close()
            conn = None
        records.append((started, time.monotonic(), method, outcome[0], outcome[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()

    admin_url = os.environ.get("TROUPE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    db = "troupe_failover_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", admin_url, "-qc", f"CREATE DATABASE {db}"], check=True)
    work = tempfile.mkdtemp(prefix="troupe-failover-")
    log = open(os.path.join(work, "replicas.log"), "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROUPE_") and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=admin_url.rsplit("/", 1)[0] + "/" + db,
        TROUPE_UPLOAD_DIR=os.path.join(work, "uploads"),
        TROUPE_WORKERS="2",
        TROUPE_DB_POOL_SIZE="4",
        TROUPE_CPU_THREADS="1",
        RUST_LOG="warn",
    )
    binary = troupe_binary()
    replicas = [Replica(binary, env, free_port(), log) for _ in range(args.replicas)]
    haproxy = None
    try:
        # The first one alone: it applies the migrations.
        for r in replicas:
            r.start()
            wait_http(r.port)
        listen, sock = free_port(), os.path.join(work, "admin.sock")
        cfg = os.path.join(work, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(haproxy_config(listen, [r.port for r in replicas], sock))
        haproxy = subprocess.Popen([haproxy_binary(), "-db", "-f", cfg],
                                   stdout=open(os.path.join(work, "haproxy.log"), "w"),
                                   stderr=subprocess.STDOUT)
        wait_http(listen, "/ping")

        def wait_state(name, up, within=30):
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                s = statuses(sock, name)
                if s and all((x == "UP") if up else x.startswith("DOWN") for x in s):
                    return time.monotonic()
                time.sleep(0.005)
            sys.exit(f"{name} never went {'UP' if up else 'DOWN'}: {statuses(sock, name)}")

        for n in range(len(replicas)):
            wait_state(f"troupe{n + 1}", True)
        c = http.client.HTTPConnection("127.0.0.1", listen)
        c.request("POST", "/users", body='{"name":"Seed","email":"seed@example.com"}',
                  headers={"Content-Type": "application/json"})
        seed = json.loads(c.getresponse().read())["id"]

        results = []
        for rnd in range(args.rounds):
            victim = rnd % len(replicas)
            name = f"troupe{victim + 1}"
            records, stop = [], threading.Event()
            threads = [threading.Thread(target=client, args=(listen, seed, stop, records, n))
                       for n in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(2)
            killed_at = time.monotonic()
            replicas[victim].kill()
            down_at = wait_state(name, False)
            time.sleep(3)
            stop.set()
            for t in threads:
                t.join()
            after = [r for r in records if r[1] >= killed_at]
            failed = [r for r in after if not (isinstance(r[3], int) and 200 <= r[3] < 300)]
            started_after = [r for r in records if r[0] >= killed_at]
            before = [r[1] - r[0] for r in records if r[1] < killed_at]
            result = {
                "killed": name,
                "requests": len(records),
                "down_after_ms": round((down_at - killed_at) * 1000),
                "failed": len(failed),
                "failed_as": sorted({f"{r[2]} {r[3]}" for r in failed}),
                "last_failure_after_ms": round((max(r[1] for r in failed) - killed_at) * 1000) if failed else None,
                "slowest_after_kill_ms": round(max(r[1] - r[0] for r in started_after) * 1000) if started_after else None,
                "median_before_ms": round(statistics.median(before) * 1000, 2) if before else None,
                "served_by_victim_after_down": sum(1 for r in records if r[0] > down_at and r[4] == name),
            }
            results.append(result)
            print(json.dumps(result), flush=True)
            replicas[victim].start()
            wait_state(name, True)
        downs = [r["down_after_ms"] for r in results]
        print(f"\nSIGKILL → HAProxy DOWN: median {statistics.median(downs)} ms "
              f"(min {min(downs)}, max {max(downs)}) over {len(downs)} kills; "
              f"failed requests per kill: {[r['failed'] for r in results]}; "
              f"last failure after the kill (ms): {[r['last_failure_after_ms'] for r in results]}")
    finally:
        if haproxy:
            haproxy.kill()
            haproxy.wait()
        for r in replicas:
            if r.proc and r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
        subprocess.run(["psql", admin_url, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
