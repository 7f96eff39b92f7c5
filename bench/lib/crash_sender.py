"""Sends N messages (Subject: crash-ID) over T threads to a node, each until
it gets a 250, retrying on any failure as a real MTA keeps a message it has
not handed over: every try of a message is the same bytes, with the same
Message-ID and Date, as an MTA resends its queue file. Appends the
Message-ID (without <>) of every message that got a 250 to ACCEPTED, one
per line. Bounded by DEADLINE seconds. With BODY_KB, each body is padded
to that many KiB (over 64 KiB, the node spools it to a file as it arrives).
Usage: crash_sender.py PORT N T ACCEPTED DEADLINE [BODY_KB]"""

import email.utils
import smtplib
import sys
import threading
import time

port, total, threads, accepted_path, deadline = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
body_kb = int(sys.argv[6]) if len(sys.argv) > 6 else 0
padding = ("x" * 998 + "\r\n") * (body_kb * 1024 // 1000)
stop_at = time.time() + deadline
lock = threading.Lock()
next_id = [0]
log = open(accepted_path, "a", buffering=1)
failures = [0]


def take():
    with lock:
        if next_id[0] >= total:
            return None
        next_id[0] += 1
        return next_id[0] - 1


def message(i, message_id):
    return (
        "From: <load@client.test>\r\nTo: <bob@example.test>\r\nDate: %s\r\n"
        "Message-ID: <%s>\r\nSubject: crash-%d\r\n\r\nmessage %d\r\n%s"
        % (email.utils.formatdate(), message_id, i, i, padding)
    ).encode()


def send(i):
    message_id = "crash-%d.%d@client.test" % (i, int(time.time() * 1000))
    content = message(i, message_id)
    while time.time() < stop_at:
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=10)
            s.sendmail("load@client.test", ["bob@example.test"], content)
            try:
                s.quit()
            except Exception:
                pass
            with lock:
                log.write("%s\n" % message_id)
            return True
        except Exception:
            with lock:
                failures[0] += 1
            time.sleep(0.05)
    return False


def worker():
    while True:
        i = take()
        if i is None or not send(i):
            return


ts = [threading.Thread(target=worker) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("sent_ids=%d failures_retried=%d" % (next_id[0], failures[0]))
