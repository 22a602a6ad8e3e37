// SPDX-License-Identifier: MIT
#include "wipe.h"

#include <string.h>

/* The same growth as buf_reserve(), without realloc. */
void wipebuf_reserve(struct buf *b, size_t extra)
{
	size_t cap = buf_grown_cap(b->cap, b->len, extra);
	char *grown;

	if (cap == b->cap)
		return;
	grown = xmalloc(cap);
	if (b->data) {
		memcpy(grown, b->data, b->len + 1);
		explicit_bzero(b->data, b->cap);
		free(b->data);
	}
	b->data = grown;
	b->cap = cap;
	b->data[b->len] = '\0';
}

void wipebuf_add(struct buf *b, const void *data, size_t len)
{
	wipebuf_write_at(b, b->len, data, len);
}

/* Room first: buf_write_at() and buf_truncate() then find it and never
 * reach realloc(). */
void wipebuf_write_at(struct buf *b, size_t off, const void *data, size_t len)
{
	if (off + len > b->len)
		wipebuf_reserve(b, off + len - b->len);
	buf_write_at(b, off, data, len);
}

void wipebuf_truncate(struct buf *b, size_t len)
{
	if (len > b->len)
		wipebuf_reserve(b, len - b->len);
	else if (b->data)
		explicit_bzero(b->data + len, b->len - len);
	buf_truncate(b, len);
}

void wipebuf_free(struct buf *b)
{
	if (b->data)
		explicit_bzero(b->data, b->cap);
	buf_free(b);
}
