// SPDX-License-Identifier: MIT
/*
 * Every generated file's bytes are made here and nowhere else; files.c
 * serves offsets out of what this returns. Results are cached by the
 * generation of the state they show, so an unchanged file is rendered once
 * however often it is read. Callers hold the model's read lock.
 */
#include "fs.h"
#include "build_info.h"

#include "providers/provider.h"
#include "store/policy.h"
#include "util/log.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#ifndef INFRAFS_VERSION
#define INFRAFS_VERSION "0.0.0"
#endif

static const char readme_text[] =
	"infrafs: ML infrastructure as a file system\n"
	"\n"
	"Each folder here is an environment (dev, staging, prod). Make one\n"
	"with mkdir; declare GPU pools and inference endpoints inside it by\n"
	"writing small `key = value` files; read their live state from\n"
	"status files. Every accepted change is a revision in history/.\n"
	"\n"
	"  mkdir dev                          an environment\n"
	"  mkdir dev/pools/train              a GPU pool, as a draft\n"
	"  echo 'accelerator = nvidia-h100-80gb' > dev/pools/train/spec\n"
	"  echo 4 > dev/pools/train/nodes     one field, one revision\n"
	"  cat dev/pools/train/status         observed state\n"
	"  cat dev/history/2/diff             what revision 2 changed\n"
	"  cat kinds/pool                     every field of a pool\n"
	"\n"
	"A bad line fails the write(2) that carries it; the whole spec is\n"
	"checked when the file is closed, and a refused commit fails close(2)\n"
	"and keeps the previous spec. The reason is in the resource's status\n"
	"(last_error:) and events.\n"
	"\n"
	"Files at this level:\n"
	"  README      this text\n"
	"  version     the daemon's version\n"
	"  metrics     Prometheus text exposition\n"
	"  kinds/      the schema of each resource kind\n"
	"  providers/  the providers built in, what they support\n"
	"\n"
	"In an environment: config, policy (rw), plan, plan.json, status,\n"
	"events, audit (r), ctl (w), history/, pools/, endpoints/, secrets/.\n"
	"See infrafs(1) and infrafs-spec(5).\n";

static void render_version(struct buf *out)
{
	build_info(out);
}

/* What each provider asks of its cloud: an operator sizes API limits
 * from it. One family at a time, as the exposition format wants. */
static void render_provider_calls(struct fs *fs, struct buf *out)
{
	static const char *const families[][2] = {
		{ "calls_total counter", "Requests a provider sent to its "
					 "cloud, retries included." },
		{ "calls_last_minute gauge", "Requests in the last minute." },
		{ "calls_per_resource_minute gauge",
		  "Requests in the last minute per resource it holds." },
	};

	for (size_t f = 0; f < 3; f++) {
		char name[48];

		sscanf(families[f][0], "%47s", name);
		buf_printf(out,
			   "# HELP infrafs_provider_%s %s\n"
			   "# TYPE infrafs_provider_%s\n",
			   name, families[f][1], families[f][0]);
		for (int i = 0; builtin_providers[i]; i++) {
			uint64_t total, minute;
			size_t n;

			if (!reconciler_calls(fs->rec, i, &total, &minute, &n))
				continue;
			buf_printf(out, "infrafs_provider_%s{provider=\"%s\"} ",
				   name, builtin_providers[i]->info->name);
			if (f == 0)
				buf_printf(out, "%" PRIu64 "\n", total);
			else if (f == 1)
				buf_printf(out, "%" PRIu64 "\n", minute);
			else
				buf_printf(out, "%.2f\n",
					   n ? (double)minute / (double)n
					     : 0.0);
		}
	}
}

static void render_metrics(struct fs *fs, struct buf *out)
{
	const struct model *m = fs->model;
	size_t counts[NKINDS] = { 0 };

	for (size_t i = 0; i < m->envs.n; i++) {
		for (int k = 0; k < NKINDS; k++)
			counts[k] += m->envs.v[i]->list[k].n;
	}
	metrics_render_build_info(out);
	buf_adds(out, "# HELP infrafs_environments Environments declared.\n"
		      "# TYPE infrafs_environments gauge\n");
	buf_printf(out, "infrafs_environments %zu\n", m->envs.n);
	buf_adds(out, "# HELP infrafs_resources Resources declared, by kind.\n"
		      "# TYPE infrafs_resources gauge\n");
	for (int k = 0; k < NKINDS; k++)
		buf_printf(out, "infrafs_resources{kind=\"%s\"} %zu\n",
			   kind_at(k)->name, counts[k]);
	buf_adds(out, "# HELP infrafs_commits_total Accepted changes.\n"
		      "# TYPE infrafs_commits_total counter\n");
	buf_printf(out, "infrafs_commits_total %" PRIu64 "\n", m->commits);
	buf_adds(out, "# HELP infrafs_commit_rejections_total Commits refused "
		      "at close.\n"
		      "# TYPE infrafs_commit_rejections_total counter\n");
	buf_printf(out, "infrafs_commit_rejections_total %" PRIu64 "\n",
		   m->rejections);
	buf_adds(out, "# HELP infrafs_write_rejections_total Writes refused "
		      "line by line.\n"
		      "# TYPE infrafs_write_rejections_total counter\n");
	buf_printf(out, "infrafs_write_rejections_total %lu\n",
		   atomic_load(&fs->write_rejections));
	buf_adds(out, "# HELP infrafs_fuse_requests_total Requests served.\n"
		      "# TYPE infrafs_fuse_requests_total counter\n");
	buf_printf(out, "infrafs_fuse_requests_total %lu\n",
		   atomic_load(&fs->requests));
	buf_adds(out, "# HELP infrafs_render_cache_hits_total Generated files "
		      "served without rendering.\n"
		      "# TYPE infrafs_render_cache_hits_total counter\n");
	buf_printf(out, "infrafs_render_cache_hits_total %" PRIu64 "\n",
		   (uint64_t)atomic_load(&fs->renders.hits));
	if (fs->rec) {
		double secs;
		size_t n;

		reconciler_stats(fs->rec, &secs, &n);
		buf_adds(out, "# HELP infrafs_reconcile_pass_seconds How long "
			      "the last reconciler pass with work took.\n"
			      "# TYPE infrafs_reconcile_pass_seconds gauge\n");
		buf_printf(out, "infrafs_reconcile_pass_seconds %.6f\n", secs);
		buf_adds(out,
			 "# HELP infrafs_reconcile_pass_resources "
			 "Resources the last pass looked at.\n"
			 "# TYPE infrafs_reconcile_pass_resources gauge\n");
		buf_printf(out, "infrafs_reconcile_pass_resources %zu\n", n);
		render_provider_calls(fs, out);
	}
	metrics_render_provider_outcomes(out);
	metrics_render_resources(fs, out);
	metrics_render_latency(fs, out);
	buf_adds(out, "# HELP infrafs_uptime_seconds Seconds since mount.\n"
		      "# TYPE infrafs_uptime_seconds gauge\n");
	buf_printf(out, "infrafs_uptime_seconds %.0f\n",
		   time_now() - fs->started);
}

/* ---- escaping ------------------------------------------------------- */

/*
 * One `key: value` line of a status file. The value may quote what a user
 * wrote (last_error) or what a provider said: escaped, it stays one line.
 */
static void status_line(struct buf *out, const char *key, const char *value)
{
	buf_printf(out, "%s: ", key);
	text_escape(out, value, strlen(value), 0);
	buf_addc(out, '\n');
}

/*
 * Lines read back from the store or the reconciler (events, audit, plan),
 * shown with all but their line ends escaped: they are escaped when
 * written, and this covers lines stored before that.
 */
static int shown_lines(int rc, const struct buf *raw, struct buf *out)
{
	if (!rc)
		text_escape(out, buf_str(raw), raw->len, TEXT_KEEP_NEWLINE);
	return rc;
}

/* ---- environments ------------------------------------------------------ */

/* What the reconciler last saw of a resource, or a draft's nothing. */
struct view {
	struct observed_res o;
	bool have;
	const char *state;
	const char *reason;
	bool synced;
};

static void view_of(struct fs *fs, const struct resource *r, struct view *v)
{
	memset(v, 0, sizeof(*v));
	v->have = observed_get_res(&fs->observed, r->id, &v->o);
	v->state = "pending";
	if (!r->spec.text) {
		v->reason = "draft: nothing is applied until spec or a field "
			    "is written";
		return;
	}
	if (!v->have) {
		v->reason = "accepted; the reconciler has not looked yet";
		return;
	}
	v->state = res_state_word(v->o.state);
	v->reason = v->o.reason;
	/* In sync only if the provider runs the revision in force now. */
	v->synced = v->o.synced && v->o.applied_rev == r->spec.rev;
}

static void view_free(struct view *v)
{
	if (v->have)
		observed_res_free(&v->o);
}

/* The oldest observed_at of the environment's declared resources: how
 * stale the freshest claim about all of them can be. "never" while one
 * has not been looked at. */
static void render_env_observed_at(struct fs *fs, const struct env *e,
				   struct buf *out)
{
	double oldest = 0;
	bool unseen = false;
	char when[40] = "never";

	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < e->list[k].n; i++) {
			const struct resource *r = e->list[k].v[i];
			struct observed_res o;
			double at = 0;

			if (!r->spec.text)
				continue;
			if (observed_get_res(&fs->observed, r->id, &o)) {
				at = o.observed_at;
				observed_res_free(&o);
			}
			unseen |= !at;
			if (at && (!oldest || at < oldest))
				oldest = at;
		}
	}
	if (oldest && !unseen)
		time_rfc3339(oldest, when, sizeof(when));
	buf_printf(out, "observed_at: %s\n", when);
}

/* Who changes the specs: "managed by PATH (commit abc1234)". */
/* A shared store: which daemon carries the environment, and whether the
 * store answers. */
static void render_env_sharing(struct fs *fs, const struct env *e,
			       struct buf *out)
{
	char holder[192], when[40];
	double since;

	if (!store_shared(fs->store))
		return;
	store_reconciler_of(fs->store, e->id, holder, sizeof(holder));
	since = store_unreachable_since(fs->store);
	/* Cut off, this daemon cannot tell who leads now. */
	status_line(out, "reconciler",
		    since ? "unknown" : holder[0] ? holder : "none");
	if (since) {
		time_rfc3339(since, when, sizeof(when));
		buf_printf(out, "state_store: unreachable since %s\n", when);
	} else {
		buf_adds(out, "state_store: reachable\n");
	}
}

static void render_env_source(const struct env *e, struct buf *out)
{
	char src[PATH_MAX];
	BUF_AUTO line = BUF_INIT;

	env_source(e, src, sizeof(src));
	if (!src[0])
		return;
	buf_printf(&line, "managed by %s", src);
	if (e->source_commit[0])
		buf_printf(&line, " (commit %.7s)", e->source_commit);
	status_line(out, "source", buf_str(&line));
}

static void render_env_status(struct fs *fs, const struct env *e,
			      struct buf *out)
{
	size_t by_state[RS_DELETING + 1] = { 0 }, drafts = 0, total = 0;
	double cost = 0;
	struct observed_env oe;
	bool have_env = observed_get_env(&fs->observed, e->id, &oe);
	char when[40], provider[32];

	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < e->list[k].n; i++) {
			const struct resource *r = e->list[k].v[i];
			struct observed_res o;

			total++;
			if (!r->spec.text) {
				drafts++;
			} else if (observed_get_res(&fs->observed, r->id, &o)) {
				by_state[o.state]++;
				cost += o.hourly_cost_usd;
				observed_res_free(&o);
			} else {
				by_state[RS_PENDING]++;
			}
		}
	}
	spec_text(e->config.parsed, "provider", provider, sizeof(provider));
	time_rfc3339(e->rev_time, when, sizeof(when));
	buf_printf(out, "environment: %s\n", e->name);
	buf_printf(out, "provider: %s\n", provider[0] ? provider : "local");
	buf_printf(out, "revision: %" PRIu64 "\n", e->rev);
	buf_printf(out, "revised_at: %s\n", when);
	buf_printf(out, "applied_revision: %" PRIu64 "\n", e->applied_rev);
	buf_printf(out, "resources: %zu\n", total);
	for (int k = 0; k < NKINDS; k++)
		buf_printf(out, "%s: %zu\n", kind_at(k)->dir, e->list[k].n);
	for (int st = RS_PENDING; st <= RS_DELETING; st++)
		buf_printf(out, "%s: %zu\n", res_state_word(st),
			   by_state[st] + (st == RS_PENDING ? drafts : 0));
	buf_printf(out, "drafts: %zu\n", drafts);
	buf_printf(out, "hourly_cost_usd: %.2f\n", cost);
	if (have_env && oe.plan_no)
		buf_printf(out, "plan: %" PRIu64 " pending\n", oe.plan_no);
	else
		buf_adds(out, "plan: none pending\n");
	if (have_env && oe.last_apply) {
		time_rfc3339(oe.last_apply, when, sizeof(when));
		buf_printf(out, "last_apply: %s\n", when);
	} else {
		buf_adds(out, "last_apply: never\n");
	}
	render_env_observed_at(fs, e, out);
	buf_printf(out, "secrets: %zu\n", e->secrets.count);
	if (store_key_problem(fs->store))
		status_line(out, "secrets_unavailable",
			    store_key_problem(fs->store));
	status_line(out, "lock", store_lock_holder(fs->store));
	render_env_sharing(fs, e, out);
	render_env_source(e, out);
	status_line(out, "last_error", e->last_error ? e->last_error : "");
	if (have_env)
		observed_env_free(&oe);
}

static void render_plan(struct fs *fs, const struct env *e, bool json,
			struct buf *out)
{
	struct observed_env oe;

	if (!observed_get_env(&fs->observed, e->id, &oe)) {
		if (json)
			buf_printf(out,
				   "{\n  \"environment\": \"%s\",\n  \"plan\": "
				   "null,\n  \"approval\": null,\n  \"steps\": "
				   "[]\n}\n",
				   e->name);
		return;
	}
	if (json) {
		buf_adds(out, oe.plan_json ? oe.plan_json : "{}");
		buf_addc(out, '\n');
	} else if (oe.plan_text) {
		text_escape(out, oe.plan_text, strlen(oe.plan_text),
			    TEXT_KEEP_NEWLINE);
	}
	observed_env_free(&oe);
}

/* The reconciler makes it with the provider's names; until its first
 * pass over a new environment there is nothing to show yet. */
static void render_terraform(struct fs *fs, const struct env *e,
			     struct buf *out)
{
	struct observed_env oe;

	if (observed_get_env(&fs->observed, e->id, &oe) && oe.terraform) {
		buf_adds(out, oe.terraform);
		observed_env_free(&oe);
		return;
	}
	if (observed_get_env(&fs->observed, e->id, &oe))
		observed_env_free(&oe);
	buf_printf(
		out,
		"{\n  \"//\": \"infrafs environment %s: not exported "
		"yet; read again once the reconciler has looked at it\"\n}\n",
		e->name);
}

/* ---- resources ------------------------------------------------------- */

static struct spec *effective_spec(const struct resource *r, bool *owned)
{
	struct spec *s = NULL;
	struct spec_error err;

	*owned = false;
	if (r->spec.parsed)
		return r->spec.parsed;
	/* A draft shows the defaults it would get. */
	if (spec_parse(kind_at(r->kind), "", 0, &s, &err) == 0)
		*owned = true;
	return s;
}

/* When what the provider saw last changed, as opposed to when it last
 * looked: together they tell a stale answer from a fresh one. */
static void render_changed_at(const struct view *v, struct buf *out)
{
	char when[40] = "never";

	if (v->have && v->o.changed_at)
		time_rfc3339(v->o.changed_at, when, sizeof(when));
	buf_printf(out, "changed_at: %s\n", when);
}

static json_t *changed_at_json(const struct view *v)
{
	char when[40];

	if (!v->have || !v->o.changed_at)
		return json_null();
	time_rfc3339(v->o.changed_at, when, sizeof(when));
	return json_string(when);
}

static void render_res_status(struct fs *fs, const struct resource *r,
			      struct buf *out)
{
	struct view v;
	char when[40] = "never";

	view_of(fs, r, &v);
	if (v.have && v.o.observed_at)
		time_rfc3339(v.o.observed_at, when, sizeof(when));
	buf_printf(out, "name: %s\n", r->name);
	buf_printf(out, "kind: %s\n", kind_at(r->kind)->name);
	buf_printf(out, "environment: %s\n", r->env->name);
	buf_printf(out, "state: %s\n", v.state);
	if (v.reason)
		status_line(out, "reason", v.reason);
	buf_printf(out, "synced: %s\n", v.synced ? "yes" : "no");
	buf_printf(out, "revision: %" PRIu64 "\n", r->spec.rev);
	buf_printf(out, "applied_revision: %" PRIu64 "\n",
		   v.have ? v.o.applied_rev : 0);
	status_line(out, "drift", v.have && v.o.drift ? v.o.drift : "none");
	if (r->spec.parsed) {
		char rule[128];

		/* A policy tightened below what is declared: say so here. */
		if (policy_violation(r->env, r->kind, r->name, r->spec.parsed,
				     rule, sizeof(rule)) < 0)
			buf_printf(out, "policy: violates %s\n", rule + 7);
	}
	/* A refused commit is the newer news; else what the provider says. */
	status_line(out, "last_error",
		    r->last_error ? r->last_error
				  : (v.have && v.o.error ? v.o.error : ""));
	buf_printf(out, "observed_at: %s\n", when);
	render_changed_at(&v, out);
	if (v.have) {
		buf_printf(out, "hourly_cost_usd: %.2f\n", v.o.hourly_cost_usd);
		/* The provider's own lines, one per detail. */
		if (v.o.details)
			text_escape(out, v.o.details, strlen(v.o.details),
				    TEXT_KEEP_NEWLINE);
	}
	view_free(&v);
}

/*
 * Provider lines ("key: value") become typed members of one object, so
 * that a program can do arithmetic on them: a whole number or a decimal
 * is a number, "N of M" is {"used": N, "total": M}, a list of numbers is
 * an array, and the per-replica and per-device lines become arrays of
 * objects ("replicas", "gpus"). Anything else stays a string.
 */
static bool whole_number(const char *v, json_t **out)
{
	char *end;
	long long n;
	double d;

	if (!*v || strspn(v, "-0123456789.") != strlen(v))
		return false;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (!*end && !errno) {
		*out = json_integer((json_int_t)n);
		return true;
	}
	d = strtod(v, &end);
	if (*end || errno)
		return false;
	*out = json_real(d);
	return true;
}

static json_t *number_list(const char *v)
{
	json_t *a = json_array();

	while (*v) {
		char *end;
		long long n = strtoll(v, &end, 10);

		if (end == v || (*end && *end != ',')) {
			json_decref(a);
			return NULL;
		}
		json_array_append_new(a, json_integer((json_int_t)n));
		v = *end ? end + 1 : end;
	}
	return a;
}

static json_t *typed_value(const char *key, const char *v)
{
	long long used, total;
	json_t *out;
	int n = 0;

	if (whole_number(v, &out))
		return out;
	if (sscanf(v, "%lld of %lld%n", &used, &total, &n) == 2 && !v[n]) {
		out = json_object();
		json_object_set_new(out, "used", json_integer(used));
		json_object_set_new(out, "total", json_integer(total));
		return out;
	}
	if (!strcmp(key, "devices") && (out = number_list(v)))
		return out;
	return json_string(v);
}

/* The array's object for item idx, made (with "index") if missing. */
static json_t *item_at(json_t *o, const char *array, unsigned idx)
{
	json_t *a = json_object_get(o, array), *it;
	size_t i;

	if (!a) {
		a = json_array();
		json_object_set_new(o, array, a);
	}
	json_array_foreach(a, i, it)
	{
		if (json_integer_value(json_object_get(it, "index")) == idx)
			return it;
	}
	it = json_object();
	json_object_set_new(it, "index", json_integer(idx));
	json_array_append_new(a, it);
	return it;
}

static bool replica_json(json_t *o, unsigned idx, const char *v)
{
	int pid, port, last_exit, n = 0;
	char health[16];
	unsigned restarts;
	uint64_t rev;
	json_t *it;

	if (sscanf(v,
		   "pid %d, port %d, %15[a-z], restarts %u, last_exit %d, "
		   "revision %" SCNu64 "%n",
		   &pid, &port, health, &restarts, &last_exit, &rev, &n) != 6 ||
	    v[n])
		return false;
	it = item_at(o, "replicas", idx);
	json_object_set_new(it, "pid", json_integer(pid));
	json_object_set_new(it, "port", json_integer(port));
	json_object_set_new(it, "healthy",
			    json_boolean(!strcmp(health, "healthy")));
	json_object_set_new(it, "restarts", json_integer(restarts));
	json_object_set_new(it, "last_exit", json_integer(last_exit));
	json_object_set_new(it, "revision", json_integer((json_int_t)rev));
	return true;
}

static bool device_json(json_t *o, unsigned idx, const char *v)
{
	char uuid[128], name[128];
	long long used, total;
	const char *p;
	int pct, n = 0;
	json_t *it;

	if (sscanf(v, "%127s %127[^,]%n", uuid, name, &n) != 2)
		return false;
	it = item_at(o, "gpus", idx);
	json_object_set_new(it, "uuid", json_string(uuid));
	json_object_set_new(it, "name", json_string(name));
	p = strstr(v + n, ", memory ");
	if (p && sscanf(p, ", memory %lld/%lld MiB", &used, &total) == 2) {
		json_object_set_new(it, "memory_used_mib", json_integer(used));
		json_object_set_new(it, "memory_total_mib",
				    json_integer(total));
	}
	p = strstr(v + n, ", utilization ");
	if (p && sscanf(p, ", utilization %d%%", &pct) == 1)
		json_object_set_new(it, "utilization_pct", json_integer(pct));
	return true;
}

/* Lines that describe one item of a list: replica.N, log.N, device.N. */
static bool item_json(json_t *o, const char *key, const char *v)
{
	unsigned idx;
	int n = 0;

	if (sscanf(key, "replica.%u%n", &idx, &n) == 1 && !key[n])
		return replica_json(o, idx, v);
	if (sscanf(key, "log.%u%n", &idx, &n) == 1 && !key[n]) {
		json_object_set_new(item_at(o, "replicas", idx), "log",
				    json_string(v));
		return true;
	}
	if (sscanf(key, "device.%u%n", &idx, &n) == 1 && !key[n])
		return device_json(o, idx, v);
	return false;
}

/* "replicas: R/W ready, N running": three counts of their own. */
static bool replica_counts(json_t *o, const char *key, const char *v)
{
	unsigned ready, wanted, running;
	int n = 0;

	if (strcmp(key, "replicas") != 0 ||
	    sscanf(v, "%u/%u ready, %u running%n", &ready, &wanted, &running,
		   &n) != 3 ||
	    v[n])
		return false;
	json_object_set_new(o, "replicas_ready", json_integer(ready));
	json_object_set_new(o, "replicas_wanted", json_integer(wanted));
	json_object_set_new(o, "replicas_running", json_integer(running));
	return true;
}

static json_t *details_json(const char *details)
{
	json_t *o = json_object();

	for (const char *p = details; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		const char *colon = memchr(p, ':', len);

		if (colon && colon + 1 < p + len) {
			char *key = xstrndup(p, (size_t)(colon - p));
			char *val = xstrndup(colon + 2,
					     len - (size_t)(colon - p) - 2);

			if (!item_json(o, key, val) &&
			    !replica_counts(o, key, val))
				json_object_set_new(o, key,
						    typed_value(key, val));
			free(key);
			free(val);
		}
		p += len + (nl ? 1 : 0);
	}
	return o;
}

static json_t *declared_json(const struct spec *s)
{
	json_t *all = spec_to_json(s);

	for (size_t i = 0; i < s->kind->nfields; i++) {
		if (!s->v[i].set)
			json_object_del(all, s->kind->fields[i].name);
	}
	return all;
}

static void render_res_status_json(struct fs *fs, const struct resource *r,
				   struct buf *out)
{
	bool owned;
	struct spec *s = effective_spec(r, &owned);
	json_t *o = json_object();
	struct view v;
	char when[40];
	char *text;

	view_of(fs, r, &v);
	json_object_set_new(o, "name", json_string(r->name));
	json_object_set_new(o, "kind", json_string(kind_at(r->kind)->name));
	json_object_set_new(o, "environment", json_string(r->env->name));
	json_object_set_new(o, "state", json_string(v.state));
	json_object_set_new(o, "reason",
			    v.reason ? json_string(v.reason) : json_null());
	json_object_set_new(o, "synced", json_boolean(v.synced));
	json_object_set_new(o, "revision",
			    json_integer((json_int_t)r->spec.rev));
	json_object_set_new(
		o, "applied_revision",
		json_integer(v.have ? (json_int_t)v.o.applied_rev : 0));
	json_object_set_new(o, "draft", json_boolean(!r->spec.text));
	json_object_set_new(o, "drift",
			    v.have && v.o.drift ? json_string(v.o.drift)
						: json_null());
	json_object_set_new(o, "last_error",
			    r->last_error ? json_string(r->last_error)
					  : (v.have && v.o.error
						     ? json_string(v.o.error)
						     : json_null()));
	if (v.have && v.o.observed_at) {
		time_rfc3339(v.o.observed_at, when, sizeof(when));
		json_object_set_new(o, "observed_at", json_string(when));
	} else {
		json_object_set_new(o, "observed_at", json_null());
	}
	json_object_set_new(o, "changed_at", changed_at_json(&v));
	json_object_set_new(o, "hourly_cost_usd",
			    json_real(v.have ? v.o.hourly_cost_usd : 0));
	json_object_set_new(o, "provider",
			    details_json(v.have ? v.o.details : NULL));
	view_free(&v);
	/* `spec` is what was declared, so `jq .spec status.json > spec`
	 * round-trips; `effective` adds the defaults. */
	json_object_set_new(o, "spec", s ? declared_json(s) : json_object());
	json_object_set_new(o, "effective",
			    s ? spec_to_json(s) : json_object());
	text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	buf_adds(out, text ? text : "{}");
	buf_addc(out, '\n');
	free(text);
	json_decref(o);
	if (owned)
		spec_free(s);
}

static void render_field(const struct resource *r, uint16_t field,
			 struct buf *out)
{
	bool owned;
	struct spec *s = effective_spec(r, &owned);

	if (!s)
		return;
	spec_field_text(s, &kind_at(r->kind)->fields[field], out);
	if (owned)
		spec_free(s);
}

static int render_res(struct fs *fs, const struct node_key *k,
		      const struct resource *r, struct buf *out)
{
	switch (k->type) {
	case NT_RES_SPEC:
		if (r->spec.text)
			buf_add(out, r->spec.text, r->spec.len);
		return 0;
	case NT_RES_FIELD:
		if (k->sub >= kind_at(r->kind)->nfields)
			return -ENOENT;
		render_field(r, k->sub, out);
		return 0;
	case NT_RES_STATUS:
		render_res_status(fs, r, out);
		return 0;
	case NT_RES_STATUS_JSON:
		render_res_status_json(fs, r, out);
		return 0;
	case NT_RES_STATE: {
		struct view v;

		view_of(fs, r, &v);
		buf_printf(out, "%s\n", v.state);
		view_free(&v);
		return 0;
	}
	case NT_RES_EVENTS: {
		BUF_AUTO raw = BUF_INIT;

		return shown_lines(
			store_events_text(fs->store, r->env, r, &raw), &raw,
			out);
	}
	default:
		return -EISDIR;
	}
}

static int render_history(struct fs *fs, const struct node_key *k,
			  struct buf *out)
{
	switch (k->type) {
	case NT_REV_INFO:
		return store_history_info(fs->store, k->id, k->rev, out);
	case NT_REV_DIFF:
		return store_history_diff(fs->store, k->id, k->rev, out);
	case NT_REV_CONFIG:
		return store_history_text(fs->store, k->id, k->rev, "config",
					  "", out);
	case NT_REV_POLICY:
		return store_history_text(fs->store, k->id, k->rev, "policy",
					  "", out);
	default:
		return store_history_text(fs->store, k->id, k->rev,
					  kind_at(k->sub)->name, k->name, out);
	}
}

static int render_env(struct fs *fs, const struct node_key *k,
		      const struct env *e, struct buf *out)
{
	switch (k->type) {
	case NT_ENV_CONFIG:
		if (e->config.text)
			buf_add(out, e->config.text, e->config.len);
		return 0;
	case NT_ENV_POLICY:
		if (e->policy.text)
			buf_add(out, e->policy.text, e->policy.len);
		return 0;
	case NT_ENV_PLAN:
	case NT_ENV_PLAN_JSON:
		render_plan(fs, e, k->type == NT_ENV_PLAN_JSON, out);
		return 0;
	case NT_ENV_STATUS:
		render_env_status(fs, e, out);
		return 0;
	case NT_ENV_EVENTS: {
		BUF_AUTO raw = BUF_INIT;

		return shown_lines(store_events_text(fs->store, e, NULL, &raw),
				   &raw, out);
	}
	case NT_ENV_AUDIT: {
		BUF_AUTO raw = BUF_INIT;

		return shown_lines(store_audit(fs->store, e->id, &raw), &raw,
				   out);
	}
	case NT_EXPORT_TERRAFORM:
		render_terraform(fs, e, out);
		return 0;
	case NT_ENV_CTL:
	case NT_SECRET:
		return 0;
	case NT_REV_INFO:
	case NT_REV_DIFF:
	case NT_REV_CONFIG:
	case NT_REV_POLICY:
	case NT_REV_SPEC:
		if (!env_shows_rev(e, k->rev))
			return -ENOENT;
		return render_history(fs, k, out);
	default:
		return -EISDIR;
	}
}

static int render_static(struct fs *fs, const struct node_key *k,
			 struct buf *out)
{
	switch (k->type) {
	case NT_README:
		buf_adds(out, readme_text);
		return 0;
	case NT_VERSION:
		render_version(out);
		return 0;
	case NT_METRICS:
		render_metrics(fs, out);
		return 0;
	case NT_KIND_DOC:
		if (!tree_kind_doc(k->sub))
			return -ENOENT;
		kind_render_doc(tree_kind_doc(k->sub), out);
		return 0;
	case NT_PROVIDER_DOC:
		provider_render_doc(builtin_providers[k->sub], out);
		return 0;
	default:
		return -EISDIR;
	}
}

/*
 * The generation a node's content was made from; a cached blob of another
 * generation is stale. Returns false for files never cached.
 */
static bool content_gen(struct fs *fs, const struct node_key *k, uint64_t *gen)
{
	const struct resource *r = tree_res(fs, k);
	const struct env *e;

	if (k->type == NT_METRICS)
		return false;
	if (r) {
		/* Status files show both the spec and the live world. */
		/* The policy too: tightening it can mark the status. */
		*gen = k->type == NT_RES_EVENTS
			       ? r->events.total
			       : (r->gen + r->env->policy.rev * 7919u) *
						 1000003u +
					 observed_res_gen(&fs->observed, r->id);
		return true;
	}
	e = tree_env(fs, k);
	if (!e) {
		*gen = 1; /* the static files never change */
		return true;
	}
	switch (k->type) {
	case NT_ENV_EVENTS:
		*gen = e->events.total;
		return true;
	case NT_ENV_AUDIT:
		*gen = e->audit_durable;
		return true;
	case NT_REV_INFO:
	case NT_REV_DIFF:
	case NT_REV_CONFIG:
	case NT_REV_POLICY:
	case NT_REV_SPEC:
		*gen = 1; /* a revision never changes once made */
		return true;
	case NT_ENV_STATUS:
		/* Counts of every resource's state: any observation; and
		 * who reconciles, in a shared store. */
		*gen = e->gen * 1000003u + observed_gen(&fs->observed) +
		       store_sharing_gen(fs->store) * 7919u;
		return true;
	case NT_ENV_PLAN:
	case NT_ENV_PLAN_JSON:
	case NT_EXPORT_TERRAFORM:
		*gen = e->gen * 1000003u +
		       observed_env_gen(&fs->observed, e->id);
		return true;
	default:
		*gen = e->gen;
		return true;
	}
}

static int render_bytes(struct fs *fs, const struct node_key *k,
			struct buf *out)
{
	const struct resource *r = tree_res(fs, k);
	const struct env *e;

	if (r)
		return render_res(fs, k, r, out);
	e = tree_env(fs, k);
	if (e)
		return render_env(fs, k, e, out);
	if (k->type >= NT_ENV)
		return -ENOENT;
	return render_static(fs, k, out);
}

struct blob *render_get(struct fs *fs, const struct node_key *k, int *err)
{
	BUF_AUTO out = BUF_INIT;
	uint64_t gen = 0;
	bool cacheable = content_gen(fs, k, &gen);
	struct blob *b;

	if (cacheable) {
		b = render_cache_get(&fs->renders, k, sizeof(*k), gen);
		if (b)
			return b;
	}
	*err = render_bytes(fs, k, &out);
	if (*err)
		return NULL;
	b = blob_new(out.data, out.len, gen);
	if (cacheable)
		render_cache_put(&fs->renders, k, sizeof(*k), b);
	return b;
}

bool render_gen(struct fs *fs, const struct node_key *k, uint64_t *gen)
{
	return content_gen(fs, k, gen);
}

bool render_may_change(const struct node_key *k)
{
	switch (k->type) {
	case NT_ENV_CONFIG:
	case NT_ENV_POLICY:
	case NT_ENV_PLAN:
	case NT_ENV_PLAN_JSON:
	case NT_ENV_STATUS:
	case NT_ENV_AUDIT:
	case NT_EXPORT_TERRAFORM:
	case NT_RES_SPEC:
	case NT_RES_FIELD:
	case NT_RES_STATUS:
	case NT_RES_STATUS_JSON:
	case NT_RES_STATE:
		return true;
	default:
		return false;
	}
}

bool render_is_live(const struct node_key *k)
{
	return k->type == NT_ENV_EVENTS || k->type == NT_RES_EVENTS ||
	       k->type == NT_METRICS;
}
