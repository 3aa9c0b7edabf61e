/* A small static file server on corio (HTTP/1.1 GET and HEAD, keep-alive): one scheduler
 * thread, one task per connection. Files are opened, read and closed through asyncfs and the
 * responses sent on the sockets, so every open, read, receive, send and close of a CPU phase
 * goes to the kernel in the same submission.
 * A body of at least --sendfile-min bytes (default 64 KiB) goes with afs_sendfile(): the
 * headers leave first (MSG_MORE: in the same segments as the body), then the kernel moves
 * the file's pages to the socket (io_uring: splices through a pipe, the socket's when it has
 * room; other Linux backends: sendfile(2); Windows: TransmitFile) without a copy through
 * this process (FreeBSD, macOS: the library reads the file and sends it, on the context's
 * thread). A smaller body, and every body where the library has no sendfile (-ENOTSUP:
 * Windows without TransmitFile), is read and sent: the headers and the first part of the
 * body in one send, then 128 KiB pieces (reads of at most the context's sync threshold,
 * 4 KiB, are plain preads from the page cache: cheaper than a trip through the batch). A
 * client that goes away (-EPIPE, -ECONNRESET) only ends its own task.
 *
 *   file_server [--root DIR] [--host H] [--port P] [--conns N] [--sendfile-min BYTES]
 *               [--timeout SECONDS]
 *
 * Serves DIR (default: the current directory); a target ending in "/" is its "index.html"
 * ("/" is "/index.html"); a target in absolute form ("http://host/path") is its path. The
 * path is percent-decoded; paths with ".." (after decoding) are
 * refused (400), as are control characters in a target (and, on Windows, "\" and ":");
 * symlinks in DIR are followed wherever they point, as nginx does by default; only regular
 * files are served (a directory named without its "/" is 301 to the name with it, slashes
 * merged and the query kept, as with nginx; a directory without index.html, a FIFO or a
 * device 403; a missing file or too long a name 404), with a Content-Type from the name's
 * extension (the common ones of nginx's mime.types; application/octet-stream for others).
 * A GET with one byte range (Range: bytes=A-B, A- or -N; RFC 9110, 14.1) gets 206 and that
 * part of the file, a range that starts past the end 416; several ranges, another unit, a
 * bad value, an If-Range (no response carries a validator, so none can match) or a suffix
 * range of an empty file get the whole file (a server may ignore Range: 14.2). A request
 * line that is not "METHOD TARGET HTTP/M.m" with a token for METHOD, a header line that is
 * no field or holds a control character, Content-Length headers that disagree, a Host
 * with a path's characters in it, an HTTP/1.1 request without exactly one Host header and
 * an HTTP/1.0 one with several (RFC 9112, 3.2) are refused (400; HTTP/1.2 and on are
 * served as 1.1, HTTP/2 and on are 505; a method other than GET and HEAD is 405 with
 * "Allow: GET, HEAD", one too long to know 501, a target too long 414, a head of more
 * than 100 header lines or a line over 8 KiB 431, answered at once). A
 * request body (Content-Length, at most 1 MiB) is read and dropped, so that the next request
 * on the connection starts after it (an HTTP/1.1 client that sent "Expect: 100-continue"
 * gets "100 Continue" first); a chunked one is refused (501) and the connection closed.
 * Every response carries a Date. A file that cannot be opened for want of
 * descriptors or memory is 503, not 404. A connection is closed when a request does not
 * arrive whole within --timeout seconds (default 60; 0: never) of the connection's start or
 * of the last response, or when a response makes no progress for as long (each 128 KiB
 * piece, each 1 MiB of a sendfile, gets that long to leave): idle and slow clients do not
 * hold their tasks and descriptors for ever; a connection waiting for a request holds no
 * response buffer. Prints "listening on H:PORT" once ready;
 * --port 0 (the default) picks a free port; --conns N stops after N connections were served
 * (tests); --sendfile-min -1 never uses sendfile, 0 always. */
#include "serve.h"

#include <corio.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define PIECE          (128 * 1024)
#define SENDFILE_PIECE (1 << 20)

#ifndef MSG_MORE
#define MSG_MORE 0 /* Linux only; elsewhere the headers leave on their own */
#endif

struct opts {
    const char *root, *host, *port;
    long        conns;
};

static const char *root_dir;
static size_t      root_len;
static long long   sendfile_min = 64 * 1024; /* < 0: never */
static int         no_sendfile;              /* the library said -ENOTSUP once */
static int64_t     timeout_ns = 60 * 1000000000LL; /* 0: none */

/* Gives t's next blocking calls timeout_ns from now: a request to arrive, a piece to leave. */
static void arm(struct corio_task *t)
{
    corio_set_deadline(t, timeout_ns ? corio_now() + timeout_ns : INT64_MAX);
}

struct req {
    char method[8];
    char path[1024];  /* decoded, "index.html" added to a directory's */
    char raw[8192];   /* the target as sent, query included: a redirect's Location */
    char range[64];   /* a GET's one Range header's value, "" for none or one to ignore */
    int  keep_alive;
    int  dir_index;   /* the target ended in "/" */
};

#define BODY_MAX (1 << 20)

/* Decodes %XX escapes of s in place: 0, or -1 for a bad escape or an encoded NUL. */
static int percent_decode(char *s)
{
    char *w = s;
    for (const char *p = s; *p; p++) {
        if (*p != '%') {
            *w++ = *p;
            continue;
        }
        unsigned v;
        char hex[3] = {p[1], p[1] ? p[2] : 0, 0};
        if (!hex[0] || !hex[1] || strspn(hex, "0123456789abcdefABCDEF") != 2 ||
            sscanf(hex, "%2x", &v) != 1 || v == 0)
            return -1;
        *w++ = (char)v;
        p += 2;
    }
    *w = '\0';
    return 0;
}

/* Reads and drops a request body of len bytes: 0 or -errno. */
static int skip_body(struct corio_task *t, struct corio_stream *c, long long len)
{
    char sink[4096];
    while (len > 0) {
        size_t n = len < (long long)sizeof sink ? (size_t)len : sizeof sink;
        ssize_t r = corio_stream_read_exact(t, c, sink, n);
        if (r < (ssize_t)n)
            return r < 0 ? (int)r : -ECONNRESET;
        len -= (long long)n;
    }
    return 0;
}

/* Whether a line read (its '\n' included) is empty. */
static int blank(const char *line, ssize_t n)
{
    return n <= 2 && (line[0] == '\n' || (line[0] == '\r' && n == 2));
}

/* Splits s at runs of spaces and tabs into words: how many there are, 4 meaning more than
 * three; the first three in w[] (each ended by a NUL written into s) and their lengths. */
static int split_words(char *s, char *w[3], size_t len[3])
{
    int k = 0;
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            return k;
        if (k == 3)
            return 4;
        w[k] = s;
        while (*s && *s != ' ' && *s != '\t')
            s++;
        len[k] = (size_t)(s - w[k]);
        k++;
        if (*s)
            *s++ = '\0';
    }
}

/* Whether the list of options v .. end (a Connection header's value: tokens between commas,
 * spaces and tabs around them) holds opt, in any case. */
static int has_option(const char *v, const char *end, const char *opt)
{
    size_t n = strlen(opt);
    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
            v++;
        const char *tok = v;
        while (v < end && *v != ',' && *v != ' ' && *v != '\t' && *v != '\r' && *v != '\n')
            v++;
        if ((size_t)(v - tok) == n && strncasecmp(tok, opt, n) == 0)
            return 1;
        while (v < end && *v != ',')
            v++;
    }
    return 0;
}

/* Reads one request head (and drops its body): 1 and *r, 0 when the client closed between
 * requests, -errno, or 400 / 413 / 414 / 431 / 501 for a request to refuse (the connection
 * is then closed). */
/* "HTTP/M.m" (one digit each, RFC 9112 2.3): 10 * M + m, or -1. */
static int http_version(const char *v)
{
    if (strncmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9' || v[8] != '\0' || v[5] == '0')
        return -1;
    return (v[5] - '0') * 10 + (v[7] - '0');
}

/* A method is a token (RFC 9110, 5.6.2). */
static int is_token(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("!#$%&'*+-.^_`|~", ch)))
            return 0;
    }
    return n > 0;
}

static int read_request(struct corio_task *t, struct corio_stream *c, struct req *r)
{
    const char *line;
    ssize_t n;
    /* Empty lines before a request line are ignored (RFC 9112, 2.2), a few of them. */
    for (int empty = 0;; empty++) {
        n = corio_stream_read_line(t, c, 8192, &line);
        if (n == 0)
            return 0;
        if (n < 0)
            return n == -EMSGSIZE ? 414 : (int)n;
        if (!blank(line, n))
            break;
        if (empty == 7)
            return 400; /* the eighth */
    }
    char head[8200];
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    memcpy(head, line, (size_t)n);
    head[n] = '\0';
    /* method SP target SP HTTP/d.d, nothing after */
    char *w[3];
    size_t len[3];
    if (split_words(head, w, len) != 3)
        return 400;
    int version = http_version(w[2]);
    if (version < 0)
        return 400;
    if (version >= 20)
        return 505; /* another major version: not spoken here (RFC 9110, 15.6.6) */
    if (!is_token(w[0], len[0]))
        return 400;
    if (len[0] >= sizeof r->method)
        return 501; /* no method that long is served */
    char *target = w[1];
    memcpy(r->method, w[0], len[0] + 1);
    int http11 = version >= 11; /* 1.2 and on are taken as 1.1 (RFC 9110, 2.5) */
    r->keep_alive = http11;
    int status = 0, have_len = 0, closing = 0, hosts = 0, expect100 = 0, ranges = 0;
    int if_range = 0;
    r->range[0] = '\0';
    long long body = 0;
    for (int lines = 0;; lines++) {
        if ((n = corio_stream_read_line(t, c, 8192, &line)) <= 0)
            return n == 0 ? -ECONNRESET : n == -EMSGSIZE ? 431 : (int)n;
        if (blank(line, n))
            break;
        if (lines >= 100)
            return 431; /* the 101st, at once: a head of endless lines is not read to its end */
        /* No control characters in a field but tabs (RFC 9110, 5.5; a bare CR, RFC 9112
         * 2.2), up to the line's own end. */
        ssize_t body_end = n;
        while (body_end > 0 && (line[body_end - 1] == '\n' || line[body_end - 1] == '\r'))
            body_end--;
        for (ssize_t i = 0; i < body_end; i++)
            if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f)
                status = status ? status : 400;
        const char *colon = memchr(line, ':', (size_t)n);
        if (!colon || colon == line || colon[-1] == ' ' || colon[-1] == '\t' ||
            line[0] == ' ' || line[0] == '\t')
            status = status ? status : 400; /* not a field (RFC 9112 5.1), or a folded line */
        if (n > 11 && strncasecmp(line, "connection:", 11) == 0) {
            /* "close" among the options wins (RFC 9112, 9.6); "keep-alive" keeps an
             * HTTP/1.0 connection. */
            if (has_option(line + 11, line + n, "close"))
                closing = 1;
            else if (has_option(line + 11, line + n, "keep-alive"))
                r->keep_alive = 1;
        } else if (n > 15 && strncasecmp(line, "content-length:", 15) == 0) {
            const char *digits = line + 15;
            while (*digits == ' ' || *digits == '\t')
                digits++;
            char *end;
            long long v = strtoll(digits, &end, 10);
            while (*end == ' ' || *end == '\t' || *end == '\r')
                end++;
            /* Digits only, and every Content-Length the same (RFC 9112, 6.3): else the
             * request's end is ambiguous. */
            if (*digits < '0' || *digits > '9' || *end != '\n' || (have_len && v != body))
                status = status ? status : 400;
            else if (v > BODY_MAX)
                status = status ? status : 413;
            body = v;
            have_len = 1;
        } else if (n > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0) {
            status = status ? status : 501; /* chunked bodies are not read here */
        } else if (n >= 5 && strncasecmp(line, "host:", 5) == 0) {
            hosts++;
            /* host[:port], nothing of a path (RFC 9112, 3.2: a bad Host is 400) */
            for (const char *h = line + 5; h < line + n; h++)
                if (*h == '/' || *h == '\\' || *h == '?' || *h == '#' || *h == '@')
                    status = status ? status : 400;
        } else if (n > 7 && strncasecmp(line, "expect:", 7) == 0) {
            expect100 = has_option(line + 7, line + n, "100-continue");
        } else if (n > 6 && strncasecmp(line, "range:", 6) == 0) {
            const char *v = line + 6, *e = line + n;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                e--;
            size_t vl = (size_t)(e - v);
            if (vl < sizeof r->range && ranges++ == 0) {
                memcpy(r->range, v, vl);
                r->range[vl] = '\0';
            } else {
                ranges = 2; /* too long for the one range served: ignored */
            }
        } else if (n > 9 && strncasecmp(line, "if-range:", 9) == 0) {
            if_range = 1;
        }
    }
    if (status)
        return status;
    if (hosts > 1 || (http11 && hosts == 0))
        return 400;
    if (closing)
        r->keep_alive = 0;
    /* Range is for GET alone, one header of it (RFC 9110, 14.2); no response here carries a
     * validator, so an If-Range never matches: the whole file is sent. */
    if (ranges != 1 || if_range || strcmp(r->method, "GET") != 0)
        r->range[0] = '\0';
    /* The client waits for this before it sends the body (RFC 9110, 10.1.1); an HTTP/1.0
     * client's expectation is ignored. */
    static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
    int err = expect100 && http11 && body > 0 ? corio_stream_write(t, c, go_on, sizeof go_on - 1)
                                              : 0;
    if (err < 0)
        return err;
    err = skip_body(t, c, body);
    if (err < 0)
        return err;
    /* No control characters in a target (RFC 9112, 3.2): it may come back in a Location. */
    for (const unsigned char *p = (const unsigned char *)target; *p; p++)
        if (*p < 0x21 || *p == 0x7f)
            return 400;
    /* The absolute form ("http://host/path", RFC 9112 3.2.2, which a server must take):
     * its path, "/" when it has none. */
    if (!strncasecmp(target, "http://", 7) || !strncasecmp(target, "https://", 8)) {
        char *path = strpbrk(target + (target[4] == ':' ? 7 : 8), "/?");
        if (!path) {
            target[0] = '/'; /* in place: the target is the line's copy */
            target[1] = '\0';
        } else if (*path == '?') {
            path[-1] = '/'; /* "http://host?q": "/?q", over the host's last byte */
            target = path - 1;
        } else {
            target = path;
        }
    }
    size_t rl = strlen(target);
    if (rl >= sizeof r->raw)
        return 414;
    memcpy(r->raw, target, rl + 1);
    char *q = strchr(target, '?');
    if (q)
        *q = '\0';
    if (percent_decode(target) < 0 || target[0] != '/' || strstr(target, "/.."))
        return 400;
#ifdef _WIN32
    /* Windows reads "\\" as a separator ("\\.." climbs) and ":" as a drive or a stream. */
    if (strpbrk(target, "\\:"))
        return 400;
#endif
    if (strlen(target) >= sizeof r->path - 16)
        return 414; /* decoded: %-escapes take three bytes of the line, one of the name */
    size_t tl = strlen(target);
    memcpy(r->path, target, tl + 1); /* fits: checked above, with room for the index */
    r->dir_index = target[tl - 1] == '/';
    if (r->dir_index)
        memcpy(r->path + tl, "index.html", sizeof "index.html");
    return 1;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 301: return "Moved Permanently";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 505: return "HTTP Version Not Supported";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default:  return "Internal Server Error";
    }
}

/* "Date: <IMF-fixdate>\r\n" for now (RFC 9110, 5.6.7), remade once a second: 37 bytes. */
#define DATE_LEN 37
static const char *date_line(void)
{
    static char line[64];
    static time_t made = -1;
    time_t now = time(NULL);
    if (now != made) {
        static const char wday[] = "ThuFriSatSunMonTueWed"; /* 1970-01-01 was a Thursday */
        static const char mon[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
        long long days = (long long)now / 86400, secs = (long long)now % 86400;
        int wd = (int)(days % 7);
        /* The civil date of a day count (Howard Hinnant's days_from_civil, inverted). */
        long long z = days + 719468, era = z / 146097;
        long long doe = z - era * 146097;
        long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        long long mp = (5 * doy + 2) / 153;
        int d = (int)(doy - (153 * mp + 2) / 5 + 1), m = (int)(mp < 10 ? mp + 3 : mp - 9);
        long long y = yoe + era * 400 + (m <= 2);
        snprintf(line, sizeof line, "Date: %.3s, %02d %.3s %04lld %02lld:%02lld:%02lld GMT\r\n",
                 wday + 3 * wd, d, mon + 3 * (m - 1), y, secs / 3600, secs / 60 % 60, secs % 60);
        made = now;
    }
    return line;
}

/* Sends a response of status without a body; extra: more header lines ("" for none), each
 * ended by CRLF. */
static int send_status_with(struct corio_task *t, struct corio_stream *c, int status, int keep,
                            const char *extra)
{
    char h[8192 + 512];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 %d %s\r\nServer: corio\r\n%s%sContent-Length: 0\r\n"
                     "Connection: %s\r\n\r\n",
                     status, reason(status), date_line(), extra, keep ? "keep-alive" : "close");
    return n > 0 && (size_t)n < sizeof h ? corio_stream_write(t, c, h, (size_t)n) : -EMSGSIZE;
}

static int send_status(struct corio_task *t, struct corio_stream *c, int status, int keep)
{
    return send_status_with(t, c, status, keep, "");
}

/* Reads a run of decimal digits at *p (at least one; a value too big for 64 bits is
 * UINT64_MAX): 0 and *v, or -1 when *p is no digit. */
static int digits_at(const char **p, uint64_t *v)
{
    const char *s = *p;
    if (*s < '0' || *s > '9')
        return -1;
    uint64_t x = 0;
    for (; *s >= '0' && *s <= '9'; s++)
        x = x > (UINT64_MAX - 9) / 10 ? UINT64_MAX : x * 10 + (uint64_t)(*s - '0');
    *p = s;
    *v = x;
    return 0;
}

/* The byte range that a Range header's value v asks of a file of size bytes (RFC 9110,
 * 14.1.2): 1 and [*first, *end), 0 to send the whole file (another unit, a set of several
 * ranges, bad syntax: a server may ignore Range, 14.2), -1 for a range the file cannot
 * satisfy (416). */
static int byte_range(const char *v, uint64_t size, uint64_t *first, uint64_t *end)
{
    if (strncasecmp(v, "bytes=", 6) != 0 || strchr(v, ','))
        return 0;
    const char *p = v + 6;
    uint64_t a = 0, b = UINT64_MAX;
    int suffix = *p == '-';
    if (!suffix && digits_at(&p, &a) < 0)
        return 0;
    if (*p++ != '-')
        return 0;
    int have_b = *p != '\0';
    if (have_b && digits_at(&p, &b) < 0)
        return 0;
    if (*p || (suffix && !have_b))
        return 0; /* trailing bytes, or "bytes=-" */
    if (suffix) { /* the last b bytes */
        if (b == 0)
            return -1;
        if (size == 0)
            return 0; /* satisfiable (14.1.1), but no 206 can name no bytes: all of it */
        *first = b >= size ? 0 : size - b;
        *end = size;
        return 1;
    }
    if (b < a)
        return 0;
    if (a >= size)
        return -1;
    *first = a;
    *end = b < size ? b + 1 : size;
    return 1;
}

/* The media type of a file by its name's extension: what nginx's mime.types says for the
 * common ones, application/octet-stream for the rest. */
static const char *media_type(const char *path)
{
    static const char *const types[][2] = {
        {"html", "text/html"},        {"htm", "text/html"},         {"css", "text/css"},
        {"js", "application/javascript"}, {"mjs", "application/javascript"},
        {"json", "application/json"}, {"txt", "text/plain"},        {"xml", "text/xml"},
        {"svg", "image/svg+xml"},     {"png", "image/png"},         {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},       {"gif", "image/gif"},         {"webp", "image/webp"},
        {"ico", "image/x-icon"},      {"wasm", "application/wasm"}, {"pdf", "application/pdf"},
        {"woff", "font/woff"},        {"woff2", "font/woff2"},      {"mp4", "video/mp4"},
        {"mp3", "audio/mpeg"},        {"zip", "application/zip"},   {"gz", "application/gzip"},
    };
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i][0]) == 0)
                return types[i][1];
    return "application/octet-stream";
}

/* Writes the head of a 200 response with a body of size bytes of media type `type` into
 * buf: its length. */
static int ok_head(char *buf, uint64_t size, const char *type, int keep_alive)
{
    static const char start[] = "HTTP/1.1 200 OK\r\nServer: corio\r\n";
    static const char length[] = "Content-Length: ";
    static const char ranges[] = "\r\nAccept-Ranges: bytes\r\nContent-Type: ";
    static const char keep[] = "\r\nConnection: keep-alive\r\n\r\n";
    static const char shut[] = "\r\nConnection: close\r\n\r\n";
    char digits[20];
    int nd = 0;
    do
        digits[nd++] = (char)('0' + size % 10);
    while ((size /= 10) > 0);
    char *p = buf;
    memcpy(p, start, sizeof start - 1);
    p += sizeof start - 1;
    memcpy(p, date_line(), DATE_LEN);
    p += DATE_LEN;
    memcpy(p, length, sizeof length - 1);
    p += sizeof length - 1;
    while (nd > 0)
        *p++ = digits[--nd];
    memcpy(p, ranges, sizeof ranges - 1);
    p += sizeof ranges - 1;
    size_t tl = strlen(type);
    memcpy(p, type, tl);
    p += tl;
    const char *end = keep_alive ? keep : shut;
    size_t n = keep_alive ? sizeof keep - 1 : sizeof shut - 1;
    memcpy(p, end, n);
    return (int)(p + n - buf);
}

/* Writes the head of a 206 response with bytes [first, end) of a file of size bytes into
 * buf: its length. */
static int partial_head(char *buf, uint64_t first, uint64_t end, uint64_t size,
                        const char *type, int keep_alive)
{
    return snprintf(buf, 512,
                    "HTTP/1.1 206 Partial Content\r\nServer: corio\r\n%sContent-Length: %llu\r\n"
                    "Content-Range: bytes %llu-%llu/%llu\r\nAccept-Ranges: bytes\r\n"
                    "Content-Type: %s\r\nConnection: %s\r\n\r\n",
                    date_line(), (unsigned long long)(end - first), (unsigned long long)first,
                    (unsigned long long)(end - 1), (unsigned long long)size, type,
                    keep_alive ? "keep-alive" : "close");
}

/* A directory asked for without its "/": 301 to the name with it, the query kept, as nginx
 * answers. */
static int redirect_to_dir(struct corio_task *t, struct corio_stream *c, struct req *r)
{
    char loc[sizeof r->raw + 32];
    const char *q = strchr(r->raw, '?');
    size_t pl = q ? (size_t)(q - r->raw) : strlen(r->raw);
    /* Slashes merged, as nginx does: "//host" would name another server to a browser. */
    char *o = loc + sizeof "Location: " - 1;
    memcpy(loc, "Location: ", sizeof "Location: " - 1);
    for (size_t i = 0; i < pl; i++)
        if (r->raw[i] != '/' || o[-1] != '/')
            *o++ = r->raw[i];
    snprintf(o, sizeof loc - (size_t)(o - loc), "/%s\r\n", q ? q : "");
    return send_status_with(t, c, 301, r->keep_alive, loc);
}

/* Sends the file of r (or a status): 0 to go on, -errno to drop the connection. */
static int respond(struct corio_task *t, struct corio_stream *c, struct req *r, char *buf)
{
    int head = strcmp(r->method, "HEAD") == 0;
    if (!head && strcmp(r->method, "GET") != 0)
        return send_status_with(t, c, 405, r->keep_alive, "Allow: GET, HEAD\r\n");
    char full[2048];
    size_t pl = strlen(r->path);
    if (root_len + pl >= sizeof full)
        return send_status(t, c, 404, r->keep_alive); /* as a name too long for the system */
    memcpy(full, root_dir, root_len);
    memcpy(full + root_len, r->path, pl + 1);
    struct afs_file *f;
    struct afs_ctx *ctx = corio_sched_ctx(corio_task_sched(t));
    /* Non-blocking: a FIFO under the root must not hold the open (a pool thread on some
     * backends) until a writer comes; only regular files are served. */
    int err = afs_open(ctx, full, AFS_RDONLY | AFS_NONBLOCK, 0, AFS_MODE_SYNC, &f);
    if (err == -EISDIR && !r->dir_index)
        return redirect_to_dir(t, c, r);
    if (err == -ENOENT && r->dir_index) {
        /* A directory without an index is 403, one that is not there 404, as with nginx. */
        struct afs_stat st;
        full[root_len + pl - (sizeof "index.html" - 1)] = '\0';
        if (afs_statx(ctx, AFS_AT_FDCWD, full, 0, &st) == 0 && S_ISDIR(st.mode))
            err = -EACCES;
    }
    if (err < 0) {
        int status = err == -ENOENT || err == -ENOTDIR || err == -ELOOP ||
                             err == -ENAMETOOLONG                       ? 404
                     : err == -EACCES || err == -EPERM || err == -EISDIR ? 403
                     : err == -EMFILE || err == -ENFILE || err == -ENOMEM ? 503
                                                                          : 500;
        return send_status(t, c, status, r->keep_alive);
    }
    /* The size the open saw (no system call); -1: not a regular file (a FIFO, a device:
     * sizes say nothing, reads may never end). */
    int64_t size = afs_file_open_size(f);
    if (size < 0) {
        afs_close(f);
        return send_status(t, c, 403, r->keep_alive);
    }
    /* The bytes [off, end) of the file go: all of it, or the one range asked for. */
    uint64_t off = 0, end = (uint64_t)size;
    int range = r->range[0] ? byte_range(r->range, (uint64_t)size, &off, &end) : 0;
    if (range < 0) {
        afs_close(f);
        char cr[64];
        snprintf(cr, sizeof cr, "Content-Range: bytes */%llu\r\n", (unsigned long long)size);
        return send_status_with(t, c, 416, r->keep_alive, cr);
    }
    const char *type = media_type(r->path);
    int hl = range ? partial_head(buf, off, end, (uint64_t)size, type, r->keep_alive)
                   : ok_head(buf, (uint64_t)size, type, r->keep_alive);
    size_t fill = (size_t)hl;
    err = 0;
    if (!head && !no_sendfile && sendfile_min >= 0 && end - off >= (uint64_t)sendfile_min) {
        struct afs_file *s = corio_stream_file(c);
        ssize_t n = afs_send(s, buf, fill, MSG_MORE);
        if (n >= 0 && (size_t)n < fill)
            n = -ETIMEDOUT; /* stopped part way by the deadline */
        if (n < 0) {
            afs_close(f);
            return (int)n;
        }
        fill = 0;
        uint64_t start = off;
        size_t want;
        do {
            uint64_t left = end - off;
            want = left < SENDFILE_PIECE ? (size_t)left : SENDFILE_PIECE;
            arm(t);
            n = afs_sendfile(s, f, off, want);
            if (n > 0)
                off += (uint64_t)n;
            /* Short: the deadline stopped the piece part way (or the file shrank). */
        } while (n == (ssize_t)want && off < end);
        if (n == -ENOTSUP && off == start) {
            no_sendfile = 1; /* the headers are out: the body goes as below */
        } else {
            afs_close(f);
            /* Short: the response cannot be completed. */
            return n < 0 ? (int)n : off == end ? 0 : -EIO;
        }
    }
    do {
        uint64_t left = end - off;
        size_t want = head ? 0 : left < PIECE - fill ? (size_t)left : PIECE - fill;
        if (want > 0) {
            ssize_t n = afs_pread(f, buf + fill, want, off);
            if (n <= 0) { /* the file shrank or failed: the response cannot be completed */
                err = n < 0 ? (int)n : -EIO;
                break;
            }
            off += (uint64_t)n;
            fill += (size_t)n;
        }
        arm(t);
        if ((err = corio_stream_write(t, c, buf, fill)) < 0)
            break;
        fill = 0;
    } while (!head && off < end);
    afs_close(f);
    return err;
}

/* Response buffers (PIECE bytes), taken for a response and given back after it: a
 * connection waiting for its next request holds none. One scheduler thread: no lock. */
static char *spare[64];
static int   nspare;

static char *buf_take(void)
{
    return nspare ? spare[--nspare] : malloc(PIECE);
}

static void buf_give(char *b)
{
    if (nspare < (int)(sizeof spare / sizeof spare[0]))
        spare[nspare++] = b;
    else
        free(b);
}

static void conn_task(struct corio_task *t, struct corio_stream *c, void *user)
{
    (void)user;
    struct req r;
    int st;
    for (;;) {
        arm(t);
        if ((st = read_request(t, c, &r)) <= 0)
            break;
        if (st != 1) {
            send_status(t, c, st, 0);
            break;
        }
        arm(t);
        char *buf = buf_take();
        if (!buf) {
            send_status(t, c, 503, 0);
            break;
        }
        int err = respond(t, c, &r, buf);
        buf_give(buf);
        if (err < 0 || !r.keep_alive)
            break;
    }
    corio_stream_close(c);
}

static void main_task(struct corio_task *t, void *arg)
{
    struct opts *o = arg;
    serve(t, "file_server", o->host, o->port, o->conns, conn_task, NULL);
}

int main(int argc, char **argv)
{
    struct opts o = {".", "127.0.0.1", "0", -1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--root") && i + 1 < argc)
            o.root = argv[++i];
        else if (!strcmp(argv[i], "--host") && i + 1 < argc)
            o.host = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc)
            o.port = argv[++i];
        else if (!strcmp(argv[i], "--conns") && i + 1 < argc)
            o.conns = atol(argv[++i]);
        else if (!strcmp(argv[i], "--sendfile-min") && i + 1 < argc)
            sendfile_min = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc && atof(argv[i + 1]) >= 0 &&
                 atof(argv[i + 1]) < 1e9)
            timeout_ns = (int64_t)(atof(argv[++i]) * 1e9);
        else {
            fprintf(stderr,
                    "usage: file_server [--root DIR] [--host H] [--port P] [--conns N]"
                    " [--sendfile-min BYTES] [--timeout SECONDS]\n");
            return 2;
        }
    }
    root_dir = o.root;
    root_len = strlen(root_dir);
    struct corio_sched *s;
    int err = corio_sched_new(&s, NULL);
    if (err < 0) {
        fprintf(stderr, "corio_sched_new: %s\n", afs_strerror(err));
        return 1;
    }
    err = corio_sched_run(s, main_task, &o);
    corio_sched_free(s);
    while (nspare > 0)
        free(spare[--nspare]);
    if (err < 0) {
        fprintf(stderr, "corio_sched_run: %s\n", afs_strerror(err));
        return 1;
    }
    return 0;
}
