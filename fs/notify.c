// SPDX-License-Identifier: MIT
/*
 * Kernel cache invalidation. Generated files are served from the kernel's
 * page cache (that is what makes `cat status` cheap); whenever what one
 * shows changes, its cached pages and attributes are dropped here. Changes
 * made outside a request (the committer, later the reconciler) go through
 * a thread of their own, because a notification sent from inside a request
 * handler can deadlock against the kernel locks that request holds.
 * Pollers of a changed file are woken here too, right after its cache is
 * dropped: the daemon's own changes raise no inotify event, so poll(2) is
 * how a program waits for them.
 */
#include "fs.h"

#include "util/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* How long a stop waits for a send in progress before unmounting. */
#define STOP_SECONDS 2

/* More than any kind has fields; a removed resource's kind is unknown. */
#define MAX_FIELDS 32

static const enum node_type env_nodes[] = {
	NT_ENV,		  NT_ENV_CONFIG, NT_ENV_POLICY, NT_ENV_PLAN,
	NT_ENV_PLAN_JSON, NT_ENV_STATUS, NT_ENV_EVENTS, NT_ENV_AUDIT,
	NT_HISTORY,	  NT_SECRETS,	 NT_EXPORT,	NT_EXPORT_TERRAFORM,
};

static const enum node_type res_nodes[] = {
	NT_RES,	      NT_RES_SPEC,   NT_RES_STATUS, NT_RES_STATUS_JSON,
	NT_RES_STATE, NT_RES_EVENTS,
};

typedef void (*ino_fn)(struct fs *fs, fuse_ino_t ino);

static void visit(struct fs *fs, const struct node_key *k, ino_fn fn)
{
	fuse_ino_t ino = node_find(&fs->nodes, k);

	if (ino)
		fn(fs, ino);
}

/* Every inode the kernel may cache for an object. */
static void for_each_ino(struct fs *fs, uint64_t env_id, uint64_t res_id,
			 ino_fn fn)
{
	struct node_key k;

	if (!env_id && !res_id) {
		k = node_key_make(NT_ROOT, 0, 0, 0);
		visit(fs, &k, fn);
		return;
	}
	for (size_t i = 0; env_id && i < sizeof(env_nodes) / sizeof(*env_nodes);
	     i++) {
		k = node_key_make(env_nodes[i], 0, env_id, 0);
		visit(fs, &k, fn);
	}
	for (int kind = 0; env_id && kind < NKINDS; kind++) {
		k = node_key_make(NT_KIND_DIR, (uint16_t)kind, env_id, 0);
		visit(fs, &k, fn);
	}
	if (!res_id)
		return;
	for (size_t i = 0; i < sizeof(res_nodes) / sizeof(*res_nodes); i++) {
		k = node_key_make(res_nodes[i], 0, res_id, 0);
		visit(fs, &k, fn);
	}
	for (uint16_t f = 0; f < MAX_FIELDS; f++) {
		k = node_key_make(NT_RES_FIELD, f, res_id, 0);
		visit(fs, &k, fn);
	}
}

static void inval_now(struct fs *fs, fuse_ino_t ino)
{
	int rc;

	/* Whatever the kernel caches from here on is of unknown content
	 * until an open records what it is. */
	node_set_cached_gen(&fs->nodes, ino, 0);
	rc = fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);

	/* ENOENT: the kernel already forgot the inode, nothing to drop. */
	if (rc && rc != -ENOENT)
		log_debug("invalidating inode %lu: %s", (unsigned long)ino,
			  strerror(-rc));
}

static void enqueue_one(struct fs *fs, fuse_ino_t ino, uint64_t gen, bool wake)
{
	struct notify_queue *q = &fs->notify;

	if (q->n == q->cap) {
		q->cap = q->cap ? q->cap * 2 : 64;
		q->inos = xrealloc(q->inos, q->cap * sizeof(*q->inos));
	}
	q->inos[q->n++] = (struct notify_inode){ ino, gen, wake };
}

/* A content change: the kernel's copy goes, and its pollers wake. */
static void enqueue(struct fs *fs, fuse_ino_t ino)
{
	enqueue_one(fs, ino, 0, true);
}

/* Once the loop has ended no request is answered, and a send may wait on
 * one (a page lock, a folder's lock): what is left is dropped. */
static bool may_send(struct fs *fs)
{
	return fs->se && !atomic_load(&fs->notify.quiet);
}

/* ---- pollers ------------------------------------------------------------ */

struct poll_waiters {
	uint64_t ino; /* the map's key */
	struct handle **v;
	size_t n, cap;
};

static void poll_table_init(struct poll_table *t)
{
	pthread_mutex_init(&t->lock, NULL);
	memset(&t->by_ino, 0, sizeof(t->by_ino));
}

static void poll_table_free(struct poll_table *t)
{
	void *v;

	for (size_t pos = 0; map_next(&t->by_ino, &pos, &v);) {
		struct poll_waiters *w = v;

		free(w->v);
		free(w);
	}
	map_free(&t->by_ino);
	pthread_mutex_destroy(&t->lock);
}

/*
 * Under the table's lock throughout: a second poll of the same open file
 * (a dup'd descriptor on another thread) looks for news only once the
 * first has registered it, so a change between them still wakes both.
 */
void poll_watch(struct fs *fs, fuse_ino_t ino, struct handle *h,
		struct fuse_pollhandle *ph)
{
	struct poll_table *t = &fs->polls;
	uint64_t key = ino;
	struct poll_waiters *w;

	pthread_mutex_lock(&t->lock);
	if (!file_poll_keep(h, ph)) {
		pthread_mutex_unlock(&t->lock);
		return;
	}
	w = map_get_u64(&t->by_ino, &key);
	if (!w) {
		w = xcalloc(1, sizeof(*w));
		w->ino = ino;
		map_put(&t->by_ino, &w->ino, sizeof(w->ino), w);
	}
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 4;
		w->v = xrealloc(w->v, w->cap * sizeof(*w->v));
	}
	w->v[w->n++] = h;
	pthread_mutex_unlock(&t->lock);
}

void poll_forget(struct fs *fs, fuse_ino_t ino, struct handle *h)
{
	struct poll_table *t = &fs->polls;
	uint64_t key = ino;
	struct poll_waiters *w;

	pthread_mutex_lock(&t->lock);
	w = map_get_u64(&t->by_ino, &key);
	for (size_t i = 0; w && i < w->n; i++) {
		if (w->v[i] != h)
			continue;
		w->v[i] = w->v[--w->n];
		break;
	}
	if (w && !w->n) {
		map_del(&t->by_ino, &w->ino, sizeof(w->ino));
		free(w->v);
		free(w);
	}
	pthread_mutex_unlock(&t->lock);
}

/*
 * Wakes every poller of ino. Called once the kernel's cache of the inode
 * is gone, so that the read a woken poller makes reaches the daemon. A
 * poll handle serves one notification: the kernel asks again with a new
 * one. The sends happen with no lock held; a released handle cannot be
 * freed while its poll handle is taken, since release forgets it first.
 */
static void wake_pollers(struct fs *fs, fuse_ino_t ino)
{
	struct poll_table *t = &fs->polls;
	struct fuse_pollhandle **phs = NULL;
	uint64_t key = ino;
	struct poll_waiters *w;
	size_t n = 0;

	pthread_mutex_lock(&t->lock);
	w = map_get_u64(&t->by_ino, &key);
	if (w) {
		phs = xcalloc(w->n, sizeof(*phs));
		for (size_t i = 0; i < w->n; i++) {
			phs[n] = file_poll_take(w->v[i]);
			if (phs[n])
				n++;
		}
	}
	pthread_mutex_unlock(&t->lock);
	for (size_t i = 0; i < n; i++) {
		int rc = may_send(fs) ? fuse_lowlevel_notify_poll(phs[i]) : 0;

		/* ENOENT: that open file was closed meanwhile. */
		if (rc && rc != -ENOENT)
			log_debug("waking a poller of inode %lu: %s",
				  (unsigned long)ino, strerror(-rc));
		fuse_pollhandle_destroy(phs[i]);
	}
	free(phs);
}

/*
 * Pollers are not woken here: every change made now is a store change,
 * whose hook queues the same inodes with their wake for the notifier, so
 * the writer's close(2) does not wait for a send to each poller.
 */
void notify_changed_now(struct fs *fs, uint64_t env_id, uint64_t res_id)
{
	if (fs->se)
		for_each_ino(fs, env_id, res_id, inval_now);
}

void notify_entry(struct fs *fs, fuse_ino_t parent, const char *name)
{
	struct notify_queue *q = &fs->notify;
	struct notify_entry *e;

	pthread_mutex_lock(&q->lock);
	if (q->nentries == q->entries_cap) {
		q->entries_cap = q->entries_cap ? q->entries_cap * 2 : 16;
		q->entries = xrealloc(q->entries,
				      q->entries_cap * sizeof(*q->entries));
	}
	e = &q->entries[q->nentries++];
	e->parent = parent;
	snprintf(e->name, sizeof(e->name), "%s", name);
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

static void inval_entries(struct fs *fs, struct notify_entry *v, size_t n)
{
	for (size_t i = 0; i < n && may_send(fs); i++)
		fuse_lowlevel_notify_inval_entry(fs->se, v[i].parent, v[i].name,
						 strlen(v[i].name));
}

void notify_inode(struct fs *fs, fuse_ino_t ino, uint64_t gen)
{
	struct notify_queue *q = &fs->notify;

	pthread_mutex_lock(&q->lock);
	enqueue_one(fs, ino, gen, false);
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

void notify_changed(struct fs *fs, uint64_t env_id, uint64_t res_id)
{
	struct notify_queue *q = &fs->notify;

	pthread_mutex_lock(&q->lock);
	for_each_ino(fs, env_id, res_id, enqueue);
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

static void *notifier(void *arg)
{
	struct fs *fs = arg;
	struct notify_queue *q = &fs->notify;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct notify_inode *batch;
		size_t n;

		struct notify_entry *entries;
		size_t nentries;

		while (!q->n && !q->nentries && !q->stopping)
			pthread_cond_wait(&q->cond, &q->lock);
		if (q->stopping)
			break;
		batch = q->inos;
		n = q->n;
		q->inos = NULL;
		q->n = q->cap = 0;
		entries = q->entries;
		nentries = q->nentries;
		q->entries = NULL;
		q->nentries = q->entries_cap = 0;
		pthread_mutex_unlock(&q->lock);
		inval_entries(fs, entries, nentries);
		free(entries);
		for (size_t i = 0; i < n && may_send(fs); i++) {
			inval_now(fs, batch[i].ino);
			if (batch[i].wake)
				wake_pollers(fs, batch[i].ino);
			if (batch[i].gen)
				node_set_cached_gen(&fs->nodes, batch[i].ino,
						    batch[i].gen);
		}
		free(batch);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/* The kernel may hold entries of history/ for revisions just pruned;
 * only those it looked up have a node. */
static void notify_pruned(struct fs *fs, const struct store_touch *t)
{
	struct node_key k = node_key_make(NT_HISTORY, 0, t->env_id, 0);
	fuse_ino_t history = node_find(&fs->nodes, &k);
	char name[24];

	for (uint64_t rev = t->pruned_from; history && rev < t->first_rev;
	     rev++) {
		k = node_key_make(NT_REV, 0, t->env_id, rev);
		if (!node_find(&fs->nodes, &k))
			continue;
		snprintf(name, sizeof(name), "%" PRIu64, rev);
		notify_entry(fs, history, name);
	}
}

static void on_store_change(void *ctx, const struct store_touch *t, size_t n)
{
	struct fs *fs = ctx;
	struct reconciler *rec = fs->rec;

	for (size_t i = 0; i < n; i++) {
		notify_changed(fs, t[i].env_id, t[i].res_id);
		if (t[i].pruned_from)
			notify_pruned(fs, &t[i]);
	}
	if (rec)
		reconciler_kick(rec, t, n);
}

int notify_start(struct fs *fs)
{
	struct notify_queue *q = &fs->notify;

	memset(q, 0, sizeof(*q));
	poll_table_init(&fs->polls);
	atomic_init(&q->quiet, false);
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	if (pthread_create(&q->thread, NULL, notifier, fs) != 0) {
		pthread_mutex_destroy(&q->lock);
		pthread_cond_destroy(&q->cond);
		poll_table_free(&fs->polls);
		return -EAGAIN;
	}
	store_set_change_hook(fs->store, on_store_change, fs);
	return 0;
}

void notify_detach(struct fs *fs)
{
	atomic_store(&fs->notify.quiet, true);
	store_set_change_hook(fs->store, NULL, NULL);
}

static void queue_free(struct fs *fs, struct notify_queue *q)
{
	poll_table_free(&fs->polls);
	free(q->inos);
	free(q->entries);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->cond);
}

int notify_stop(struct fs *fs)
{
	struct notify_queue *q = &fs->notify;
	struct timespec until;

	notify_detach(fs);
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += STOP_SECONDS;
	if (pthread_timedjoin_np(q->thread, NULL, &until) != 0)
		return -ETIMEDOUT;
	queue_free(fs, q);
	return 0;
}

void notify_reap(struct fs *fs)
{
	pthread_join(fs->notify.thread, NULL);
	queue_free(fs, &fs->notify);
}
