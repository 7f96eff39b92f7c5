#!/usr/bin/env bash
# bench/leak.sh -- the leak factor: how much mail one flooding /24 block gets
# through when it sprays over N magicmx nodes, with the mesh (gossip) and
# without it (N standalone nodes), on loopback.
#
#   leak factor = messages accepted (250 after the final ".") / recipients_per_hour
#
# Each case starts fresh nodes (fresh data directories) and floods from a
# block never used before: one SMTP session per node, all at once (threads),
# PER_NODE messages per session, one recipient per message (see
# bench/lib/leak_flood.py).  Throttle settings: recipients_per_hour =
# RCPT_LIMIT, connections_per_minute = 1000 (so only the recipient limit
# acts), everything else default (gossip_interval 500ms, hold 2s).
# Cases: N in SIZES x {mesh, alone}, each REPEATS times (rounds interleave
# the cases); it prints each run and the medians, and writes the same into
# bench/results/leak-DATE.txt.  Target: with the mesh, 0.9 <= leak <= 1.05 at every N.
#
# Usage:  bench/leak.sh [NAME=VALUE ...]      (or set them in the env)
#   SIZES="3 10" REPEATS=3 PER_NODE=40 RCPT_LIMIT=30
#   MAGICMX=target/release/magicmx   (relative to the repo root by default)
# Talks over 127.0.0.0/8 only; everything lives in a temporary directory
# removed at exit; every process started here is stopped by PID.
set -euo pipefail

ND_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ND_REPO_ROOT=$(cd "$ND_SCRIPT_DIR/.." && pwd)
# shellcheck source=lib/postfix.sh
source "$ND_SCRIPT_DIR/lib/postfix.sh"
# shellcheck source=lib/nodes.sh
source "$ND_SCRIPT_DIR/lib/nodes.sh"

PARAMS=(SIZES REPEATS PER_NODE RCPT_LIMIT MAGICMX)
nd_cmdline "${PARAMS[@]}" -- "$0" "$@"
for a in "$@"; do
    case $a in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    SIZES=* | REPEATS=* | PER_NODE=* | RCPT_LIMIT=* | MAGICMX=*) declare "${a%%=*}=${a#*=}" ;;
    *) pf_die "unknown argument '$a' (expected NAME=VALUE with NAME one of ${PARAMS[*]}; see --help)" ;;
    esac
done
SIZES=${SIZES:-3 10}
REPEATS=${REPEATS:-3}
PER_NODE=${PER_NODE:-40}
RCPT_LIMIT=${RCPT_LIMIT:-30}
MAGICMX=${MAGICMX:-$ND_REPO_ROOT/target/release/magicmx}
for p in REPEATS PER_NODE RCPT_LIMIT; do
    [[ ${!p} =~ ^[1-9][0-9]*$ ]] || pf_die "$p must be a positive integer, not '${!p}'"
done
MAXN=0
for n in $SIZES; do
    [[ $n =~ ^[1-9][0-9]*$ && $n -le 30 ]] || pf_die "SIZES must be integers 1..30, not '$n'"
    ((n > MAXN)) && MAXN=$n
done
((REPEATS <= 20)) || pf_die "REPEATS must be at most 20"
[[ -f $MAGICMX && -x $MAGICMX ]] || pf_die "magicmx binary not found at $MAGICMX
       build it first (cargo build --release) or point MAGICMX=/path/to/magicmx at one"
MAGICMX=$(realpath "$MAGICMX")

nd_init leak
nd_header "magicmx leak factor: one /24 block flooding N nodes, mesh vs standalone"
out "workload: SIZES=\"$SIZES\" REPEATS=$REPEATS PER_NODE=$PER_NODE (1 session per node, 1 recipient per message)"
out "throttle: recipients_per_hour=$RCPT_LIMIT connections_per_minute=1000, gossip_interval 500ms, hold 2s (defaults)"
out "leak = accepted / $RCPT_LIMIT; unthrottled a run would accept N*$PER_NODE"
out "nodes:    [node] nice=0, [checks] fcrdns/spf/sender domain/call-outs off (no DNS here), maildir delivery; certificates from magicmx mesh issue"
out ""

# Certificates, once: one CA, MAXN node certificates.
nd_make_ca "$ND_TMP/ca"
for ((i = 1; i <= MAXN; i++)); do nd_issue "$ND_TMP/ca" "n$i" "$ND_TMP/cert-n$i"; done

THROTTLE="[throttle]
recipients_per_hour = $RCPT_LIMIT
connections_per_minute = 1000"

RUN=0
declare -A ACCEPTED=()
RUN_PIDS=()

stop_run_nodes() {
    local pid
    for pid in "${RUN_PIDS[@]}"; do pf_stop_pid "$pid"; nd_forget_pid "$pid"; done
    RUN_PIDS=()
}

# run_case N MODE REP: one fresh run; prints a table row.
run_case() {
    local n=$1 mode=$2 rep=$3 dir ports i logs=() sport=() gport=() certdir seed json
    RUN=$((RUN + 1))
    dir=$ND_TMP/run$RUN
    mkdir -p "$dir"
    read -r -a ports <<<"$(nd_free_ports $((4 * n)))"
    for ((i = 0; i < n; i++)); do
        sport[i]=${ports[4 * i]}
        gport[i]=${ports[4 * i + 1]}
        certdir=""
        seed=""
        if [[ $mode == mesh ]]; then
            certdir=$ND_TMP/cert-n$((i + 1))
            ((i > 0)) && seed=${gport[0]}
        fi
        nd_write_config "$dir/n$((i + 1)).toml" "n$((i + 1))" "$dir/n$((i + 1))" "${sport[i]}" "${gport[i]}" \
            "$seed" "${ports[4 * i + 2]}" "${ports[4 * i + 3]}" "$certdir" "$THROTTLE"
    done
    for ((i = 0; i < n; i++)); do
        logs[i]=$dir/n$((i + 1)).log
        nd_start "$dir/n$((i + 1)).toml" "${logs[i]}"
        RUN_PIDS+=("$ND_LAST_PID")
    done
    for ((i = 0; i < n; i++)); do nd_wait_smtp "${sport[i]}" "${logs[i]}" "${RUN_PIDS[i]}"; done
    local meshnote=""
    if [[ $mode == mesh ]]; then
        local t0=$SECONDS
        if ! nd_wait_mesh 60 "${logs[@]}"; then
            local l counts=""
            for l in "${logs[@]}"; do counts+=" $(nd_peers_up "$l")"; done
            pf_die "the $n-node mesh did not form within 60 s (peers up per node:$counts); last log lines of n1:
$(tail -n 15 "${logs[0]}")"
        fi
        meshnote="mesh formed in $((SECONDS - t0))s"
    fi
    # A block never used before: 127.<run>.<rep>.0/24 (bytes stay < 256).
    local block="127.$((100 + RUN)).$rep"
    local portlist
    portlist=$(IFS=,; echo "${sport[*]}")
    json=$(timeout -k 5 200 python3 "$ND_SCRIPT_DIR/lib/leak_flood.py" --block "$block" \
        --ports "$portlist" --per-node "$PER_NODE" --deadline 150) ||
        pf_die "the flood client failed (exit $?) in run $RUN ($n nodes, $mode)"
    echo "$json" >"$dir/flood.json"
    stop_run_nodes
    local row
    row=$(python3 - "$json" "$n" "$mode" "$rep" "$RCPT_LIMIT" "$block" "$meshnote" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); n, mode, rep, limit, block, note = sys.argv[2:8]
leak = r["accepted"] / int(limit)
fmt = lambda d: " ".join("%s:%d" % kv for kv in sorted(d.items())) or "-"
extra = []
extra.append("sessions " + fmt(r["sessions_log"]))
if r["hung"]: extra.append("HUNG sessions: %d" % r["hung"])
if note: extra.append(note)
print("%-4s %-3s %-6s %-13s %8d %6.2f  %-20s %-14s %6.1f %7.0f  %s" % (
    rep, n, mode, block + ".0/24", r["accepted"], leak, fmt(r["rcpt"]), fmt(r["data_end"]),
    r["seconds"], r["hold_ms_max"], "; ".join(extra)))
print("ACCEPTED=%d" % r["accepted"])
PY
)
    ROW=$(head -n 1 <<<"$row")
    ACCEPTED[$n,$mode]+="$(sed -n 's/^ACCEPTED=//p' <<<"$row") "
}

out "$(printf '%-4s %-3s %-6s %-13s %8s %6s  %-20s %-14s %6s %7s  %s' rep N mode block accepted leak \
    'RCPT replies' 'after-DATA' secs 'maxDATA' notes)"
out "$(printf '%-4s %-3s %-6s %-13s %8s %6s  %-20s %-14s %6s %7s' '' '' '' '' '' '' '' '' '' 'ms')"
for ((rep = 1; rep <= REPEATS; rep++)); do
    for n in $SIZES; do
        for mode in mesh alone; do
            run_case "$n" "$mode" "$rep"
            out "$ROW"
        done
    done
done
out ""
out "medians over $REPEATS run(s) (leak = accepted / $RCPT_LIMIT; target with the mesh: 0.9 to 1.05):"
out "$(printf '%-3s %-6s %9s %7s  %-16s %s' N mode accepted leak 'all runs' verdict)"
FAIL=0
for n in $SIZES; do
    for mode in mesh alone; do
        med=$(median <<<"${ACCEPTED[$n,$mode]}")
        leak=$(awk -v a="$med" -v l="$RCPT_LIMIT" 'BEGIN { printf "%.2f", a / l }')
        verdict=""
        if [[ $mode == mesh ]]; then
            if awk -v x="$leak" 'BEGIN { exit !(x >= 0.9 && x <= 1.05) }'; then verdict="ok (0.9 to 1.05)"; else verdict="OFF TARGET (not 0.9 to 1.05)"; FAIL=1; fi
        else
            verdict="(no gossip: expect ~N)"
        fi
        out "$(printf '%-3s %-6s %9s %7s  %-16s %s' "$n" "$mode" "$med" "$leak" "${ACCEPTED[$n,$mode]% }" "$verdict")"
    done
done
out ""
out "columns: RCPT replies = reply codes to RCPT (451 = over the limit at RCPT); after-DATA = reply codes"
out "after the final '.' (451 = refused after the hold); maxDATA ms = slowest DATA..250/451 (includes the hold)."
out "notes: sessions = how sessions began or ended: 220 = greeted, closed = ended by the server mid-session"
out "(magicmx closes a session after 20 error replies, like Postfix's hard error limit; the flooder then"
out "reconnects, at most 5 sessions per node), 421 = refused at connect (the block is penalised)."
echo "results written to $ND_RESULTS" >&2
exit "$FAIL"
