#!/usr/bin/env python3
"""bench/lib/leak_flood.py -- one flooding /24 block sprays mail over N nodes.

    leak_flood.py --block 127.0.42 --ports 2525,2526,... --per-node 40

One thread per node, all started together; thread i binds 127.0.42.(i+1)
and opens ONE SMTP session to node i, in which it tries PER_NODE messages,
each with one recipient: MAIL, RCPT, and DATA only if RCPT got 250 (RSET
otherwise).  Every reply is tallied.  A message counts as accepted when the
reply after the final "." is 250.  Prints one JSON object on stdout.

Bounded: socket timeout 30 s, the whole flood gives up after --deadline s.
Python standard library only.
"""
import argparse
import json
import smtplib
import sys
import threading
import time
from collections import Counter

MAX_SESSIONS = 5


def flood(idx, src, port, per_node, body, result, deadline):
    r = result[idx] = {"node": idx, "src": src, "accepted": 0, "rcpt": Counter(),
                       "data_end": Counter(), "connect": [], "sessions": 0,
                       "tried": 0, "seconds": 0.0, "hold_ms": []}
    t0 = time.monotonic()
    i = 0
    # A session the server ends (e.g. "421 too many errors" after 20
    # refusals) is followed by a new one, as a flooder would, until the
    # messages are used up, a connection is refused, or MAX_SESSIONS.
    while i < per_node and r["sessions"] < MAX_SESSIONS and time.monotonic() < deadline:
        r["sessions"] += 1
        s = smtplib.SMTP(timeout=30, local_hostname="flood.test")
        s.source_address = (src, 0)
        try:
            code, _ = s.connect("127.0.0.1", port, source_address=(src, 0))
            r["connect"].append(str(code))
            if code != 220:
                break
            s.ehlo("flood.test")
            while i < per_node and time.monotonic() < deadline:
                i += 1
                r["tried"] += 1
                code, _ = s.mail("flood@spam.test")
                if code != 250:
                    r["rcpt"]["MAIL-%d" % code] += 1
                    s.rset()
                    continue
                code, _ = s.rcpt("victim%d@example.test" % (i % 7))
                r["rcpt"][str(code)] += 1
                if code != 250:
                    s.rset()
                    continue
                # data(): sends DATA, the body and ".", returns the final reply.
                t = time.monotonic()
                code, _ = s.data(body)
                r["hold_ms"].append(round((time.monotonic() - t) * 1000, 1))
                r["data_end"][str(code)] += 1
                if code == 250:
                    r["accepted"] += 1
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass
        except smtplib.SMTPConnectError as e:
            r["connect"].append(str(e.smtp_code))
            break
        except smtplib.SMTPServerDisconnected:
            r["connect"].append("closed")   # the server ended the session
        except (smtplib.SMTPException, OSError) as e:
            r["connect"].append("%s: %s" % (type(e).__name__, e))
            break
        finally:
            s.close()
    r["seconds"] = round(time.monotonic() - t0, 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--block", required=True, help="first three octets, e.g. 127.0.42")
    ap.add_argument("--ports", required=True)
    ap.add_argument("--per-node", type=int, default=40)
    ap.add_argument("--deadline", type=float, default=120)
    a = ap.parse_args()
    ports = [int(p) for p in a.ports.split(",")]
    body = ("From: flood@spam.test\r\nTo: victim@example.test\r\nSubject: buy\r\n\r\n"
            + "cheap stuff\r\n" * 10)
    result = [None] * len(ports)
    deadline = time.monotonic() + a.deadline
    threads = [threading.Thread(target=flood, daemon=True,
                                args=(i, "%s.%d" % (a.block, i + 1), p, a.per_node, body, result, deadline))
               for i, p in enumerate(ports)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline + 35 - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    per = [x for x in result if x is not None]
    rcpt = Counter(); data_end = Counter()
    for x in per:
        rcpt.update(x["rcpt"]); data_end.update(x["data_end"])
    out = {
        "accepted": sum(x["accepted"] for x in per),
        "tried": sum(x["tried"] for x in per),
        "rcpt": dict(rcpt),
        "data_end": dict(data_end),
        "sessions": sum(x["sessions"] for x in per),
        # how each session began/ended: 220 = served, "closed" = ended by
        # the server mid-session, 421 = refused at connect
        "sessions_log": dict(Counter(c for x in per for c in x["connect"])),
        "hung": hung,
        "seconds": round(time.monotonic() - t0, 3),
        "per_node_accepted": [x["accepted"] for x in per],
        "hold_ms_max": max((m for x in per for m in x["hold_ms"]), default=0),
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
