/* kqueue() and kevent() over epoll, for the tests (kqueue_shim.h says what is covered). */
#include "kqueue_shim.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>

/* One descriptor in one kqueue: its two filters share an epoll registration. */
struct reg {
    int         kq, fd;
    bool        r, w, clear;
    void       *r_udata, *w_udata;
    struct reg *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct reg     *regs;

static struct reg **find(int kq, int fd)
{
    struct reg **p = &regs;
    while (*p && !((*p)->kq == kq && (*p)->fd == fd))
        p = &(*p)->next;
    return p;
}

static uint32_t mask(const struct reg *g)
{
    return (g->r ? EPOLLIN | EPOLLRDHUP : 0) | (g->w ? EPOLLOUT : 0) | (g->clear ? EPOLLET : 0);
}

int kqueue_shim_open(void)
{
    int kq = epoll_create1(EPOLL_CLOEXEC);
    if (kq < 0)
        return -1;
    /* A kqueue closed before had this number: its registrations went with it. */
    pthread_mutex_lock(&lock);
    for (struct reg **p = &regs; *p;) {
        struct reg *g = *p;
        if (g->kq == kq) {
            *p = g->next;
            free(g);
        } else {
            p = &g->next;
        }
    }
    pthread_mutex_unlock(&lock);
    return kq;
}

/* Applies one change; 0 or an errno value. Called with the lock held. */
static int change(int kq, const struct kevent *c)
{
    if (c->filter != EVFILT_READ && c->filter != EVFILT_WRITE)
        return EINVAL;
    bool rd = c->filter == EVFILT_READ;
    int fd = (int)c->ident;
    struct reg **p = find(kq, fd), *g = *p;
    if (c->flags & EV_ADD) {
        bool fresh = !g;
        if (fresh && !(g = calloc(1, sizeof *g)))
            return ENOMEM;
        struct reg old = *g;
        g->kq = kq;
        g->fd = fd;
        if (rd) {
            g->r = true;
            g->r_udata = c->udata;
        } else {
            g->w = true;
            g->w_udata = c->udata;
        }
        g->clear = c->flags & EV_CLEAR;
        struct epoll_event e = {.events = mask(g), .data.ptr = g};
        if (epoll_ctl(kq, fresh ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &e) < 0) {
            int err = errno;
            if (fresh)
                free(g);
            else
                *g = old;
            return err;
        }
        if (fresh) {
            g->next = regs;
            regs = g;
        }
        return 0;
    }
    if (c->flags & EV_DELETE) {
        if (!g || !(rd ? g->r : g->w))
            return ENOENT;
        if (rd)
            g->r = false;
        else
            g->w = false;
        if (g->r || g->w) {
            struct epoll_event e = {.events = mask(g), .data.ptr = g};
            return epoll_ctl(kq, EPOLL_CTL_MOD, fd, &e) < 0 ? errno : 0;
        }
        struct epoll_event e = {0};
        int err = epoll_ctl(kq, EPOLL_CTL_DEL, fd, &e) < 0 ? errno : 0;
        *p = g->next;
        free(g);
        return err;
    }
    return EINVAL;
}

int kqueue_shim_event(int kq, const struct kevent *changes, int nchanges, struct kevent *events,
                      int nevents, const struct timespec *timeout)
{
    for (int i = 0; i < nchanges; i++) {
        pthread_mutex_lock(&lock);
        int err = change(kq, &changes[i]);
        pthread_mutex_unlock(&lock);
        if (err) {
            errno = err;
            return -1;
        }
    }
    if (nevents <= 0)
        return 0;
    struct epoll_event e[64];
    int max = nevents / 2 > 64 ? 64 : nevents / 2 > 0 ? nevents / 2 : 1;
    int ms = -1;
    if (timeout) {
        long long ns = (long long)timeout->tv_sec * 1000000000LL + timeout->tv_nsec;
        ms = ns > 2000000000LL * 1000000LL ? 2000000000 : (int)((ns + 999999) / 1000000);
    }
    int n = epoll_wait(kq, e, max, ms);
    if (n < 0)
        return -1;
    int k = 0;
    for (int i = 0; i < n; i++) {
        /* Only the thread that waits on a kqueue changes it: the registration is still there. */
        const struct reg *g = e[i].data.ptr;
        uint32_t u = e[i].events;
        bool broken = u & (EPOLLHUP | EPOLLERR);
        if (g->r && ((u & (EPOLLIN | EPOLLRDHUP)) || broken) && k < nevents)
            events[k++] = (struct kevent){.ident = (uintptr_t)g->fd, .filter = EVFILT_READ,
                                          .flags = broken || (u & EPOLLRDHUP) ? EV_EOF : 0,
                                          .udata = g->r_udata};
        if (g->w && ((u & EPOLLOUT) || broken) && k < nevents)
            events[k++] = (struct kevent){.ident = (uintptr_t)g->fd, .filter = EVFILT_WRITE,
                                          .flags = broken ? EV_EOF : 0, .udata = g->w_udata};
    }
    return k;
}
