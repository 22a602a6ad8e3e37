// SPDX-License-Identifier: MIT
/*
 * The local provider: this machine. Endpoints become supervised processes
 * (replicas.c), pools become reservations of this machine's devices
 * (pools.c). What it must remember across restarts (reservations, the
 * revision each endpoint runs) is in STATE_DIR/local/records/; which
 * replicas run is always read from /proc.
 */
#include "local.h"

#include "providers/records.h"
#include "spawn.h"
#include "store/policy.h"
#include "util/log.h"
#include "util/text.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Crash loop: this many starts without ever being healthy is a failure. */
#define MAX_STARTS 4
/* GPU memory and utilization are read again this often. */
#define GPU_REFRESH_SECONDS 10.0
/* A step that can only wait (replicas starting or stopping) is tried
 * again no sooner than this: a local look is a /proc scan and a probe. */
#define LOCAL_POLL_S 0.5

static const char *const local_kinds[] = { "pool", "endpoint", NULL };

static const char *const local_unsupported[] = {
	"pool.capacity = spot",
	"one machine has no spot market",
	"endpoint.image",
	"the local provider runs `command`, not images",
	NULL,
};

static const struct provider_info local_info = {
	.name = "local",
	.summary = "This machine: endpoints run as supervised processes "
		   "(`command` under sh -c with $PORT set), pools reserve "
		   "this machine's GPUs or CPU slots.",
	.kinds = local_kinds,
	.unsupported = local_unsupported,
};

/* ---- persistence --------------------------------------------------------
 *
 * Reservations and the revision each endpoint runs, in STATE_DIR/local/
 * records/ (providers/records.h); which replicas run is read from /proc.
 */

int local_save_pool(struct local *l, const struct pool_res *p)
{
	json_t *devs = json_array();

	for (size_t i = 0; i < p->ndev; i++)
		json_array_append_new(devs, json_integer(p->devices[i]));
	return record_save(l->dir, "pool", p->key,
			   json_pack("{s:I, s:s, s:o}", "rev",
				     (json_int_t)p->rev, "accelerator",
				     p->accelerator, "devices", devs));
}

static int save_endpoint(struct local *l, const struct endpoint_rec *e)
{
	json_t *doc = json_pack("{s:I}", "rev", (json_int_t)e->rev);

	if (e->uid_known)
		json_object_set_new(doc, "uid", json_integer(e->uid));
	return record_save(l->dir, "endpoint", e->key, doc);
}

void local_forget(struct local *l, const char *kind, const char *key)
{
	record_forget(l->dir, kind, key);
}

static void load_pool(struct local *l, const char *key, json_t *p)
{
	struct pool_res *r = xcalloc(1, sizeof(*r));
	json_t *dev;
	size_t i;

	snprintf(r->key, sizeof(r->key), "%s", key);
	r->rev = (uint64_t)json_integer_value(json_object_get(p, "rev"));
	snprintf(r->accelerator, sizeof(r->accelerator), "%s",
		 json_string_value(json_object_get(p, "accelerator")) ?: "cpu");
	json_array_foreach(json_object_get(p, "devices"), i, dev)
	{
		if (r->ndev < 64)
			r->devices[r->ndev++] =
				(unsigned)json_integer_value(dev);
	}
	free(map_put(&l->pools, r->key, strlen(r->key), r));
}

static void load_endpoint(struct local *l, const char *key, json_t *e)
{
	struct endpoint_rec *r = xcalloc(1, sizeof(*r));

	snprintf(r->key, sizeof(r->key), "%s", key);
	r->rev = (uint64_t)json_integer_value(json_object_get(e, "rev"));
	/* A record without one is of a daemon that ran every replica as
	 * itself: those replicas are still ours to replace. */
	r->uid_known = true;
	r->uid = json_is_integer(json_object_get(e, "uid"))
			 ? (uid_t)json_integer_value(json_object_get(e, "uid"))
			 : geteuid();
	free(map_put(&l->endpoints, r->key, strlen(r->key), r));
}

static void load_record(void *ctx, const char *kind, const char *key,
			json_t *doc)
{
	if (!strcmp(kind, "pool"))
		load_pool(ctx, key, doc);
	else if (!strcmp(kind, "endpoint"))
		load_endpoint(ctx, key, doc);
}

/* ---- endpoints ------------------------------------------------------------ */

static struct endpoint_rec *endpoint_get(struct local *l, const char *env,
					 const char *name, bool make)
{
	char key[140];
	struct endpoint_rec *e;

	snprintf(key, sizeof(key), "%s/%s", env, name);
	e = map_get(&l->endpoints, key, strlen(key));
	if (!e && make) {
		e = xcalloc(1, sizeof(*e));
		snprintf(e->key, sizeof(e->key), "%s", key);
		map_put(&l->endpoints, e->key, strlen(e->key), e);
	}
	return e;
}

/*
 * A marker in a process's environment proves nothing: any user can set
 * one. A marked process is a replica only when it runs as the owner the
 * spec declares, or as the owner its replicas were last started as (an
 * environment given to another user rolls them: the old ones are still
 * ours to stop). Others are neither counted, adopted nor signalled.
 */
bool replica_trusted(struct local *l, const struct replica *r,
		     const struct desired *want)
{
	const struct endpoint_rec *e;

	if (want && r->uid == want->owner_uid)
		return true;
	e = endpoint_get(l, r->env, r->name, false);
	return e && e->uid_known && r->uid == e->uid;
}

static bool is_replica_of(struct local *l, const struct replica *r,
			  const struct target *t)
{
	return !strcmp(r->env, t->env) && !strcmp(r->name, t->name) &&
	       replica_trusted(l, r, t->want);
}

static struct replica *replica_at(struct local *l, const struct target *t,
				  unsigned idx)
{
	for (size_t i = 0; i < l->running.n; i++) {
		struct replica *r = &l->running.v[i];

		if (is_replica_of(l, r, t) && r->idx == idx)
			return r;
	}
	return NULL;
}

static unsigned wanted_replicas(const struct target *t)
{
	return t->want ? (unsigned)spec_int(t->want->spec, "replicas", 1) : 0;
}

static bool drift_reported(const struct target *t)
{
	char word[16] = "";

	if (t->want && t->want->config)
		spec_text(t->want->config, "drift", word, sizeof(word));
	return !strcmp(word, "report");
}

static void replica_lines(struct local *l, const struct target *t,
			  const struct replica *r, struct buf *out)
{
	struct slot *s = slot_of(l, t->env, t->name, r->idx);
	char log[PATH_MAX];

	replica_log_path(l, t->env, t->name, r->idx, log, sizeof(log));
	buf_printf(out,
		   "replica.%u: pid %d, port %d, %s, restarts %u, "
		   "last_exit %d, revision %" PRIu64 "\n",
		   r->idx, (int)r->pid, r->port,
		   r->healthy ? "healthy" : "unhealthy", s->restarts,
		   s->last_exit, r->rev);
	buf_printf(out, "log.%u: %s\n", r->idx, log);
}

/* Exit statuses of replicas that died since we looked, into their slots. */
static void note_exits(struct local *l, const struct target *t, unsigned wanted,
		       struct buf *drift)
{
	for (unsigned idx = 0; idx < wanted; idx++) {
		struct slot *s = slot_of(l, t->env, t->name, idx);
		int *code;

		if (replica_at(l, t, idx) || !s->pid)
			continue;
		code = map_del(&l->exits, &s->pid, sizeof(s->pid));
		if (code) {
			s->last_exit = code[0];
			free(code);
		}
		if (t->want && s->rev && !s->term_sent)
			buf_printf(drift, "%sreplica %u gone (pid %d, exit %d)",
				   drift->len ? "; " : "", idx, (int)s->pid,
				   s->last_exit);
	}
}

static bool crash_looping(struct local *l, const struct target *t,
			  unsigned wanted, char *err, size_t errlen)
{
	for (unsigned idx = 0; idx < wanted; idx++) {
		struct slot *s = slot_of(l, t->env, t->name, idx);

		if (s->starts >= MAX_STARTS && !replica_at(l, t, idx)) {
			snprintf(err, errlen,
				 "replica %u exited with status %d, %u starts "
				 "in a row without becoming healthy",
				 idx, s->last_exit, s->starts);
			return true;
		}
	}
	return false;
}

static void endpoint_devices(struct local *l, const struct target *t, char *out,
			     size_t len)
{
	char pool[NAME_MAX_LEN + 1] = "";

	out[0] = '\0';
	if (t->want)
		spec_text(t->want->spec, "pool", pool, sizeof(pool));
	if (pool[0])
		pool_visible_devices(l, t->env, pool, out, len);
}

static uint64_t desired_template(struct local *l, const struct target *t)
{
	char devices[256];

	if (!t->want)
		return 0;
	endpoint_devices(l, t, devices, sizeof(devices));
	return replica_template(l, t->want, devices);
}

static uint64_t lowest_rev_of(struct local *l, const struct target *t)
{
	uint64_t lowest = UINT64_MAX;

	for (size_t i = 0; i < l->running.n; i++) {
		if (is_replica_of(l, &l->running.v[i], t) &&
		    l->running.v[i].rev < lowest)
			lowest = l->running.v[i].rev;
	}
	return lowest == UINT64_MAX ? 0 : lowest;
}

static void endpoint_observe(struct local *l, struct target *t)
{
	struct observation *o = &t->obs;
	struct endpoint_rec *e = endpoint_get(l, t->env, t->name, false);
	unsigned wanted = wanted_replicas(t), healthy = 0, running = 0;
	uint64_t lowest = UINT64_MAX, tmpl = desired_template(l, t);
	bool stale = false;
	const char *health = spec_str(t->want ? t->want->spec : NULL,
				      "health_path", "/health");
	BUF_AUTO drift = BUF_INIT;

	for (size_t i = 0; i < l->running.n; i++) {
		struct replica *r = &l->running.v[i];

		if (!is_replica_of(l, r, t))
			continue;
		running++;
		if (r->template != tmpl && r->rev < lowest) {
			lowest = r->rev;
			stale = true;
		}
		replicas_probe(l, health, r);
		if (r->healthy && r->idx < wanted) {
			struct slot *s = slot_of(l, t->env, t->name, r->idx);

			healthy++;
			s->starts = 0;
			s->ever_healthy = true;
		}
	}
	o->exists = running || e;
	o->settled = !stale && running == wanted;
	/* Replicas made from another template run an older revision; if all
	 * match, the endpoint is at the revision last applied to it. */
	o->applied_rev = stale ? lowest : (e ? e->rev : 0);
	if (!stale && !e && running)
		o->applied_rev = lowest_rev_of(l, t);
	note_exits(l, t, wanted, &drift);
	snprintf(o->drift, sizeof(o->drift), "%s", buf_str(&drift));
	/* Nothing wanted and nothing running: a draft, or an endpoint
	 * gone, is not being deleted. */
	if (!t->want)
		o->state = o->exists ? RS_DELETING : RS_PENDING;
	else if (crash_looping(l, t, wanted, o->error, sizeof(o->error)))
		o->state = RS_FAILED;
	else if (healthy >= wanted && o->applied_rev == t->want->rev &&
		 running == wanted)
		o->state = RS_READY;
	else if (o->applied_rev && o->applied_rev != t->want->rev)
		o->state = RS_UPDATING;
	else if (drift.len && healthy)
		o->state = RS_DEGRADED;
	else
		o->state = RS_CREATING;
	if (running) {
		struct replica *first = NULL;

		for (unsigned idx = 0; idx < wanted && !first; idx++)
			first = replica_at(l, t, idx);
		if (first)
			buf_printf(&o->details, "url: http://127.0.0.1:%d\n",
				   first->port);
	}
	buf_printf(&o->details, "replicas: %u/%u ready, %u running\n", healthy,
		   wanted, running);
	for (unsigned idx = 0; idx < 64; idx++) {
		struct replica *r = replica_at(l, t, idx);

		if (r)
			replica_lines(l, t, r, &o->details);
	}
}

/* Stops what is not wanted: replicas past the count, or of an older rev. */
static unsigned stop_unwanted(struct local *l, struct target *t,
			      unsigned wanted)
{
	uint64_t tmpl = desired_template(l, t);
	unsigned stopping = 0;

	for (size_t i = 0; i < l->running.n; i++) {
		struct replica *r = &l->running.v[i];

		if (!is_replica_of(l, r, t))
			continue;
		if (t->want && r->idx < wanted && r->template == tmpl)
			continue;
		if (!replica_stop(l, r))
			stopping++;
	}
	return stopping;
}

/* Alive and not a zombie waiting to be reaped. */
static bool process_alive(pid_t pid)
{
	unsigned long long start;
	pid_t session;
	char state;

	return kill(pid, 0) == 0 && proc_stat(pid, &state, &session, &start) &&
	       state != 'Z' && state != 'X';
}

/* How many replicas it started, or a negative errno. */
static int start_missing(struct local *l, struct target *t, unsigned wanted)
{
	char devices[256];
	double now = time_now();
	int rc = 0, started = 0;

	endpoint_devices(l, t, devices, sizeof(devices));
	for (unsigned idx = 0; idx < wanted; idx++) {
		struct slot *s = slot_of(l, t->env, t->name, idx);
		struct replica *r = replica_at(l, t, idx);

		if (r)
			continue;
		/* A replica between fork and exec, or exec'ing, can miss a
		 * scan; the process infrafs started last is not started
		 * twice while it lives. */
		if (s->pid && !s->term_sent && process_alive(s->pid))
			continue;
		/* A new revision is a fresh start for a slot that failed. */
		if (s->rev != t->want->rev) {
			s->starts = 0;
			s->next_start = 0;
		}
		/* Gone from outside with drift = report: leave it so. */
		if (s->pid && !s->term_sent && drift_reported(t))
			continue;
		if (s->starts >= MAX_STARTS || now < s->next_start)
			continue;
		if (s->pid && !s->term_sent)
			s->restarts++;
		/* Backoff between starts of a replica that keeps dying. */
		s->next_start =
			now +
			0.25 * (double)(1u << (s->starts < 6 ? s->starts : 6));
		rc = replica_start(l, t->want, idx, devices, t->obs.error,
				   sizeof(t->obs.error));
		if (rc)
			return rc;
		started++;
	}
	return started;
}

/* The owner the replicas run as changes in the record only once no
 * replica of the former owner is left, so those are found and stopped
 * after a restart too. True when it changed. */
static bool note_owner(struct local *l, const struct target *t,
		       struct endpoint_rec *e)
{
	uid_t owner = t->want->owner_uid;

	if (e->uid_known && e->uid == owner)
		return false;
	for (size_t i = 0; i < l->running.n; i++) {
		const struct replica *r = &l->running.v[i];

		if (is_replica_of(l, r, t) && r->uid != owner)
			return false;
	}
	e->uid = owner;
	e->uid_known = true;
	return true;
}

/* Sets *idle when it could do nothing but wait (old replicas stopping,
 * new ones starting up). */
static int endpoint_step(struct local *l, struct target *t, bool *idle)
{
	unsigned wanted = wanted_replicas(t);
	unsigned stopping = stop_unwanted(l, t, wanted);
	struct endpoint_rec *e;
	int rc;

	if (!t->want) {
		if (!stopping) {
			e = endpoint_get(l, t->env, t->name, false);
			if (e) {
				map_del(&l->endpoints, e->key, strlen(e->key));
				local_forget(l, "endpoint", e->key);
				free(e);
			}
		}
		return 0;
	}
	/* An update replaces replicas once the old ones are gone. */
	if (stopping && t->obs.applied_rev != t->want->rev) {
		*idle = true;
		return 0;
	}
	rc = start_missing(l, t, wanted);
	e = endpoint_get(l, t->env, t->name, true);
	if (note_owner(l, t, e) || e->rev != t->want->rev) {
		e->rev = t->want->rev;
		save_endpoint(l, e);
	}
	*idle = rc == 0 && !stopping;
	return rc < 0 ? rc : 0;
}

/* ---- the provider ------------------------------------------------------ */

/* A failed discovery keeps the last good list: a passing nvidia-smi
 * error must not look like every GPU gone. */
static void refresh_devices(struct local *l)
{
	struct gpu_list fresh = { 0 };
	char err[256];
	double now = time_now();

	if (l->gpus_at && now - l->gpus_at < GPU_REFRESH_SECONDS)
		return;
	l->gpus_at = now;
	if (gpu_discover(NULL, &fresh, err, sizeof(err)) < 0) {
		log_warn("GPU discovery: %s", err);
		return;
	}
	gpu_list_free(&l->gpus);
	l->gpus = fresh;
}

static void local_observe(void *state, struct target *t, size_t n)
{
	struct local *l = state;

	replicas_reap(l);
	replicas_scan(l);
	refresh_devices(l);
	for (size_t i = 0; i < n; i++) {
		if (t[i].kind == KIND_POOL_IDX)
			pool_observe(l, &t[i]);
		else
			endpoint_observe(l, &t[i]);
	}
}

/* A step is followed by a fresh look, so what it reports is what runs. */
static int local_step(void *state, struct target *t)
{
	struct local *l = state;
	char err[sizeof(t->obs.error)];
	bool idle = false;
	int rc;

	t->obs.error[0] = '\0';
	rc = t->kind == KIND_POOL_IDX ? pool_step(l, t)
				      : endpoint_step(l, t, &idle);
	snprintf(err, sizeof(err), "%s",
		 t->obs.error[0] ? t->obs.error : (rc ? strerror(-rc) : ""));
	observation_clear(&t->obs);
	replicas_scan(l);
	if (t->kind == KIND_POOL_IDX)
		pool_observe(l, t);
	else
		endpoint_observe(l, t);
	if (rc && err[0])
		snprintf(t->obs.error, sizeof(t->obs.error), "%s", err);
	if (idle)
		t->obs.retry_in_s = LOCAL_POLL_S;
	return rc;
}

static void local_list(void *state, const char *env, struct buf *out)
{
	struct local *l = state;
	size_t n = strlen(env);
	void *v;

	for (size_t pos = 0; map_next(&l->pools, &pos, &v);) {
		const struct pool_res *p = v;

		if (!strncmp(p->key, env, n) && p->key[n] == '/')
			buf_printf(out, "pools/%s\n", p->key + n + 1);
	}
	for (size_t pos = 0; map_next(&l->endpoints, &pos, &v);) {
		const struct endpoint_rec *e = v;

		if (!strncmp(e->key, env, n) && e->key[n] == '/')
			buf_printf(out, "endpoints/%s\n", e->key + n + 1);
	}
	for (size_t i = 0; i < l->running.n; i++) {
		const struct replica *r = &l->running.v[i];

		if (!strcmp(r->env, env) && replica_trusted(l, r, NULL))
			buf_printf(out, "endpoints/%s\n", r->name);
	}
}

static int local_check(const struct desired *want, char *msg, size_t len)
{
	char word[64];

	if (want->kind == KIND_POOL_IDX) {
		spec_text(want->spec, "capacity", word, sizeof(word));
		if (!strcmp(word, "spot")) {
			snprintf(msg, len,
				 "capacity: spot is not supported by the local "
				 "provider (one machine has no spot market)");
			return -EINVAL;
		}
		return 0;
	}
	spec_text(want->spec, "image", word, sizeof(word));
	if (word[0]) {
		snprintf(msg, len,
			 "image: not supported by the local provider, which "
			 "runs `command`; remove image or use another "
			 "provider");
		return -EINVAL;
	}
	return identity_allowed(want->owner_uid, want->env, msg, len);
}

/*
 * One machine has no price list, but teams charge back what their GPUs
 * are worth: `local.price.ACCELERATOR = USD per device-hour` in the
 * environment's config. Unpriced devices cost nothing.
 */
static double device_price(const struct desired *want, const char *acc)
{
	BUF_AUTO key = BUF_INIT;
	const char *price;

	buf_printf(&key, "price.%s", acc);
	price = spec_map_get(want->config, "local", buf_str(&key));
	return price ? strtod(price, NULL) : 0;
}

static double local_hourly_cost(const struct desired *want)
{
	char acc[64], pool[NAME_MAX_LEN + 1];

	spec_text(want->spec, "accelerator", acc, sizeof(acc));
	if (!acc[0])
		snprintf(acc, sizeof(acc), "cpu");
	if (want->kind == KIND_POOL_IDX)
		return (double)(spec_int(want->spec, "nodes", 1) *
				spec_int(want->spec, "accelerators_per_node",
					 1)) *
		       device_price(want, acc);
	/* Replicas on a pool use what the pool already counts. */
	spec_text(want->spec, "pool", pool, sizeof(pool));
	if (pool[0])
		return 0;
	return (double)(spec_int(want->spec, "replicas", 1) *
			spec_int(want->spec, "accelerators", 0)) *
	       device_price(want, acc);
}

/* A stable mark per state folder: replicas of another daemon are not ours. */
static void make_owner(struct local *l)
{
	snprintf(l->owner, sizeof(l->owner), "%016" PRIx64,
		 map_hash(l->dir, strlen(l->dir)));
}

/*
 * The state folder and the provider's below it hold what the daemon
 * writes as root: records and the replicas' logs. Each must be the
 * daemon's own and writable by nobody else, or a planted link would have
 * it write where another user chose. Returns the provider folder's
 * descriptor, or a negative errno, logged with the folder and why.
 */
static int open_own_folders(const char *state_dir)
{
	char why[256];
	int top, dir = -1;

	top = own_dir_open(AT_FDCWD, state_dir, why, sizeof(why));
	if (top >= 0) {
		dir = own_dir_open(top, "local", why, sizeof(why));
		close(top);
		if (dir < 0)
			log_err("local provider: refusing %s/%s", state_dir,
				why);
	} else {
		dir = top;
		log_err("local provider: refusing state folder %s", why);
	}
	return dir;
}

static void local_stop(void *state);

static int local_start(const struct provider_host *host, void **state)
{
	struct local *l;
	int dir = open_own_folders(host->state_dir);

	if (dir < 0)
		return dir;
	l = xcalloc(1, sizeof(*l));
	l->host = *host;
	l->dir_fd = dir;
	snprintf(l->dir, sizeof(l->dir), "%s/local", host->state_dir);
	make_owner(l);
	l->cpus = cpu_slots();
	l->curl = curl_easy_init();
	if (records_load(l->dir, load_record, l) < 0) {
		local_stop(l);
		return -EPERM;
	}
	*state = l;
	return 0;
}

static void free_map(struct map *m)
{
	void *v;

	for (size_t pos = 0; map_next(m, &pos, &v);)
		free(v);
	map_free(m);
}

/* Replicas keep running: the next daemon adopts them. */
static void local_stop(void *state)
{
	struct local *l = state;

	free_map(&l->pools);
	free_map(&l->endpoints);
	free_map(&l->slots);
	free_map(&l->exits);
	free(l->running.v);
	free(l->children.v);
	close(l->dir_fd);
	gpu_list_free(&l->gpus);
	if (l->curl)
		curl_easy_cleanup(l->curl);
	free(l);
}

const struct provider_ops local_provider = {
	.info = &local_info,
	.start = local_start,
	.stop = local_stop,
	.observe = local_observe,
	.step = local_step,
	.list = local_list,
	.check = local_check,
	.hourly_cost = local_hourly_cost,
};
