// SPDX-License-Identifier: MIT
/*
 * The watcher thread of a shared store. Each round it waits for a commit
 * notice (at most WATCH_PERIOD_MS), tells the store when the count moved
 * past what its model reflects, and keeps or tries to take the lease of
 * every environment. A round that cannot reach the store drops every
 * lease at once: the server drops them with the session, and a daemon
 * that cannot prove it leads must not act as if it did.
 */
#include "watcher.h"

#include "util/buf.h"
#include "util/log.h"
#include "util/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* True when this is news: the store answered until now. */
static bool lose_all(struct watcher *w)
{
	bool had = false, news;

	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; i < w->nleases; i++) {
		had |= w->leases[i].held;
		w->leases[i].held = false;
	}
	news = !w->unreachable_since;
	if (news)
		w->unreachable_since = time_now();
	pthread_mutex_unlock(&w->lock);
	if (had)
		log_warn("state store unreachable: this daemon stops acting on "
			 "providers until it holds its leases again");
	return news;
}

static const struct lease *lease_of(const struct watcher *w, uint64_t env_id)
{
	for (size_t i = 0; i < w->nleases; i++)
		if (w->leases[i].env_id == env_id)
			return &w->leases[i];
	return NULL;
}

static bool was_held(const struct watcher *w, uint64_t env_id)
{
	const struct lease *l = lease_of(w, env_id);

	return l && l->held;
}

/* Whether a lease changed hands since the last round, as a reader of the
 * environment's status would see it. */
static bool lease_moved(const struct watcher *w, const struct lease *now)
{
	const struct lease *before = lease_of(w, now->env_id);

	return !before || before->held != now->held ||
	       strcmp(before->holder, now->holder) != 0;
}

/* One lease per environment there is; false when the store failed.
 * *moved: some lease changed hands, or the store answers again. */
static bool keep_leases(struct watcher *w, bool *moved)
{
	uint64_t *ids = NULL;
	size_t n = w->hooks.env_ids(w->hooks.ctx, &ids);
	struct lease *next = xcalloc(n ? n : 1, sizeof(*next));
	bool ok = true;

	for (size_t i = 0; i < n && ok; i++) {
		next[i].env_id = ids[i];
		ok = !w->ops->lease(w->be, ids[i], &next[i].held,
				    next[i].holder, sizeof(next[i].holder));
	}
	free(ids);
	if (!ok) {
		free(next);
		return false;
	}
	pthread_mutex_lock(&w->lock);
	*moved = w->unreachable_since != 0;
	for (size_t i = 0; i < n; i++) {
		*moved |= lease_moved(w, &next[i]);
		if (next[i].held && !was_held(w, next[i].env_id))
			log_info("state store: this daemon now reconciles "
				 "environment %llu",
				 (unsigned long long)next[i].env_id);
	}
	free(w->leases);
	w->leases = next;
	w->nleases = n;
	w->unreachable_since = 0;
	pthread_mutex_unlock(&w->lock);
	return true;
}

static void pause_ms(int ms)
{
	struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&t, NULL);
}

static void *watch(void *arg)
{
	struct watcher *w = arg;

	while (!atomic_load(&w->stopping)) {
		uint64_t count = 0;
		bool moved = false;
		int rc = w->ops->wait_commit(w->be, WATCH_PERIOD_MS, &count,
					     w->hooks.heard, w->hooks.ctx);

		if (!rc && count != w->hooks.model_count(w->hooks.ctx))
			w->hooks.behind(w->hooks.ctx);
		if (!rc && !keep_leases(w, &moved))
			rc = -EIO;
		if (rc) {
			if (lose_all(w)) {
				atomic_fetch_add(&w->epoch, 1);
				w->hooks.leases_moved(w->hooks.ctx);
			}
			pause_ms(WATCH_PERIOD_MS);
			continue;
		}
		if (moved) {
			atomic_fetch_add(&w->epoch, 1);
			w->hooks.leases_moved(w->hooks.ctx);
		}
	}
	return NULL;
}

int watcher_start(struct watcher *w, const struct backend_ops *ops,
		  struct backend *be, const struct watcher_hooks *hooks)
{
	memset(w, 0, sizeof(*w));
	w->ops = ops;
	w->be = be;
	w->hooks = *hooks;
	atomic_init(&w->stopping, false);
	pthread_mutex_init(&w->lock, NULL);
	if (pthread_create(&w->thread, NULL, watch, w) != 0) {
		pthread_mutex_destroy(&w->lock);
		return -EAGAIN;
	}
	return 0;
}

void watcher_stop(struct watcher *w)
{
	atomic_store(&w->stopping, true);
	pthread_join(w->thread, NULL);
	pthread_mutex_destroy(&w->lock);
	free(w->leases);
	w->leases = NULL;
	w->nleases = 0;
}

bool watcher_leads(struct watcher *w, uint64_t env_id)
{
	bool held;

	pthread_mutex_lock(&w->lock);
	held = was_held(w, env_id);
	pthread_mutex_unlock(&w->lock);
	return held;
}

void watcher_holder(struct watcher *w, uint64_t env_id, char *out, size_t len)
{
	out[0] = '\0';
	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; i < w->nleases; i++)
		if (w->leases[i].env_id == env_id)
			snprintf(out, len, "%s", w->leases[i].holder);
	pthread_mutex_unlock(&w->lock);
}

uint64_t watcher_epoch(struct watcher *w)
{
	return atomic_load(&w->epoch);
}

double watcher_unreachable_since(struct watcher *w)
{
	double since;

	pthread_mutex_lock(&w->lock);
	since = w->unreachable_since;
	pthread_mutex_unlock(&w->lock);
	return since;
}
