#!/usr/bin/env bash
# bench/memory.sh -- the node's peak memory while CLIENTS clients send a
# SIZE_MB message each, all at once, fast. Message content goes to the spool
# as it is read, so the peak should not grow with the size of the messages;
# smtp.max_data_memory (the budget for the sessions' buffers: 128 KiB each)
# is a safety net (past it: 452 4.3.1, the client tries again later). Runs
# the node once per BUDGETS value (MiB) and reports the peak resident set
# (VmHWM), how many messages got 250 and 452, and the data directory's size
# on disk at its fullest and once every message is delivered (the space
# given back); then the same load on a private Postfix relay (POSTFIX=0
# skips it). Everything on 127.0.0.1, bounded in time, cleaned up at exit.
#
# Usage: bench/memory.sh [CLIENTS=40] [SIZE_MB=8] [BUDGETS="256"] [POSTFIX=1]
#        (MAGICMX=target/release/magicmx)
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib/postfix.sh
source "$SCRIPT_DIR/lib/postfix.sh"
for a in "$@"; do declare "${a%%=*}=${a#*=}"; done
CLIENTS=${CLIENTS:-40}
SIZE_MB=${SIZE_MB:-8}
BUDGETS=${BUDGETS:-256}
MAGICMX=${MAGICMX:-$REPO_ROOT/target/release/magicmx}
[[ -x $MAGICMX ]] || pf_die "no magicmx binary at $MAGICMX (cargo build --release)"

TMP=$(mktemp -d)
NODE_PID=""
cleanup() {
    [[ -z $NODE_PID ]] || pf_stop_pid "$NODE_PID"
    [[ ! -d $TMP/postfix/etc ]] || pf_relay_stop "$TMP/postfix"
    [[ -z ${PF_SINK_PID:-} ]] || pf_stop_pid "$PF_SINK_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$SCRIPT_DIR/results"
RESULTS=$SCRIPT_DIR/results/memory-$(date -u +%Y%m%d-%H%M%S).txt
out() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
out "# magicmx peak memory under many large messages at once"
out "command:  bench/memory.sh CLIENTS=$CLIENTS SIZE_MB=$SIZE_MB BUDGETS=\"$BUDGETS\""
out "date:     $(date -u +%FT%TZ), nproc=$(nproc), commit $(git -C "$REPO_ROOT" rev-parse --short HEAD)"
out ""
out "max_data_memory  clients  size   250  452  other  peak RSS (VmHWM)  RSS before  data dir: full, drained"

# send_all PORT: every client sends its message at once; prints the codes.
send_all() {
    python3 - "$1" "$CLIENTS" "$SIZE_MB" <<'PY'
import socket, sys, threading
port, clients, size_mb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
line = b"x" * 510 + b"\r\n"
chunk = line * 128                      # 64 KiB
barrier = threading.Barrier(clients)
codes = []
lock = threading.Lock()

def reply(f):
    while True:
        l = f.readline()
        if not l or l[3:4] != b"-":
            return l

def client(n):
    code = "err"
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        f = s.makefile("rb")
        reply(f)
        for cmd in (b"EHLO c%d.test" % n, b"MAIL FROM:<c%d@client.test>" % n, b"RCPT TO:<bob@example.test>", b"DATA"):
            s.sendall(cmd + b"\r\n")
            r = reply(f)
        barrier.wait(timeout=60)             # every DATA phase at once
        if r.startswith(b"354"):
            s.sendall(b"Subject: big %d\r\n\r\n" % n)
            for _ in range(size_mb * 16):
                s.sendall(chunk)
            s.sendall(b".\r\n")
            r = reply(f)
        code = r[:3].decode() or "closed"
        s.sendall(b"QUIT\r\n")
        s.close()
    except Exception:
        code = "err"
    with lock:
        codes.append(code)

ts = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
for t in ts: t.start()
for t in ts: t.join()
print(" ".join(codes))
PY
}

# count CODE CODES: how many of CODES are CODE.
count() { tr ' ' '\n' <<<"$2" | grep -c "^$1\$" || true; }

for budget in $BUDGETS; do
    port=$(pf_free_port)
    rm -rf "$TMP/data" "$TMP/maildir"
    cat >"$TMP/node.toml" <<CONF
[node]
name = "memory"
data_dir = "$TMP/data"
nice = 0
[smtp]
listen = ["127.0.0.1:$port"]
hostname = "memory.test"
greet_pause = "0s"
max_connections_per_ip = 1000
max_message_size = $((SIZE_MB * 1024 * 1024 + 65536))
max_data_memory = $((budget * 1024 * 1024))
[admin]
listen = "127.0.0.1:0"
policy_listen = "127.0.0.1:0"
[trust]
cidrs = ["127.0.0.0/8"]
[checks]
fcrdns = "off"
spf = "off"
sender_domain = false
verify_recipients = false
dkim = "off"
dmarc = "off"
[[domain]]
name = "example.test"
route = "maildir:$TMP/maildir"
CONF
    "$MAGICMX" run --config "$TMP/node.toml" >"$TMP/node-$budget.log" 2>&1 &
    NODE_PID=$!
    pf_wait_banner 127.0.0.1 "$port" 20 || pf_die "magicmx did not start: $(tail -5 "$TMP/node-$budget.log")"
    before=$(awk '/VmRSS/ { print $2 }' "/proc/$NODE_PID/status")
    # The data directory's size on disk, sampled while the load runs.
    fullest=0
    ( while kill -0 "$NODE_PID" 2>/dev/null; do du -sk "$TMP/data" 2>/dev/null | cut -f1; sleep 0.2; done ) \
        >"$TMP/du-$budget.txt" &
    sampler=$!
    codes=$(send_all "$port")
    peak=$(awk '/VmHWM/ { print $2 }' "/proc/$NODE_PID/status")
    ok=$(count 250 "$codes")
    full=$(count 452 "$codes")
    other=$((CLIENTS - ok - full))
    # Once every message taken is delivered, the spool gives its space back.
    for ((i = 0; i < 600; i++)); do
        delivered=$(find "$TMP/maildir" -type f -path '*/new/*' 2>/dev/null | wc -l)
        ((delivered >= ok)) && break
        sleep 0.1
    done
    sleep 0.5
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    fullest=$(sort -n "$TMP/du-$budget.txt" | tail -n 1)
    drained=$(du -sk "$TMP/data" | cut -f1)
    printf -v row '%-16s %8s %4sMB %5s %4s %6s %14s MiB %9s MiB  %6s MiB, %s KiB' "${budget} MiB" "$CLIENTS" "$SIZE_MB" \
        "$ok" "$full" "$other" "$((peak / 1024))" "$((before / 1024))" "$((${fullest:-0} / 1024))" "$drained"
    out "$row"
    pf_stop_pid "$NODE_PID"
    NODE_PID=""
done

# The same load on a private Postfix relay to smtp-sink: its memory is the
# sum of the proportional set sizes (Pss, shared pages split) of the master
# and every process under it, sampled every 100 ms.
if [[ ${POSTFIX:-1} == 1 ]]; then
    pf_ensure_installed
    chmod 711 "$TMP"
    sink_port=$(pf_free_port)
    pf_sink_start "$TMP/sink.out" "$sink_port"
    relay_port=$(pf_free_port)
    pf_relay_setup "$TMP/postfix" "$relay_port" "$sink_port" $((CLIENTS * 2 + 100))
    postconf -c "$TMP/postfix/etc" -e "message_size_limit=$((SIZE_MB * 1024 * 1024 + 65536))"
    pf_relay_start "$TMP/postfix"
    master=$(pf_relay_master_pid "$TMP/postfix")
    pss_total() {
        local total=0 pid pss
        for pid in $master $(pgrep -P "$master"); do
            pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
            total=$((total + ${pss:-0}))
        done
        echo "$total"
    }
    before=$(pss_total)
    peak=$before
    send_all "$relay_port" >"$TMP/postfix.codes" &
    sender=$!
    while kill -0 "$sender" 2>/dev/null; do
        now=$(pss_total)
        ((now > peak)) && peak=$now
        sleep 0.1
    done
    codes=$(cat "$TMP/postfix.codes")
    ok=$(count 250 "$codes")
    full=$(count 452 "$codes")
    printf -v row '%-16s %8s %4sMB %5s %4s %6s %14s MiB %9s MiB  (Pss of all its processes)' "postfix $(pf_version)" \
        "$CLIENTS" "$SIZE_MB" "$ok" "$full" "$((CLIENTS - ok - full))" "$((peak / 1024))" "$((before / 1024))"
    out "$row"
    pf_relay_stop "$TMP/postfix"
    pf_stop_pid "$PF_SINK_PID"
fi
out ""
out "results written to $RESULTS"
