/* afcp: file names in messages, quoted as coreutils quotes them (quotearg's
 * "shell-escape-always" style, what cp uses for names): the name between single quotes, a
 * single quote as '\'' and every byte the terminal would act on as $'\ooo' (or $'\n', $'\t'...),
 * so that a name can neither move the cursor nor rewrite the terminal, and the text can be
 * pasted back into a shell:
 *     a b        -> 'a b'
 *     it's       -> 'it'\''s'
 *     ESC]0;x BEL -> ''$'\033'']0;x'$'\a'
 * Characters printable in the locale (LC_CTYPE: UTF-8 names in a UTF-8 locale) pass as they
 * are; bytes that are not a valid character there, or a character that is not printable, are
 * escaped byte by byte, as cp does.
 * The arguments of options in cp's messages about them ("invalid argument 'x' for
 * '--sparse'") are quoted otherwise: quotearg's locale style (afcp_lq). */
#define _GNU_SOURCE
#include "afcp.h"

#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <wctype.h>
#ifndef _WIN32
#include <langinfo.h>
#include <strings.h>
#endif

struct qbuf {
    char  *p;
    size_t len, cap;
};

static void put(struct qbuf *b, char c)
{
    if (b->len + 1 >= b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        char *p = realloc(b->p, cap);
        if (!p)
            afcp_xmalloc((size_t)-1); /* reports and exits */
        b->p = p;
        b->cap = cap;
    }
    b->p[b->len++] = c;
    b->p[b->len] = 0;
}

static void puts_(struct qbuf *b, const char *s)
{
    while (*s)
        put(b, *s++);
}

/* One byte as an escape inside $'...': the C letter when there is one, else octal. */
static void put_escape(struct qbuf *b, unsigned char c)
{
    static const char letters[] = "\aa\bb\ff\nn\rr\tt\vv";
    put(b, '\\');
    const char *l = c ? memchr(letters, c, sizeof letters - 1) : NULL;
    if (l && (l - letters) % 2 == 0) {
        put(b, l[1]);
        return;
    }
    put(b, (char)('0' + (c >> 6)));
    put(b, (char)('0' + ((c >> 3) & 7)));
    put(b, (char)('0' + (c & 7)));
}

/* One character (n bytes at s[i]) that C and shell quoting write the same way (quotearg's
 * c_and_shell_quote_compat): a name made only of those and with a single quote in it is
 * written between double quotes instead ("it's"), as cp does. */
static int plain(const char *s, size_t i, size_t n, int printable, size_t len)
{
    unsigned char c = (unsigned char)s[i];
    if (n > 1 || c >= 0x80)
        return printable;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    if (strchr("%+,-./:]_ '@", c))
        return 1;
    if (c == '{' || c == '}')
        return len == 1;
    if (c == '#' || c == '~')
        return i == 0;
    return 0;
}

#ifdef _WIN32
/* Names are UTF-8 on Windows whatever the C runtime's locale (tools/afcp/win_afcp.c): a
 * well-formed sequence of a character past the C1 controls is printable, anything else is
 * escaped byte by byte. */
static size_t next_utf8(const unsigned char *s, size_t left, int *printable)
{
    size_t n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : 2;
    unsigned long cp = s[0] & (0x3f >> (n - 1));
    *printable = 0;
    if (s[0] < 0xc2 || s[0] > 0xf4 || n > left)
        return 1;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 1;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const unsigned long least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < least[n] || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
        return 1; /* overlong, out of range or a surrogate */
    *printable = cp >= 0xa0 && cp != 0x2028 && cp != 0x2029;
    return n;
}
#endif

/* Decodes the character at s (left bytes): its length and whether it is printable. */
static size_t next_char(const char *s, size_t left, mbstate_t *mbs, int *printable)
{
    unsigned char c = (unsigned char)*s;
    if (c < 0x80) {
        *printable = c >= 0x20 && c < 0x7f;
        return 1;
    }
#ifdef _WIN32
    (void)mbs;
    return next_utf8((const unsigned char *)s, left, printable);
#endif
    wchar_t wc;
    size_t n = mbrtowc(&wc, s, left, mbs);
    *printable = n != (size_t)-1 && n != (size_t)-2 && n != 0 && iswprint((wint_t)wc);
    if (!*printable) {
        memset(mbs, 0, sizeof *mbs);
        if (n == (size_t)-1 || n == (size_t)-2 || n == 0)
            n = 1;
    }
    return n;
}

static void quote_into(struct qbuf *b, const char *s)
{
    size_t len = strlen(s);
    if (strchr(s, '\'')) {
        mbstate_t mbs;
        memset(&mbs, 0, sizeof mbs);
        size_t i = 0;
        while (i < len) {
            int pr; /* set by next_char before plain() reads it (argument order is unspecified) */
            size_t n = next_char(s + i, len - i, &mbs, &pr);
            if (!plain(s, i, n, pr, len))
                break;
            i += n;
        }
        if (i == len) {
            put(b, '"');
            puts_(b, s);
            put(b, '"');
            return;
        }
    }
    int escaping = 0; /* inside a '$'...' run of escapes */
    mbstate_t mbs;
    memset(&mbs, 0, sizeof mbs);
    size_t left = len;
    put(b, '\'');
    while (left) {
        unsigned char c = (unsigned char)*s;
        int printable;
        size_t n = next_char(s, left, &mbs, &printable);
        if (!printable) {
            if (!escaping)
                puts_(b, "'$'");
            escaping = 1;
            for (size_t i = 0; i < n; i++)
                put_escape(b, (unsigned char)s[i]);
        } else if (c == '\'') {
            puts_(b, "'\\''"); /* this closes a $'...' run as well */
            escaping = 0;
        } else {
            if (escaping)
                puts_(b, "''");
            escaping = 0;
            for (size_t i = 0; i < n; i++)
                put(b, s[i]);
        }
        s += n;
        left -= n;
    }
    put(b, '\'');
}

/* The quotes of quotearg's locale style, as gnulib's gettext_quote picks them for a
 * message with no translation: U+2018 and U+2019 where the locale's character set is UTF-8
 * (always, on Windows: afcp writes UTF-8 there), the apostrophe in any other. */
static void locale_quotes(const char **left, const char **right)
{
#ifdef _WIN32
    int utf8 = 1;
#else
    int utf8 = !strcasecmp(nl_langinfo(CODESET), "UTF-8");
#endif
    *left = utf8 ? "\xe2\x80\x98" : "'";
    *right = utf8 ? "\xe2\x80\x99" : "'";
}

/* quotearg's locale style: between the locale's quotes, a backslash before the closing
 * quote and before a backslash, and C escapes (\n, \t..., octal) for each byte of what is
 * not a printable character; nothing else is escaped (no shell quoting). */
static void lquote_into(struct qbuf *b, const char *s)
{
    const char *lq, *rq;
    locale_quotes(&lq, &rq);
    size_t rq_len = strlen(rq), left = strlen(s);
    mbstate_t mbs;
    memset(&mbs, 0, sizeof mbs);
    puts_(b, lq);
    while (left) {
        int printable;
        size_t n = next_char(s, left, &mbs, &printable);
        if (left >= rq_len && !memcmp(s, rq, rq_len))
            put(b, '\\');
        if (*s == '\\') {
            puts_(b, "\\\\");
        } else if (!printable) {
            for (size_t i = 0; i < n; i++)
                put_escape(b, (unsigned char)s[i]);
        } else {
            for (size_t i = 0; i < n; i++)
                put(b, s[i]);
        }
        s += n;
        left -= n;
    }
    puts_(b, rq);
}

/* A message names at most a few files: a ring of buffers per thread (messages come from
 * every scheduler), reused and kept in turn until afcp_q_release(). */
static _Thread_local struct qbuf ring[4];
static _Thread_local unsigned next;

void afcp_q_release(void)
{
    for (int i = 0; i < 4; i++) {
        free(ring[i].p);
        ring[i] = (struct qbuf){0};
    }
}

const char *afcp_q(const char *name)
{
    struct qbuf *b = &ring[next++ % 4];
    b->len = 0;
    quote_into(b, name);
    return b->p;
}

const char *afcp_lq(const char *arg)
{
    struct qbuf *b = &ring[next++ % 4];
    b->len = 0;
    lquote_into(b, arg);
    return b->p;
}
