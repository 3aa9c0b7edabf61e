/* The echo benchmark's load generator: one thread, epoll, non-blocking sockets on loopback.
 *   echo_load --port P [--conns N] [--size B] [--seconds S] [--stream] [--window W]
 * Ping-pong (default): each of N connections sends a B-byte message and sends the next once
 * the whole echo came back. --stream: each connection keeps up to W messages (default 64) in
 * flight. The warm-up lasts one second and until every connection got an echo back (a server
 * that accepts slowly is not measured on its first replies). Prints one line:
 *   requests=R seconds=S rps=X p50_us=A p99_us=B cpu_us=C
 * latency being the time from a message's send to the end of its echo, C the generator's
 * own CPU time (user + system) over the measured seconds. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST 1000000 /* 1 us buckets up to 1 s */

static uint64_t hist[HIST + 1];
static uint64_t counted;

static int64_t cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct conn {
    int      fd;
    size_t   sent_bytes, recv_bytes; /* of the current stream of messages */
    size_t   out_msgs;               /* messages sent whose echo is not complete */
    int64_t *stamps;                 /* send times, a ring of `window` */
    size_t   head;
    int      want_out;
    int      echoed; /* got an echo back once */
};

static size_t msg, window;
static char *payload, sink[65536];
static int measuring;

static void record(int64_t lat_ns)
{
    if (!measuring)
        return;
    int64_t us = lat_ns / 1000;
    hist[us > HIST ? HIST : us]++;
    counted++;
}

static double pct(double p)
{
    uint64_t want = (uint64_t)(p * (double)counted), acc = 0;
    for (size_t i = 0; i <= HIST; i++)
        if ((acc += hist[i]) > want)
            return (double)i;
    return HIST;
}

/* Sends as many whole or partial messages as the window allows. */
static int pump(int ep, struct conn *c)
{
    for (;;) {
        size_t in_msg = c->sent_bytes % msg;
        if (in_msg == 0 && c->out_msgs >= window)
            break;
        ssize_t w = send(c->fd, payload + in_msg, msg - in_msg, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) {
                if (!c->want_out) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    c->want_out = 1;
                }
                return 0;
            }
            return -1;
        }
        if (in_msg == 0) {
            c->stamps[(c->head + c->out_msgs) % window] = now_ns();
            c->out_msgs++;
        }
        c->sent_bytes += (size_t)w;
    }
    if (c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = 0;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, conns = 1000, seconds = 5, stream = 0;
    msg = 512;
    window = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc)
            host = argv[++i];
        else if (!strcmp(argv[i], "--conns") && i + 1 < argc)
            conns = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            msg = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--window") && i + 1 < argc)
            window = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--stream"))
            stream = 1;
        else {
            fprintf(stderr, "usage: echo_load --port P [--conns N] [--size B] [--seconds S] "
                            "[--stream] [--window W]\n");
            return 2;
        }
    }
    if (!stream)
        window = 1;
    payload = malloc(msg);
    memset(payload, 'x', msg);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    for (int i = 0; i < conns; i++) {
        struct conn *c = &cs[i];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("echo_load: connect");
            return 1;
        }
        if (fcntl(c->fd, F_SETFL, O_NONBLOCK) < 0)
            return 1;
        c->stamps = calloc(window, sizeof *c->stamps);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    for (int i = 0; i < conns; i++)
        if (pump(ep, &cs[i]) < 0)
            return 1;
    int64_t start = now_ns(), t_measure = start + 1000000000LL,
            t_end = t_measure + (int64_t)seconds * 1000000000LL;
    struct epoll_event evs[512];
    int echoed = 0;
    int64_t cpu0 = 0;
    for (;;) {
        int64_t t = now_ns();
        if (!measuring && t >= t_measure && echoed == conns) {
            measuring = 1;
            cpu0 = cpu_us();
            t_end = t + (int64_t)seconds * 1000000000LL;
        }
        if (measuring && t >= t_end)
            break;
        if (!measuring && t >= start + 60 * 1000000000LL) {
            fprintf(stderr, "echo_load: %d connections never got an echo\n", conns - echoed);
            return 1;
        }
        int n = epoll_wait(ep, evs, 512, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, sink, sizeof sink, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    fprintf(stderr, "echo_load: the server closed a connection\n");
                    return 1;
                }
                if (r > 0) {
                    size_t before = c->recv_bytes / msg;
                    c->recv_bytes += (size_t)r;
                    size_t done = c->recv_bytes / msg - before;
                    if (done && !c->echoed) {
                        c->echoed = 1;
                        echoed++;
                    }
                    int64_t tn = done ? now_ns() : 0;
                    for (size_t k = 0; k < done; k++) {
                        record(tn - c->stamps[c->head]);
                        c->head = (c->head + 1) % window;
                        c->out_msgs--;
                    }
                }
            }
            if (pump(ep, c) < 0) {
                fprintf(stderr, "echo_load: send failed\n");
                return 1;
            }
        }
    }
    printf("requests=%llu seconds=%d rps=%.0f p50_us=%.0f p99_us=%.0f cpu_us=%lld\n",
           (unsigned long long)counted, seconds, (double)counted / seconds, pct(0.50),
           pct(0.99), (long long)(cpu_us() - cpu0));
    return 0;
}
