// SPDX-License-Identifier: MIT
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		abort();
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		abort();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		abort();
	return p;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

size_t buf_grown_cap(size_t cap, size_t len, size_t extra)
{
	size_t need;

	if (extra > SIZE_MAX - 1 - len)
		abort();
	need = len + extra + 1;
	if (need <= cap)
		return cap;
	if (!cap)
		cap = 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	return cap;
}

void buf_reserve(struct buf *b, size_t extra)
{
	size_t cap = buf_grown_cap(b->cap, b->len, extra);

	if (cap == b->cap)
		return;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void buf_add(struct buf *b, const void *data, size_t len)
{
	buf_reserve(b, len);
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void buf_addc(struct buf *b, char c)
{
	buf_add(b, &c, 1);
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list again;
	int n;

	va_copy(again, ap);
	n = vsnprintf(NULL, 0, fmt, again);
	va_end(again);
	if (n < 0)
		return;
	buf_reserve(b, (size_t)n);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(b, fmt, ap);
	va_end(ap);
}

void buf_write_at(struct buf *b, size_t off, const void *data, size_t len)
{
	size_t end = off + len;

	if (end > b->len) {
		buf_reserve(b, end - b->len);
		if (off > b->len)
			memset(b->data + b->len, 0, off - b->len);
		b->len = end;
		b->data[end] = '\0';
	}
	if (len)
		memcpy(b->data + off, data, len);
}

void buf_truncate(struct buf *b, size_t len)
{
	if (len > b->len) {
		buf_reserve(b, len - b->len);
		memset(b->data + b->len, 0, len - b->len);
	}
	b->len = len;
	if (b->data)
		b->data[len] = '\0';
}

char *buf_steal(struct buf *b)
{
	char *p = b->data ? b->data : xstrdup("");

	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

const char *buf_str(const struct buf *b)
{
	return b->data ? b->data : "";
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
