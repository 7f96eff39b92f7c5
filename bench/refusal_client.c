/*
 * bench/refusal_client.c -- a connection-refusal load client (and, with -l,
 * a trivial "accept and close at once" listener to measure the client's own
 * ceiling).  Linux only (epoll).  Built by bench/refusal.sh:
 *     gcc -O2 -Wall -o refusal_client bench/refusal_client.c
 *
 * Client mode:
 *     refusal_client -b SRC_ADDR -c HOST:PORT [-d SECONDS] [-n INFLIGHT]
 *                    [-p PROCS] [-T TIMEOUT_MS]
 *   From SRC_ADDR (e.g. 127.0.42.1; each connection binds it with port 0 and
 *   IP_BIND_ADDRESS_NO_PORT, so the kernel picks a port per 4-tuple), keeps
 *   INFLIGHT non-blocking connections open to HOST:PORT at all times, for
 *   SECONDS seconds.  Each connection is read until the server closes it
 *   (EOF or reset).  Outcomes, counted per connection:
 *     refused_reply   the server sent a reply that is not 220 (e.g. "421 ...")
 *                     and closed the connection
 *     refused_silent  the server closed (EOF or RST) without a byte
 *     greeted         the server answered 220: NOT a refusal (closed by us)
 *     timeout         nothing happened for TIMEOUT_MS (default 5000): closed by us
 *     error           connect failed (ECONNREFUSED, EADDRNOTAVAIL, ...)
 *   With -p PROCS, PROCS worker processes (fork) share the INFLIGHT
 *   connections and their counts are summed (default 1: one process, one
 *   thread).
 *   Only connections that finished inside the window count; a line
 *   "key=value ..." is printed at the end, refused_per_s among them
 *   (= (refused_reply + refused_silent) / elapsed), and the CPU time the
 *   client used (getrusage).
 *
 * Listener mode (client ceiling):
 *     refusal_client -l HOST:PORT [-d SECONDS]
 *   Accepts and closes each connection at once, for SECONDS (+2) seconds.
 *
 * Everything stops by itself after the given duration.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* CPU seconds (user, system) this process and its reaped children used so far. */
static void cpu_used(double *user, double *sys) {
    struct rusage ru, rc;
    getrusage(RUSAGE_SELF, &ru);
    getrusage(RUSAGE_CHILDREN, &rc);
    *user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + rc.ru_utime.tv_sec + rc.ru_utime.tv_usec / 1e6;
    *sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6 + rc.ru_stime.tv_sec + rc.ru_stime.tv_usec / 1e6;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "refusal_client: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(void) {
    fprintf(stderr,
            "usage: refusal_client -b SRC_ADDR -c HOST:PORT [-d SECONDS] [-n INFLIGHT] [-p PROCS] [-T TIMEOUT_MS]\n"
            "       refusal_client -l HOST:PORT [-d SECONDS]\n");
    exit(2);
}

static void parse_hostport(const char *s, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) usage();
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) usage();
}

/* ---- listener mode ---------------------------------------------------- */
static int run_listener(const struct sockaddr_in *addr, double seconds) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (ls < 0) die("socket");
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (const struct sockaddr *)addr, sizeof *addr) < 0) die("bind");
    if (listen(ls, 4096) < 0) die("listen");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    double end = now_s() + seconds + 2.0;
    unsigned long accepted = 0;
    fprintf(stdout, "listening\n");
    fflush(stdout);
    while (now_s() < end) {
        struct epoll_event evs[8];
        int n = epoll_wait(ep, evs, 8, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (;;) {
            int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
            if (c < 0) break;
            close(c);
            accepted++;
        }
    }
    double u, sy;
    cpu_used(&u, &sy);
    printf("accepted=%lu cpu_user_s=%.3f cpu_sys_s=%.3f\n", accepted, u, sy);
    return 0;
}

/* ---- client mode ------------------------------------------------------ */
struct conn {
    int fd;
    int got;          /* bytes seen */
    char first[3];    /* first three bytes of the reply */
    double started;
};

static struct sockaddr_in g_src, g_dst;
static int g_ep;
static unsigned long c_reply, c_silent, c_greeted, c_timeout, c_error;
static unsigned long c_started;
static char g_sample[80]; /* one refusal reply, for the report */
static int g_counting = 1;

static int open_conn(struct conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&g_src, sizeof g_src) < 0) {
        close(fd);
        return -1;
    }
    int r = connect(fd, (struct sockaddr *)&g_dst, sizeof g_dst);
    if (r < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->got = 0;
    c->started = now_s();
    c_started++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    return 0;
}

/* Closes c.  When we close first (abortive: RST) no TIME_WAIT is left on
   our side; when the server closed first a plain close is enough. */
static void close_conn(struct conn *c, int abortive) {
    if (abortive) {
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);
    c->fd = -1;
}

static void finish(struct conn *c, int outcome) {
    /* outcome: 0 closed by server, 1 greeted, 2 timeout, 3 connect error */
    if (g_counting) {
        switch (outcome) {
        case 0:
            if (c->got == 0) c_silent++;
            else c_reply++;
            break;
        case 1: c_greeted++; break;
        case 2: c_timeout++; break;
        default: c_error++; break;
        }
    }
    close_conn(c, outcome != 0);
}

static void on_event(struct conn *c, uint32_t events) {
    char buf[512];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n > 0) {
            for (ssize_t i = 0; i < n && c->got + i < 3; i++) c->first[c->got + i] = buf[i];
            if (c->got == 0 && g_sample[0] == 0 && !(n >= 3 && memcmp(buf, "220", 3) == 0)) {
                size_t k = 0;
                while (k < (size_t)n && k < sizeof g_sample - 1 && buf[k] != '\r' && buf[k] != '\n') {
                    g_sample[k] = buf[k];
                    k++;
                }
                g_sample[k] = 0;
            }
            c->got += (int)n;
            if (c->got >= 3 && memcmp(c->first, "220", 3) == 0) {
                finish(c, 1); /* served, not refused */
                return;
            }
            continue;
        }
        if (n == 0) { finish(c, 0); return; }
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        /* ECONNRESET after connecting: closed by the server; ECONNREFUSED:
           the connect itself failed. */
        finish(c, errno == ECONNRESET ? 0 : 3);
        return;
    }
    if (events & (EPOLLERR | EPOLLHUP)) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        finish(c, (err == 0 || err == ECONNRESET) ? 0 : 3);
    }
}

struct stats {
    double elapsed;
    unsigned long started, reply, silent, greeted, timeout, error, open_at_end;
    char sample[80];
};

/* One worker: INFLIGHT connections for SECONDS; fills *st. */
static void run_worker(double seconds, int inflight, int timeout_ms, struct stats *st) {
    g_ep = epoll_create1(0);
    if (g_ep < 0) die("epoll_create1");
    struct conn *conns = calloc((size_t)inflight, sizeof *conns);
    if (!conns) die("calloc");
    struct epoll_event *evs = calloc((size_t)inflight, sizeof *evs);
    if (!evs) die("calloc");
    double t0 = now_s(), end = t0 + seconds, last_sweep = t0;
    for (int i = 0; i < inflight; i++) {
        conns[i].fd = -1;
        if (open_conn(&conns[i]) < 0) c_error++;
    }
    double t;
    while ((t = now_s()) < end) {
        int n = epoll_wait(g_ep, evs, inflight, 50);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
        t = now_s();
        if (t - last_sweep > 0.1) {
            last_sweep = t;
            for (int i = 0; i < inflight; i++)
                if (conns[i].fd >= 0 && (t - conns[i].started) * 1000.0 > timeout_ms) finish(&conns[i], 2);
        }
        if (t >= end) break;
        /* refill every free slot */
        for (int i = 0; i < inflight; i++) {
            if (conns[i].fd >= 0) continue;
            if (open_conn(&conns[i]) < 0 && g_counting) c_error++;
        }
    }
    memset(st, 0, sizeof *st);
    st->elapsed = now_s() - t0;
    g_counting = 0;
    for (int i = 0; i < inflight; i++)
        if (conns[i].fd >= 0) { st->open_at_end++; close_conn(&conns[i], 1); }
    st->started = c_started;
    st->reply = c_reply;
    st->silent = c_silent;
    st->greeted = c_greeted;
    st->timeout = c_timeout;
    st->error = c_error;
    memcpy(st->sample, g_sample, sizeof st->sample);
}

/* PROCS worker processes (fork), INFLIGHT connections shared out among
   them; sums their counts; CPU is that of this process and its workers. */
static int run_client(double seconds, int inflight, int timeout_ms, int procs) {
    struct stats total;
    memset(&total, 0, sizeof total);
    if (procs == 1) {
        run_worker(seconds, inflight, timeout_ms, &total);
    } else {
        int fds[64][2];
        pid_t pids[64], parent = getpid();
        for (int p = 0; p < procs; p++) {
            if (pipe(fds[p]) < 0) die("pipe");
            pids[p] = fork();
            if (pids[p] < 0) die("fork");
            if (pids[p] == 0) {
                struct stats st;
                /* Die with the parent (a worker never outlives it). */
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (getppid() != parent) _exit(1);
                int share = inflight / procs + (p < inflight % procs ? 1 : 0);
                run_worker(seconds, share, timeout_ms, &st);
                if (write(fds[p][1], &st, sizeof st) != (ssize_t)sizeof st) _exit(1);
                _exit(0);
            }
            close(fds[p][1]);
        }
        for (int p = 0; p < procs; p++) {
            struct stats st;
            ssize_t got = read(fds[p][0], &st, sizeof st);
            int status = 0;
            waitpid(pids[p], &status, 0);
            if (got != (ssize_t)sizeof st) {
                fprintf(stderr, "refusal_client: worker %d failed\n", p);
                exit(2);
            }
            if (st.elapsed > total.elapsed) total.elapsed = st.elapsed;
            total.started += st.started;
            total.reply += st.reply;
            total.silent += st.silent;
            total.greeted += st.greeted;
            total.timeout += st.timeout;
            total.error += st.error;
            total.open_at_end += st.open_at_end;
            if (!total.sample[0]) memcpy(total.sample, st.sample, sizeof st.sample);
        }
    }
    double cu, cs;
    cpu_used(&cu, &cs);
    double refused = (double)(total.reply + total.silent);
    printf("elapsed_s=%.3f started=%lu refused_reply=%lu refused_silent=%lu greeted=%lu timeout=%lu "
           "error=%lu open_at_end=%lu refused_per_s=%.0f completed_per_s=%.0f cpu_user_s=%.3f cpu_sys_s=%.3f "
           "procs=%d\n",
           total.elapsed, total.started, total.reply, total.silent, total.greeted, total.timeout, total.error,
           total.open_at_end, refused / total.elapsed,
           (double)(total.reply + total.silent + total.greeted + total.timeout) / total.elapsed, cu, cs, procs);
    if (total.sample[0]) printf("sample_reply=%s\n", total.sample);
    return 0;
}

int main(int argc, char **argv) {
    const char *src = NULL, *dst = NULL, *lst = NULL;
    double seconds = 10;
    int inflight = 128, timeout_ms = 5000, procs = 1, opt;
    while ((opt = getopt(argc, argv, "b:c:l:d:n:T:p:")) != -1) {
        switch (opt) {
        case 'b': src = optarg; break;
        case 'c': dst = optarg; break;
        case 'l': lst = optarg; break;
        case 'd': seconds = atof(optarg); break;
        case 'n': inflight = atoi(optarg); break;
        case 'T': timeout_ms = atoi(optarg); break;
        case 'p': procs = atoi(optarg); break;
        default: usage();
        }
    }
    if (seconds <= 0 || seconds > 600 || inflight < 1 || inflight > 60000 || timeout_ms < 1 || procs < 1 ||
        procs > 64 || procs > inflight)
        usage();
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)inflight + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)inflight + 64 ? rl.rlim_max : (rlim_t)inflight + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (lst) {
        struct sockaddr_in a;
        parse_hostport(lst, &a);
        return run_listener(&a, seconds);
    }
    if (!src || !dst) usage();
    memset(&g_src, 0, sizeof g_src);
    g_src.sin_family = AF_INET;
    if (inet_pton(AF_INET, src, &g_src.sin_addr) != 1) usage();
    parse_hostport(dst, &g_dst);
    return run_client(seconds, inflight, timeout_ms, procs);
}
