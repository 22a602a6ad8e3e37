/* SPDX-License-Identifier: MIT */
/*
 * What a daemon sharing its store with others runs beside the committer:
 * a thread that learns of the other daemons' commits (so the committer
 * reloads and the mount shows them) and holds this daemon's environment
 * leases (so exactly one daemon carries each environment to its
 * provider). A store with one daemon has no watcher: it leads everything.
 */
#ifndef INFRAFS_STORE_WATCHER_H
#define INFRAFS_STORE_WATCHER_H

#include "backend.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How often leases are kept and looked for, and the longest a commit of
 * another daemon waits to be noticed when its notification was lost. */
#define WATCH_PERIOD_MS 500

/* What the watcher asks of the store, from its own thread. */
struct watcher_hooks {
	void *ctx;
	/* The commit count the store's model reflects. */
	uint64_t (*model_count)(void *ctx);
	/* Another daemon committed: the model is behind. */
	void (*behind)(void *ctx);
	/* A lease changed hands, or the store stopped or started
	 * answering: what status shows of it changed, and an environment
	 * this daemon now leads wants a look. */
	void (*leases_moved)(void *ctx);
	/* The ids of the environments there are now; the caller frees. */
	size_t (*env_ids)(void *ctx, uint64_t **ids);
	/* A message some daemon announced (perhaps this one). */
	void (*heard)(void *ctx, const char *message);
};

struct lease {
	uint64_t env_id;
	bool held;
	char holder[192]; /* "HOST pid N", "" when nobody holds it */
};

struct watcher {
	const struct backend_ops *ops;
	struct backend *be;
	struct watcher_hooks hooks;
	pthread_t thread;
	atomic_bool stopping;
	/* Moves on whenever what status shows of the leases or of the
	 * store's reachability changes: renders cached before are stale. */
	_Atomic uint64_t epoch;
	/*
	 * lock guards leases and nleases: the watcher thread replaces the
	 * table whole after each round, readers (the reconciler, the
	 * mount's renderers) copy what they need out under it. No other
	 * lock is taken while it is held.
	 */
	pthread_mutex_t lock;
	struct lease *leases;
	size_t nleases;
	/* Since when the store could not be reached (0: it can); under
	 * lock. */
	double unreachable_since;
};

int watcher_start(struct watcher *w, const struct backend_ops *ops,
		  struct backend *be, const struct watcher_hooks *hooks);
void watcher_stop(struct watcher *w);

/* Whether this daemon holds env_id's lease now. */
bool watcher_leads(struct watcher *w, uint64_t env_id);
/* Who holds env_id's lease, "" when nobody does, or unknown yet. */
void watcher_holder(struct watcher *w, uint64_t env_id, char *out, size_t len);
/* Changes whenever watcher_holder() or watcher_unreachable_since() may
 * answer differently. */
uint64_t watcher_epoch(struct watcher *w);
/* Since when the store has not answered the watcher; 0 when it does. */
double watcher_unreachable_since(struct watcher *w);

#endif
