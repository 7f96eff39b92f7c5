#!/usr/bin/env bash
# bench/crash.sh -- crash under load: while a sender pushes MESSAGES messages
# through magicmx to smtp-sink, the node is killed with SIGKILL at random
# moments (at least KILLS times) and restarted at once. Every message that got
# a 250 must reach the sink (lost: target 0); duplicates are counted (target
# <= 0.1%). The sender keeps retrying a message until it gets its 250, as an
# MTA does. Everything on 127.0.0.1, bounded in time, cleaned up at exit.
#
# Usage: bench/crash.sh [MESSAGES=2000] [THREADS=20] [KILLS=5] [SENDER_NICE=19] [SLOW_FSYNC_US=N]
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
MAGICMX=${MAGICMX:-$REPO_ROOT/target/release/magicmx}
[[ -x $MAGICMX ]] || pf_die "no magicmx binary at $MAGICMX (cargo build --release)"
command -v smtp-sink >/dev/null || pf_die "smtp-sink is missing (apt-get install postfix)"

TMP=$(mktemp -d)
chmod 711 "$TMP"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    [[ -n ${NODE_PID:-} ]] && kill -KILL "$NODE_PID" 2>/dev/null || true
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

start_node
send_started=$SECONDS
nice -n "$SENDER_NICE" python3 "$SCRIPT_DIR/lib/crash_sender.py" "$PORT" "$MESSAGES" "$THREADS" "$TMP/accepted" 300 >"$TMP/sender.out" &
SENDER=$!
PIDS+=($SENDER)
kills=0
while kill -0 "$SENDER" 2>/dev/null; do
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.3 + (r % 150) / 100 }')"
    kill -0 "$SENDER" 2>/dev/null || break
    kill_node
    kills=$((kills + 1))
    start_node
done
wait "$SENDER" || true
send_took=$((SECONDS - send_started))
# Fewer kills than asked (a fast run): keep killing while delivery drains.
while ((kills < KILLS)); do
    sleep 0.3
    kill_node
    kills=$((kills + 1))
    start_node
done

accepted=$(sort -un "$TMP/accepted" | wc -l)
delivered_ids() { grep -h -o '^Subject: crash-[0-9]*' "$TMP"/dumps/msg-* 2>/dev/null | sed 's/.*crash-//'; }
for _ in $(seq 1 120); do
    got=$(delivered_ids | sort -un | wc -l)
    missing=$(comm -23 <(sort -u "$TMP/accepted") <(delivered_ids | sort -u) | wc -l)
    ((missing == 0)) && break
    sleep 1
done
total=$(delivered_ids | wc -l)
unique=$(delivered_ids | sort -u | wc -l)
missing=$(comm -23 <(sort -u "$TMP/accepted") <(delivered_ids | sort -u) | wc -l)
dups=$((total - unique))
echo "magicmx crash under load: $(date -u +%FT%TZ), nproc=$(nproc), MESSAGES=$MESSAGES THREADS=$THREADS"
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
    ids=$(grep -l "^Subject: crash-$id\$" "$TMP"/dumps/msg-* | xargs grep -h -o '(magicmx) with ESMTP id [0-9A-F]*' | sort -u | wc -l)
    copies=$(grep -l "^Subject: crash-$id\$" "$TMP"/dumps/msg-* | wc -l)
    redelivered=$((redelivered + copies - ids)); resent=$((resent + ids - 1))
done
echo "  of which redelivered by the node after a kill: $redelivered; queued twice (a second try the node did not recognise): $resent"
echo "second tries recognised by the node (answered, not queued twice): $(grep -c 'verdict="sent_again"' "$TMP/node.log" || true)"
((missing == 0)) || exit 1
