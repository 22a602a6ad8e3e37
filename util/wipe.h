/* SPDX-License-Identifier: MIT */
/*
 * Buffers for bytes that must not outlive their use: secret values, and
 * whatever may become one (an open secret's edit buffer, an editor's
 * temporary file renamed over a secret). realloc() would leave the old
 * block's copy in the free heap for the next allocation to read; these
 * grow by allocate, copy, wipe, free, and wipe all of their capacity
 * when freed or cut short. The struct is the ordinary struct buf, so the
 * readers of util/buf.h (buf_str) still apply; only growth, truncation
 * and freeing must go through here.
 */
#ifndef INFRAFS_UTIL_WIPE_H
#define INFRAFS_UTIL_WIPE_H

#include "buf.h"

void wipebuf_reserve(struct buf *b, size_t extra);
void wipebuf_add(struct buf *b, const void *data, size_t len);
/* Writes data at offset, growing (zero-filled) as needed. */
void wipebuf_write_at(struct buf *b, size_t off, const void *data, size_t len);
/* Sets the length; bytes cut off are wiped, new ones are zero. */
void wipebuf_truncate(struct buf *b, size_t len);
void wipebuf_free(struct buf *b);

static inline void wipebuf_cleanup(struct buf *b)
{
	wipebuf_free(b);
}
#define WIPEBUF_AUTO __attribute__((cleanup(wipebuf_cleanup))) struct buf

#endif
