/* SPDX-License-Identifier: MIT */
/*
 * The reconciler: one thread that makes the live world match what was
 * declared. It is level-triggered: every pass compares the last accepted
 * spec of each resource with what its provider observes and takes the
 * next idempotent step, so a crash or restart at any point converges and
 * never makes a resource twice.
 *
 * It works from a queue of resources that are due: a committed change is
 * due after the environment's settle_ms (so a burst of edits becomes one
 * plan), a failing resource after its own exponential backoff, every
 * resource every refresh_s; and no more than STEPS_PER_PASS steps are
 * taken per pass, so one failing resource never starves the others.
 * With approval = manual, steps wait in the plan until `approve`.
 */
#ifndef INFRAFS_RECONCILER_RECONCILER_H
#define INFRAFS_RECONCILER_RECONCILER_H

#include "cache/observed.h"
#include "store/store.h"

struct reconciler;

struct reconciler_options {
	struct store *store;
	struct observed_cache *observed;
	const char *state_dir; /* providers keep their files below it */
	/* Something a file shows changed: invalidate the kernel's copy. */
	void (*changed)(void *ctx, uint64_t env_id, uint64_t res_id);
	void *ctx;
};

int reconciler_start(const struct reconciler_options *opt,
		     struct reconciler **out);
void reconciler_stop(struct reconciler *r);

/* Declared changes landed (the store's change hook, one batch). */
void reconciler_kick(struct reconciler *r, const struct store_touch *t,
		     size_t n);

/* What the last pass cost: its duration and the resources it looked at. */
void reconciler_stats(struct reconciler *r, double *pass_seconds,
		      size_t *evaluated);

/* The calls provider (an index of builtin_providers) made to the outside:
 * in all, in the last minute, and how many resources it holds. False
 * when it does not count them. */
bool reconciler_calls(struct reconciler *r, int provider, uint64_t *total,
		      uint64_t *last_minute, size_t *resources);

/*
 * One command written to ENV/ctl: apply, approve [PLAN], discard,
 * import KIND/NAME ID (checked now, carried out by the next pass),
 * promote SRC, refresh, rollback REV. Returns 0 or a negative errno
 * (-EINVAL unknown command, -ESTALE plan no longer current, or what the
 * store refused a change with) with msg for the user. promote makes ENV's
 * specs those of SRC: whether the caller may read SRC is the file
 * system's to check first, with the caller's groups at hand.
 */
int reconciler_ctl(struct reconciler *r, const char *env, const char *line,
		   const struct caller *who, char *msg, size_t msglen);

#endif
