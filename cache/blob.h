/* SPDX-License-Identifier: MIT */
/*
 * Rendered file contents. A blob is immutable once made and shared by
 * reference: every open of a generated file takes a reference to the
 * current blob (its snapshot, as lxcfs does per open) and serves offsets
 * from it, so a reader never sees half of one version and half of another.
 * The render cache keeps the newest blob of each file with the generation
 * of the state it was made from, so an unchanged file is never rendered
 * twice.
 */
#ifndef INFRAFS_CACHE_BLOB_H
#define INFRAFS_CACHE_BLOB_H

#include "util/map.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct blob {
	atomic_uint refs;
	uint64_t gen;
	size_t len;
	char data[];
};

struct blob *blob_new(const char *data, size_t len, uint64_t gen);
struct blob *blob_ref(struct blob *b);
void blob_unref(struct blob *b);

/* lock guards everything here but the counters, which metrics read
 * without it; what leaves it is a blob reference. */
struct render_cache {
	pthread_mutex_t lock;
	struct map entries; /* key bytes -> struct render_entry */
	size_t bytes, max_bytes; /* what the cached blobs hold, and the cap */
	size_t evict_pos; /* where the next eviction scan starts */
	atomic_uint_least64_t hits, misses;
};

/* Keeps at most max_bytes of rendered content. */
void render_cache_init(struct render_cache *c, size_t max_bytes);
void render_cache_destroy(struct render_cache *c);
/* A new reference to the cached blob if it was made at gen, else NULL. */
struct blob *render_cache_get(struct render_cache *c, const void *key,
			      size_t klen, uint64_t gen);
void render_cache_put(struct render_cache *c, const void *key, size_t klen,
		      struct blob *b);
void render_cache_drop(struct render_cache *c, const void *key, size_t klen);

#endif
