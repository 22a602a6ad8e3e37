/* SPDX-License-Identifier: MIT */
/*
 * A growable byte buffer. Rendering and parsing build text in these; the
 * owner frees it with buf_free(). Allocation failure aborts: a daemon that
 * cannot allocate a few kilobytes has nothing better to do.
 */
#ifndef INFRAFS_UTIL_BUF_H
#define INFRAFS_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

struct buf {
	char *data; /* always NUL-terminated when len > 0 or cap > 0 */
	size_t len;
	size_t cap;
};

#define BUF_INIT           \
	{                  \
		NULL, 0, 0 \
	}

void buf_reserve(struct buf *b, size_t extra);
/* The capacity a buffer of cap bytes holding len needs for extra more and
 * a NUL: cap itself when it has room, else doubled until it does. A size
 * no allocation could hold aborts, as a failed allocation does: callers
 * bound what users ask for long before that. */
size_t buf_grown_cap(size_t cap, size_t len, size_t extra);
void buf_add(struct buf *b, const void *data, size_t len);
void buf_adds(struct buf *b, const char *s);
void buf_addc(struct buf *b, char c);
__attribute__((format(printf, 2, 3))) void buf_printf(struct buf *b,
						      const char *fmt, ...);
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Writes data at offset, growing (zero-filled) as needed. */
void buf_write_at(struct buf *b, size_t off, const void *data, size_t len);
void buf_truncate(struct buf *b, size_t len);
/* Hands the bytes to the caller (NUL-terminated, never NULL). */
char *buf_steal(struct buf *b);
const char *buf_str(const struct buf *b);
void buf_free(struct buf *b);

static inline void buf_cleanup(struct buf *b)
{
	buf_free(b);
}
#define BUF_AUTO __attribute__((cleanup(buf_cleanup))) struct buf

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

static inline void free_cleanup(void *p)
{
	free(*(void **)p);
}
#define AUTOFREE __attribute__((cleanup(free_cleanup)))

#endif
