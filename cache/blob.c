// SPDX-License-Identifier: MIT
#include "blob.h"

#include "util/buf.h"

#include <string.h>

struct render_entry {
	void *key;
	size_t klen;
	struct blob *blob;
};

struct blob *blob_new(const char *data, size_t len, uint64_t gen)
{
	struct blob *b = xmalloc(sizeof(*b) + len + 1);

	atomic_init(&b->refs, 1);
	b->gen = gen;
	b->len = len;
	if (len)
		memcpy(b->data, data, len);
	b->data[len] = '\0';
	return b;
}

struct blob *blob_ref(struct blob *b)
{
	atomic_fetch_add(&b->refs, 1);
	return b;
}

void blob_unref(struct blob *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

void render_cache_init(struct render_cache *c, size_t max_bytes)
{
	memset(c, 0, sizeof(*c));
	c->max_bytes = max_bytes;
	pthread_mutex_init(&c->lock, NULL);
}

static void entry_free(struct render_entry *e)
{
	blob_unref(e->blob);
	free(e->key);
	free(e);
}

void render_cache_destroy(struct render_cache *c)
{
	void *v;

	for (size_t pos = 0; map_next(&c->entries, &pos, &v);)
		entry_free(v);
	map_free(&c->entries);
	pthread_mutex_destroy(&c->lock);
}

struct blob *render_cache_get(struct render_cache *c, const void *key,
			      size_t klen, uint64_t gen)
{
	struct render_entry *e;
	struct blob *b = NULL;

	pthread_mutex_lock(&c->lock);
	e = map_get(&c->entries, key, klen);
	if (e && e->blob->gen == gen)
		b = blob_ref(e->blob);
	if (b)
		c->hits++;
	else
		c->misses++;
	pthread_mutex_unlock(&c->lock);
	return b;
}

/*
 * Over the cap, entries go in the map's slot order from a rotating start:
 * no bookkeeping per hit, and a file read again is rendered again, which
 * costs microseconds. Caller holds c->lock.
 */
static void evict_locked(struct render_cache *c, const void *keep)
{
	size_t scanned = 0;

	while (c->bytes > c->max_bytes && scanned++ < c->entries.cap) {
		struct map_slot *slot;
		struct render_entry *e;

		c->evict_pos = (c->evict_pos + 1) & (c->entries.cap - 1);
		slot = &c->entries.slots[c->evict_pos];
		if (!slot->hash || slot->key == keep)
			continue;
		e = slot->value;
		map_del(&c->entries, e->key, e->klen);
		c->bytes -= sizeof(*e) + e->klen + e->blob->len;
		entry_free(e);
		/* The deletion shifted a later entry into this slot. */
		c->evict_pos--;
	}
}

void render_cache_put(struct render_cache *c, const void *key, size_t klen,
		      struct blob *b)
{
	struct render_entry *e;

	pthread_mutex_lock(&c->lock);
	e = map_get(&c->entries, key, klen);
	if (!e) {
		e = xcalloc(1, sizeof(*e));
		e->key = xmalloc(klen);
		memcpy(e->key, key, klen);
		e->klen = klen;
		map_put(&c->entries, e->key, klen, e);
		c->bytes += sizeof(*e) + klen;
	} else {
		c->bytes -= e->blob->len;
		blob_unref(e->blob);
	}
	e->blob = blob_ref(b);
	c->bytes += b->len;
	evict_locked(c, e->key);
	pthread_mutex_unlock(&c->lock);
}

void render_cache_drop(struct render_cache *c, const void *key, size_t klen)
{
	struct render_entry *e;

	pthread_mutex_lock(&c->lock);
	e = map_del(&c->entries, key, klen);
	if (e)
		c->bytes -= sizeof(*e) + e->klen + e->blob->len;
	pthread_mutex_unlock(&c->lock);
	if (e)
		entry_free(e);
}
