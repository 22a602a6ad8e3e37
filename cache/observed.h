/* SPDX-License-Identifier: MIT */
/*
 * What the daemon knows of the live world: the last observation of every
 * resource and the plan of every environment, as the reconciler wrote
 * them. File reads render from here and never ask a provider, so a slow
 * cloud never makes `cat status` slow. Every entry carries its age
 * (observed_at), when its content last changed (changed_at) and a
 * generation that changes with either.
 */
#ifndef INFRAFS_CACHE_OBSERVED_H
#define INFRAFS_CACHE_OBSERVED_H

#include "providers/provider.h"
#include "util/map.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct observed_res {
	uint64_t res_id;
	enum res_state state;
	bool synced;
	uint64_t applied_rev;
	double observed_at; /* when the provider last looked; 0: never */
	/* When what it showed last changed (set by the cache: the
	 * observed_at of the look that saw the change). */
	double changed_at;
	double hourly_cost_usd;
	char *details; /* provider lines, "key: value\n" */
	char *error;
	char *drift;
	char *reason; /* why it waits, when it waits ("approval", ...) */
	uint64_t gen;
};

struct observed_env {
	uint64_t env_id;
	uint64_t plan_no; /* 0: nothing pending */
	char *plan_text;
	char *plan_json;
	char *terraform; /* export/terraform.tf.json, NULL until made */
	uint64_t applied_rev; /* every revision up to it has been applied */
	double last_apply; /* when a plan last finished, 0 never */
	uint64_t gen;
};

/* lock guards everything here; readers get copies, never pointers. */
struct observed_cache {
	pthread_mutex_t lock;
	struct map res; /* res_id -> struct observed_res */
	struct map env; /* env_id -> struct observed_env */
	uint64_t gen; /* source of generations, never reused */
};

void observed_init(struct observed_cache *c);
void observed_destroy(struct observed_cache *c);

/* Stores an observation; true when anything a file shows changed. The
 * strings are copied. */
bool observed_put_res(struct observed_cache *c, const struct observed_res *o);
bool observed_put_env(struct observed_cache *c, const struct observed_env *o);
void observed_drop_res(struct observed_cache *c, uint64_t res_id);

/* Copies an entry out (free with observed_res_free); false when none. */
bool observed_get_res(struct observed_cache *c, uint64_t res_id,
		      struct observed_res *out);
bool observed_get_env(struct observed_cache *c, uint64_t env_id,
		      struct observed_env *out);
/* The newest generation of any entry: changes with every change. */
uint64_t observed_gen(struct observed_cache *c);
/* The entry's generation, 0 when there is none: cheap, for caching. */
uint64_t observed_res_gen(struct observed_cache *c, uint64_t res_id);
uint64_t observed_env_gen(struct observed_cache *c, uint64_t env_id);
void observed_res_free(struct observed_res *o);
void observed_env_free(struct observed_env *o);

#endif
