// SPDX-License-Identifier: MIT
#include "model.h"

#include "util/log.h"

#include <stdio.h>
#include <string.h>

void model_init(struct model *m)
{
	memset(m, 0, sizeof(*m));
	pthread_rwlock_init(&m->lock, NULL);
}

static void doc_clear(struct doc *d)
{
	free(d->text);
	if (d->parsed)
		spec_free(d->parsed);
	memset(d, 0, sizeof(*d));
}

static void event_log_clear(struct event_log *log)
{
	for (size_t i = 0; i < log->count; i++)
		free(log->lines[(log->head + i) % log->cap]);
	free(log->lines);
	memset(log, 0, sizeof(*log));
}

static void res_free(struct resource *r)
{
	doc_clear(&r->spec);
	free(r->last_error);
	event_log_clear(&r->events);
	free(r);
}

static void env_free(struct env *e)
{
	void *v;

	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < e->list[k].n; i++)
			res_free(e->list[k].v[i]);
		free(e->list[k].v);
		map_free(&e->by_name[k]);
	}
	for (size_t pos = 0; map_next(&e->secrets, &pos, &v);)
		free(v);
	map_free(&e->secrets);
	doc_clear(&e->config);
	doc_clear(&e->policy);
	event_log_clear(&e->events);
	free(e->last_error);
	free(e);
}

void model_clear(struct model *m)
{
	for (size_t i = 0; i < m->envs.n; i++)
		env_free(m->envs.v[i]);
	free(m->envs.v);
	m->envs.v = NULL;
	m->envs.n = m->envs.cap = 0;
	map_free(&m->env_by_name);
	map_free(&m->env_by_id);
	map_free(&m->res_by_id);
	m->gen++;
}

void model_take(struct model *m, struct model *from)
{
	model_clear(m);
	m->env_by_name = from->env_by_name;
	m->env_by_id = from->env_by_id;
	m->res_by_id = from->res_by_id;
	m->envs = from->envs;
	memset(&from->env_by_name, 0, sizeof(from->env_by_name));
	memset(&from->env_by_id, 0, sizeof(from->env_by_id));
	memset(&from->res_by_id, 0, sizeof(from->res_by_id));
	memset(&from->envs, 0, sizeof(from->envs));
}

void model_destroy(struct model *m)
{
	model_clear(m);
	pthread_rwlock_destroy(&m->lock);
}

struct env *model_env(const struct model *m, const char *name)
{
	return map_get(&m->env_by_name, name, strlen(name));
}

struct env *model_env_by_id(const struct model *m, uint64_t id)
{
	return map_get_u64(&m->env_by_id, &id);
}

struct resource *model_res(const struct env *e, int kind, const char *name)
{
	return map_get(&e->by_name[kind], name, strlen(name));
}

struct resource *model_res_by_id(const struct model *m, uint64_t id)
{
	return map_get_u64(&m->res_by_id, &id);
}

int kind_index(const struct kind_def *k)
{
	for (int i = 0; i < NKINDS; i++) {
		if (resource_kinds[i] == k)
			return i;
	}
	return -1;
}

const struct kind_def *kind_at(int kind)
{
	return resource_kinds[kind];
}

/*
 * Both lists are sorted by id and ids only grow, so adding appends; a
 * removal shifts the tail, which is cheap next to the fsync it follows.
 */
#define LIST_PUSH(l, item)                                                     \
	do {                                                                   \
		if ((l)->n == (l)->cap) {                                      \
			(l)->cap = (l)->cap ? (l)->cap * 2 : 8;                \
			(l)->v = xrealloc((l)->v, (l)->cap * sizeof(*(l)->v)); \
		}                                                              \
		(l)->v[(l)->n++] = (item);                                     \
	} while (0)

#define LIST_SEEK(l, after)                              \
	do {                                             \
		size_t lo = 0, hi = (l)->n;              \
		while (lo < hi) {                        \
			size_t mid = lo + (hi - lo) / 2; \
			if ((l)->v[mid]->id <= (after))  \
				lo = mid + 1;            \
			else                             \
				hi = mid;                \
		}                                        \
		return lo;                               \
	} while (0)

#define LIST_REMOVE(l, item)                                               \
	do {                                                               \
		size_t at_ = list_index_of((void **)(l)->v, (l)->n, item); \
		if (at_ < (l)->n) {                                        \
			memmove(&(l)->v[at_], &(l)->v[at_ + 1],            \
				((l)->n - at_ - 1) * sizeof(*(l)->v));     \
			(l)->n--;                                          \
		}                                                          \
	} while (0)

static size_t list_index_of(void **v, size_t n, const void *item)
{
	for (size_t i = n; i-- > 0;) {
		if (v[i] == item)
			return i;
	}
	return n;
}

size_t res_list_seek(const struct res_list *l, uint64_t after)
{
	LIST_SEEK(l, after);
}

size_t env_list_seek(const struct env_list *l, uint64_t after)
{
	LIST_SEEK(l, after);
}

struct env *model_add_env(struct model *m, uint64_t id, const char *name)
{
	struct env *e = xcalloc(1, sizeof(*e));

	e->id = id;
	e->first_rev = 1;
	snprintf(e->name, sizeof(e->name), "%s", name);
	map_put(&m->env_by_name, e->name, strlen(e->name), e);
	map_put(&m->env_by_id, &e->id, sizeof(e->id), e);
	LIST_PUSH(&m->envs, e);
	m->gen++;
	return e;
}

void model_remove_env(struct model *m, struct env *e)
{
	map_del(&m->env_by_name, e->name, strlen(e->name));
	map_del(&m->env_by_id, &e->id, sizeof(e->id));
	LIST_REMOVE(&m->envs, e);
	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < e->list[k].n; i++) {
			struct resource *r = e->list[k].v[i];

			map_del(&m->res_by_id, &r->id, sizeof(r->id));
		}
	}
	env_free(e);
	m->gen++;
}

struct resource *model_add_res(struct model *m, struct env *e, uint64_t id,
			       int kind, const char *name)
{
	struct resource *r = xcalloc(1, sizeof(*r));

	r->id = id;
	r->kind = kind;
	r->env = e;
	snprintf(r->name, sizeof(r->name), "%s", name);
	map_put(&e->by_name[kind], r->name, strlen(r->name), r);
	map_put(&m->res_by_id, &r->id, sizeof(r->id), r);
	LIST_PUSH(&e->list[kind], r);
	e->gen++;
	return r;
}

void model_remove_res(struct model *m, struct resource *r)
{
	struct env *e = r->env;

	map_del(&e->by_name[r->kind], r->name, strlen(r->name));
	map_del(&m->res_by_id, &r->id, sizeof(r->id));
	LIST_REMOVE(&e->list[r->kind], r);
	e->gen++;
	res_free(r);
}

void doc_set(struct doc *d, char *text, size_t len, struct spec *parsed,
	     uint64_t rev, double mtime)
{
	free(d->text);
	if (d->parsed)
		spec_free(d->parsed);
	d->text = text;
	d->len = len;
	d->parsed = parsed;
	d->rev = rev;
	d->mtime = mtime;
}

/*
 * Texts in the store were checked when they were committed; one that no
 * longer parses (a schema change) is kept as text and reported, so nothing
 * the user declared is dropped.
 */
void doc_load(struct doc *d, const struct kind_def *k, char *text, size_t len,
	      uint64_t rev, double mtime)
{
	struct spec *parsed = NULL;
	struct spec_error err;

	if (text && spec_parse(k, text, len, &parsed, &err) < 0)
		log_warn("stored %s no longer parses: %s", k->name, err.msg);
	doc_set(d, text, len, parsed, rev, mtime);
}

void model_set_error(char **slot, const char *msg)
{
	free(*slot);
	*slot = msg ? xstrdup(msg) : NULL;
}

void event_log_append(struct event_log *log, char *line)
{
	size_t slot;

	/* The ring only wraps once full, so while it grows head is 0. */
	if (log->count == log->cap && log->cap < EVENTS_KEPT) {
		log->cap = log->cap ? log->cap * 2 : 4;
		log->lines =
			xrealloc(log->lines, log->cap * sizeof(*log->lines));
	}
	if (log->count == log->cap) {
		slot = log->head;
		free(log->lines[slot]);
		log->head = (log->head + 1) % log->cap;
	} else {
		slot = (log->head + log->count) % log->cap;
		log->count++;
	}
	log->lines[slot] = line;
	log->total++;
	log->bytes += strlen(line);
	log->mtime = time_now();
}

const char *event_log_line(const struct event_log *log, size_t i)
{
	return log->lines[(log->head + i) % log->cap];
}
