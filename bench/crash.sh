#!/usr/bin/env bash
# bench/crash.sh -- crash under load: while a sender pushes MESSAGES messages
# through magicmx to smtp-sink, the node is killed with SIGKILL at random
# moments (at least KILLS times) and restarted at once. Every message that got
# a 250 must reach the sink (lost: target 0); duplicates are counted (target
# <= 0.1%). The sender keeps retrying a message until it gets its 250, as an
# MTA does. Everything on 127.0.0.1, bounded in time, cleaned up at exit.
#
# Usage: bench/crash.sh [MESSAGES=2000] [THREADS=20] [KILLS=5] [SENDER=python|postfix]
#        [BODY_KB=0: with the python sender, bodies padded to this many KiB;
#         over 64 the node streams them to spool files]
#        [SENDER_NICE=19] [SLOW_FSYNC_US=N]
#        [KEEP=1 keeps the logs and dumps]
#        (MAGICMX=target/release/magicmx)
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib/postfix.sh
source "$SCRIPT_DIR/lib/postfix.sh"
for a in "$@"; do declare "${a%%=*}=${a#*=}"; done
MESSAGES=${MESSAGES:-2000}
THREADS=${THREADS:-20}
KILLS=${KILLS:-5}
# The sender stands in for MTAs on other machines: at nice 19 it does not
# take the node's two cores from it (SENDER_NICE=0 to compete).
SENDER_NICE=${SENDER_NICE:-19}
# python: bench/lib/crash_sender.py, which retries each message until its 250
# and logs which got one; postfix: smtp-source into a private Postfix relay
# that forwards to the node (Postfix keeps and retries, its log tells).
SENDER=${SENDER:-python}
MAGICMX=${MAGICMX:-$REPO_ROOT/target/release/magicmx}
[[ -x $MAGICMX ]] || pf_die "no magicmx binary at $MAGICMX (cargo build --release)"
command -v smtp-sink >/dev/null || pf_die "smtp-sink is missing (apt-get install postfix)"

TMP=$(mktemp -d)
chmod 711 "$TMP"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    [[ -n ${NODE_PID:-} ]] && kill -KILL "$NODE_PID" 2>/dev/null || true
    [[ -n ${RELAY:-} ]] && pf_relay_stop "$RELAY"
    if [[ -n ${KEEP:-} ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

SINK=$(pf_free_port)
PORT=$(pf_free_port)
mkdir -p "$TMP/dumps" && chmod 777 "$TMP/dumps"
smtp-sink -u nobody -d "$TMP/dumps/msg-" 127.0.0.1:"$SINK" 256 >/dev/null 2>&1 &
PIDS+=($!)
pf_wait_banner 127.0.0.1 "$SINK" 10 || pf_die "smtp-sink did not start"

cat >"$TMP/node.toml" <<CONF
[node]
name = "crash"
data_dir = "$TMP/data"
nice = 0
[smtp]
listen = ["127.0.0.1:$PORT"]
hostname = "crash.test"
greet_pause = "0s"
max_connections_per_ip = 1000
[admin]
listen = "127.0.0.1:0"
policy_listen = "127.0.0.1:0"
[trust]
cidrs = ["127.0.0.1/32"]
[checks]
fcrdns = "off"
spf = "off"
sender_domain = false
verify_recipients = false
dkim = "off"
dmarc = "off"
[delivery]
retry_first = "1s"
retry_max = "2s"
[[domain]]
name = "example.test"
route = "smtp://127.0.0.1:$SINK"
CONF

# SLOW_FSYNC_US=N stands in for a slower disk: strace delays every fsync and
# fdatasync of the node by N microseconds (this machine's take about 200).
start_node() {
    if [[ -n ${SLOW_FSYNC_US:-} ]]; then
        strace -f -qq --seccomp-bpf -o /dev/null -e trace=fsync,fdatasync \
            -e inject=fsync,fdatasync:delay_exit="$SLOW_FSYNC_US" \
            "$MAGICMX" run --config "$TMP/node.toml" >>"$TMP/node.log" 2>&1 &
        local tracer=$!
        for _ in $(seq 1 100); do
            NODE_PID=$(pgrep -P "$tracer" || true)
            [[ -n $NODE_PID ]] && break
            sleep 0.05
        done
    else
        "$MAGICMX" run --config "$TMP/node.toml" >>"$TMP/node.log" 2>&1 &
        NODE_PID=$!
    fi
    pf_wait_banner 127.0.0.1 "$PORT" 20 || pf_die "magicmx did not start: $(tail -5 "$TMP/node.log")"
}

kill_node() {
    kill -KILL "$NODE_PID"
    wait "$NODE_PID" 2>/dev/null || true
    while kill -0 "$NODE_PID" 2>/dev/null; do sleep 0.01; done
}

# The sender, and what it says got a 250 (Message-IDs, one per line, in
# $TMP/accepted once it is done).
if [[ $SENDER == postfix ]]; then
    # smtp-source -> a private Postfix relay -> magicmx: Postfix is the MTA
    # that keeps each message until magicmx says 250 and retries after a
    # kill; its log says which messages got their 250.
    RELAY=$TMP/postfix
    RELAY_PORT=$(pf_free_port)
    pf_relay_setup "$RELAY" "$RELAY_PORT" "$PORT" 64
    postconf -c "$RELAY/etc" -e minimal_backoff_time=1s maximal_backoff_time=2s queue_run_delay=1s
    PF_NICE=$SENDER_NICE pf_relay_start "$RELAY"
    start_sender() {
        nice -n "$SENDER_NICE" smtp-source -s "$THREADS" -m "$MESSAGES" -M client.test \
            -f load@client.test -t bob@example.test "127.0.0.1:$RELAY_PORT" >"$TMP/sender.out" 2>&1 &
        SENDER_PID=$!
    }
    # Until smtp-source is done and Postfix has handed everything on. Once
    # smtp-source is done the relay's queue is flushed each time: after a
    # refused connection qmgr may leave a message "skipped, still being
    # delivered" for minutes.
    sending() {
        kill -0 "$SENDER_PID" 2>/dev/null && return 0
        (($(pf_relay_queue_count "$RELAY") > 0)) || return 1
        postqueue -c "$RELAY/etc" -f 2>/dev/null || true
    }
    accepted_ids() {
        python3 - "$RELAY/maillog" <<'PY'
import re, sys
ids, sent = {}, set()
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"postfix/cleanup\[\d+\]: (\w+): message-id=<([^>]*)>", line)
    if m:
        ids[m[1]] = m[2]
    m = re.search(r"postfix/smtp\[\d+\]: (\w+): to=.*status=sent \(250 ", line)
    if m:
        sent.add(m[1])
print("\n".join(ids[q] for q in sent if q in ids))
PY
    }
else
    start_sender() {
        nice -n "$SENDER_NICE" python3 "$SCRIPT_DIR/lib/crash_sender.py" "$PORT" "$MESSAGES" "$THREADS" \
            "$TMP/accepted" 300 "${BODY_KB:-0}" >"$TMP/sender.out" &
        SENDER_PID=$!
    }
    sending() { kill -0 "$SENDER_PID" 2>/dev/null; }
    accepted_ids() { cat "$TMP/accepted"; }
fi

start_node
send_started=$SECONDS
start_sender
PIDS+=($SENDER_PID)
kills=0
while sending && ((SECONDS - send_started < ${DEADLINE:-300})); do
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.3 + (r % 150) / 100 }')"
    sending || break
    kill_node
    kills=$((kills + 1))
    start_node
done
wait "$SENDER_PID" || true
send_took=$((SECONDS - send_started))
# Fewer kills than asked (a fast run): keep killing while delivery drains.
while ((kills < KILLS)); do
    sleep 0.3
    kill_node
    kills=$((kills + 1))
    start_node
done
if [[ $SENDER == postfix ]]; then
    for _ in $(seq 1 120); do sending || break; sleep 1; done
fi
accepted_ids | sort -u >"$TMP/accepted.sorted"

accepted=$(wc -l <"$TMP/accepted.sorted")
delivered_ids() { grep -h -i -o '^Message-ID: *<[^>]*>' "$TMP"/dumps/msg-* 2>/dev/null | sed 's/.*<\(.*\)>/\1/'; }
for _ in $(seq 1 120); do
    missing=$(comm -23 "$TMP/accepted.sorted" <(delivered_ids | sort -u) | wc -l)
    ((missing == 0)) && break
    sleep 1
done
total=$(delivered_ids | wc -l)
unique=$(delivered_ids | sort -u | wc -l)
missing=$(comm -23 "$TMP/accepted.sorted" <(delivered_ids | sort -u) | wc -l)
dups=$((total - unique))
echo "magicmx crash under load: $(date -u +%FT%TZ), nproc=$(nproc), MESSAGES=$MESSAGES THREADS=$THREADS SENDER=$SENDER"
echo "kills (SIGKILL, then restart): $kills"
echo "sender (nice $SENDER_NICE): $(cat "$TMP/sender.out"), ${send_took}s"
echo "messages that got 250: $accepted"
echo "delivered to the sink: $total ($unique distinct)"
echo "lost (got 250, never delivered): $missing   (target 0)"
awk -v d="$dups" -v n="$unique" 'BEGIN { printf "duplicated: %d = %.3f%% of delivered   (target <= 0.1%%)\n", d, n ? 100 * d / n : 0 }'
# Where duplicates come from: the same queue id delivered twice (the node
# redelivered after a kill) or two queue ids for one message (the sender
# sent it again: it never saw the 250 of the first).
redelivered=0 resent=0
for id in $(delivered_ids | sort | uniq -d); do
    files=$(grep -l -i -F "Message-ID: <$id>" "$TMP"/dumps/msg-*)
    ids=$(echo "$files" | xargs grep -h -o '(magicmx) with ESMTP id [0-9A-F]*' | sort -u | wc -l)
    copies=$(echo "$files" | wc -l)
    redelivered=$((redelivered + copies - ids)); resent=$((resent + ids - 1))
done
echo "  of which redelivered by the node after a kill: $redelivered; queued twice (a second try the node did not recognise): $resent"
echo "second tries recognised by the node (answered, not queued twice): $(grep -c 'verdict="sent_again"' "$TMP/node.log" || true)"
if [[ $SENDER == postfix ]] && (($(pf_relay_queue_count "$RELAY") > 0)); then
    echo "left in the Postfix relay's queue (never got a 250, not counted):"
    postqueue -c "$RELAY/etc" -p | sed 's/^/  /'
fi
((missing == 0)) || exit 1
