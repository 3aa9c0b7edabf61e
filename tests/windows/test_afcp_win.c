/* afcp on Windows (tools/afcp/win_*.c), run as a program the way a user runs it, against
 * what xcopy /E /K and robocopy /E leave behind: the same tree byte for byte, read-only (and
 * hidden) attributes kept, paths longer than 260 characters, names in any script (the
 * operands too: the command line is UTF-16), and the temporary + rename safety: a copy that
 * fails, or that Ctrl+C ends, leaves no partial file under any name.
 *
 * Each test works in a fresh directory under %TEMP% (removed by .fini) and starts afcp.exe
 * (next to this program, or in tools\afcp\ below it) with that directory as its current
 * directory; its stdout and stderr go to files there, read back for the messages. */
#include "criterion/criterion.h"

#include <windows.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define T_AFCP(name, ...)                                                                     \
    Test(afcp_win, name, .init = setup, .fini = teardown, .timeout = 300, ##__VA_ARGS__)

enum { PATH_CAP = 32768 };
static wchar_t root[MAX_PATH + 64]; /* the test's directory (short: a current directory) */
static wchar_t lroot[MAX_PATH + 80]; /* the same as "\\?\" path */
static char   *out_text, *err_text;  /* what the last run printed (UTF-8) */

/* ------------------------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------------------------- */
/* "\\?\<root>\rel" in a malloc'd buffer (rel uses '\'). */
static wchar_t *P(const wchar_t *rel)
{
    wchar_t *p = malloc(PATH_CAP * sizeof *p);
    cr_assert_not_null(p);
    swprintf(p, PATH_CAP, L"%ls\\%ls", lroot, rel);
    return p;
}

static void mkdir_rel(const wchar_t *rel)
{
    wchar_t *p = P(rel);
    cr_assert(CreateDirectoryW(p, NULL), "CreateDirectoryW %ls: %lu", rel, GetLastError());
    free(p);
}

/* A file of `size` bytes whose content depends on seed and on every position. */
static void write_file(const wchar_t *rel, size_t size, unsigned seed)
{
    wchar_t *p = P(rel);
    HANDLE h = CreateFileW(p, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    cr_assert(h != INVALID_HANDLE_VALUE, "create %ls: %lu", rel, GetLastError());
    unsigned char *buf = malloc(size ? size : 1);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (unsigned char)x;
    }
    DWORD n = 0;
    cr_assert(WriteFile(h, buf, (DWORD)size, &n, NULL) && n == size);
    CloseHandle(h);
    free(buf);
    free(p);
}

/* The whole file (malloc'd), its size in *size; NULL when it cannot be read. */
static unsigned char *read_all(const wchar_t *path, size_t *size)
{
    HANDLE h = CreateFileW(path, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                           OPEN_EXISTING, 0, NULL);
    if (h == INVALID_HANDLE_VALUE)
        return NULL;
    LARGE_INTEGER sz;
    GetFileSizeEx(h, &sz);
    unsigned char *buf = malloc((size_t)sz.QuadPart + 1);
    DWORD n = 0;
    BOOL ok = ReadFile(h, buf, (DWORD)sz.QuadPart, &n, NULL);
    CloseHandle(h);
    if (!ok || n != (DWORD)sz.QuadPart) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *size = n;
    return buf;
}

static DWORD attrs_of(const wchar_t *rel)
{
    wchar_t *p = P(rel);
    DWORD a = GetFileAttributesW(p);
    free(p);
    return a;
}

static void set_attrs(const wchar_t *rel, DWORD a)
{
    wchar_t *p = P(rel);
    cr_assert(SetFileAttributesW(p, a), "SetFileAttributesW %ls: %lu", rel, GetLastError());
    free(p);
}

/* Sets the last write time of rel to January 1st of year. */
static void set_year(const wchar_t *rel, WORD year)
{
    wchar_t *p = P(rel);
    SYSTEMTIME y = {year, 1, 0, 1, 0, 0, 0, 0};
    FILETIME ft;
    cr_assert(SystemTimeToFileTime(&y, &ft));
    HANDLE h = CreateFileW(p, FILE_WRITE_ATTRIBUTES, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                           OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    cr_assert(h != INVALID_HANDLE_VALUE, "open %ls: %lu", rel, GetLastError());
    cr_assert(SetFileTime(h, NULL, NULL, &ft));
    CloseHandle(h);
    free(p);
}

/* The size of rel's content, -1 when it cannot be read. */
static long size_of(const wchar_t *rel)
{
    wchar_t *p = P(rel);
    size_t n = 0;
    unsigned char *b = read_all(p, &n);
    long r = b ? (long)n : -1;
    free(p);
    free(b);
    return r;
}

/* Removes a tree (read-only entries too). */
static void rm_tree(const wchar_t *path)
{
    wchar_t *pat = malloc(PATH_CAP * sizeof *pat), *sub = malloc(PATH_CAP * sizeof *sub);
    swprintf(pat, PATH_CAP, L"%ls\\*", path);
    WIN32_FIND_DATAW fd;
    HANDLE h = FindFirstFileW(pat, &fd);
    if (h != INVALID_HANDLE_VALUE) {
        do {
            if (!wcscmp(fd.cFileName, L".") || !wcscmp(fd.cFileName, L".."))
                continue;
            swprintf(sub, PATH_CAP, L"%ls\\%ls", path, fd.cFileName);
            SetFileAttributesW(sub, FILE_ATTRIBUTE_NORMAL);
            if ((fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) &&
                !(fd.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT))
                rm_tree(sub);
            else
                DeleteFileW(sub);
        } while (FindNextFileW(h, &fd));
        FindClose(h);
    }
    SetFileAttributesW(path, FILE_ATTRIBUTE_NORMAL);
    RemoveDirectoryW(path);
    free(pat);
    free(sub);
}

/* The trees a and b ("\\?\" paths) hold the same names, kinds, attributes (read-only,
 * hidden, system) and bytes. Returns how many files were compared. */
static unsigned same_tree(const wchar_t *a, const wchar_t *b)
{
    const DWORD keep = FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM |
                       FILE_ATTRIBUTE_DIRECTORY;
    wchar_t *pat = malloc(PATH_CAP * sizeof *pat), *sa = malloc(PATH_CAP * sizeof *sa),
            *sb = malloc(PATH_CAP * sizeof *sb);
    unsigned files = 0, na = 0, nb = 0;
    swprintf(pat, PATH_CAP, L"%ls\\*", a);
    WIN32_FIND_DATAW fd;
    HANDLE h = FindFirstFileW(pat, &fd);
    cr_assert(h != INVALID_HANDLE_VALUE, "cannot list %ls: %lu", a, GetLastError());
    do {
        if (!wcscmp(fd.cFileName, L".") || !wcscmp(fd.cFileName, L".."))
            continue;
        na++;
        swprintf(sa, PATH_CAP, L"%ls\\%ls", a, fd.cFileName);
        swprintf(sb, PATH_CAP, L"%ls\\%ls", b, fd.cFileName);
        DWORD ab = GetFileAttributesW(sb);
        cr_assert(ab != INVALID_FILE_ATTRIBUTES, "missing in the copy: %ls", sb);
        cr_assert_eq(ab & keep, fd.dwFileAttributes & keep, "attributes of %ls: %lx, not %lx",
                     sb, ab, fd.dwFileAttributes);
        if (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) {
            files += same_tree(sa, sb);
        } else {
            size_t la, lb;
            unsigned char *da = read_all(sa, &la), *db = read_all(sb, &lb);
            cr_assert(da && db, "cannot read %ls or %ls", sa, sb);
            cr_assert(la == lb && !memcmp(da, db, la), "%ls differs from its source", sb);
            free(da);
            free(db);
            files++;
        }
    } while (FindNextFileW(h, &fd));
    FindClose(h);
    swprintf(pat, PATH_CAP, L"%ls\\*", b);
    h = FindFirstFileW(pat, &fd);
    cr_assert(h != INVALID_HANDLE_VALUE);
    do {
        if (wcscmp(fd.cFileName, L".") && wcscmp(fd.cFileName, L".."))
            nb++;
        cr_assert(wcsncmp(fd.cFileName, L".afcp.", 6), "a temporary is left: %ls\\%ls", b,
                  fd.cFileName);
    } while (FindNextFileW(h, &fd));
    FindClose(h);
    cr_assert_eq(na, nb, "%ls has %u entries, its copy %u", a, na, nb);
    free(pat);
    free(sa);
    free(sb);
    return files;
}

/* Names starting with ".afcp." anywhere under path. */
static unsigned count_temps(const wchar_t *path)
{
    wchar_t *pat = malloc(PATH_CAP * sizeof *pat);
    swprintf(pat, PATH_CAP, L"%ls\\*", path);
    unsigned n = 0;
    WIN32_FIND_DATAW fd;
    HANDLE h = FindFirstFileW(pat, &fd);
    if (h != INVALID_HANDLE_VALUE) {
        do {
            if (!wcscmp(fd.cFileName, L".") || !wcscmp(fd.cFileName, L".."))
                continue;
            if (!wcsncmp(fd.cFileName, L".afcp.", 6))
                n++;
            if (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) {
                swprintf(pat, PATH_CAP, L"%ls\\%ls", path, fd.cFileName);
                n += count_temps(pat);
            }
        } while (FindNextFileW(h, &fd));
        FindClose(h);
    }
    free(pat);
    return n;
}

/* ------------------------------------------------------------------------------------------
 * Running afcp
 * ---------------------------------------------------------------------------------------- */
static int exists_w(const wchar_t *p)
{
    return GetFileAttributesW(p) != INVALID_FILE_ATTRIBUTES;
}

static void afcp_exe(wchar_t *out, size_t cap)
{
    wchar_t self[MAX_PATH];
    DWORD n = GetModuleFileNameW(NULL, self, MAX_PATH);
    cr_assert(n > 0 && n < MAX_PATH);
    wchar_t *slash = wcsrchr(self, L'\\');
    cr_assert_not_null(slash);
    *slash = 0;
    swprintf(out, cap, L"%ls\\afcp.exe", self);
    if (!exists_w(out))
        swprintf(out, cap, L"%ls\\tools\\afcp\\afcp.exe", self);
    cr_assert(exists_w(out), "afcp.exe not found next to the test program");
}

static char *slurp_utf8(const wchar_t *rel)
{
    wchar_t *p = P(rel);
    size_t n;
    char *s = (char *)read_all(p, &n);
    free(p);
    return s ? s : calloc(1, 1);
}

static HANDLE out_file(const wchar_t *rel)
{
    SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE}; /* inherited by afcp */
    wchar_t *p = P(rel);
    HANDLE h = CreateFileW(p, GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, &sa,
                           CREATE_ALWAYS, 0, NULL);
    free(p);
    cr_assert(h != INVALID_HANDLE_VALUE);
    return h;
}

/* Runs exe with args (a command-line tail, UTF-16) in the test's directory; returns its
 * exit code, its output in out_text and err_text. */
static DWORD run_exe(const wchar_t *exe, const wchar_t *args)
{
    size_t cap = wcslen(exe) + wcslen(args) + 8;
    wchar_t *cmd = malloc(cap * sizeof *cmd);
    swprintf(cmd, cap, L"\"%ls\" %ls", exe, args);
    HANDLE ho = out_file(L"afcp-out.txt"), he = out_file(L"afcp-err.txt");
    STARTUPINFOW si;
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    si.hStdOutput = ho;
    si.hStdError = he;
    PROCESS_INFORMATION pi;
    BOOL ok = CreateProcessW(exe, cmd, NULL, NULL, TRUE, 0, NULL, root, &si, &pi);
    cr_assert(ok, "CreateProcessW: %lu", GetLastError());
    WaitForSingleObject(pi.hProcess, INFINITE);
    DWORD code = 0;
    GetExitCodeProcess(pi.hProcess, &code);
    CloseHandle(pi.hProcess);
    CloseHandle(pi.hThread);
    CloseHandle(ho);
    CloseHandle(he);
    free(cmd);
    free(out_text);
    free(err_text);
    out_text = slurp_utf8(L"afcp-out.txt");
    err_text = slurp_utf8(L"afcp-err.txt");
    return code;
}

static DWORD run(const wchar_t *args)
{
    wchar_t exe[MAX_PATH + 32];
    afcp_exe(exe, sizeof exe / sizeof exe[0]);
    return run_exe(exe, args);
}

static void setup(void)
{
    wchar_t tmp[MAX_PATH + 1];
    DWORD n = GetTempPathW(MAX_PATH, tmp);
    cr_assert(n > 0 && n < MAX_PATH);
    static unsigned seq;
    for (;;) {
        swprintf(root, sizeof root / sizeof root[0], L"%lsafcp-win-%lu-%u", tmp,
                 GetCurrentProcessId(), seq++);
        if (CreateDirectoryW(root, NULL))
            break;
        cr_assert_eq(GetLastError(), (DWORD)ERROR_ALREADY_EXISTS);
    }
    swprintf(lroot, sizeof lroot / sizeof lroot[0], L"\\\\?\\%ls", root);
}

static void teardown(void)
{
    if (*lroot)
        rm_tree(lroot);
}

/* ------------------------------------------------------------------------------------------
 * Tests
 * ---------------------------------------------------------------------------------------- */
static void make_tree(void)
{
    mkdir_rel(L"src");
    mkdir_rel(L"src\\a");
    mkdir_rel(L"src\\a\\b");
    mkdir_rel(L"src\\a\\b\\c");
    mkdir_rel(L"src\\empty");
    static const size_t sizes[] = {0, 1, 4095, 4096, 65537, (3u << 20) + 7};
    wchar_t rel[64];
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        swprintf(rel, 64, L"src\\f%u", i);
        write_file(rel, sizes[i], i);
        swprintf(rel, 64, L"src\\a\\b\\c\\g%u", i);
        write_file(rel, sizes[i] / 3, i + 100);
    }
    write_file(L"src\\a\\x.txt", 100, 7);
}

/* A tree into a new directory, then into an existing one (as DIR\src). */
T_AFCP(tree)
{
    make_tree();
    DWORD code = run(L"-r -q --chunk-size=64K src dst");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *s = P(L"src"), *d = P(L"dst"), *dd = P(L"dst\\src");
    cr_assert_eq(same_tree(s, d), 13);
    code = run(L"-r -q --fsync src dst");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    cr_assert_eq(same_tree(s, dd), 13);
    /* Several operands into a directory; a directory without -r is refused. */
    mkdir_rel(L"many");
    code = run(L"-q src\\f5 src\\a\\x.txt many");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    code = run(L"-q src many2");
    cr_assert_eq(code, 1);
    cr_assert(strstr(err_text, "-r not specified; omitting directory 'src'"), "%s", err_text);
    /* -t DIR takes every operand as a source; -T copies onto DST itself, an existing
     * directory too (src's entries go into it, not into dst\src). */
    mkdir_rel(L"many3");
    code = run(L"-q -t many3 src\\f5 src\\a\\x.txt");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *m = P(L"many3\\x.txt");
    cr_assert(exists_w(m));
    free(m);
    code = run(L"-q -t nowhere src\\f5");
    cr_assert_eq(code, 1);
    cr_assert(strstr(err_text, "target directory 'nowhere'"), "%s", err_text);
    mkdir_rel(L"dst3");
    code = run(L"-r -q -T src dst3");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *d3 = P(L"dst3");
    cr_assert_eq(same_tree(s, d3), 13);
    free(d3);
    free(s);
    free(d);
    free(dd);
}

/* Read-only (and hidden) files keep the attribute, as xcopy /K and robocopy do; replacing a
 * read-only destination needs -f, and the refused copy leaves neither a partial file nor a
 * temporary. */
T_AFCP(readonly)
{
    mkdir_rel(L"src");
    write_file(L"src\\ro.txt", 5000, 1);
    write_file(L"src\\hidden.txt", 10, 2);
    mkdir_rel(L"src\\hdir");
    write_file(L"src\\hdir\\in.txt", 10, 4);
    set_attrs(L"src\\ro.txt", FILE_ATTRIBUTE_READONLY);
    set_attrs(L"src\\hidden.txt", FILE_ATTRIBUTE_HIDDEN);
    set_attrs(L"src\\hdir", FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_DIRECTORY);
    DWORD code = run(L"-r -q src dst");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *s = P(L"src"), *d = P(L"dst");
    cr_assert_eq(same_tree(s, d), 3);
    cr_assert(attrs_of(L"dst\\ro.txt") & FILE_ATTRIBUTE_READONLY);
    cr_assert(attrs_of(L"dst\\hidden.txt") & FILE_ATTRIBUTE_HIDDEN);

    /* The source changes; the read-only copy is not replaced without -f. */
    set_attrs(L"src\\ro.txt", FILE_ATTRIBUTE_NORMAL);
    write_file(L"src\\ro.txt", 7000, 3);
    set_attrs(L"src\\ro.txt", FILE_ATTRIBUTE_READONLY);
    code = run(L"-q src\\ro.txt dst\\ro.txt");
    cr_assert_eq(code, 1, "exit %lu", code);
    cr_assert(strstr(err_text, "cannot create regular file 'dst\\ro.txt'"), "%s", err_text);
    size_t n;
    wchar_t *dro = P(L"dst\\ro.txt");
    unsigned char *old = read_all(dro, &n);
    cr_assert(old && n == 5000, "the read-only destination changed");
    free(old);
    cr_assert_eq(count_temps(d), 0);
    /* -f replaces it, and the copy is read-only again. */
    code = run(L"-q -f src\\ro.txt dst\\ro.txt");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    cr_assert_eq(same_tree(s, d), 3);
    cr_assert(attrs_of(L"dst\\ro.txt") & FILE_ATTRIBUTE_READONLY);
    free(dro);
    free(s);
    free(d);
}

/* The same tree as the system's xcopy /E /I /K /H makes (every file, empty directories,
 * read-only and hidden attributes), and the same as its source. */
T_AFCP(same_as_xcopy)
{
    make_tree();
    mkdir_rel(L"src\\hdir");
    write_file(L"src\\hdir\\h\u00e9.txt", 3000, 20);
    write_file(L"src\\a\\ro.bin", 70000, 21);
    set_attrs(L"src\\a\\ro.bin", FILE_ATTRIBUTE_READONLY);
    set_attrs(L"src\\hdir\\h\u00e9.txt", FILE_ATTRIBUTE_HIDDEN);
    wchar_t xcopy[MAX_PATH + 16];
    UINT n = GetSystemDirectoryW(xcopy, MAX_PATH);
    cr_assert(n > 0 && n < MAX_PATH);
    wcscat(xcopy, L"\\xcopy.exe");
    cr_assert(exists_w(xcopy), "no xcopy.exe in the system directory");
    DWORD code = run_exe(xcopy, L"/E /I /K /H /Q src xc");
    cr_assert_eq(code, 0, "xcopy: exit %lu: %s", code, out_text);
    code = run(L"-r -q src ac");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *s = P(L"src"), *x = P(L"xc"), *a = P(L"ac");
    cr_assert_eq(same_tree(x, a), 15);
    cr_assert_eq(same_tree(s, a), 15);
    free(s);
    free(x);
    free(a);
}

/* A tree deeper than MAX_PATH (260), and names that only "\\?\" paths can reach (a
 * trailing dot or space, which the Win32 path parser strips): every name is a "\\?\" path
 * inside afcp. (Wine has no MAX_PATH limit; the trailing dot fails there too without the
 * prefix.) */
T_AFCP(long_paths)
{
    wchar_t rel[1024] = L"src";
    mkdir_rel(rel);
    for (int i = 0; i < 6; i++) {
        size_t l = wcslen(rel);
        swprintf(rel + l, 1024 - l, L"\\level%d_%ls", i,
                 L"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz");
        mkdir_rel(rel);
    }
    size_t l = wcslen(rel);
    swprintf(rel + l, 1024 - l, L"\\deep_file.bin");
    write_file(rel, 200000, 9);
    write_file(L"src\\trailing dot.", 10, 10);
    write_file(L"src\\trailing space ", 11, 11);
    DWORD code = run(L"-r -q src dst");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *s = P(L"src"), *d = P(L"dst");
    cr_assert_eq(same_tree(s, d), 3);
    wchar_t *deep = malloc(PATH_CAP * sizeof *deep);
    swprintf(deep, PATH_CAP, L"%ls\\dst%ls", lroot, rel + 3); /* "src\..." as "dst\..." */
    cr_assert_gt(wcslen(deep) - 4, 300, "the copy's path is only %zu long", wcslen(deep));
    cr_assert(exists_w(deep));
    free(deep);
    free(s);
    free(d);
}

/* Names in several scripts (one outside the BMP: a surrogate pair), in the tree and as
 * operands. */
T_AFCP(unicode_names)
{
    mkdir_rel(L"src-\u00e9t\u00e9");
    mkdir_rel(L"src-\u00e9t\u00e9\\\u0645\u0631\u062d\u0628\u0627");
    write_file(L"src-\u00e9t\u00e9\\h\u00e9llo w\u00f6rld.txt", 1234, 1);
    write_file(L"src-\u00e9t\u00e9\\\u65e5\u672c\u8a9e.txt", 4321, 2);
    write_file(L"src-\u00e9t\u00e9\\\u0645\u0631\u062d\u0628\u0627\\emoji \xd83d\xde00.bin",
               77777, 3);
    DWORD code = run(L"-r -q -v \"src-\u00e9t\u00e9\" \"dst-\u00fc\"");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *s = P(L"src-\u00e9t\u00e9"), *d = P(L"dst-\u00fc");
    cr_assert_eq(same_tree(s, d), 3);
    /* -v prints the names as UTF-8. */
    cr_assert(strstr(out_text, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e.txt"), "%s", out_text);
    /* One file, named on the command line. */
    code = run(L"-q \"src-\u00e9t\u00e9\\\u65e5\u672c\u8a9e.txt\" \u00fc.txt");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *f = P(L"\u00fc.txt");
    size_t n;
    unsigned char *b = read_all(f, &n);
    cr_assert(b && n == 4321);
    free(b);
    free(f);
    free(s);
    free(d);
}

/* A read that fails half-way through a file: the copy is reported, and neither the
 * destination name nor a temporary is left. On Windows a range locked by another process
 * fails the read; wine does not enforce byte-range locks, so the test hook
 * AFCP_TEST_FAIL_READ fails the third chunk read as well. */
T_AFCP(failed_copy_leaves_nothing)
{
    mkdir_rel(L"src");
    mkdir_rel(L"dst");
    write_file(L"src\\big", 4u << 20, 5);
    write_file(L"src\\ok", 1000, 6);
    wchar_t *big = P(L"src\\big");
    HANDLE h = CreateFileW(big, GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                           NULL, OPEN_EXISTING, 0, NULL);
    cr_assert(h != INVALID_HANDLE_VALUE);
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    ov.Offset = 3u << 20;
    cr_assert(LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1u << 20,
                         0, &ov));
    SetEnvironmentVariableW(L"AFCP_TEST_FAIL_READ", L"3");
    DWORD code = run(L"-r -q -j 1 --chunk-size=1M --chunk-jobs=1 src\\big src\\ok dst");
    SetEnvironmentVariableW(L"AFCP_TEST_FAIL_READ", NULL);
    UnlockFileEx(h, 0, 1u << 20, 0, &ov);
    CloseHandle(h);
    cr_assert_eq(code, 1, "exit %lu: %s", code, err_text);
    cr_assert(strstr(err_text, "error reading 'src\\big'"), "%s", err_text);
    wchar_t *d = P(L"dst"), *dbig = P(L"dst\\big"), *dok = P(L"dst\\ok");
    cr_assert_not(exists_w(dbig), "a partial copy is left under its name");
    cr_assert(exists_w(dok), "the other file was not copied");
    cr_assert_eq(count_temps(d), 0, "a temporary is left");
    free(big);
    free(d);
    free(dbig);
    free(dok);
}

/* Ctrl+C (delivered by the test hook when the 6th temporary has just been created, on a
 * thread of its own as the console delivers it): afcp ends as Ctrl+C ends a program, every
 * temporary is gone and each name in the copy holds a whole file. */
T_AFCP(ctrl_c_leaves_no_partial_file)
{
    mkdir_rel(L"src");
    wchar_t rel[32];
    for (unsigned i = 0; i < 40; i++) {
        swprintf(rel, 32, L"src\\f%02u", i);
        write_file(rel, 300000 + i, i);
    }
    SetEnvironmentVariableW(L"AFCP_TEST_CTRL", L"6");
    DWORD code = run(L"-r -q -j 4 --chunk-size=64K src dst");
    SetEnvironmentVariableW(L"AFCP_TEST_CTRL", NULL);
    cr_assert_eq(code, (DWORD)STATUS_CONTROL_C_EXIT, "exit %lx: %s", code, err_text);
    wchar_t *d = P(L"dst"), *s = malloc(PATH_CAP * sizeof *s), *c = malloc(PATH_CAP * 2);
    cr_assert_eq(count_temps(d), 0, "a temporary is left");
    unsigned copied = 0;
    for (unsigned i = 0; i < 40; i++) {
        swprintf(s, PATH_CAP, L"%ls\\src\\f%02u", lroot, i);
        swprintf(c, PATH_CAP, L"%ls\\dst\\f%02u", lroot, i);
        size_t la, lb;
        unsigned char *b = read_all(c, &lb);
        if (!b)
            continue;
        unsigned char *a = read_all(s, &la);
        cr_assert(a && la == lb && !memcmp(a, b, la), "f%02u is partial", i);
        copied++;
        free(a);
        free(b);
    }
    cr_assert_lt(copied, 40, "the copy was not interrupted");
    free(d);
    free(s);
    free(c);
}

/* -p keeps the times (of files, and of directories with -r); without it the copy is new. -n
 * keeps what is there; -u copies only a newer source. */
T_AFCP(times_noclobber_update)
{
    mkdir_rel(L"src");
    write_file(L"src\\f", 100, 1);
    wchar_t *f = P(L"src\\f");
    HANDLE h = CreateFileW(f, FILE_WRITE_ATTRIBUTES, 0, NULL, OPEN_EXISTING, 0, NULL);
    SYSTEMTIME y2001 = {2001, 2, 0, 3, 4, 5, 6, 0};
    FILETIME old;
    SystemTimeToFileTime(&y2001, &old);
    cr_assert(SetFileTime(h, NULL, NULL, &old));
    CloseHandle(h);
    DWORD code = run(L"-q -p src\\f kept");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    code = run(L"-q src\\f fresh");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    WIN32_FILE_ATTRIBUTE_DATA a, b;
    wchar_t *k = P(L"kept"), *n = P(L"fresh");
    cr_assert(GetFileAttributesExW(k, GetFileExInfoStandard, &a));
    cr_assert(GetFileAttributesExW(n, GetFileExInfoStandard, &b));
    cr_assert_eq(CompareFileTime(&a.ftLastWriteTime, &old), 0, "-p did not keep the time");
    cr_assert_gt(CompareFileTime(&b.ftLastWriteTime, &old), 0);

    write_file(L"other", 50, 2);
    code = run(L"-q -n src\\f other");
    cr_assert_eq(code, 0);
    wchar_t *o = P(L"other");
    size_t len;
    unsigned char *d = read_all(o, &len);
    cr_assert(d && len == 50, "-n replaced the file");
    free(d);
    /* -u: "other" is newer than the 2001 source: it stays; "kept" is as old: it stays. */
    code = run(L"-q -u src\\f other");
    cr_assert_eq(code, 0);
    d = read_all(o, &len);
    cr_assert(d && len == 50, "-u replaced a newer file");
    free(d);
    /* ... and replaces an older one. */
    SYSTEMTIME y2000 = {2000, 1, 0, 1, 0, 0, 0, 0};
    FILETIME older;
    SystemTimeToFileTime(&y2000, &older);
    h = CreateFileW(o, FILE_WRITE_ATTRIBUTES, 0, NULL, OPEN_EXISTING, 0, NULL);
    cr_assert(SetFileTime(h, NULL, NULL, &older));
    CloseHandle(h);
    code = run(L"-q -u src\\f other");
    cr_assert_eq(code, 0);
    d = read_all(o, &len);
    cr_assert(d && len == 100, "-u left an older file");
    free(d);
    free(o);
    /* A directory in the way: -n and -u (the directory is newer) leave it silently, as cp
     * does; without them it is cp's error. */
    mkdir_rel(L"into");
    mkdir_rel(L"into\\f");
    code = run(L"-q -n src\\f into");
    cr_assert_eq(code, 0, "-n, a directory in the way: exit %lu: %s", code, err_text);
    code = run(L"-q -u src\\f into");
    cr_assert_eq(code, 0, "-u, a newer directory in the way: exit %lu: %s", code, err_text);
    code = run(L"-q src\\f into");
    cr_assert_eq(code, 1, "a directory in the way: exit %lu", code);
    cr_assert(strstr(err_text, "cannot overwrite directory"), "%s", err_text);

    /* -r -p: the directories keep their times too (set once their entries are in). */
    wchar_t *sd = P(L"src"), *td = P(L"tree");
    h = CreateFileW(sd, FILE_WRITE_ATTRIBUTES, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                    OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    cr_assert(h != INVALID_HANDLE_VALUE);
    cr_assert(SetFileTime(h, NULL, NULL, &old));
    CloseHandle(h);
    code = run(L"-q -r -p src tree");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    cr_assert(GetFileAttributesExW(td, GetFileExInfoStandard, &a));
    cr_assert_eq(CompareFileTime(&a.ftLastWriteTime, &old), 0,
                 "-p did not keep a directory's time");
    free(sd);
    free(td);
    free(k);
    free(n);
    free(f);
}

/* --help lists only what works on Windows; the POSIX-only options are refused by name. */
T_AFCP(options)
{
    DWORD code = run(L"--help");
    cr_assert_eq(code, 0);
    cr_assert(strstr(out_text, "--recursive"));
    static const char *const posix_only[] = {"--reflink", "--direct", "--inplace", "--sparse",
                                             "--dereference", "--one-file-system", "xattr",
                                             "--interactive"};
    for (unsigned i = 0; i < sizeof posix_only / sizeof posix_only[0]; i++)
        cr_assert_null(strstr(out_text, posix_only[i]), "--help offers %s", posix_only[i]);
    static const wchar_t *const refused[] = {L"--reflink", L"--direct", L"--inplace",
                                             L"--sparse=never", L"-L", L"-x", L"-i",
                                             L"--preserve=xattr", L"--preserve=ownership",
                                             L"--threads=2"};
    write_file(L"f", 1, 1);
    for (unsigned i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        wchar_t args[64];
        swprintf(args, 64, L"%ls f g", refused[i]);
        code = run(args);
        cr_assert_eq(code, 1, "%ls was taken", refused[i]);
        cr_assert(strstr(err_text, "is not supported on Windows"), "%ls: %s", refused[i],
                  err_text);
        wchar_t *g = P(L"g");
        cr_assert_not(exists_w(g));
        free(g);
    }
}

/* -a (--preserve=mode) gives a directory that exists already the source's attributes, also
 * when the source has none: a hidden, read-only destination directory loses both. */
T_AFCP(preserve_mode_existing_dir)
{
    mkdir_rel(L"P");
    write_file(L"P\\f", 10, 1);
    mkdir_rel(L"PD");
    mkdir_rel(L"PD\\P");
    set_attrs(L"PD\\P", FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_READONLY);
    DWORD code = run(L"-a -q P PD");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    DWORD a = attrs_of(L"PD\\P");
    cr_assert_eq(a & (FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_READONLY), 0,
                 "the existing directory kept attributes its source lacks: %lx", a);
    cr_assert(a & FILE_ATTRIBUTE_DIRECTORY);
}

/* --no-preserve=mode: copies get the attributes new files and directories get, as cp gives
 * them the default modes: a read-only file gives a writable copy, a hidden directory a
 * visible one. */
T_AFCP(no_preserve_mode)
{
    write_file(L"ro", 10, 1);
    set_attrs(L"ro", FILE_ATTRIBUTE_READONLY);
    DWORD code = run(L"-q --no-preserve=mode ro ro2");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    cr_assert_eq(attrs_of(L"ro2") & FILE_ATTRIBUTE_READONLY, 0, "the copy is read-only");
    mkdir_rel(L"hd");
    write_file(L"hd\\f", 10, 2);
    set_attrs(L"hd\\f", FILE_ATTRIBUTE_HIDDEN);
    set_attrs(L"hd", FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_HIDDEN);
    code = run(L"-r -q --no-preserve=mode hd hd2");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    cr_assert_eq(attrs_of(L"hd2") & FILE_ATTRIBUTE_HIDDEN, 0, "the directory is hidden");
    cr_assert_eq(attrs_of(L"hd2\\f") & FILE_ATTRIBUTE_HIDDEN, 0, "the file is hidden");
    /* -p after it keeps them again (the last word wins, as in cp). */
    code = run(L"-q --no-preserve=mode -p ro ro3");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    cr_assert(attrs_of(L"ro3") & FILE_ATTRIBUTE_READONLY, "-p did not keep read-only");
}

/* A directory copied onto itself: "-r S ." names S itself as the copy; cp's one message,
 * before anything in it is looked at. */
T_AFCP(onto_itself)
{
    mkdir_rel(L"S");
    mkdir_rel(L"S\\sub");
    write_file(L"S\\sub\\f", 100, 1);
    DWORD code = run(L"-r -q S .");
    cr_assert_eq(code, 1, "exit %lu: %s", code, err_text);
    cr_assert(strstr(err_text, "'S' and '.\\S' are the same file"), "%s", err_text);
    cr_assert_null(strstr(err_text, "sub"), "its files were looked at: %s", err_text);
}

/* A drive's root copied into a directory on it (the root's path ends in its separator, so
 * the copy's name does not show it is inside), and the same root reached through another
 * name. A drive letter mapped onto a scratch directory takes what wine cannot make from
 * inside (its DefineDosDevice has no effect on paths): AFCP_TEST_DRIVE names it ("V:", an
 * empty directory as its root; with wine, a link in $WINEPREFIX/dosdevices), and
 * AFCP_TEST_DRIVE_ALIAS optionally another name of that root ("Z:\tmp\vroot"); without
 * them the test is skipped. */
T_AFCP(drive_root_into_itself)
{
    DWORD code;
    wchar_t drive[8], alias[MAX_PATH], args[MAX_PATH + 64], path[MAX_PATH + 16];
    DWORD n = GetEnvironmentVariableW(L"AFCP_TEST_DRIVE", drive, 8);
    if (n != 2 || drive[1] != L':')
        cr_skip_test("AFCP_TEST_DRIVE (a drive letter mapped onto a scratch directory) is not "
                     "set: a drive's root into itself is not tested");
    swprintf(path, MAX_PATH + 16, L"%ls\\d", drive);
    rm_tree(path);
    cr_assert(CreateDirectoryW(path, NULL), "%ls: %lu", path, GetLastError());
    swprintf(path, MAX_PATH + 16, L"%ls\\d\\f", drive);
    HANDLE h = CreateFileW(path, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    cr_assert(h != INVALID_HANDLE_VALUE);
    CloseHandle(h);
    swprintf(args, MAX_PATH + 64, L"-r -q %ls\\ %ls\\copy", drive, drive);
    code = run(args);
    swprintf(path, MAX_PATH + 16, L"%ls\\copy", drive);
    int made = exists_w(path);
    rm_tree(path);
    cr_assert_eq(code, 1, "exit %lu: %s", code, err_text);
    char want[64];
    snprintf(want, sizeof want, "into itself, '%c:\\copy'", (char)drive[0]);
    cr_assert(strstr(err_text, want), "%s", err_text);
    cr_assert_not(made, "the root was copied into itself");
    n = GetEnvironmentVariableW(L"AFCP_TEST_DRIVE_ALIAS", alias, MAX_PATH);
    if (n > 0 && n < MAX_PATH) {
        swprintf(args, MAX_PATH + 64, L"-r -q \"%ls\" %ls\\copy", alias, drive);
        code = run(args);
        made = exists_w(path);
        rm_tree(path);
        cr_assert_eq(code, 1, "exit %lu: %s", code, err_text);
        cr_assert(strstr(err_text, want), "%s", err_text);
        cr_assert_not(made, "the directory was copied into itself through another name");
    }
    swprintf(path, MAX_PATH + 16, L"%ls\\d", drive);
    rm_tree(path);
}

/* How an operand is written counts, as for cp, although its full path drops a trailing
 * separator or "\.": "DST\" names a directory, so an existing file is not replaced and no
 * file is made under that name; "SRC\" and "SRC\." of a file, and a path through a file,
 * are not directories ("Not a directory", not "No such file"). */
T_AFCP(trailing_separator)
{
    write_file(L"f", 10, 1);
    write_file(L"existing", 20, 2);
    static const struct {
        const wchar_t *args;
        const char    *err;
    } cases[] = {
        {L"-q f existing\\", "cannot stat 'existing\\': Not a directory"},
        {L"-q f existing\\.", "cannot stat 'existing\\.': Not a directory"},
        {L"-q f existing/", "cannot stat 'existing/': Not a directory"},
        {L"-q f newname/", "cannot create regular file 'newname/': Not a directory"},
        {L"-q f newname\\", "cannot create regular file 'newname\\': Not a directory"},
        {L"-q f newname\\.", "cannot create regular file 'newname\\.': No such file or directory"},
        {L"-q f\\ g", "cannot stat 'f\\': Not a directory"},
        {L"-q f\\. g", "cannot stat 'f\\.': Not a directory"},
        {L"-q f\\x g", "cannot stat 'f\\x': Not a directory"},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        DWORD code = run(cases[i].args);
        cr_assert_eq(code, 1, "%ls: exit %lu: %s", cases[i].args, code, err_text);
        cr_assert(strstr(err_text, cases[i].err), "%ls: %s", cases[i].args, err_text);
    }
    size_t n;
    wchar_t *e = P(L"existing"), *nn = P(L"newname"), *g = P(L"g");
    unsigned char *b = read_all(e, &n);
    cr_assert(b && n == 20, "the existing file was replaced");
    free(b);
    cr_assert_not(exists_w(nn), "a file was made for 'newname\\'");
    cr_assert_not(exists_w(g), "a file was copied from 'f\\'");
    /* A directory may be named so: "dir\" is made. */
    mkdir_rel(L"S");
    write_file(L"S\\one", 5, 3);
    DWORD code = run(L"-r -q S\\ newdir\\");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *one = P(L"newdir\\one");
    cr_assert(exists_w(one));
    free(one);
    free(e);
    free(nn);
    free(g);
}

/* "SRC\." (and "SRC\..") into a directory copies what is in SRC into the directory itself,
 * as cp copies "a/." into "dir/.", not into dir\SRC. */
T_AFCP(dot_operand)
{
    mkdir_rel(L"S");
    mkdir_rel(L"S\\sub");
    write_file(L"S\\one", 5, 1);
    write_file(L"S\\sub\\two", 6, 2);
    mkdir_rel(L"D");
    DWORD code = run(L"-r -q -v S\\. D");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *s = P(L"S"), *d = P(L"D"), *ds = P(L"D\\S");
    cr_assert_eq(same_tree(s, d), 2);
    cr_assert_not(exists_w(ds), "copied into D\\S");
    cr_assert(strstr(out_text, "'S\\.\\one' -> 'D\\.\\one'"), "%s", out_text);
    mkdir_rel(L"E");
    code = run(L"-r -q S\\sub\\.. E");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *e = P(L"E");
    cr_assert_eq(same_tree(s, e), 2);
    free(e);
    free(s);
    free(d);
    free(ds);
}

/* A drive-relative target ("C:", the current directory of drive C:) is shown as cp would
 * join it ("C:f"), where the copy goes; not as "C:\f", the drive's root. */
T_AFCP(drive_relative_target)
{
    cr_assert(root[1] == L':', "the test's directory is not on a drive: %ls", root);
    mkdir_rel(L"sub");
    write_file(L"sub\\f", 10, 1);
    wchar_t args[32];
    swprintf(args, 32, L"-v sub\\f %lc:", root[0]);
    DWORD code = run(args);
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    char want[32];
    snprintf(want, sizeof want, "'sub\\f' -> '%c:f'", (char)root[0]);
    cr_assert(strstr(out_text, want), "%s", out_text);
    wchar_t *f = P(L"f");
    cr_assert(exists_w(f), "not copied into the current directory");
    free(f);
}

/* cp's (and the POSIX afcp's) messages: a missing target of several operands, and an
 * operand through a file. */
T_AFCP(messages)
{
    write_file(L"f", 10, 1);
    DWORD code = run(L"-q f f nowhere");
    cr_assert_eq(code, 1);
    cr_assert(strstr(err_text, "target 'nowhere': No such file or directory"), "%s", err_text);
    code = run(L"-q f f f");
    cr_assert_eq(code, 1);
    cr_assert(strstr(err_text, "target 'f': Not a directory"), "%s", err_text);
    code = run(L"-q f/x y");
    cr_assert_eq(code, 1);
    cr_assert(strstr(err_text, "cannot stat 'f/x': Not a directory"), "%s", err_text);
}

/* Operands whose copies take one name, as cp judges them: a file where an earlier operand
 * put one is refused ("will not overwrite just-created"; names compare without case, as
 * NTFS compares them), the same file named twice is copied once (a warning), and two
 * directories are merged with the later one's files winning, as cp copies one operand after
 * the other (a large file of the first, copied in many chunks, would otherwise land last). */
T_AFCP(same_name_operands)
{
    mkdir_rel(L"A");
    mkdir_rel(L"B");
    mkdir_rel(L"O");
    write_file(L"A\\x", 10, 1);
    write_file(L"B\\x", 20, 2);
    DWORD code = run(L"-q A\\x B\\x O");
    cr_assert_eq(code, 1, "exit %lu: %s", code, err_text);
    cr_assert(strstr(err_text, "will not overwrite just-created 'O\\x' with 'B\\x'"), "%s",
              err_text);
    size_t n;
    wchar_t *ox = P(L"O\\x");
    unsigned char *b = read_all(ox, &n);
    cr_assert(b && n == 10, "O\\x is not A's");
    free(b);
    mkdir_rel(L"O2");
    code = run(L"-q A\\x B\\X O2");
    cr_assert_eq(code, 1, "exit %lu: %s", code, err_text);
    cr_assert(strstr(err_text, "will not overwrite just-created 'O2\\X' with 'B\\X'"), "%s",
              err_text);
    mkdir_rel(L"O3");
    code = run(L"-q A\\x A\\x O3");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    cr_assert(strstr(err_text, "warning: source file 'A\\x' specified more than once"), "%s",
              err_text);

    mkdir_rel(L"MA");
    mkdir_rel(L"MA\\d");
    mkdir_rel(L"MB");
    mkdir_rel(L"MB\\d");
    mkdir_rel(L"MO");
    write_file(L"MA\\d\\x", 8u << 20, 3);
    write_file(L"MB\\d\\x", 100, 4);
    code = run(L"-r -q --chunk-size=64K --chunk-jobs=1 MA\\d MB\\d MO");
    cr_assert_eq(code, 0, "exit %lu: %s", code, err_text);
    wchar_t *mo = P(L"MO\\d\\x");
    b = read_all(mo, &n);
    cr_assert(b && n == 100, "MO\\d\\x is not the later operand's (%zu bytes)", n);
    free(b);
    free(mo);
    free(ox);
}

/* A later operand of one name is judged by what is at its destination once the earlier
 * copies are done, as cp judges it: one the run made is left by -n, and by -u when it is as
 * new as the source, silently; an earlier operand that made nothing there (skipped by -u,
 * or failed) leaves the usual rules; only then are a directory against a non-directory and
 * "will not overwrite just-created" refused. */
T_AFCP(same_name_operands_judged)
{
    mkdir_rel(L"A");
    mkdir_rel(L"B");
    mkdir_rel(L"C");
    mkdir_rel(L"C\\x");
    write_file(L"A\\x", 10, 1);
    write_file(L"B\\x", 20, 2);
    set_year(L"A\\x", 2001);
    set_year(L"B\\x", 2010);

    /* -n: B\x is left, silently. */
    mkdir_rel(L"O");
    DWORD code = run(L"-q -n A\\x B\\x O");
    cr_assert_eq(code, 0, "-n: exit %lu: %s", code, err_text);
    cr_assert_eq(err_text[0], 0, "-n: %s", err_text);
    cr_assert_eq(size_of(L"O\\x"), 10, "-n: O\\x is not A's");

    /* -u: A\x is older than O2\x (left), B\x newer: it replaces O2\x. */
    mkdir_rel(L"O2");
    write_file(L"O2\\x", 30, 3);
    set_year(L"O2\\x", 2005);
    code = run(L"-q -u A\\x B\\x O2");
    cr_assert_eq(code, 0, "-u: exit %lu: %s", code, err_text);
    cr_assert_eq(err_text[0], 0, "-u: %s", err_text);
    cr_assert_eq(size_of(L"O2\\x"), 20, "-u: O2\\x is not B's");

    /* -u over the copy just made (as new as now, B\x is from 2010): left, silently. */
    mkdir_rel(L"O3");
    code = run(L"-q -u A\\x B\\x O3");
    cr_assert_eq(code, 0, "-u, just made: exit %lu: %s", code, err_text);
    cr_assert_eq(err_text[0], 0, "-u, just made: %s", err_text);
    cr_assert_eq(size_of(L"O3\\x"), 10, "-u, just made: O3\\x is not A's");

    /* The earlier operand is its own destination (it fails): the later one is copied. */
    mkdir_rel(L"O4");
    write_file(L"O4\\x", 40, 4);
    code = run(L"-q O4\\x B\\x O4");
    cr_assert_eq(code, 1, "same file: exit %lu: %s", code, err_text);
    cr_assert(strstr(err_text, "'O4\\x' and 'O4\\x' are the same file"), "%s", err_text);
    cr_assert(!strstr(err_text, "just-created"), "%s", err_text);
    cr_assert_eq(size_of(L"O4\\x"), 20, "same file: O4\\x is not B's");

    /* Without -n and -u a copy this run made is not replaced. */
    mkdir_rel(L"O5");
    code = run(L"-q B\\x A\\X O5");
    cr_assert_eq(code, 1, "exit %lu: %s", code, err_text);
    cr_assert(strstr(err_text, "will not overwrite just-created 'O5\\X' with 'A\\X'"), "%s",
              err_text);
    cr_assert_eq(size_of(L"O5\\x"), 20, "O5\\x is not B's");
    /* ... nor by a directory, in cp's words. */
    mkdir_rel(L"O6");
    code = run(L"-q -r A\\x C\\x O6");
    cr_assert_eq(code, 1, "exit %lu: %s", code, err_text);
    cr_assert(strstr(err_text, "cannot overwrite non-directory 'O6\\x' with directory 'C\\x'"),
              "%s", err_text);
    cr_assert_eq(size_of(L"O6\\x"), 10, "O6\\x is not A's");
}
