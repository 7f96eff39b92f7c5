#!/usr/bin/env bash
# bench/throughput.sh -- end-to-end relay throughput: magicmx against a
# Postfix relay, in the same run, on loopback.
#
#   smtp-source --> contender (magicmx | Postfix) --> smtp-sink (the "real MX")
#
# Each round runs both contenders one after the other (A,B then B,A, ...).
# For each run: smtp-source sends MESSAGES messages of SIZE_KB KiB over
# SESSIONS parallel sessions, one message per connection (smtp-source's
# default; -d would reuse connections).  The clock starts just before
# smtp-source and stops when the sink has counted every message:
#   end-to-end rate = MESSAGES / (time until the sink has them all)
#   acceptance rate = MESSAGES / (time smtp-source took)
#   CPU cost        = CPU seconds (user + system, from /proc) the contender's
#                     processes spent in that time, per 1,000 messages: for
#                     magicmx its one process, for Postfix the master and
#                     every process under it (its exited children count
#                     through the master's cutime/cstime)
# It prints a table per round, the medians, and the ratio magicmx/postfix,
# and writes the same into bench/results/throughput-DATE.txt.
#
# Usage:  bench/throughput.sh [NAME=VALUE ...]      (or set them in the env)
#   MESSAGES=5000 SESSIONS=20 SIZE_KB=1 ROUNDS=3
#   MAGICMX=target/release/magicmx   (relative to the repo root by default)
#   TIMEOUT=600   per-run bound on delivery, seconds
#   STALL=120     give up a run earlier if the sink count stops moving this long
# Needs root (installs postfix and swaks if missing; smtp-sink -u nobody).
# Talks over 127.0.0.1 only.  Everything lives in a temporary directory that
# is removed at exit, and every process started here is stopped by PID.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=lib/postfix.sh
source "$SCRIPT_DIR/lib/postfix.sh"

# --- parameters ----------------------------------------------------------------
PARAMS=(MESSAGES SESSIONS SIZE_KB ROUNDS MAGICMX TIMEOUT STALL)
# The command line as given, with the parameters that came from the
# environment written in front of it, for the results file.
CMDLINE=""
for p in "${PARAMS[@]}"; do
    if [[ -n ${!p+x} ]]; then CMDLINE+="$p=$(printf '%q' "${!p}") "; fi
done
CMDLINE+=$(printf '%q' "$0")
for a in "$@"; do CMDLINE+=" $(printf '%q' "$a")"; done

for a in "$@"; do
    case $a in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    MESSAGES=* | SESSIONS=* | SIZE_KB=* | ROUNDS=* | MAGICMX=* | TIMEOUT=* | STALL=*)
        declare "${a%%=*}=${a#*=}" ;;
    *) pf_die "unknown argument '$a' (expected NAME=VALUE with NAME one of ${PARAMS[*]}; see --help)" ;;
    esac
done
MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-20}
SIZE_KB=${SIZE_KB:-1}
ROUNDS=${ROUNDS:-3}
TIMEOUT=${TIMEOUT:-600}
STALL=${STALL:-120}
MAGICMX=${MAGICMX:-$REPO_ROOT/target/release/magicmx}
for p in MESSAGES SESSIONS SIZE_KB ROUNDS TIMEOUT STALL; do
    [[ ${!p} =~ ^[1-9][0-9]*$ ]] || pf_die "$p must be a positive integer, not '${!p}'"
done
((ROUNDS <= 100)) || pf_die "ROUNDS must be at most 100"
((SESSIONS <= 1000)) || pf_die "SESSIONS must be at most 1000 (magicmx's max_connections_per_ip)"

if [[ ! -x $MAGICMX ]]; then
    pf_die "magicmx binary not found at $MAGICMX
       build it first:  (cd $REPO_ROOT && cargo build --release)
       or point MAGICMX=/path/to/magicmx at one"
fi
MAGICMX=$(cd "$(dirname "$MAGICMX")" && pwd)/$(basename "$MAGICMX")
[[ $(id -u) -eq 0 ]] || pf_die "run as root (postfix and smtp-sink -u nobody need it)"
command -v python3 >/dev/null || pf_die "python3 is needed (port picking, banner checks)"

pf_ensure_installed

# --- temporary directory, processes, cleanup ------------------------------
TMP=$(mktemp -d /tmp/magicmx-bench.XXXXXX)
# Postfix daemons open files under it after dropping root: let them traverse.
chmod 711 "$TMP"
SINK_PID=""
MAGICMX_PID=""
SOURCE_PID=""   # the `timeout` wrapping smtp-source; it passes TERM on
RESULTS=""
PF_DIR=$TMP/postfix
PF_STARTED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $SOURCE_PID ]]; then pf_stop_pid "$SOURCE_PID"; fi
    if [[ -n $MAGICMX_PID ]]; then pf_stop_pid "$MAGICMX_PID"; fi
    if [[ $PF_STARTED -eq 1 ]]; then pf_relay_stop "$PF_DIR"; fi
    if [[ -n $SINK_PID ]]; then pf_stop_pid "$SINK_PID"; fi
    rm -rf "$TMP"
    if [[ $rc -gt 1 && -n $RESULTS && -f $RESULTS ]]; then
        echo "(run interrupted, exit status $rc)" >>"$RESULTS"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- results output --------------------------------------------------------------
mkdir -p "$SCRIPT_DIR/results"
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$SCRIPT_DIR/results/throughput-$STAMP.txt
PF_VERSION=$(pf_version)
MAGICMX_VERSION=$("$MAGICMX" --version 2>/dev/null || echo unknown)
MAGICMX_COMMIT=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    MAGICMX_COMMIT+=" (work tree modified)"
fi

out() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

: >"$RESULTS"
out "# magicmx vs Postfix end-to-end relay throughput"
out "command:  $CMDLINE"
out "date:     $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
out "host:     nproc=$(nproc), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
out "magicmx:  $MAGICMX_VERSION, $MAGICMX, repo $MAGICMX_COMMIT"
out "postfix:  $PF_VERSION (private relay instance, plain smtpd, stock delivery concurrency)"
out "workload: MESSAGES=$MESSAGES SESSIONS=$SESSIONS SIZE_KB=$SIZE_KB ROUNDS=$ROUNDS, one message per connection"
out "          smtp-source -> contender -> smtp-sink, all on 127.0.0.1"
out ""

# --- the sink -----------------------------------------------------------------------
SINK_PORT=$(pf_free_port)
SINK_OUT=$TMP/sink.out
pf_sink_start "$SINK_OUT" "$SINK_PORT"
SINK_PID=$PF_SINK_PID

# Count from the sink's running counter; only the tail of the file is read
# (it grows by ~25 bytes per update).  smtp-sink -c writes
# "sess=N quit=N mesg=N\r" after each session end, QUIT and final ".".
sink_count() {
    local n
    n=$(tail -c 200 "$SINK_OUT" | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9][0-9]*\)$/\1/p' | tail -n 1)
    echo "${n:-0}"
}

# --- contender A: magicmx ---------------------------------------------------------
MX_PORT=$(pf_free_port)
MX_CONF=$TMP/magicmx.toml
MX_LOG=$TMP/magicmx.log
# Run a private copy, so that a rebuild of target/ during the benchmark does
# not swap the binary under us.
cp "$MAGICMX" "$TMP/magicmx"
cat >"$MX_CONF" <<EOF
[node]
name = "bench"
data_dir = "$TMP/magicmx-data"
[smtp]
listen = ["127.0.0.1:$MX_PORT"]
hostname = "mx.bench.test"
greet_pause = "0s"
max_connections_per_ip = 1000
[mesh]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
policy_listen = "127.0.0.1:0"
# The sending source is trusted, as for a big provider: this measures the
# relay, not the throttle.
[trust]
cidrs = ["127.0.0.1/32"]
[[domain]]
name = "example.test"
route = "smtp://127.0.0.1:$SINK_PORT"
EOF
"$TMP/magicmx" check-config --config "$MX_CONF" >"$TMP/check-config.out" 2>&1 ||
    pf_die "magicmx rejects the benchmark configuration:
$(cat "$TMP/check-config.out")"

start_magicmx() {
    (cd "$TMP" && exec "$TMP/magicmx" run --config "$MX_CONF") >>"$MX_LOG" 2>&1 &
    MAGICMX_PID=$!
    if ! pf_wait_banner 127.0.0.1 "$MX_PORT" 30; then
        pf_die "magicmx did not answer 220 on 127.0.0.1:$MX_PORT within 30 s; its log:
$(tail -n 20 "$MX_LOG")"
    fi
}
start_magicmx

# --- contender B: Postfix ------------------------------------------------------------
PF_PORT=$(pf_free_port)
pf_relay_setup "$PF_DIR" "$PF_PORT" "$SINK_PORT" $((SESSIONS * 2 + 100))
PF_STARTED=1
pf_relay_start "$PF_DIR"

# --- the runs ------------------------------------------------------------------------
declare -A PORT=([magicmx]=$MX_PORT [postfix]=$PF_PORT)
declare -A FAILED=([magicmx]="" [postfix]="")
declare -A E2E_RATES=([magicmx]="" [postfix]="")
declare -A ACC_RATES=([magicmx]="" [postfix]="")
declare -A CPU_COSTS=([magicmx]="" [postfix]="")

now() { echo "$EPOCHREALTIME"; }

# cpu_ticks NAME: clock ticks of CPU the contender's processes have used
# (utime + stime + cutime + cstime, /proc/PID/stat fields 14-17).
cpu_ticks() {
    local pids pid total=0
    case $1 in
    magicmx) pids=$MAGICMX_PID ;;
    postfix)
        local master
        master=$(pf_relay_master_pid "$PF_DIR")
        pids="$master $(pgrep -P "$master" | tr '\n' ' ')"
        ;;
    esac
    for pid in $pids; do
        # The fields after the command name, which may hold spaces: field 14 is the 12th after ")".
        local t
        t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }')
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", n / s; else print "inf" }'; }

# contender_log NAME: the last lines of the contender's log, for failures.
contender_log() {
    case $1 in
    # Leave out the one-line-per-message "accepted"/"sent" lines: what
    # matters is why mail did not get through.
    magicmx) grep -v 'verdict="accepted"' "$MX_LOG" 2>/dev/null | tail -n 15 || true ;;
    postfix) grep -v -e 'status=sent' -e ': removed$' -e 'connect from' -e 'message-id=' \
        -e '(queue active)' -e 'client=unknown' "$PF_DIR/maillog" 2>/dev/null | tail -n 15 || true ;;
    esac
}

# run_one NAME: one timed run against contender NAME.  Sets ROW (a table
# row).  On failure marks the contender failed and takes it out of the
# benchmark (stopped, so that it cannot deliver into a later run's count).
run_one() {
    local name=$1 port=${PORT[$1]}
    local base target t0 t1 t2 got last_got last_move src_rc=0
    base=$(sink_count)
    target=$((base + MESSAGES))
    local cpu0 cpu1
    cpu0=$(cpu_ticks "$name")
    t0=$(now)
    # In the background and waited for, so that a signal to this script is
    # handled at once (bash runs traps only after a foreground command ends).
    timeout -k 10 "$TIMEOUT" smtp-source -c -l $((SIZE_KB * 1024)) -m "$MESSAGES" -s "$SESSIONS" \
        -M client.test -f from@client.test -t to@example.test "127.0.0.1:$port" \
        >"$TMP/source-$name.out" 2>&1 &
    SOURCE_PID=$!
    wait "$SOURCE_PID" || src_rc=$?
    SOURCE_PID=""
    t1=$(now)
    ACC_NOTE=""
    if [[ $src_rc -ne 0 ]]; then
        fail "$name" "smtp-source exited with status $src_rc: $(tr '\r' '\n' <"$TMP/source-$name.out" | grep -v '^[0-9]*$' | tail -n 3)"
        return
    fi
    # Wait until the sink has counted them all.
    ACC_NOTE="accepted all in $(fsub "$t1" "$t0")s ($(rate "$MESSAGES" "$(fsub "$t1" "$t0")") msg/s), "
    last_got=$base
    last_move=$t1
    while :; do
        got=$(sink_count)
        t2=$(now)
        ((got >= target)) && break
        if ((got != last_got)); then last_got=$got; last_move=$t2; fi
        if awk -v a="$t2" -v b="$t0" -v m="$TIMEOUT" 'BEGIN { exit !(a - b > m) }'; then
            fail "$name" "timed out after ${TIMEOUT}s: the sink has $((got - base)) of $MESSAGES messages"
            return
        fi
        if awk -v a="$t2" -v b="$last_move" -v m="$STALL" 'BEGIN { exit !(a - b > m) }'; then
            fail "$name" "no delivery for ${STALL}s: the sink has $((got - base)) of $MESSAGES messages"
            return
        fi
        sleep 0.05
    done
    cpu1=$(cpu_ticks "$name")
    local acc e2e cpu
    acc=$(fsub "$t1" "$t0")
    e2e=$(fsub "$t2" "$t0")
    cpu=$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$MESSAGES" 'BEGIN { printf "%.3f", t / hz / n * 1000 }')
    ACC_RATES[$name]+="$(rate "$MESSAGES" "$acc") "
    E2E_RATES[$name]+="$(rate "$MESSAGES" "$e2e") "
    CPU_COSTS[$name]+="$cpu "
    local extra=""
    ACC_NOTE=""
    ((got > target)) && extra="  (sink got $((got - target)) more than sent)"
    ROW=$(printf '%-8s %10s %12s %10s %12s %14s%s' "$name" "$acc" "$(rate "$MESSAGES" "$acc")" \
        "$e2e" "$(rate "$MESSAGES" "$e2e")" "$cpu" "$extra")
}

fail() {
    local name=$1 why=$2
    FAILED[$name]=$why
    ROW=$(printf '%-8s FAILED: %s%s' "$name" "$ACC_NOTE" "$why")
    {
        echo "--- $name failed: $why"
        echo "--- last lines of its log:"
        contender_log "$name"
        echo "---"
    } >>"$TMP/failures"
    case $name in
    magicmx) pf_stop_pid "$MAGICMX_PID"; MAGICMX_PID="" ;;
    postfix) pf_relay_stop "$PF_DIR"; PF_STARTED=0 ;;
    esac
}

HEADER=$(printf '%-8s %10s %12s %10s %12s %14s' contender accept_s accept_msg/s e2e_s e2e_msg/s cpu_s/1000msg)
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2 == 1)); then order=(magicmx postfix); else order=(postfix magicmx); fi
    out "round $r of $ROUNDS (order: ${order[*]})"
    out "$HEADER"
    for name in "${order[@]}"; do
        if [[ -n ${FAILED[$name]} ]]; then
            out "$(printf '%-8s skipped (failed earlier)' "$name")"
            continue
        fi
        sync
        sleep 1
        run_one "$name"
        out "$ROW"
    done
    out ""
done

# --- summary -------------------------------------------------------------------------
median() { tr ' ' '\n' | awk NF | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "n/a"; exit }
    if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

out "medians over $ROUNDS round(s), msg/s and CPU seconds per 1,000 messages:"
out "$(printf '%-8s %12s %12s %14s' contender accept e2e cpu_s/1000msg)"
declare -A MED CPU_MED
for name in magicmx postfix; do
    acc=$(median <<<"${ACC_RATES[$name]}")
    MED[$name]=$(median <<<"${E2E_RATES[$name]}")
    CPU_MED[$name]=$(tr ' ' '\n' <<<"${CPU_COSTS[$name]}" | awk NF | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit } if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    line=$(printf '%-8s %12s %12s %14s' "$name" "$acc" "${MED[$name]}" "${CPU_MED[$name]}")
    [[ -n ${FAILED[$name]} ]] && line+="   FAILED: ${FAILED[$name]}"
    out "$line"
done
if [[ ${MED[magicmx]} != n/a && ${MED[postfix]} != n/a ]]; then
    out "ratio magicmx/postfix (end-to-end, medians): $(awk -v a="${MED[magicmx]}" -v b="${MED[postfix]}" 'BEGIN { printf "%.2f", a / b }')"
    out "CPU per message, postfix/magicmx (medians): $(awk -v a="${CPU_MED[postfix]}" -v b="${CPU_MED[magicmx]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')"
else
    out "ratio magicmx/postfix (end-to-end, medians): n/a"
fi
if [[ -s $TMP/failures ]]; then
    out ""
    out "failures:"
    while IFS= read -r l; do out "  $l"; done <"$TMP/failures"
fi
echo "results written to $RESULTS" >&2
[[ -z ${FAILED[magicmx]} && -z ${FAILED[postfix]} ]]
