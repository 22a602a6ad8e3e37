// SPDX-License-Identifier: MIT
#include "map.h"

#include "buf.h"

#include <string.h>

static inline uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/*
 * A word at a time: node keys are 88 bytes, hashed on every lookup of a
 * listing, so a byte-wise hash showed at the top of profiles. The final
 * splitmix64 step spreads small integer keys over the table.
 */
uint64_t map_hash(const void *key, size_t klen)
{
	const unsigned char *p = key;
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ klen;
	uint64_t w;

	for (; klen >= 8; p += 8, klen -= 8) {
		memcpy(&w, p, 8);
		h ^= w * 0xbf58476d1ce4e5b9ULL;
		h = rotl64(h, 31) * 0x94d049bb133111ebULL;
	}
	if (klen) {
		w = 0;
		memcpy(&w, p, klen);
		h ^= w * 0xbf58476d1ce4e5b9ULL;
		h = rotl64(h, 31) * 0x94d049bb133111ebULL;
	}
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	return h ? h : 1;
}

static size_t slot_of(const struct map *m, uint64_t hash, const void *key,
		      size_t klen, int *found)
{
	size_t mask = m->cap - 1;
	size_t i = hash & mask;

	for (;;) {
		const struct map_slot *s = &m->slots[i];

		if (!s->hash) {
			*found = 0;
			return i;
		}
		if (s->hash == hash && s->klen == klen &&
		    memcmp(s->key, key, klen) == 0) {
			*found = 1;
			return i;
		}
		i = (i + 1) & mask;
	}
}

void *map_get(const struct map *m, const void *key, size_t klen)
{
	int found;
	size_t i;

	if (!m->cap)
		return NULL;
	i = slot_of(m, map_hash(key, klen), key, klen, &found);
	return found ? m->slots[i].value : NULL;
}

static void grow(struct map *m)
{
	struct map_slot *old = m->slots;
	size_t oldcap = m->cap;

	m->cap = oldcap ? oldcap * 2 : 16;
	m->slots = xcalloc(m->cap, sizeof(*m->slots));
	for (size_t i = 0; i < oldcap; i++) {
		int found;
		size_t j;

		if (!old[i].hash)
			continue;
		j = slot_of(m, old[i].hash, old[i].key, old[i].klen, &found);
		m->slots[j] = old[i];
	}
	free(old);
}

void *map_put(struct map *m, const void *key, size_t klen, void *value)
{
	uint64_t hash = map_hash(key, klen);
	int found;
	size_t i;
	void *prev;

	if ((m->count + 1) * 4 > m->cap * 3)
		grow(m);
	i = slot_of(m, hash, key, klen, &found);
	prev = found ? m->slots[i].value : NULL;
	m->slots[i] = (struct map_slot){ hash, key, klen, value };
	if (!found)
		m->count++;
	return prev;
}

void *map_del(struct map *m, const void *key, size_t klen)
{
	size_t mask = m->cap - 1;
	int found;
	size_t i, j;
	void *value;

	if (!m->cap)
		return NULL;
	i = slot_of(m, map_hash(key, klen), key, klen, &found);
	if (!found)
		return NULL;
	value = m->slots[i].value;
	/* Backward-shift: pull later entries of the probe run into the hole. */
	j = i;
	for (;;) {
		size_t home;

		j = (j + 1) & mask;
		if (!m->slots[j].hash)
			break;
		home = m->slots[j].hash & mask;
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	m->slots[i].hash = 0;
	m->count--;
	return value;
}

int map_next(const struct map *m, size_t *pos, void **value)
{
	while (*pos < m->cap) {
		const struct map_slot *s = &m->slots[(*pos)++];

		if (s->hash) {
			*value = s->value;
			return 1;
		}
	}
	return 0;
}

void map_free(struct map *m)
{
	free(m->slots);
	m->slots = NULL;
	m->cap = m->count = 0;
}
