// SPDX-License-Identifier: MIT
#include "node.h"

#include "cache/blob.h"
#include "util/buf.h"

#include <errno.h>
#include <string.h>

void node_table_init(struct node_table *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	t->next_ino = FUSE_ROOT_ID + 1;
}

void node_table_destroy(struct node_table *t)
{
	void *v;

	for (size_t pos = 0; map_next(&t->by_ino, &pos, &v);) {
		blob_unref(((struct node *)v)->sized);
		free(v);
	}
	map_free(&t->by_key);
	map_free(&t->by_ino);
	pthread_mutex_destroy(&t->lock);
}

fuse_ino_t node_get(struct node_table *t, const struct node_key *key,
		    uint64_t lookups)
{
	struct node *n;
	fuse_ino_t ino;

	if (key->type == NT_ROOT)
		return FUSE_ROOT_ID;
	pthread_mutex_lock(&t->lock);
	n = map_get(&t->by_key, key, sizeof(*key));
	if (!n) {
		n = xcalloc(1, sizeof(*n));
		n->key = *key;
		n->ino = t->next_ino++;
		map_put(&t->by_key, &n->key, sizeof(n->key), n);
		map_put(&t->by_ino, &n->ino, sizeof(n->ino), n);
	}
	n->nlookup += lookups;
	ino = n->ino;
	pthread_mutex_unlock(&t->lock);
	return ino;
}

int node_key_of(struct node_table *t, fuse_ino_t ino, struct node_key *key)
{
	struct node *n;

	if (ino == FUSE_ROOT_ID) {
		*key = node_key_make(NT_ROOT, 0, 0, 0);
		return 0;
	}
	pthread_mutex_lock(&t->lock);
	n = map_get(&t->by_ino, &ino, sizeof(ino));
	if (n)
		*key = n->key;
	pthread_mutex_unlock(&t->lock);
	return n ? 0 : -ESTALE;
}

fuse_ino_t node_find(struct node_table *t, const struct node_key *key)
{
	struct node *n;
	fuse_ino_t ino = 0;

	if (key->type == NT_ROOT)
		return FUSE_ROOT_ID;
	pthread_mutex_lock(&t->lock);
	n = map_get(&t->by_key, key, sizeof(*key));
	if (n)
		ino = n->ino;
	pthread_mutex_unlock(&t->lock);
	return ino;
}

bool node_forget(struct node_table *t, fuse_ino_t ino, uint64_t nlookup,
		 struct node_key *gone)
{
	struct node *n;
	bool freed = false;

	if (ino == FUSE_ROOT_ID)
		return false;
	pthread_mutex_lock(&t->lock);
	n = map_get(&t->by_ino, &ino, sizeof(ino));
	if (n) {
		n->nlookup = nlookup >= n->nlookup ? 0 : n->nlookup - nlookup;
		if (!n->nlookup) {
			map_del(&t->by_ino, &n->ino, sizeof(n->ino));
			map_del(&t->by_key, &n->key, sizeof(n->key));
			*gone = n->key;
			blob_unref(n->sized);
			free(n);
			freed = true;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return freed;
}

void node_set_cached_gen(struct node_table *t, fuse_ino_t ino, uint64_t gen)
{
	struct node *n;

	pthread_mutex_lock(&t->lock);
	n = map_get(&t->by_ino, &ino, sizeof(ino));
	if (n)
		n->cached_gen = gen;
	pthread_mutex_unlock(&t->lock);
}

uint64_t node_cached_gen(struct node_table *t, fuse_ino_t ino)
{
	struct node *n;
	uint64_t gen = 0;

	pthread_mutex_lock(&t->lock);
	n = map_get(&t->by_ino, &ino, sizeof(ino));
	if (n)
		gen = n->cached_gen;
	pthread_mutex_unlock(&t->lock);
	return gen;
}

void node_set_sized(struct node_table *t, fuse_ino_t ino, struct blob *b)
{
	struct node *n;
	struct blob *old = b;

	pthread_mutex_lock(&t->lock);
	n = map_get(&t->by_ino, &ino, sizeof(ino));
	if (n) {
		old = n->sized;
		n->sized = b;
	}
	pthread_mutex_unlock(&t->lock);
	blob_unref(old);
}

struct blob *node_sized(struct node_table *t, fuse_ino_t ino)
{
	struct node *n;
	struct blob *b = NULL;

	pthread_mutex_lock(&t->lock);
	n = map_get(&t->by_ino, &ino, sizeof(ino));
	if (n && n->sized)
		b = blob_ref(n->sized);
	pthread_mutex_unlock(&t->lock);
	return b;
}
