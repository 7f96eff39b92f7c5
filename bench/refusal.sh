#!/usr/bin/env bash
# bench/refusal.sh -- how fast connections from a penalised block are
# refused: magicmx against Postfix refusing over its anvil connection-rate
# limit, in the same run, on loopback, with a C load client
# (bench/refusal_client.c, compiled here with gcc -O2) that keeps INFLIGHT
# non-blocking connections open at all times for DURATION seconds.
#
# Targets, each run in turn in every round (the order rotates):
#   listener  the client's own ceiling: refusal_client -l, a C listener that
#             accepts and closes at once (nothing can refuse faster)
#   magicmx   a standalone node; block 127.0.66.0/24 is penalised first by
#             one connection to its trap port; the client connects to its
#             SMTP port from 127.0.66.2 (3 polite "421 4.7.0" per penalty,
#             then closed without a word)
#   postfix   a private Postfix (bench/lib/postfix.sh, plain smtpd) with
#             smtpd_client_connection_rate_limit = PF_RATE_LIMIT per
#             anvil_rate_time_unit = 60s, mynetworks,
#             smtpd_client_event_limit_exceptions and postscreen_access_list
#             empty; 127.0.67.1 is taken over its limit first, then the
#             client connects from 127.0.67.1 (anvil limits per address);
#             every refusal is "421 4.7.0 Error: too many connections ..."
#   trap      magicmx's trap listener (127.0.69.1): accept, penalise, 421
# A connection counts as refused when the server closed it, with a non-220
# reply or without a word; one answered 220 would be counted apart
# (greeted) and is not a refusal.  CPU: the client's own (getrusage), the
# server's from /proc (magicmx: its process; Postfix: master with reaped
# children plus live children; listener: its process), and the machine's
# from /proc/stat -- "other" is CPU used by processes not ours (the machine
# may be shared), so a noisy run shows.
# Prints a table per run, medians, the magicmx/Postfix ratio, and writes
# them into bench/results/refusal-DATE.txt.  Target: magicmx >= 20,000/s.
#
# Usage:  bench/refusal.sh [NAME=VALUE ...]      (or set them in the env)
#   DURATION=10 ROUNDS=3 INFLIGHT=256 PROCS=2 PF_RATE_LIMIT=10 NICE=0
#   (PROCS: client worker processes sharing the INFLIGHT connections)
#   TARGETS="listener magicmx postfix trap"
#   QUIET_PCT=15 QUIET_WAIT=60: before each run, wait up to QUIET_WAIT s for
#   the machine (shared?) to be less than QUIET_PCT % busy; the "bg" column
#   shows what it was.
#   MAGICMX=target/release/magicmx   (relative to the repo root by default)
# NICE is magicmx's [node] nice (its default is 19; 0 here, like Postfix
# and the client).  Needs root (Postfix), gcc, python3.  Talks over
# 127.0.0.0/8 only; everything lives in a temporary directory removed at
# exit; every process started here is stopped by PID.
set -euo pipefail

ND_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ND_REPO_ROOT=$(cd "$ND_SCRIPT_DIR/.." && pwd)
# shellcheck source=lib/postfix.sh
source "$ND_SCRIPT_DIR/lib/postfix.sh"
# shellcheck source=lib/nodes.sh
source "$ND_SCRIPT_DIR/lib/nodes.sh"

PARAMS=(DURATION ROUNDS INFLIGHT PROCS PF_RATE_LIMIT NICE TARGETS QUIET_PCT QUIET_WAIT MAGICMX)
nd_cmdline "${PARAMS[@]}" -- "$0" "$@"
for a in "$@"; do
    case $a in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    DURATION=* | ROUNDS=* | INFLIGHT=* | PROCS=* | PF_RATE_LIMIT=* | NICE=* | TARGETS=* | QUIET_PCT=* | QUIET_WAIT=* | MAGICMX=*)
        declare "${a%%=*}=${a#*=}" ;;
    *) pf_die "unknown argument '$a' (expected NAME=VALUE with NAME one of ${PARAMS[*]}; see --help)" ;;
    esac
done
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
INFLIGHT=${INFLIGHT:-256}
PROCS=${PROCS:-2}
PF_RATE_LIMIT=${PF_RATE_LIMIT:-10}
NICE=${NICE:-0}
TARGETS=${TARGETS:-listener magicmx postfix trap}
QUIET_PCT=${QUIET_PCT:-15}
QUIET_WAIT=${QUIET_WAIT:-60}
MAGICMX=${MAGICMX:-$ND_REPO_ROOT/target/release/magicmx}
for p in DURATION ROUNDS INFLIGHT PROCS PF_RATE_LIMIT QUIET_PCT; do
    [[ ${!p} =~ ^[1-9][0-9]*$ ]] || pf_die "$p must be a positive integer, not '${!p}'"
done
((DURATION <= 60)) || pf_die "DURATION must be at most 60 (seconds)"
((ROUNDS <= 10)) || pf_die "ROUNDS must be at most 10"
[[ $QUIET_WAIT =~ ^[0-9]+$ && $QUIET_WAIT -le 600 ]] || pf_die "QUIET_WAIT must be 0..600 (seconds), not '$QUIET_WAIT'"
((INFLIGHT <= 4000)) || pf_die "INFLIGHT must be at most 4000"
((PROCS <= 8 && PROCS <= INFLIGHT)) || pf_die "PROCS must be at most 8 and at most INFLIGHT"
[[ $NICE =~ ^-?[0-9]+$ && $NICE -ge -20 && $NICE -le 19 ]] || pf_die "NICE must be -20..19"
for t in $TARGETS; do
    case $t in listener | magicmx | postfix | trap) ;; *) pf_die "unknown target '$t' in TARGETS" ;; esac
done
[[ $(id -u) -eq 0 ]] || pf_die "run as root (the private Postfix instance needs it)"
command -v gcc >/dev/null || pf_die "gcc is needed to build bench/refusal_client.c"
[[ -f $MAGICMX && -x $MAGICMX ]] || pf_die "magicmx binary not found at $MAGICMX
       build it first (cargo build --release) or point MAGICMX=/path/to/magicmx at one"
MAGICMX=$(realpath "$MAGICMX")
want() { [[ " $TARGETS " == *" $1 "* ]]; }
want_postfix=0
want postfix && want_postfix=1
((want_postfix)) && pf_ensure_installed

nd_init refusal
CLIENT=$ND_TMP/refusal_client
gcc -O2 -Wall -o "$CLIENT" "$ND_SCRIPT_DIR/refusal_client.c" 2>"$ND_TMP/gcc.out" ||
    pf_die "gcc failed on bench/refusal_client.c:
$(cat "$ND_TMP/gcc.out")"
HZ=$(getconf CLK_TCK)

nd_header "refusal rate: connections/s refused from a penalised block, magicmx vs Postfix"
((want_postfix)) && out "postfix:  $(pf_version), private instance, plain smtpd, smtpd_client_connection_rate_limit=$PF_RATE_LIMIT per 60s"
out "workload: DURATION=${DURATION}s per run, ROUNDS=$ROUNDS, INFLIGHT=$INFLIGHT connections in flight, PROCS=$PROCS client process(es)"
out "          (bench/refusal_client.c, gcc -O2, epoll, non-blocking connect), magicmx nice=$NICE, TARGETS=\"$TARGETS\""
out ""

# --- magicmx --------------------------------------------------------------------
read -r -a P <<<"$(nd_free_ports 8)"
MX_PORT=${P[0]}
TRAP_PORT=${P[4]}
PF_PORT=${P[5]}
LISTEN_PORT=${P[6]}
MX_PID=""
if want magicmx || want trap; then
    ND_NICE=$NICE nd_write_config "$ND_TMP/mx.toml" mx "$ND_TMP/mx" "$MX_PORT" "${P[1]}" "" "${P[2]}" "${P[3]}" "" \
        "[trap]
listen = [\"127.0.0.1:$TRAP_PORT\"]"
    nd_start "$ND_TMP/mx.toml" "$ND_TMP/mx.log"
    MX_PID=$ND_LAST_PID
    nd_wait_smtp "$MX_PORT" "$ND_TMP/mx.log" "$MX_PID"
fi

# first_lines SRC PORT COUNT: open COUNT connections from SRC one after the
# other; print the first reply line of each (or "(closed)").
first_lines() {
    python3 - "$@" <<'PY'
import socket, sys
src, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0)) as s:
            buf = b""
            while b"\n" not in buf:
                c = s.recv(512)
                if not c:
                    break
                buf += c
            line = buf.split(b"\r\n")[0].decode("latin-1")
            print(line or "(closed)")
            if line.startswith("220"):
                s.sendall(b"QUIT\r\n")
    except OSError as e:
        print("(error: %s)" % e)
PY
}

if want magicmx; then
    line=$(first_lines 127.0.66.1 "$TRAP_PORT" 1)
    [[ $line == 421* ]] || pf_die "the trap did not answer 421 but: $line"
    line=$(first_lines 127.0.66.2 "$MX_PORT" 1)
    [[ $line == "421 4.7.0"* ]] || pf_die "the penalised block 127.0.66.0/24 was not refused at connect: $line"
    out "magicmx:  127.0.66.0/24 penalised through the trap; a connection from 127.0.66.2 now gets: $line"
fi

# --- Postfix ---------------------------------------------------------------------
PF_DIR=$ND_TMP/postfix
PF_STARTED=0
stop_postfix() { if ((PF_STARTED)); then pf_relay_stop "$PF_DIR"; PF_STARTED=0; fi; }
ND_EXTRA_CLEANUP+=(stop_postfix)
if ((want_postfix)); then
    # No mail is relayed: the transport's sink port need not answer.
    pf_relay_setup "$PF_DIR" "$PF_PORT" "${P[7]}" 100
    postconf -c "$PF_DIR/etc" -e "smtpd_client_connection_rate_limit = $PF_RATE_LIMIT" \
        "anvil_rate_time_unit = 60s"
    PF_STARTED=1
    pf_relay_start "$PF_DIR"
    lines=$(first_lines 127.0.67.1 "$PF_PORT" $((PF_RATE_LIMIT + 3)))
    last=$(tail -n 1 <<<"$lines")
    [[ $last == 421* ]] || pf_die "Postfix did not refuse 127.0.67.1 after $((PF_RATE_LIMIT + 3)) connections; replies:
$lines"
    out "postfix:  127.0.67.1 taken over its limit ($(grep -c '^220' <<<"$lines") greeted, $(grep -c '^421' <<<"$lines") refused); now it gets: $last"
fi
out ""

# --- CPU accounting -------------------------------------------------------------------
# machine_ticks: "busy idle irq+softirq" from /proc/stat (all CPUs); busy
# includes irq+softirq, the kernel's network processing, which is not
# charged to any process.
machine_ticks() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6, $7 + $8 }' /proc/stat; }
# proc_ticks PID: utime + stime.
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# postfix_ticks: master (with reaped children) + its live children.
postfix_ticks() {
    local m
    m=$(pf_relay_master_pid "$PF_DIR")
    [[ -n $m ]] || { echo 0; return; }
    # Fields counted after "pid (comm) ": state=1 ppid=2 ... utime=12 stime=13 cutime=14 cstime=15.
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v m="$m" '
        NF == 0 { next }
        { pid = $1; rest = $0; sub(/^.*\) /, "", rest); n = split(rest, v, " ") }
        pid == m { t += v[12] + v[13] + v[14] + v[15] }
        v[2] == m { t += v[12] + v[13] }
        END { print t + 0 }'
}
server_ticks() {
    case $1 in
    magicmx | trap) proc_ticks "$MX_PID" ;;
    postfix) postfix_ticks ;;
    listener) proc_ticks "$LISTENER_PID" ;;
    esac
}

# --- the runs -----------------------------------------------------------------------
declare -A RATES=()
declare -A SRC=([listener]=127.0.68.1 [magicmx]=127.0.66.2 [postfix]=127.0.67.1 [trap]=127.0.69.1)
declare -A DST=([listener]=$LISTEN_PORT [magicmx]=$MX_PORT [postfix]=$PF_PORT [trap]=$TRAP_PORT)
LISTENER_PID=""
CLIENT_PID=""
stop_client() { [[ -z $CLIENT_PID ]] || pf_stop_pid "$CLIENT_PID"; [[ -z $LISTENER_PID ]] || pf_stop_pid "$LISTENER_PID"; }
ND_EXTRA_CLEANUP+=(stop_client)
SAMPLES=""

run_one() {
    local t=$1 r=$2 res s0 s1 m0 m1 bg0 bg1 i0 i1 q0 q1 x
    # The machine at rest (our servers idle): background load, sampled for a
    # second at a time; wait (at most QUIET_WAIT s) for it to drop below
    # QUIET_PCT, as the machine may be shared.
    local bg_pct waited=0
    while :; do
        read -r bg0 i0 x < <(machine_ticks)
        sleep 1
        read -r bg1 i1 x < <(machine_ticks)
        bg_pct=$(awk -v b=$((bg1 - bg0)) -v i=$((i1 - i0)) 'BEGIN { printf "%.0f", (b + i) ? 100 * b / (b + i) : 0 }')
        ((bg_pct < QUIET_PCT || waited >= QUIET_WAIT)) && break
        waited=$((waited + 1))
    done
    if [[ $t == listener ]]; then
        "$CLIENT" -l "127.0.0.1:$LISTEN_PORT" -d "$DURATION" >"$ND_TMP/listener.out" 2>&1 &
        LISTENER_PID=$!
        local i
        for ((i = 0; i < 50; i++)); do grep -q listening "$ND_TMP/listener.out" 2>/dev/null && break; sleep 0.1; done
        grep -q listening "$ND_TMP/listener.out" || pf_die "the C listener did not start: $(cat "$ND_TMP/listener.out")"
    fi
    s0=$(server_ticks "$t")
    read -r m0 i0 q0 < <(machine_ticks)
    "$CLIENT" -b "${SRC[$t]}" -c "127.0.0.1:${DST[$t]}" -d "$DURATION" -n "$INFLIGHT" -p "$PROCS" >"$ND_TMP/client.out" 2>&1 &
    CLIENT_PID=$!
    local crc=0
    wait "$CLIENT_PID" || crc=$?
    CLIENT_PID=""
    read -r m1 i1 q1 < <(machine_ticks)
    s1=$(server_ticks "$t")
    if [[ -n $LISTENER_PID ]]; then pf_stop_pid "$LISTENER_PID"; LISTENER_PID=""; fi
    ((crc == 0)) || pf_die "the client failed (exit $crc) against $t: $(cat "$ND_TMP/client.out")"
    res=$(head -n 1 "$ND_TMP/client.out")
    local sample
    sample=$(sed -n 's/^sample_reply=//p' "$ND_TMP/client.out")
    if [[ -n $sample && $SAMPLES != *"  $t: "* ]]; then SAMPLES+="  $t: $sample"$'\n'; fi
    ROW=$(awk -v res="$res" -v t="$t" -v r="$r" -v sd=$((s1 - s0)) -v hz="$HZ" -v mb=$((m1 - m0)) \
        -v mi=$((i1 - i0)) -v mq=$((q1 - q0)) -v ncpu="$(nproc)" -v bg="$bg_pct" 'BEGIN {
        n = split(res, kv, " "); for (k = 1; k <= n; k++) { split(kv[k], p, "="); v[p[1]] = p[2] }
        el = v["elapsed_s"]; ccpu = 100 * (v["cpu_user_s"] + v["cpu_sys_s"]) / el
        scpu = 100 * sd / hz / el
        tot = mb + mi; busy = tot ? 100 * mb / tot : 0       # % of the whole machine
        sirq = tot ? 100 * ncpu * mq / tot : 0                # % of one core
        # Tick-based accounting charges irq/softirq ticks to the process
        # they interrupted too: sirq overlaps the process columns.
        other = busy * ncpu - ccpu - scpu; if (other < 0) other = 0
        printf "%-3s %-9s %9d %8d %9d %7d %7d %6d %8.0f%% %8.0f%% %7.0f%% %7.0f%% %7.0f%% %5s%%\n", r, t, v["refused_per_s"],
            v["refused_reply"], v["refused_silent"], v["greeted"], v["timeout"], v["error"], ccpu, scpu, sirq, busy, other, bg
        print v["refused_per_s"] }')
    RATES[$t]+="$(tail -n 1 <<<"$ROW") "
    ROW=$(head -n 1 <<<"$ROW")
}

out "$(printf '%-3s %-9s %9s %8s %9s %7s %7s %6s %9s %9s %8s %8s %8s %6s' rnd target refused/s 'reply' silent greeted timeout errors \
    client server softirq machine other bg)"
out "$(printf '%-3s %-9s %9s %8s %9s %7s %7s %6s %9s %9s %8s %8s %8s %6s' '' '' '' '(421)' '' '' '' '' '%core' '%core' '%core' '%busy' '%core' '%busy')"
read -r -a ORDER <<<"$TARGETS"
for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < ${#ORDER[@]}; k++)); do
        t=${ORDER[(k + r - 1) % ${#ORDER[@]}]}
        run_one "$t" "$r"
        out "$ROW"
    done
done
out ""
out "medians over $ROUNDS round(s), refusals/s:"
declare -A MED=()
for t in "${ORDER[@]}"; do
    MED[$t]=$(median <<<"${RATES[$t]}")
    out "$(printf '  %-9s %9s   (runs: %s)' "$t" "${MED[$t]}" "${RATES[$t]% }")"
done
RC=0
if want magicmx && want postfix; then
    out "ratio magicmx/postfix: $(awk -v a="${MED[magicmx]}" -v b="${MED[postfix]}" 'BEGIN { printf "%.1f", b ? a / b : 0 }')"
fi
if want magicmx && want listener; then
    out "magicmx / client ceiling (listener): $(awk -v a="${MED[magicmx]}" -v b="${MED[listener]}" 'BEGIN { printf "%.2f", b ? a / b : 0 }')"
fi
if want magicmx; then
    if awk -v a="${MED[magicmx]}" 'BEGIN { exit !(a >= 20000) }'; then
        out "target magicmx >= 20,000/s: ok"
    else
        out "target magicmx >= 20,000/s: MISSED (${MED[magicmx]}/s)"
        RC=3
    fi
fi
out ""
out "reply samples (first refusal reply seen by the client):"
out "${SAMPLES%$'\n'}"
out "columns: reply = refused with a reply (421), silent = closed without a word (EOF/RST); greeted = answered 220"
out "(not a refusal); %core = CPU time / wall time (100% = one core); machine %busy = all $(nproc) CPUs;"
out "softirq = irq+softirq time (kernel network processing; with tick-based accounting it is also part of the"
out "client's and server's time when it ran in their context); other = the machine's CPU not used by the client"
out "or that server: processes not ours (the machine may be shared) and kernel threads;"
out "bg = the machine's busy share in the second before the run (our servers idle; waited up to ${QUIET_WAIT}s for < $QUIET_PCT%)."
echo "results written to $ND_RESULTS" >&2
exit "$RC"
