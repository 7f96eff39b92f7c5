# shellcheck shell=bash
# bench/lib/nodes.sh -- helpers for benchmarks that run several magicmx nodes
# on loopback: free ports, certificates, node configurations, start/stop by
# PID, waiting for the mesh to form, and the usual bookkeeping (temporary
# directory, cleanup trap, results file).  Meant to be sourced by a script
# that runs with `set -euo pipefail` after sourcing bench/lib/postfix.sh
# (for pf_die, pf_log, pf_wait_banner).
#
# The caller sets MAGICMX (the binary) and calls nd_init NAME first.

# nd_init NAME: make the temporary directory ($ND_TMP), copy the magicmx
# binary into it ($ND_BIN), install the cleanup trap, open the results file
# ($ND_RESULTS = bench/results/NAME-STAMP.txt).
nd_init() {
    local name=$1
    [[ -x $MAGICMX ]] || pf_die "magicmx binary not found at $MAGICMX
       build it first (cargo build --release) or point MAGICMX=/path/to/magicmx at one"
    command -v python3 >/dev/null || pf_die "python3 is needed"
    ND_TMP=$(mktemp -d "/tmp/magicmx-$name.XXXXXX")
    chmod 711 "$ND_TMP"
    ND_PIDS=()
    ND_EXTRA_CLEANUP=()
    trap nd_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # A private copy: a rebuild of target/ during the run cannot swap it.
    cp "$MAGICMX" "$ND_TMP/magicmx"
    ND_BIN=$ND_TMP/magicmx
    mkdir -p "$ND_SCRIPT_DIR/results"
    ND_RESULTS=$ND_SCRIPT_DIR/results/$name-$(date +%Y%m%d-%H%M%S).txt
    : >"$ND_RESULTS"
}

nd_cleanup() {
    local rc=$? pid f
    trap - EXIT INT TERM
    for f in "${ND_EXTRA_CLEANUP[@]}"; do "$f" || true; done
    for pid in "${ND_PIDS[@]}"; do pf_stop_pid "$pid"; done
    if [[ -n ${ND_KEEP:-} ]]; then
        echo "kept $ND_TMP (ND_KEEP set)" >&2
    else
        rm -rf "$ND_TMP"
    fi
    if [[ $rc -ne 0 && -n ${ND_RESULTS:-} && -f $ND_RESULTS ]]; then
        echo "(run failed or interrupted, exit status $rc)" >>"$ND_RESULTS"
    fi
    exit "$rc"
}

# nd_forget_pid PID: drop PID from the list stopped at exit.
nd_forget_pid() {
    local p keep=()
    for p in "${ND_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    ND_PIDS=("${keep[@]}")
}

# out LINE...: print and append to the results file.
out() { printf '%s\n' "$*" | tee -a "$ND_RESULTS"; }

# nd_header TITLE: the common header of a results file.
nd_header() {
    local commit
    commit=$(git -C "$ND_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$ND_REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        commit+=" (work tree modified)"
    fi
    out "# $1"
    out "command:  $ND_CMDLINE"
    out "date:     $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    out "host:     nproc=$(nproc), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
    out "magicmx:  $("$ND_BIN" --version 2>/dev/null || echo unknown), $MAGICMX, repo $commit"
}

# nd_cmdline PARAM_NAMES... -- "$0" "$@": the command as given, with the
# parameters that came from the environment in front, into $ND_CMDLINE.
nd_cmdline() {
    local p
    ND_CMDLINE=""
    while [[ $1 != -- ]]; do
        if [[ -n ${!1+x} ]]; then ND_CMDLINE+="$1=$(printf '%q' "${!1}") "; fi
        shift
    done
    shift
    ND_CMDLINE+=$(printf '%q' "$1")
    shift
    for p in "$@"; do ND_CMDLINE+=" $(printf '%q' "$p")"; done
}

# nd_free_ports N: print N distinct ports, TCP and UDP both free on
# 127.0.0.1 right now (all sockets held open until all are picked).
nd_free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
n = int(sys.argv[1]); held = []; ports = []
while len(ports) < n:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        t.close(); continue
    held += [t, u]; ports.append(p)
print(" ".join(map(str, ports)))
for s in held: s.close()
PY
}

# nd_make_ca DIR: a mesh CA in DIR.
nd_make_ca() {
    "$ND_BIN" mesh ca-init --dir "$1" >"$1.log" 2>&1 || pf_die "mesh ca-init failed: $(cat "$1.log")"
}

# nd_issue CADIR NAME OUTDIR: a node certificate.
nd_issue() {
    "$ND_BIN" mesh issue --ca "$1" --name "$2" --out "$3" >"$3.log" 2>&1 ||
        pf_die "mesh issue $2 failed: $(cat "$3.log")"
}

# nd_write_config FILE NAME DIR SMTP GOSSIP SEED ADMIN POLICY CERTDIR EXTRA
# A node configuration: SMTP on 127.0.0.1:SMTP, admin/policy on their
# ports, data under DIR.  With CERTDIR non-empty the node joins the mesh
# (gossip on 127.0.0.1:GOSSIP; SEED "" or a gossip port to join through);
# without, it runs alone (its gossip listener still binds GOSSIP, unused).
# EXTRA is appended verbatim (more sections: [throttle], [trust], ...).
# DNS-based checks are switched off: there is no DNS on this machine.
nd_write_config() {
    local file=$1 name=$2 dir=$3 smtp=$4 gossip=$5 seed=$6 admin=$7 policy=$8 certdir=$9 extra=${10}
    mkdir -p "$dir/data" "$dir/maildir"
    {
        cat <<EOF
[node]
name = "$name"
data_dir = "$dir/data"
nice = ${ND_NICE:-0}
[smtp]
listen = ["127.0.0.1:$smtp"]
hostname = "$name.mesh.test"
greet_pause = "0s"
max_connections_per_ip = 1000
[mesh]
listen = "127.0.0.1:$gossip"
EOF
        if [[ -n $certdir ]]; then
            [[ -n $seed ]] && echo "seeds = [\"127.0.0.1:$seed\"]"
            cat <<EOF
ca_cert = "$certdir/mesh-ca.pem"
cert = "$certdir/node.pem"
key = "$certdir/node.key"
EOF
        fi
        cat <<EOF
[admin]
listen = "127.0.0.1:$admin"
policy_listen = "127.0.0.1:$policy"
[checks]
fcrdns = "off"
spf = "off"
sender_domain = false
verify_recipients = false
dkim = "off"
dmarc = "off"
[[domain]]
name = "example.test"
route = "maildir:$dir/maildir"
EOF
        printf '%s\n' "$extra"
    } >"$file"
    "$ND_BIN" check-config --config "$file" >"$file.check" 2>&1 ||
        pf_die "magicmx rejects the configuration $file:
$(cat "$file.check")"
}

# nd_start CONFIG LOG: start a node; its PID in $ND_LAST_PID (also stopped at exit).
nd_start() {
    local conf=$1 log=$2
    RUST_LOG=${ND_RUST_LOG:-info} "$ND_BIN" run --config "$conf" >>"$log" 2>&1 &
    ND_LAST_PID=$!
    ND_PIDS+=("$ND_LAST_PID")
}

# nd_wait_smtp PORT LOG PID: wait for the 220 greeting (30 s).
nd_wait_smtp() {
    if ! pf_wait_banner 127.0.0.1 "$1" 30; then
        kill -0 "$3" 2>/dev/null || pf_die "magicmx (pid $3) exited; its log:
$(tail -n 20 "$2")"
        pf_die "magicmx did not answer 220 on 127.0.0.1:$1 within 30 s; its log:
$(tail -n 20 "$2")"
    fi
}

# nd_peers_up LOG: how many distinct peers the node has logged "mesh peer up" for.
nd_peers_up() {
    grep -a 'mesh peer up' "$1" 2>/dev/null | sed -n 's/.*peer=\([^ ]*\).*/\1/p' | sort -u | wc -l
}

# nd_wait_mesh TIMEOUT_S LOG...: wait until every log shows (number of logs
# - 1) peers up.  Returns 1 on timeout (the caller reports).
nd_wait_mesh() {
    local limit=$1 want log ok deadline
    shift
    want=$(($# - 1))
    deadline=$((SECONDS + limit))
    while ((SECONDS < deadline)); do
        ok=1
        for log in "$@"; do
            (($(nd_peers_up "$log") >= want)) || { ok=0; break; }
        done
        ((ok)) && return 0
        sleep 0.1
    done
    return 1
}

# median: of the numbers on stdin (whitespace separated).
median() {
    tr ' ' '\n' | awk NF | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
