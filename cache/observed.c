// SPDX-License-Identifier: MIT
#include "observed.h"

#include <string.h>

void observed_init(struct observed_cache *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

void observed_res_free(struct observed_res *o)
{
	free(o->details);
	free(o->error);
	free(o->drift);
	free(o->reason);
	memset(o, 0, sizeof(*o));
}

void observed_env_free(struct observed_env *o)
{
	free(o->plan_text);
	free(o->plan_json);
	free(o->terraform);
	memset(o, 0, sizeof(*o));
}

void observed_destroy(struct observed_cache *c)
{
	void *v;

	for (size_t pos = 0; map_next(&c->res, &pos, &v);) {
		observed_res_free(v);
		free(v);
	}
	for (size_t pos = 0; map_next(&c->env, &pos, &v);) {
		observed_env_free(v);
		free(v);
	}
	map_free(&c->res);
	map_free(&c->env);
	pthread_mutex_destroy(&c->lock);
}

static void copy_res(struct observed_res *dst, const struct observed_res *src)
{
	*dst = *src;
	dst->details = dup_or_null(src->details);
	dst->error = dup_or_null(src->error);
	dst->drift = dup_or_null(src->drift);
	dst->reason = dup_or_null(src->reason);
}

/* What a file shows of an observation, its times aside. */
static bool res_differs(const struct observed_res *a,
			const struct observed_res *b)
{
	return a->state != b->state || a->synced != b->synced ||
	       a->applied_rev != b->applied_rev ||
	       a->hourly_cost_usd != b->hourly_cost_usd ||
	       !same_str(a->details, b->details) ||
	       !same_str(a->error, b->error) || !same_str(a->drift, b->drift) ||
	       !same_str(a->reason, b->reason);
}

bool observed_put_res(struct observed_cache *c, const struct observed_res *o)
{
	struct observed_res *cur;
	bool changed;

	pthread_mutex_lock(&c->lock);
	cur = map_get_u64(&c->res, &o->res_id);
	changed = !cur || res_differs(cur, o);
	/* A look that saw nothing new moves observed_at alone: status shows
	 * it (how often is the reconciler's to say). */
	if (!changed && o->observed_at != cur->observed_at) {
		cur->observed_at = o->observed_at;
		cur->gen = ++c->gen;
		pthread_mutex_unlock(&c->lock);
		return true;
	}
	if (changed) {
		uint64_t gen = ++c->gen;

		if (!cur) {
			cur = xcalloc(1, sizeof(*cur));
			cur->res_id = o->res_id;
			map_put(&c->res, &cur->res_id, sizeof(cur->res_id),
				cur);
		}
		observed_res_free(cur);
		copy_res(cur, o);
		cur->changed_at = o->observed_at;
		cur->gen = gen;
	}
	pthread_mutex_unlock(&c->lock);
	return changed;
}

bool observed_put_env(struct observed_cache *c, const struct observed_env *o)
{
	struct observed_env *cur;
	bool changed;

	pthread_mutex_lock(&c->lock);
	cur = map_get_u64(&c->env, &o->env_id);
	changed = !cur || cur->plan_no != o->plan_no ||
		  cur->applied_rev != o->applied_rev ||
		  cur->last_apply != o->last_apply ||
		  !same_str(cur->plan_text, o->plan_text) ||
		  !same_str(cur->plan_json, o->plan_json) ||
		  !same_str(cur->terraform, o->terraform);
	if (changed) {
		uint64_t gen = ++c->gen;

		if (!cur) {
			cur = xcalloc(1, sizeof(*cur));
			cur->env_id = o->env_id;
			map_put(&c->env, &cur->env_id, sizeof(cur->env_id),
				cur);
		}
		observed_env_free(cur);
		*cur = *o;
		cur->plan_text = dup_or_null(o->plan_text);
		cur->plan_json = dup_or_null(o->plan_json);
		cur->terraform = dup_or_null(o->terraform);
		cur->gen = gen;
	}
	pthread_mutex_unlock(&c->lock);
	return changed;
}

void observed_drop_res(struct observed_cache *c, uint64_t res_id)
{
	struct observed_res *cur;

	pthread_mutex_lock(&c->lock);
	cur = map_del(&c->res, &res_id, sizeof(res_id));
	pthread_mutex_unlock(&c->lock);
	if (cur) {
		observed_res_free(cur);
		free(cur);
	}
}

bool observed_get_res(struct observed_cache *c, uint64_t res_id,
		      struct observed_res *out)
{
	struct observed_res *cur;

	pthread_mutex_lock(&c->lock);
	cur = map_get_u64(&c->res, &res_id);
	if (cur)
		copy_res(out, cur);
	pthread_mutex_unlock(&c->lock);
	return cur != NULL;
}

bool observed_get_env(struct observed_cache *c, uint64_t env_id,
		      struct observed_env *out)
{
	struct observed_env *cur;

	pthread_mutex_lock(&c->lock);
	cur = map_get_u64(&c->env, &env_id);
	if (cur) {
		*out = *cur;
		out->plan_text = dup_or_null(cur->plan_text);
		out->plan_json = dup_or_null(cur->plan_json);
		out->terraform = dup_or_null(cur->terraform);
	}
	pthread_mutex_unlock(&c->lock);
	return cur != NULL;
}

uint64_t observed_gen(struct observed_cache *c)
{
	uint64_t gen;

	pthread_mutex_lock(&c->lock);
	gen = c->gen;
	pthread_mutex_unlock(&c->lock);
	return gen;
}

uint64_t observed_res_gen(struct observed_cache *c, uint64_t res_id)
{
	struct observed_res *cur;
	uint64_t gen;

	pthread_mutex_lock(&c->lock);
	cur = map_get_u64(&c->res, &res_id);
	gen = cur ? cur->gen : 0;
	pthread_mutex_unlock(&c->lock);
	return gen;
}

uint64_t observed_env_gen(struct observed_cache *c, uint64_t env_id)
{
	struct observed_env *cur;
	uint64_t gen;

	pthread_mutex_lock(&c->lock);
	cur = map_get_u64(&c->env, &env_id);
	gen = cur ? cur->gen : 0;
	pthread_mutex_unlock(&c->lock);
	return gen;
}
