/* SPDX-License-Identifier: MIT */
/*
 * An open-addressing hash map from byte-string keys to pointers. The map
 * does not own keys or values: a key must stay valid while its entry is in
 * the map, so callers point it into the value they store (a node's key, a
 * resource's name). Deletion shifts entries back, so there are no
 * tombstones and lookups stay short after churn.
 */
#ifndef INFRAFS_UTIL_MAP_H
#define INFRAFS_UTIL_MAP_H

#include <stddef.h>
#include <stdint.h>

struct map_slot {
	uint64_t hash; /* 0 marks an empty slot */
	const void *key;
	size_t klen;
	void *value;
};

struct map {
	struct map_slot *slots;
	size_t cap; /* power of two, or 0 */
	size_t count;
};

uint64_t map_hash(const void *key, size_t klen);
void *map_get(const struct map *m, const void *key, size_t klen);
/* Inserts or replaces; returns the value replaced, or NULL. */
void *map_put(struct map *m, const void *key, size_t klen, void *value);
void *map_del(struct map *m, const void *key, size_t klen);
void map_free(struct map *m);

/* Iteration: for (size_t i = 0; map_next(m, &i, &v);) visits every value. */
int map_next(const struct map *m, size_t *pos, void **value);

static inline void *map_get_u64(const struct map *m, const uint64_t *key)
{
	return map_get(m, key, sizeof(*key));
}

#endif
