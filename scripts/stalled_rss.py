#!/usr/bin/env python3
"""What stalled uploads cost: starts the release binary, opens N uploads that send their
headers and a little body then go silent, and prints the server's RSS before and after.

    cargo build --release && python3 scripts/stalled_rss.py [N] [form|patch]
"""
import socket, sys, tempfile, time, urllib.request

from release_server import create_tus, form_part_head, rss_kib, start

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
KIND = sys.argv[2] if len(sys.argv) > 2 else "form"
BOUNDARY = "stall-boundary"


def main():
    work = tempfile.mkdtemp(prefix="troupe-stall-")
    server, base, port = start(work, "t", TROUPE_MAX_ACTIVE_UPLOADS=str(N + 10),
                               TROUPE_BODY_TIMEOUT_MS="600000")
    locations = []
    if KIND == "patch":
        for _ in range(N):
            locations.append(create_tus(base, 10000000))
    time.sleep(1)
    before = rss_kib(server.pid)
    socks = []
    for i in range(N):
        s = socket.create_connection(("127.0.0.1", port))
        if KIND == "patch":
            head = (f"PATCH {locations[i]} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                    "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                    "Content-Length: 10000000\r\n\r\n").encode()
            body = b"x" * 1024
        else:
            head = (f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                    "Content-Length: 10000000\r\n\r\n").encode()
            body = form_part_head(BOUNDARY, "s.bin") + b"x" * 1024
        s.sendall(head + body)
        socks.append(s)
        if i % 50 == 49:
            time.sleep(0.1)  # a crowd, not one burst past the database's admission queue
    time.sleep(3)
    after = rss_kib(server.pid)
    with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
        ready = r.status
    print(f"{N} stalled {KIND} uploads: RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB "
          f"(+{(after - before) / 1024:.1f} MiB, {(after - before) / N:.1f} KiB each); /readyz {ready}")
    for s in socks:
        s.close()
    server.terminate()
    server.wait()


if __name__ == "__main__":
    main()
