/* SPDX-License-Identifier: MIT */
/*
 * The declared world in memory: environments, their resources, config,
 * policy, secrets' names, events. It mirrors what the state store holds so
 * that no FUSE request reads the database to list or stat anything.
 *
 * Ownership and locking: the store's committer thread is the only writer;
 * it changes the model under the write lock, after validating a change and
 * writing it to the backend. Everybody else (FUSE requests, and later the
 * reconciler) takes the read lock for as long as it holds pointers into the
 * model, and copies out what it needs beyond that.
 */
#ifndef INFRAFS_STORE_MODEL_H
#define INFRAFS_STORE_MODEL_H

#include "spec/spec.h"
#include "util/map.h"
#include "util/text.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum { KIND_POOL_IDX, KIND_ENDPOINT_IDX, NKINDS };

/* The newest lines are kept in memory; the store keeps them all. */
#define EVENTS_KEPT 256

struct event_log {
	/* Ring of the newest lines, each ending in '\n'; it grows to
	 * EVENTS_KEPT slots only as lines come, since most resources have
	 * a handful and there may be hundreds of thousands of them. */
	char **lines;
	size_t cap;
	size_t head; /* index of the oldest line */
	size_t count;
	uint64_t total; /* lines ever appended: a content generation */
	uint64_t bytes; /* bytes ever appended: the events file's size */
	double mtime; /* when the newest line came */
};

/* A committed text (spec, config or policy) with its parsed form. */
struct doc {
	char *text; /* NULL: never written (a draft resource) */
	size_t len;
	struct spec *parsed;
	uint64_t rev; /* the revision that last changed it */
	double mtime;
};

struct env;

struct resource {
	uint64_t id; /* unique in the store, never reused */
	int kind; /* KIND_POOL_IDX or KIND_ENDPOINT_IDX */
	char name[NAME_MAX_LEN + 1];
	struct env *env;
	struct doc spec;
	double ctime;
	char *last_error; /* why the last commit was refused, or NULL */
	struct event_log events;
	uint64_t gen; /* bumps whenever anything its files show changes */
	/* rmdir under protect = destroy: waits for an approval. */
	bool destroy_requested;
};

struct secret_meta {
	char name[NAME_MAX_LEN + 1];
	uint64_t version;
	double mtime;
};

struct res_list {
	struct resource **v; /* sorted by id: readdir offsets are ids */
	size_t n, cap;
};

struct env {
	uint64_t id;
	char name[NAME_MAX_LEN + 1];
	uid_t uid;
	gid_t gid;
	mode_t mode; /* permission bits of the folder */
	double ctime, mtime;
	/* newest revision; revisions are first_rev..rev, those before
	 * first_rev pruned by history_keep */
	uint64_t rev;
	uint64_t first_rev;
	/* Newest revision on disk: history shows no more than this, as the
	 * store's readers cannot see a revision before its commit. */
	uint64_t rev_durable;
	/* Every revision up to this one has been carried to the provider:
	 * what `discard` goes back to. */
	uint64_t applied_rev;
	double rev_time;
	struct doc config, policy;
	struct map by_name[NKINDS]; /* name -> struct resource */
	struct res_list list[NKINDS];
	struct map secrets; /* name -> struct secret_meta */
	struct event_log events;
	uint64_t audit_lines;
	/* Audit lines on disk: the audit file, read from the store, shows
	 * these, so it is cached by this count, not by audit_lines. */
	uint64_t audit_durable;
	char audit_head[65]; /* SHA-256 (hex) of the newest audit line */
	/* SHA-256 (hex) of the newest pruned audit line, which the oldest
	 * kept one chains to; empty while nothing was pruned. */
	char audit_base[65];
	char *last_error;
	/* The Git commit of the source folder at its last good sync, in
	 * memory only: the next sync, at start too, says it again. */
	char source_commit[41];
	uint64_t gen;
};

/* Whether history/ shows revision rev: written, durable, not pruned. */
static inline bool env_shows_rev(const struct env *e, uint64_t rev)
{
	return rev >= e->first_rev && rev <= e->rev_durable;
}

struct env_list {
	struct env **v; /* sorted by id */
	size_t n, cap;
};

struct model {
	pthread_rwlock_t lock;
	struct map env_by_name;
	struct map env_by_id;
	struct map res_by_id;
	struct env_list envs;
	uint64_t gen; /* bumps when environments come or go */
	/* Counters for metrics. */
	uint64_t commits, rejections;
};

void model_init(struct model *m);
void model_destroy(struct model *m);
/* Drops everything but the lock, for a reload from the backend. */
void model_clear(struct model *m);
/* Replaces what m holds by what from holds, leaving from empty: a reload
 * loads aside and takes the result only once it loaded whole. The
 * caller holds m's write lock; m keeps its counters. */
void model_take(struct model *m, struct model *from);

static inline void model_rdlock(struct model *m)
{
	pthread_rwlock_rdlock(&m->lock);
}
static inline void model_wrlock(struct model *m)
{
	pthread_rwlock_wrlock(&m->lock);
}
static inline void model_unlock(struct model *m)
{
	pthread_rwlock_unlock(&m->lock);
}

struct env *model_env(const struct model *m, const char *name);
struct env *model_env_by_id(const struct model *m, uint64_t id);
struct resource *model_res(const struct env *e, int kind, const char *name);
struct resource *model_res_by_id(const struct model *m, uint64_t id);
int kind_index(const struct kind_def *k);
const struct kind_def *kind_at(int kind);

/* Writers (the committer, and loading at start). */
struct env *model_add_env(struct model *m, uint64_t id, const char *name);
void model_remove_env(struct model *m, struct env *e);
struct resource *model_add_res(struct model *m, struct env *e, uint64_t id,
			       int kind, const char *name);
void model_remove_res(struct model *m, struct resource *r);
/* Replaces a doc's text; takes ownership of text and parsed. */
void doc_set(struct doc *d, char *text, size_t len, struct spec *parsed,
	     uint64_t rev, double mtime);
/* Like doc_set, for a text read back from the store: parsed here. */
void doc_load(struct doc *d, const struct kind_def *k, char *text, size_t len,
	      uint64_t rev, double mtime);
void model_set_error(char **slot, const char *msg);

void event_log_append(struct event_log *log, char *line);
/* Index i from the oldest kept line. */
const char *event_log_line(const struct event_log *log, size_t i);

/* The first index in a sorted list whose id is > after (readdir resume). */
size_t res_list_seek(const struct res_list *l, uint64_t after);
size_t env_list_seek(const struct env_list *l, uint64_t after);

#endif
