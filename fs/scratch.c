// SPDX-License-Identifier: MIT
/*
 * Scratch files: what editors and tools create beside the file they edit
 * (vim's swap file and its 4913 probe, sed -i's temporary, `jq > tmp`).
 * They behave as ordinary files, live in memory until removed or until
 * the daemon stops, and are never part of a spec; renaming one over a
 * spec commits its bytes as that spec.
 */
#include "fs.h"

#include "util/wipe.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void scratch_init(struct scratch_table *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	t->next_id = 1;
}

/* Renamed over a secret, a scratch file's bytes were its value. */
static void scratch_free(struct scratch *s)
{
	wipebuf_free(&s->data);
	free(s);
}

void scratch_destroy(struct scratch_table *t)
{
	void *v;

	for (size_t pos = 0; map_next(&t->by_id, &pos, &v);)
		scratch_free(v);
	map_free(&t->by_id);
	pthread_mutex_destroy(&t->lock);
}

bool scratch_allowed_in(const struct node_key *dir)
{
	return dir->type == NT_ENV || dir->type == NT_RES;
}

static bool same_key(const struct node_key *a, const struct node_key *b)
{
	return memcmp(a, b, sizeof(*a)) == 0;
}

/* Caller holds t->lock. Scratch files are few, so a scan is enough. */
static struct scratch *find_locked(struct scratch_table *t,
				   const struct node_key *dir, const char *name)
{
	void *v;

	for (size_t pos = 0; map_next(&t->by_id, &pos, &v);) {
		struct scratch *s = v;

		if (!s->unlinked && same_key(&s->parent, dir) &&
		    !strcmp(s->name, name))
			return s;
	}
	return NULL;
}

uint64_t scratch_id_of(struct scratch_table *t, const struct node_key *dir,
		       const char *name)
{
	struct scratch *s;
	uint64_t id;

	pthread_mutex_lock(&t->lock);
	s = find_locked(t, dir, name);
	id = s ? s->id : 0;
	pthread_mutex_unlock(&t->lock);
	return id;
}

int scratch_parent(struct scratch_table *t, uint64_t id,
		   struct node_key *parent)
{
	struct scratch *s;

	pthread_mutex_lock(&t->lock);
	s = map_get_u64(&t->by_id, &id);
	if (s)
		*parent = s->parent;
	pthread_mutex_unlock(&t->lock);
	return s ? 0 : -ENOENT;
}

int scratch_check_size(uint64_t size)
{
	return size > SCRATCH_MAX_BYTES ? -EFBIG : 0;
}

/* Caller holds t->lock. Files renamed over a spec hold no bytes. */
static bool env_full_locked(struct scratch_table *t, uint64_t env_id)
{
	size_t n = 0;
	void *v;

	for (size_t pos = 0; map_next(&t->by_id, &pos, &v);) {
		struct scratch *s = v;

		if (s->env_id == env_id && s->alias.type == NT_NONE)
			n++;
	}
	return n >= SCRATCH_MAX_FILES;
}

static struct scratch *scratch_new(const struct node_key *dir, uint64_t env_id,
				   const char *name, uid_t uid, gid_t gid,
				   mode_t mode)
{
	struct scratch *s = xcalloc(1, sizeof(*s));

	s->parent = *dir;
	s->env_id = env_id;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->uid = uid;
	s->gid = gid;
	s->mode = mode & 07777;
	clock_gettime(CLOCK_REALTIME, &s->mtime);
	s->atime = s->ctime = s->mtime;
	return s;
}

/* Caller holds t->lock. */
static void add_locked(struct scratch_table *t, struct scratch *s)
{
	s->id = t->next_id++;
	map_put(&t->by_id, &s->id, sizeof(s->id), s);
}

uint64_t scratch_create(struct scratch_table *t, const struct node_key *dir,
			uint64_t env_id, const char *name, uid_t uid, gid_t gid,
			mode_t mode)
{
	struct scratch *s = scratch_new(dir, env_id, name, uid, gid, mode);
	uint64_t id = 0;

	pthread_mutex_lock(&t->lock);
	if (!env_full_locked(t, env_id)) {
		add_locked(t, s);
		id = s->id;
		s = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	free(s);
	return id;
}

int scratch_fill(struct scratch_table *t, const struct node_key *dir,
		 uint64_t env_id, const char *name, uid_t uid, gid_t gid,
		 const char *data, size_t len)
{
	struct scratch *fresh = scratch_new(dir, env_id, name, uid, gid, 0644);
	struct scratch *s;
	int rc = 0;

	pthread_mutex_lock(&t->lock);
	s = find_locked(t, dir, name);
	if (!s && env_full_locked(t, env_id)) {
		rc = -ENOSPC;
	} else if (!s) {
		add_locked(t, fresh);
		s = fresh;
		fresh = NULL;
	}
	if (s) {
		wipebuf_truncate(&s->data, 0);
		wipebuf_add(&s->data, data, len);
	}
	pthread_mutex_unlock(&t->lock);
	free(fresh);
	return rc;
}

/* Caller holds t->lock. An unlinked file stays readable through the
 * descriptors open on it. */
static void unlink_locked(struct scratch_table *t, struct scratch *s)
{
	s->unlinked = true;
	if (!s->opens && s->alias.type == NT_NONE) {
		map_del(&t->by_id, &s->id, sizeof(s->id));
		scratch_free(s);
	}
}

void scratch_unlink(struct scratch_table *t, uint64_t id)
{
	struct scratch *s;

	pthread_mutex_lock(&t->lock);
	s = map_get_u64(&t->by_id, &id);
	if (s)
		unlink_locked(t, s);
	pthread_mutex_unlock(&t->lock);
}

int scratch_move(struct scratch_table *t, uint64_t id,
		 const struct node_key *dir, uint64_t env_id, const char *name)
{
	struct scratch *s, *old;
	int rc = 0;

	pthread_mutex_lock(&t->lock);
	s = map_get_u64(&t->by_id, &id);
	if (!s) {
		rc = -ENOENT;
	} else if (env_id != s->env_id && env_full_locked(t, env_id)) {
		rc = -ENOSPC;
	} else {
		old = find_locked(t, dir, name);
		if (old && old != s)
			unlink_locked(t, old);
		s->parent = *dir;
		s->env_id = env_id;
		snprintf(s->name, sizeof(s->name), "%s", name);
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int scratch_bytes(struct scratch_table *t, uint64_t id, struct buf *out)
{
	struct scratch *s;

	pthread_mutex_lock(&t->lock);
	s = map_get_u64(&t->by_id, &id);
	if (s)
		wipebuf_add(out, buf_str(&s->data), s->data.len);
	pthread_mutex_unlock(&t->lock);
	return s ? 0 : -ENOENT;
}

void scratch_become_alias(struct scratch_table *t, uint64_t id,
			  const struct node_key *to)
{
	struct scratch *s;

	pthread_mutex_lock(&t->lock);
	s = map_get_u64(&t->by_id, &id);
	if (s) {
		s->alias = *to;
		s->unlinked = true;
		wipebuf_free(&s->data);
	}
	pthread_mutex_unlock(&t->lock);
}

void scratch_resolve(struct scratch_table *t, struct node_key *k)
{
	struct scratch *s;

	if (k->type != NT_SCRATCH)
		return;
	pthread_mutex_lock(&t->lock);
	s = map_get_u64(&t->by_id, &k->id);
	if (s && s->alias.type != NT_NONE)
		*k = s->alias;
	pthread_mutex_unlock(&t->lock);
}

void scratch_forget(struct scratch_table *t, uint64_t id)
{
	struct scratch *s;

	pthread_mutex_lock(&t->lock);
	s = map_get_u64(&t->by_id, &id);
	if (s && s->unlinked && !s->opens) {
		map_del(&t->by_id, &s->id, sizeof(s->id));
		scratch_free(s);
	}
	pthread_mutex_unlock(&t->lock);
}

void scratch_release(struct scratch_table *t, struct scratch *s)
{
	pthread_mutex_lock(&t->lock);
	if (--s->opens == 0 && s->unlinked && s->alias.type == NT_NONE) {
		map_del(&t->by_id, &s->id, sizeof(s->id));
		scratch_free(s);
	}
	pthread_mutex_unlock(&t->lock);
}

void scratch_list(struct scratch_table *t, const struct node_key *dir,
		  struct dir_snapshot *out)
{
	void *v;

	pthread_mutex_lock(&t->lock);
	for (size_t pos = 0; map_next(&t->by_id, &pos, &v);) {
		struct scratch *s = v;
		struct node_key k;

		if (s->unlinked || !same_key(&s->parent, dir))
			continue;
		k = node_key_make(NT_SCRATCH, 0, s->id, 0);
		dir_snapshot_add(out, s->name, &k, S_IFREG);
	}
	pthread_mutex_unlock(&t->lock);
}
