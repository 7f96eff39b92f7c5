# shellcheck shell=bash
# bench/lib/postfix.sh -- helpers for benchmarks and tests that use Postfix as
# a peer on loopback: install it without starting the system instance, pick
# free ports, run smtp-sink, and run a private Postfix relay under a
# directory of our own.  Meant to be sourced by a script that runs with
# `set -euo pipefail`; every function returns non-zero (or exits through
# pf_die) on failure.  See /work/shared/peers/POSTFIX.md for the background.

# Where this file lives (for master-services.cf beside it).
PF_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pf_log() { printf '%s\n' "$*" >&2; }
pf_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# pf_ensure_installed: install postfix and swaks if postfix, smtp-source,
# smtp-sink or swaks are missing.  The debconf preseed makes the install
# non-interactive; a temporary /usr/sbin/policy-rc.d (created only if none
# exists, removed afterwards) keeps the package's maintainer scripts from
# starting the system Postfix instance.
pf_ensure_installed() {
    local missing=0 cmd
    for cmd in postfix postconf postmap smtp-source smtp-sink swaks; do
        command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing=1
    done
    [[ $missing -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || pf_die "postfix/swaks are missing and installing them needs root"

    pf_log "installing postfix and swaks (the system Postfix instance is not started)"
    echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections
    echo 'postfix postfix/mailname string bench.invalid' | debconf-set-selections
    local made_policy=0 rc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    # `|| rc=$?` keeps set -e from leaving before the policy-rc.d is removed.
    _pf_apt_install || rc=$?
    if [[ $rc -ne 0 ]]; then
        pf_log "apt-get install failed; running apt-get update once and retrying"
        rc=0
        DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
        [[ $rc -eq 0 ]] && { _pf_apt_install || rc=$?; }
    fi
    [[ $made_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    [[ $rc -eq 0 ]] || pf_die "could not install postfix and swaks (apt-get exit $rc)"
    # Belt and braces: if a system instance got started anyway, say so (we
    # never stop it ourselves -- it is not ours).
    if postfix status >/dev/null 2>&1; then
        pf_log "warning: the system Postfix instance is running (not started by this script)"
    fi
}

_pf_apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        postfix swaks
}

# pf_version: the installed Postfix version, e.g. "3.7.11".
pf_version() { postconf -d -h mail_version 2>/dev/null || echo unknown; }

# pf_free_port: print a TCP port on 127.0.0.1 that is free right now.
pf_free_port() {
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# pf_stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL; reap it.
pf_stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# pf_wait_banner HOST PORT TIMEOUT_S: wait until HOST:PORT answers with an
# SMTP "220" greeting.  Returns 1 on timeout.
pf_wait_banner() {
    python3 - "$1" "$2" "$3" <<'PY'
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(5)
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(512)
                if not chunk:
                    break
                buf += chunk
            if buf.startswith(b"220"):
                try:
                    s.sendall(b"QUIT\r\n"); s.recv(512)
                except OSError:
                    pass
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
PY
}

# --- smtp-sink -------------------------------------------------------------
# With -c, smtp-sink prints a running count to stdout (no newline; each
# update is "\r" + counters), e.g. "\rmesg=4711".  pf_sink_count reads the
# last value from that file.

# pf_sink_start OUTFILE PORT: start smtp-sink in the background on
# 127.0.0.1:PORT; sets PF_SINK_PID.  Backlog 1024.
pf_sink_start() {
    local out=$1 port=$2
    : >"$out"
    smtp-sink -u nobody -c "127.0.0.1:$port" 1024 >"$out" 2>"$out.err" &
    PF_SINK_PID=$!
    pf_wait_banner 127.0.0.1 "$port" 10 ||
        pf_die "smtp-sink did not come up on 127.0.0.1:$port: $(cat "$out.err" 2>/dev/null)"
}

# pf_sink_count OUTFILE: print the number of messages the sink has received
# (0 before the first one).
pf_sink_count() {
    local n
    n=$(tr '\r' '\n' <"$1" | sed -n 's/.*mesg=\([0-9][0-9]*\).*/\1/p' | tail -n 1)
    echo "${n:-0}"
}

# --- private Postfix relay ---------------------------------------------------

# pf_relay_setup DIR LISTEN_PORT SINK_PORT PROCESS_LIMIT
# Writes a private relay instance into DIR (DIR/etc: main.cf, master.cf,
# transport; DIR/queue, DIR/data; log in DIR/maillog).  It relays mail for
# example.test, from anyone, to smtp-sink at [127.0.0.1]:SINK_PORT and
# nothing else.
pf_relay_setup() {
    local dir=$1 port=$2 sink_port=$3 plimit=$4
    local etc=$dir/etc
    mkdir -p "$etc" "$dir/queue" "$dir/data"
    # The postfix user must be able to reach the queue and data directories
    # (master opens data/master.lock after dropping root), so every
    # directory above DIR must be searchable by others (mktemp -d makes
    # 0700 ones: chmod 711 them).
    chmod 755 "$dir" "$etc"
    local up
    up=$(cd "$dir/.." && pwd)
    while [[ $up != / ]]; do
        [[ $(stat -c %A "$up") == ?????????[xt]* ]] ||
            pf_die "$up is not searchable by the postfix user; chmod o+x it"
        up=$(dirname "$up")
    done
    chown postfix "$dir/data"

    cat >"$etc/main.cf" <<EOF
# Private benchmark relay -- generated by bench/lib/postfix.sh
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
myhostname = relay.bench.test
mydomain = bench.test
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Log to a file through postlogd (there is no syslog here).
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
# No local delivery, no aliases: a pure relay.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
# Relay example.test only, to the sink.  With mynetworks empty loopback
# clients are strangers, like everyone else: they may send only to
# relay_domains (554 "Relay access denied" otherwise).
mynetworks =
relay_domains = example.test
relay_recipient_maps =
transport_maps = hash:$etc/transport
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# No DNS on this machine.
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
# Not rate-limiting the benchmark: loopback is not exempt from anvil
# (exceptions empty), so every anvil limit is switched off explicitly.
smtpd_client_event_limit_exceptions =
postscreen_access_list =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_client_auth_rate_limit = 0
# Enough smtpd and smtp processes for all sessions at once.
default_process_limit = $plimit
EOF

    # A plain smtpd listener, no postscreen: magicmx is benchmarked with
    # greet_pause = "0s", and postscreen with its defaults runs no test on
    # these clients -- it would only add a process hop and descriptor
    # passing.  A plain smtpd is the like-for-like relay path.
    {
        echo '# service type  private unpriv  chroot  wakeup  maxproc command + args'
        echo "127.0.0.1:$port inet n  -       n       -       -       smtpd"
        grep -v '^#' "$PF_LIB_DIR/master-services.cf"
    } >"$etc/master.cf"

    printf 'example.test smtp:[127.0.0.1]:%s\n' "$sink_port" >"$etc/transport"
    postmap "hash:$etc/transport"
}

# pf_relay_start DIR: start the instance and wait for its listener's 220.
# With PF_NICE set, the instance runs at that nice level (a sender that
# stands in for another machine).
pf_relay_start() {
    local dir=$1 port
    port=$(sed -n 's/^127\.0\.0\.1:\([0-9]*\)[[:space:]].*/\1/p' "$dir/etc/master.cf")
    postfix -c "$dir/etc" check >"$dir/check.out" 2>&1 ||
        pf_die "postfix check failed: $(cat "$dir/check.out")"
    nice -n "${PF_NICE:-0}" postfix -c "$dir/etc" start >"$dir/start.out" 2>&1 ||
        pf_die "postfix start failed: $(cat "$dir/start.out")"
    pf_wait_banner 127.0.0.1 "$port" 30 ||
        pf_die "the Postfix relay did not answer on 127.0.0.1:$port; see $dir/maillog"
}

# pf_relay_master_pid DIR: print the instance's master PID (empty if none).
pf_relay_master_pid() {
    local f=$1/data/master.lock
    [[ -r $f ]] && tr -d ' \n' <"$f" || true
}

# pf_relay_stop DIR: stop the instance (postfix stop), then make sure its
# master is gone, by PID, and return once it has exited (bounded wait).
pf_relay_stop() {
    local dir=$1 pid i
    pid=$(pf_relay_master_pid "$dir")
    postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    [[ -n $pid ]] || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# pf_relay_queue_count DIR: messages still in the instance's queue.
pf_relay_queue_count() {
    find "$1/queue/incoming" "$1/queue/active" "$1/queue/deferred" \
        "$1/queue/maildrop" -type f 2>/dev/null | wc -l
}
