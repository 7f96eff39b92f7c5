#!/usr/bin/env bash
# bench/hold.sh -- the latency the end-of-DATA hold adds to a legitimate
# message, on a 3-node mesh on loopback (gossip_interval 500ms, hold 2s).
#
# MESSAGES legitimate messages, each its own session from a fresh /24 block
# (127.30.0.7, 127.30.1.7, ...: no block gets near a limit), and as many
# from a trusted sender (127.0.99.x, in [trust] cidrs of every node: no
# hold), interleaved one for one and spread round-robin over the nodes.
# Measured: the time from sending the final "." to the 250 reply (see
# bench/lib/hold_client.py).  Reported: p50/p99/max of both, of the paired
# difference (legit - trusted) and of the difference of the percentiles.
# Each legit message starts after a random pause of 0..INTERVAL, so that the
# sequential client does not lock onto the gossip phase.
# Target: the hold adds <= 2 gossip intervals (1000 ms) at p99.
# Prints the table and writes it into bench/results/hold-DATE.txt.
#
# Usage:  bench/hold.sh [NAME=VALUE ...]      (or set them in the env)
#   MESSAGES=200 NODES=3 INTERVAL=500ms
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

PARAMS=(MESSAGES NODES INTERVAL MAGICMX)
nd_cmdline "${PARAMS[@]}" -- "$0" "$@"
for a in "$@"; do
    case $a in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    MESSAGES=* | NODES=* | INTERVAL=* | MAGICMX=*) declare "${a%%=*}=${a#*=}" ;;
    *) pf_die "unknown argument '$a' (expected NAME=VALUE with NAME one of ${PARAMS[*]}; see --help)" ;;
    esac
done
MESSAGES=${MESSAGES:-200}
NODES=${NODES:-3}
INTERVAL=${INTERVAL:-500ms}
MAGICMX=${MAGICMX:-$ND_REPO_ROOT/target/release/magicmx}
[[ $MESSAGES =~ ^[1-9][0-9]*$ && $MESSAGES -le 2000 ]] || pf_die "MESSAGES must be 1..2000, not '$MESSAGES'"
[[ $NODES =~ ^[1-9][0-9]*$ && $NODES -le 10 ]] || pf_die "NODES must be 1..10, not '$NODES'"
[[ $INTERVAL =~ ^[0-9]+ms$ ]] || pf_die "INTERVAL must be given in ms, like 500ms, not '$INTERVAL'"
INTERVAL_MS=${INTERVAL%ms}
[[ -f $MAGICMX && -x $MAGICMX ]] || pf_die "magicmx binary not found at $MAGICMX
       build it first (cargo build --release) or point MAGICMX=/path/to/magicmx at one"
MAGICMX=$(realpath "$MAGICMX")

nd_init hold
nd_header "magicmx hold latency: final \".\" to 250, legitimate (held) vs trusted (not held)"
out "workload: MESSAGES=$MESSAGES per kind, NODES=$NODES (one mesh), gossip_interval=$INTERVAL, hold 2s,"
out "          one session per message, interleaved legit/trusted, round-robin over the nodes, sequential,"
out "          a random pause of 0..$INTERVAL before each legit message (so arrivals are not phase-locked to gossip)"
out "nodes:    [node] nice=0, [checks] fcrdns/spf/sender domain/call-outs off (no DNS here), maildir delivery, [trust] cidrs = [\"127.0.99.0/24\"]"
out ""

nd_make_ca "$ND_TMP/ca"
read -r -a ports <<<"$(nd_free_ports $((4 * NODES)))"
EXTRA="[trust]
cidrs = [\"127.0.99.0/24\"]"
LOGS=()
SPORTS=()
NPIDS=()
for ((i = 0; i < NODES; i++)); do
    name=n$((i + 1))
    nd_issue "$ND_TMP/ca" "$name" "$ND_TMP/cert-$name"
    seed=""
    ((i > 0)) && seed=${ports[1]}
    SPORTS[i]=${ports[4 * i]}
    nd_write_config "$ND_TMP/$name.toml" "$name" "$ND_TMP/$name" "${ports[4 * i]}" "${ports[4 * i + 1]}" \
        "$seed" "${ports[4 * i + 2]}" "${ports[4 * i + 3]}" "$ND_TMP/cert-$name" "$EXTRA"
    # gossip_interval goes into [mesh]: insert it after the listen line.
    sed -i "s/^listen = \"127.0.0.1:${ports[4 * i + 1]}\"\$/&\ngossip_interval = \"$INTERVAL\"/" "$ND_TMP/$name.toml"
    "$ND_BIN" check-config --config "$ND_TMP/$name.toml" >/dev/null 2>&1 ||
        pf_die "bad configuration after setting gossip_interval: $("$ND_BIN" check-config --config "$ND_TMP/$name.toml" 2>&1)"
    LOGS[i]=$ND_TMP/$name.log
done
for ((i = 0; i < NODES; i++)); do
    nd_start "$ND_TMP/n$((i + 1)).toml" "${LOGS[i]}"
    NPIDS[i]=$ND_LAST_PID
done
for ((i = 0; i < NODES; i++)); do nd_wait_smtp "${SPORTS[i]}" "${LOGS[i]}" "${NPIDS[i]}"; done
if ! nd_wait_mesh 60 "${LOGS[@]}"; then
    counts=""
    for l in "${LOGS[@]}"; do counts+=" $(nd_peers_up "$l")"; done
    pf_die "the $NODES-node mesh did not form within 60 s (peers up per node:$counts); n1's log:
$(tail -n 15 "${LOGS[0]}")"
fi
# Let a few gossip rounds pass so every node has heard every other.
sleep 2

PORTLIST=$(IFS=,; echo "${SPORTS[*]}")
T0=$SECONDS
JSON=$(timeout -k 5 600 python3 "$ND_SCRIPT_DIR/lib/hold_client.py" --ports "$PORTLIST" \
    --count "$MESSAGES" --trusted-block 127.0.99 --fresh-base 127.30 --deadline 500 --jitter-ms "$INTERVAL_MS" \
    --out "$ND_TMP/samples.tsv") || pf_die "the hold client failed (exit $?)"
ELAPSED=$((SECONDS - T0))
cp "$ND_TMP/samples.tsv" "${ND_RESULTS%.txt}.samples.tsv"

set +e
python3 - "$JSON" "$INTERVAL_MS" "$ELAPSED" <<'PY' | tee -a "$ND_RESULTS"
import json, math, sys
r = json.loads(sys.argv[1]); interval = float(sys.argv[2]); elapsed = sys.argv[3]

def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]   # nearest rank

print("%-28s %6s %9s %9s %9s %9s %9s" % ("ms (final '.' -> reply)", "n", "min", "p50", "p90", "p99", "max"))
for name, v in (("legit (held)", r["legit"]), ("trusted (no hold)", r["trusted"]),
                ("paired difference", r["diff"])):
    print("%-28s %6d %9.1f %9.1f %9.1f %9.1f %9.1f" % (name, len(v), min(v, default=float("nan")),
          pct(v, 50), pct(v, 90), pct(v, 99), max(v, default=float("nan"))))
d50 = pct(r["legit"], 50) - pct(r["trusted"], 50)
d99 = pct(r["legit"], 99) - pct(r["trusted"], 99)
print("%-28s %6s %9s %9.1f %9s %9.1f" % ("difference of percentiles", "", "", d50, "", d99))
print()
target = 2 * interval
worst = max(d99, pct(r["diff"], 99))
verdict = "ok" if worst <= target else "OVER TARGET"
print("hold added at p99: %.1f ms (difference of p99s), %.1f ms (p99 of paired differences); "
      "target <= %.0f ms (2 gossip intervals): %s" % (d99, pct(r["diff"], 99), target, verdict))
print("held messages over 1 interval: %d of %d; over 2 intervals: %d" % (
    sum(1 for x in r["diff"] if x > interval), len(r["diff"]), sum(1 for x in r["diff"] if x > target)))
print("wall time of the client: %s s" % elapsed)
if r["errors"]:
    print("ERRORS (%d):" % len(r["errors"]))
    for e in r["errors"][:20]:
        print("  " + e)
sys.exit(0 if verdict == "ok" and not r["errors"] else 3)
PY
rc=${PIPESTATUS[0]}
set -e
out ""
out "samples: ${ND_RESULTS%.txt}.samples.tsv"
echo "results written to $ND_RESULTS" >&2
exit "$rc"
