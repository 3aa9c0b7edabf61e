/* The fuzzer's model of a file: what its bytes and size must be after the operations so
 * far. Sparse (4 KiB pages, sorted by index), so offsets past 4 GiB cost nothing. */
#ifndef FZ_MODEL_H
#define FZ_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FZ_PAGE 4096u

struct fz_page {
    uint64_t       idx;
    unsigned char *data; /* FZ_PAGE bytes */
};

struct fz_model {
    bool            exists;
    uint64_t        size;
    struct fz_page *pages; /* sorted by idx; bytes past size are zero */
    size_t          npages, cap;
};

void   fz_model_reset(struct fz_model *m);                 /* empty, keeps `exists` */
void   fz_model_write(struct fz_model *m, uint64_t off, const void *buf, size_t len);
/* Copies what a read of len bytes at off returns; returns the byte count (short at EOF). */
size_t fz_model_read(const struct fz_model *m, uint64_t off, void *buf, size_t len);
/* Reads model bytes without the EOF rule (zero past the end). */
void   fz_model_peek(const struct fz_model *m, uint64_t off, void *buf, size_t len);
/* Sets the size; bytes past a smaller size are dropped (they read as zero later). */
void   fz_model_truncate(struct fz_model *m, uint64_t size);
/* Compares the model with the file open on fd: size, every page the model holds, and every
 * data region the file system reports (SEEK_DATA) outside them must be zero. Returns NULL
 * or a message (static storage) describing the first difference. */
const char *fz_model_compare(const struct fz_model *m, int fd);

#endif
