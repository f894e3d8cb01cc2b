#!/usr/bin/env python3
"""What a key check costs: `wrk` on `GET /users/{id}` against two release binaries side by
side, one open (no keys) and one with 20 keys configured, in alternating rounds; prints each
round's p50 and the median of the rounds. The keyed server is also hit without a header (its
401, answered before any database work) for the record.

    cargo build --release && python3 scripts/key_cost.py [ROUNDS] [SECONDS]
"""
import hashlib, json, re, secrets, statistics, subprocess, sys, tempfile
import urllib.request

from release_server import start

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SECONDS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
KEYS = 20


def start_server(work, name, **env):
    server, base, _ = start(work, name, TROUPE_WORKERS="1", **env)
    return server, base


def create_user(base, headers):
    body = json.dumps({"name": "Ada", "email": "ada@example.com"}).encode()
    req = urllib.request.Request(base + "/users", body, method="POST",
                                 headers={"content-type": "application/json", **headers})
    return json.load(urllib.request.urlopen(req))["id"]


def p50_ms(url, header=None):
    cmd = ["wrk", "-t1", "-c16", f"-d{SECONDS}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)$", out, re.M)
    value, unit = float(m.group(1)), m.group(2)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
    return value * {"us": 1e-3, "ms": 1, "s": 1e3}[unit], float(rps)


def main():
    work = tempfile.mkdtemp(prefix="troupe-keys-")
    keys = [secrets.token_urlsafe(32) for _ in range(KEYS)]
    entries = ",".join(f"client{i}:users:read+users:write:{hashlib.sha256(k.encode()).hexdigest()}"
                       for i, k in enumerate(keys))
    # The last key matches last, as the longest search would.
    bearer = f"Bearer {keys[-1]}"
    open_server, open_base = start_server(work, "open")
    keyed_server, keyed_base = start_server(work, "keyed", TROUPE_API_KEYS=entries)
    try:
        open_id = create_user(open_base, {})
        keyed_id = create_user(keyed_base, {"Authorization": bearer})
        runs = {"open, no header": [], "20 keys, with the key": [], "20 keys, no header (401)": []}
        for r in range(ROUNDS):
            for name, url, header in [
                ("open, no header", f"{open_base}/users/{open_id}", None),
                ("20 keys, with the key", f"{keyed_base}/users/{keyed_id}",
                 f"Authorization: {bearer}"),
                ("20 keys, no header (401)", f"{keyed_base}/users/{keyed_id}", None),
            ]:
                p50, rps = p50_ms(url, header)
                runs[name].append(p50)
                print(f"round {r + 1}: {name:26} p50 {p50:.3f} ms  {rps:.0f} req/s", flush=True)
        medians = {name: statistics.median(v) for name, v in runs.items()}
        base = medians["open, no header"]
        print()
        for name, m in medians.items():
            print(f"median p50 {name:26} {m:.3f} ms  ({(m / base - 1) * 100:+.1f}% vs open)")
    finally:
        for server in (open_server, keyed_server):
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
