/* SPDX-License-Identifier: MIT */
/*
 * What the daemon leading an environment observes, shown by every other
 * daemon sharing the store: the leader publishes each resource's
 * observation and the environment's plan when they change (at most once
 * a second, in one transaction), the others read what changed since
 * they last looked and put it in their own cache, so `status`, `plan`
 * and `state` read alike on every mount. A store with one daemon shares
 * nothing.
 */
#ifndef INFRAFS_RECONCILER_SHARE_H
#define INFRAFS_RECONCILER_SHARE_H

#include "cache/observed.h"
#include "store/store.h"

#include <stdint.h>

struct share {
	struct store *store;
	struct observed_cache *observed;
	void (*changed)(void *ctx, uint64_t env_id, uint64_t res_id);
	void *ctx;
	/* (env_id, res_id) pairs whose observation changed since the last
	 * publication; res_id 0 is the environment's plan. */
	uint64_t *pending;
	size_t npending, cap;
	double published_at, read_at;
	uint64_t read_up_to; /* the newest place read */
};

void share_init(struct share *s, struct store *store,
		struct observed_cache *observed,
		void (*changed)(void *ctx, uint64_t env_id, uint64_t res_id),
		void *ctx);
void share_free(struct share *s);
/* An observation this daemon made changed (or went, for a resource). */
void share_note(struct share *s, uint64_t env_id, uint64_t res_id);
/* Publishes what changed and reads what the other leaders published,
 * each at its pace. The reconciler's thread, after a pass. */
void share_run(struct share *s, double now);

#endif
