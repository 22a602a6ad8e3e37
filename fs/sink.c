// SPDX-License-Identifier: MIT
/*
 * Sinks: what a copier writes under history/ and export/ of an
 * environment it made (`cp -r dev staging` copies dev's revisions and its
 * Terraform export too). Those are the daemon's records and cannot be
 * written, yet the copier must see the folders and files it made as
 * made, or it stops. So they are taken and not kept: a sink holds a
 * name, a type and an owner, never bytes, and goes once the kernel
 * forgets it. Only the maker (and its children, while it fills the
 * folder) sees the sinks made directly in history/ or export/; everyone
 * else sees what the daemon wrote there.
 */
#include "fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bounds what one copy of a long history holds at once: a name each. */
#define SINK_MAX (1u << 16)

struct sink {
	struct sink_place {
		struct node_key parent;
		char name[256];
	} at; /* the key in by_place: zero-padded, compared as bytes */
	uint64_t id;
	pid_t pid;
	bool dir;
	uid_t uid;
	gid_t gid;
	mode_t mode;
	struct timespec made;
};

void sink_init(struct sink_table *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	t->next_id = 1;
}

void sink_destroy(struct sink_table *t)
{
	void *v;

	for (size_t pos = 0; map_next(&t->by_id, &pos, &v);)
		free(v);
	map_free(&t->by_id);
	map_free(&t->by_place);
	pthread_mutex_destroy(&t->lock);
}

static void place_of(struct sink_place *at, const struct node_key *parent,
		     const char *name)
{
	memset(at, 0, sizeof(*at));
	at->parent = *parent;
	snprintf(at->name, sizeof(at->name), "%s", name);
}

static struct node_key key_of_sink(const struct sink *s)
{
	return node_key_make(s->dir ? NT_SINK_DIR : NT_SINK_FILE, 0, s->id, 0);
}

int sink_lookup(struct sink_table *t, pid_t pid, const struct node_key *parent,
		const char *name, struct node_key *out)
{
	struct sink_place at;
	struct sink *s;
	int rc = -ENOENT;

	place_of(&at, parent, name);
	pthread_mutex_lock(&t->lock);
	s = map_get(&t->by_place, &at, sizeof(at));
	if (s && (parent->type == NT_SINK_DIR || s->pid == pid)) {
		*out = key_of_sink(s);
		rc = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int sink_make(struct sink_table *t, const struct caller *who,
	      const struct node_key *parent, const char *name, mode_t mode,
	      struct node_key *out)
{
	struct sink *s;
	int rc = 0;

	if (strlen(name) > 255)
		return -ENAMETOOLONG;
	s = xcalloc(1, sizeof(*s));
	place_of(&s->at, parent, name);
	s->pid = who->pid;
	s->uid = who->uid;
	s->gid = who->gid;
	s->dir = S_ISDIR(mode);
	s->mode = mode & 07777;
	clock_gettime(CLOCK_REALTIME, &s->made);
	pthread_mutex_lock(&t->lock);
	if (map_get(&t->by_place, &s->at, sizeof(s->at)))
		rc = -EEXIST;
	else if (t->by_id.count >= SINK_MAX)
		rc = -ENOSPC;
	if (!rc) {
		s->id = t->next_id++;
		map_put(&t->by_id, &s->id, sizeof(s->id), s);
		map_put(&t->by_place, &s->at, sizeof(s->at), s);
		*out = key_of_sink(s);
	}
	pthread_mutex_unlock(&t->lock);
	if (rc)
		free(s);
	return rc;
}

int sink_getattr(struct sink_table *t, const struct node_key *k,
		 struct stat *st)
{
	struct sink *s;
	int rc = -ENOENT;

	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&t->lock);
	s = map_get_u64(&t->by_id, &k->id);
	if (s) {
		/* Its maker fills it whatever mode it was made with: cp
		 * makes a copy of a 0555 folder 0555. */
		st->st_mode = s->dir ? S_IFDIR | s->mode | S_IRWXU
				     : S_IFREG | s->mode;
		st->st_nlink = s->dir ? 2 : 1;
		st->st_uid = s->uid;
		st->st_gid = s->gid;
		st->st_atim = st->st_mtim = st->st_ctim = s->made;
		st->st_blksize = 4096;
		rc = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

void sink_drop(struct sink_table *t, uint64_t id)
{
	struct sink *s;

	pthread_mutex_lock(&t->lock);
	s = map_del(&t->by_id, &id, sizeof(id));
	if (s)
		map_del(&t->by_place, &s->at, sizeof(s->at));
	pthread_mutex_unlock(&t->lock);
	free(s);
}

int sink_move(struct sink_table *t, uint64_t id, const struct node_key *dir,
	      const char *name)
{
	struct sink_place at;
	struct sink *s, *gone = NULL;
	int rc = -ENOENT;

	if (strlen(name) > 255)
		return -ENAMETOOLONG;
	place_of(&at, dir, name);
	pthread_mutex_lock(&t->lock);
	s = map_get_u64(&t->by_id, &id);
	if (s) {
		map_del(&t->by_place, &s->at, sizeof(s->at));
		gone = map_del(&t->by_place, &at, sizeof(at));
		if (gone)
			map_del(&t->by_id, &gone->id, sizeof(gone->id));
		s->at = at;
		map_put(&t->by_place, &s->at, sizeof(s->at), s);
		rc = 0;
	}
	pthread_mutex_unlock(&t->lock);
	free(gone);
	return rc;
}
