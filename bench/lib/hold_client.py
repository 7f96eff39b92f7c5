#!/usr/bin/env python3
"""bench/lib/hold_client.py -- latency from the final "." to the 250 reply,
for legitimate senders (each message its own session from a fresh /24, so no
block comes near a limit) and for a trusted sender, interleaved.

    hold_client.py --ports P1,P2,P3 --count 200 --trusted-block 127.0.99 \
                   --fresh-base 127.30 [--out samples.tsv]

Message i goes to node i mod N: first an untrusted one from
127.<30 + i // 250>.<i % 250>.7 (one session, one recipient), then a trusted
one from 127.0.99.<1 + i % 250>.  The body is sent, then the clock starts
just before ".\\r\\n" is sent and stops when the reply line has arrived.
Before each legit message the client sleeps a random 0..JITTER ms (seeded):
a sequential client would otherwise lock onto the gossip phase (the next
message starting just after the round that released the last one).
Prints one JSON object with both sample lists (ms) and the reply codes.
Raw sockets, Python standard library only; every socket op times out (30 s).
"""
import argparse
import json
import random
import socket
import sys
import time

BODY = ("From: alice@legit.test\r\nTo: bob@example.test\r\nSubject: hello\r\n"
        "Message-ID: <%d.%s@legit.test>\r\n\r\n" + "Just a normal, legitimate message.\r\n" * 20)


class Conn:
    def __init__(self, src, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(src, 0))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def reply(self):
        """Reads one (possibly multi-line) reply; returns (code, last line)."""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(4096)
                if not chunk:
                    raise ConnectionError("server closed the connection; had %r" % self.buf[:200])
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), line.decode("latin-1")

    def cmd(self, text, want):
        self.s.sendall(text.encode() + b"\r\n")
        code, line = self.reply()
        if code != want:
            raise RuntimeError("%s -> %s" % (text, line))
        return code

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def one(src, port, tag):
    """One session; returns (ms from "." to the reply, reply code, reply line)."""
    c = Conn(src, port)
    try:
        code, line = c.reply()
        if code != 220:
            raise RuntimeError("greeting: %s" % line)
        c.cmd("EHLO legit.test", 250)
        c.cmd("MAIL FROM:<alice@legit.test>", 250)
        c.cmd("RCPT TO:<bob@example.test>", 250)
        c.cmd("DATA", 354)
        c.s.sendall((BODY % (time.time_ns(), tag)).encode())
        t0 = time.perf_counter()
        c.s.sendall(b".\r\n")
        code, line = c.reply()
        ms = (time.perf_counter() - t0) * 1000.0
        try:
            c.s.sendall(b"QUIT\r\n")
            c.reply()
        except (OSError, ConnectionError):
            pass
        return ms, code, line
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--trusted-block", default="127.0.99")
    ap.add_argument("--fresh-base", default="127.30", help="first octets: fresh blocks are BASE+i//250 . i%%250")
    ap.add_argument("--deadline", type=float, default=400)
    ap.add_argument("--jitter-ms", type=float, default=500, help="random pause before each legit message")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="write the paired samples here (TSV)")
    a = ap.parse_args()
    ports = [int(p) for p in a.ports.split(",")]
    o1, o2 = (int(x) for x in a.fresh_base.split("."))
    legit, trusted, bad = [], [], []
    rows = []
    deadline = time.monotonic() + a.deadline
    rng = random.Random(a.seed)
    for i in range(a.count):
        if time.monotonic() > deadline:
            bad.append("deadline reached after %d messages" % i)
            break
        port = ports[i % len(ports)]
        src_l = "%d.%d.%d.7" % (o1, o2 + i // 250, i % 250)
        src_t = "%s.%d" % (a.trusted_block, 1 + i % 250)
        pair = []
        time.sleep(rng.uniform(0, a.jitter_ms) / 1000.0)
        for kind, src, sink in (("legit", src_l, legit), ("trusted", src_t, trusted)):
            try:
                ms, code, line = one(src, port, "%s%d" % (kind, i))
            except (OSError, ConnectionError, RuntimeError) as e:
                bad.append("%s #%d from %s to :%d: %s" % (kind, i, src, port, e))
                pair.append(None)
                continue
            if code != 250:
                bad.append("%s #%d from %s to :%d: %s" % (kind, i, src, port, line))
                pair.append(None)
                continue
            sink.append(ms)
            pair.append(ms)
        rows.append((i, port, src_l, src_t, pair[0], pair[1]))
    if a.out:
        with open(a.out, "w") as f:
            f.write("i\tport\tlegit_src\ttrusted_src\tlegit_ms\ttrusted_ms\n")
            for r in rows:
                f.write("\t".join("" if v is None else (("%.3f" % v) if isinstance(v, float) else str(v)) for v in r) + "\n")
    diffs = [r[4] - r[5] for r in rows if r[4] is not None and r[5] is not None]
    json.dump({"legit": legit, "trusted": trusted, "diff": diffs, "errors": bad}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
