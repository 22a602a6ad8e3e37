// SPDX-License-Identifier: MIT
/*
 * The reconciler's thread. Each pass:
 *   1. copies what is declared out of the model (only what changed since
 *      the last pass is parsed again),
 *   2. asks each environment's provider what runs, in one batch,
 *   3. works out each environment's plan (create, update, destroy),
 *   4. takes the steps that are due, approved and within the rate limit,
 *   5. publishes observations and plans to the observed cache, from
 *      which status files are rendered.
 * Nothing here holds the model's lock while a provider works.
 */
#include "reconciler.h"

#include "share.h"

#include "store/policy.h"
#include "util/log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The overall rate limit: steps started per pass, over all resources. */
#define STEPS_PER_PASS 32
/* An ARN of a SageMaker endpoint is at most about 150 characters. */
#define IMPORT_ID_MAX 256
/* How often every resource is observed when nothing else wakes us. */
#define PASS_SECONDS 0.5
#define BACKOFF_MAX_SECONDS 60.0

/* One declared (or formerly declared) resource. */
struct rec {
	char key[160]; /* env/kind/name: what identifies it to a provider */
	char env[NAME_MAX_LEN + 1];
	char name[NAME_MAX_LEN + 1];
	int kind;
	uint64_t env_id;
	uint64_t res_id; /* 0: declared no more, destroy what runs */
	uint64_t rev; /* revision of the copy below */
	struct spec *spec; /* NULL for a draft or an undeclared resource */
	bool draft;
	bool destroy_requested; /* protect = destroy: waits for approval */
	double due; /* act no earlier than this (settle, backoff) */
	unsigned failures;
	struct observation obs;
	bool observed;
	/* The spec the live resource carries, to say what an update changes. */
	uint64_t applied_text_rev;
	struct spec *applied;
	bool seen; /* found in the model by a full sweep */
	bool eval; /* to be observed and planned in this pass */
	bool watched; /* observed every pass: it may change on its own */
	/* Where the provider tells of changes: when the refresh looks at it
	 * next (spread_looks), 0 until placed. */
	double next_look;
	/* The observed_at last published for a provider that looks live at
	 * every pass: moved on once a second, not at every pass. */
	double live_at;
	/* The drift and state last written to events, to write changes. */
	char drift_said[256];
	int state_said;
	/* "waiting for pools/NAME" or "waiting for secrets/NAME": what it
	 * needs is not there yet. */
	char waiting[NAME_MAX_LEN + 24];
	char waiting_said[NAME_MAX_LEN + 24]; /* the last one in events */
};

/* `import KIND/NAME ID` written to ctl, for the reconciler's thread. */
struct import_request {
	char env[NAME_MAX_LEN + 1];
	char name[NAME_MAX_LEN + 1];
	int kind;
	char id[IMPORT_ID_MAX + 1];
	struct caller who;
	double asked_at; /* monotonic */
};

/* A config change may reach the reconciler after an import written
 * right behind it: the import waits this long for the provider. */
#define IMPORT_WAIT_SECONDS 5.0

/* One pending step of an environment's plan. */
struct step {
	char key[160];
	char *line;
	json_t *json;
	uint64_t hash;
};

struct env_state {
	uint64_t env_id;
	char name[NAME_MAX_LEN + 1];
	struct spec *config;
	uint64_t config_rev;
	uint64_t secrets_stamp; /* secrets_stamp() when last synced */
	uid_t uid; /* the environment folder's owner and group */
	gid_t gid;
	uint64_t rev; /* the environment's newest revision */
	uint64_t applied_rev;
	uint64_t plan_no;
	uint64_t plan_hash; /* XOR of the steps' hashes: order-free */
	uint64_t published_hash;
	bool published;
	uint64_t approved; /* the plan number approved, 0 none */
	double last_apply;
	double next_refresh;
	bool seen;
	struct map steps; /* rec key -> struct step */
	/* export/terraform.tf.json as last made; export_due: a pass or a
	 * config change may have changed it. */
	char *terraform;
	bool export_due;
};

struct ids {
	uint64_t *v;
	size_t n, cap;
};

/* A provider's call count, sampled once a second for the last minute. */
#define CALL_SAMPLES 64
struct call_window {
	double at[CALL_SAMPLES];
	uint64_t calls[CALL_SAMPLES];
	size_t next, n;
	uint64_t total;
	size_t resources; /* its resources at the last sample */
};

struct reconciler {
	struct reconciler_options opt;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
	bool kicked;
	/* Guarded by lock: requests from other threads. */
	struct map approvals; /* env name -> uint64 plan approved */
	bool refresh_all;
	struct buf refresh_envs; /* "ENV\n" per `refresh` not yet taken */
	/* What a provider saw change: "ENV", "ENV/DIR/" or "ENV/DIR/NAME",
	 * each key its own copy, freed by whoever takes the map. */
	struct map changed;
	struct import_request *imports; /* `import` not yet taken */
	size_t nimports;
	bool sweep; /* environments came or went: look at everything */
	struct ids dirty_res, dirty_env; /* what the store changed */

	/* The thread's own. */
	struct map recs; /* key -> struct rec */
	struct map by_res; /* res_id -> struct rec */
	struct map watched; /* key -> struct rec */
	struct map envs; /* env_id -> struct env_state */
	struct rec **evals; /* this pass's recs to evaluate */
	size_t nevals, evals_cap;
	struct share share; /* observations to and from other daemons */
	/* What the last pass cost, for metrics and the benchmark: written
	 * by the thread and read by others, both under lock. */
	double last_pass_seconds;
	size_t last_pass_evaluated;
	struct call_window calls[8]; /* per provider, under lock */
	double calls_sampled;
	void *provider_state[8];
	struct provider_host host;
	char state_dir[4096];
};

static double now_s(void)
{
	return time_now();
}

static void wake(void *ctx)
{
	struct reconciler *r = ctx;

	pthread_mutex_lock(&r->lock);
	r->kicked = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void ids_add(struct ids *l, uint64_t id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = id;
}

/* The store's change hook: remember what changed, so the next pass looks
 * at that and not at the world. */
void reconciler_kick(struct reconciler *r, const struct store_touch *t,
		     size_t n)
{
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < n; i++) {
		if (t[i].res_id)
			ids_add(&r->dirty_res, t[i].res_id);
		if (t[i].env_id) {
			/* Pairs: the environment and the revision its
			 * batch made durable. */
			ids_add(&r->dirty_env, t[i].env_id);
			ids_add(&r->dirty_env, t[i].rev);
		} else {
			r->sweep = true;
		}
	}
	r->kicked = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void look_at_changed(struct reconciler *r);

static void mark_eval(struct reconciler *r, struct rec *rc)
{
	if (rc->eval)
		return;
	rc->eval = true;
	if (r->nevals == r->evals_cap) {
		r->evals_cap = r->evals_cap ? r->evals_cap * 2 : 64;
		r->evals = xrealloc(r->evals, r->evals_cap * sizeof(*r->evals));
	}
	r->evals[r->nevals++] = rc;
}

/* ---- desired state, copied from the model ------------------------------ */

static void rec_key(char *out, size_t len, const char *env, int kind,
		    const char *name)
{
	snprintf(out, len, "%s/%s/%s", env, kind_at(kind)->dir, name);
}

static struct spec *parse_copy(const struct kind_def *k, const char *text,
			       size_t len)
{
	struct spec *s = NULL;
	struct spec_error err;

	if (spec_parse(k, text, len, &s, &err) < 0)
		return NULL;
	return s;
}

static struct env_state *env_state_of(struct reconciler *r, const struct env *e)
{
	struct env_state *es = map_get_u64(&r->envs, &e->id);

	if (!es) {
		es = xcalloc(1, sizeof(*es));
		es->env_id = e->id;
		snprintf(es->name, sizeof(es->name), "%s", e->name);
		es->export_due = true;
		map_put(&r->envs, &es->env_id, sizeof(es->env_id), es);
	}
	return es;
}

static int64_t config_int(const struct spec *config, const char *field,
			  int64_t dflt)
{
	return config ? spec_int(config, field, dflt) : dflt;
}

static void config_word(const struct spec *config, const char *field,
			const char *dflt, char *out, size_t len)
{
	if (config)
		spec_text(config, field, out, len);
	else
		out[0] = '\0';
	if (!out[0])
		snprintf(out, len, "%s", dflt);
}

/* Changes when any secret of e is set, made or removed: what uses one
 * must be looked at again (a provider rolls what reads a new value). */
static uint64_t secrets_stamp(const struct env *e)
{
	uint64_t stamp = e->secrets.count;
	void *v;

	for (size_t pos = 0; map_next(&e->secrets, &pos, &v);) {
		const struct secret_meta *sm = v;

		stamp += map_hash(sm->name, strlen(sm->name)) * (sm->version + 1);
	}
	return stamp;
}

/*
 * Returns true when the config, the owner or a secret changed: every plan
 * of the environment may change.
 * The environment's revision moves only to what a change notice said
 * (rev): the model may already hold a newer batch whose notice, with its
 * resources, has not come yet, and marking that revision applied would
 * skip its changes.
 */
static bool sync_env(struct reconciler *r, const struct env *e, uint64_t rev)
{
	struct env_state *es = env_state_of(r, e);
	uint64_t stamp = secrets_stamp(e);
	bool owner_changed, secrets_changed;

	es->seen = true;
	if (rev > es->rev)
		es->rev = rev;
	es->applied_rev = e->applied_rev;
	/* A new owner: what runs as the former one rolls. */
	owner_changed = es->uid != e->uid || es->gid != e->gid;
	es->uid = e->uid;
	es->gid = e->gid;
	secrets_changed = es->secrets_stamp != stamp;
	es->secrets_stamp = stamp;
	if (es->config_rev == e->config.rev && es->config)
		return owner_changed || secrets_changed;
	if (es->config)
		spec_free(es->config);
	es->config = e->config.text ? parse_copy(&kind_config, e->config.text,
						 e->config.len)
				    : NULL;
	es->config_rev = e->config.rev;
	es->export_due = true;
	return true;
}

static double settle_of(struct reconciler *r, const struct env *e)
{
	return (double)config_int(env_state_of(r, e)->config, "settle_ms",
				  500) /
	       1000.0;
}

static struct rec *rec_get(struct reconciler *r, const char *env, int kind,
			   const char *name)
{
	char key[160];
	struct rec *rc;

	rec_key(key, sizeof(key), env, kind, name);
	rc = map_get(&r->recs, key, strlen(key));
	if (!rc) {
		rc = xcalloc(1, sizeof(*rc));
		snprintf(rc->key, sizeof(rc->key), "%s", key);
		snprintf(rc->env, sizeof(rc->env), "%s", env);
		snprintf(rc->name, sizeof(rc->name), "%s", name);
		rc->kind = kind;
		map_put(&r->recs, rc->key, strlen(rc->key), rc);
	}
	return rc;
}

static void sync_res(struct reconciler *r, const struct env *e,
		     const struct resource *res, double settle)
{
	struct rec *rc = rec_get(r, e->name, res->kind, res->name);

	rc->seen = true;
	rc->env_id = e->id;
	if (rc->res_id != res->id) {
		if (rc->res_id)
			map_del(&r->by_res, &rc->res_id, sizeof(rc->res_id));
		rc->res_id = res->id;
		map_put(&r->by_res, &rc->res_id, sizeof(rc->res_id), rc);
	}
	rc->draft = !res->spec.text;
	rc->destroy_requested = res->destroy_requested;
	mark_eval(r, rc);
	if (rc->draft || rc->rev == res->spec.rev)
		return;
	if (rc->spec)
		spec_free(rc->spec);
	rc->spec =
		parse_copy(kind_at(res->kind), res->spec.text, res->spec.len);
	rc->rev = res->spec.rev;
	env_state_of(r, e)->export_due = true;
	/* A burst of edits settles into one step. */
	rc->due = now_s() + settle;
	rc->failures = 0;
}

/* rmdir: what runs must go; the record stays until it has. */
static void undeclare(struct reconciler *r, struct rec *rc)
{
	struct env_state *es = map_get_u64(&r->envs, &rc->env_id);

	if (es)
		es->export_due = true;
	observed_drop_res(r->opt.observed, rc->res_id);
	share_note(&r->share, rc->env_id, rc->res_id);
	map_del(&r->by_res, &rc->res_id, sizeof(rc->res_id));
	rc->res_id = 0;
	rc->draft = false;
	rc->due = 0;
	rc->failures = 0;
	mark_eval(r, rc);
}

/* Copies everything declared; marks what is gone. For start and for
 * environments coming or going. */
static void sync_from_model(struct reconciler *r)
{
	struct model *m = store_model(r->opt.store);
	void *v;

	for (size_t pos = 0; map_next(&r->recs, &pos, &v);)
		((struct rec *)v)->seen = false;
	for (size_t pos = 0; map_next(&r->envs, &pos, &v);)
		((struct env_state *)v)->seen = false;
	model_rdlock(m);
	for (size_t i = 0; i < m->envs.n; i++) {
		const struct env *e = m->envs.v[i];
		double settle;

		sync_env(r, e, e->rev_durable);
		settle = settle_of(r, e);
		for (int k = 0; k < NKINDS; k++) {
			for (size_t j = 0; j < e->list[k].n; j++)
				sync_res(r, e, e->list[k].v[j], settle);
		}
	}
	model_unlock(m);
	for (size_t pos = 0; map_next(&r->recs, &pos, &v);) {
		struct rec *rc = v;

		if (rc->seen || !rc->res_id)
			continue;
		undeclare(r, rc);
	}
}

/*
 * A new config (approval, drift) may change every step of e. The model
 * may hand it over with any notice, even an earlier batch's, so each
 * caller of sync_env must look when it says so: the notice of the batch
 * that made the config finds it taken already.
 */
static void sync_env_and_look(struct reconciler *r, const struct env *e,
			      uint64_t rev)
{
	void *v;

	if (!sync_env(r, e, rev))
		return;
	for (size_t pos = 0; map_next(&r->recs, &pos, &v);) {
		if (((struct rec *)v)->env_id == e->id)
			mark_eval(r, v);
	}
}

/* Only what the store said changed; O(changes), not O(resources). */
static void sync_changes(struct reconciler *r, const struct ids *res_ids,
			 const struct ids *env_ids)
{
	struct model *m = store_model(r->opt.store);

	model_rdlock(m);
	for (size_t i = 0; i + 1 < env_ids->n; i += 2) {
		const struct env *e = model_env_by_id(m, env_ids->v[i]);

		if (e)
			sync_env_and_look(r, e, env_ids->v[i + 1]);
	}
	for (size_t i = 0; i < res_ids->n; i++) {
		const struct resource *res = model_res_by_id(m, res_ids->v[i]);
		struct rec *rc;

		if (res) {
			sync_env_and_look(r, res->env, 0);
			sync_res(r, res->env, res, settle_of(r, res->env));
			continue;
		}
		rc = map_get_u64(&r->by_res, &res_ids->v[i]);
		if (rc)
			undeclare(r, rc);
	}
	model_unlock(m);
}

/* ---- observing ---------------------------------------------------------- */

static const struct provider_ops *provider_of(const struct env_state *es,
					      int *index)
{
	char name[32];

	config_word(es ? es->config : NULL, "provider", "local", name,
		    sizeof(name));
	for (int i = 0; builtin_providers[i]; i++) {
		if (!strcmp(builtin_providers[i]->info->name, name)) {
			*index = i;
			return builtin_providers[i];
		}
	}
	return NULL;
}

static struct env_state *env_by_name(struct reconciler *r, const char *name)
{
	void *v;

	for (size_t pos = 0; map_next(&r->envs, &pos, &v);) {
		struct env_state *es = v;

		if (es->seen && !strcmp(es->name, name))
			return es;
	}
	return NULL;
}

/* Finds what runs but is declared no more (a crash between rmdir and the
 * destroy, or a restart since). */
static void adopt_orphans(struct reconciler *r, const struct env_state *es,
			  const struct provider_ops *p, void *pstate)
{
	BUF_AUTO live = BUF_INIT;
	char *save = NULL;

	if (!p->list)
		return;
	p->list(pstate, es->name, &live);
	for (char *line = live.len ? strtok_r(live.data, "\n", &save) : NULL;
	     line; line = strtok_r(NULL, "\n", &save)) {
		char *slash = strchr(line, '/');
		const struct kind_def *k;
		struct rec *rc;

		if (!slash)
			continue;
		*slash = '\0';
		k = kind_by_dir(line);
		if (!k || kind_index(k) < 0 || !name_is_valid(slash + 1))
			continue;
		rc = rec_get(r, es->name, kind_index(k), slash + 1);
		rc->env_id = es->env_id;
		mark_eval(r, rc);
	}
}

struct batch {
	struct target *t;
	struct rec **recs;
	struct desired *want;
	size_t n, cap;
};

static void batch_add(struct batch *b, struct rec *rc, struct env_state *es)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 32;
		b->t = xrealloc(b->t, b->cap * sizeof(*b->t));
		b->recs = xrealloc(b->recs, b->cap * sizeof(*b->recs));
		b->want = xrealloc(b->want, b->cap * sizeof(*b->want));
	}
	b->recs[b->n] = rc;
	b->want[b->n] = (struct desired){
		.env = rc->env,
		.kind = rc->kind,
		.name = rc->name,
		.rev = rc->rev,
		.spec = rc->spec,
		.config = es ? es->config : NULL,
		.owner_uid = es ? es->uid : 0,
		.owner_gid = es ? es->gid : 0,
	};
	memset(&b->t[b->n], 0, sizeof(b->t[b->n]));
	b->t[b->n].env = rc->env;
	b->t[b->n].kind = rc->kind;
	b->t[b->n].name = rc->name;
	b->n++;
}

static void batch_free(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		buf_free(&b->t[i].obs.details);
	free(b->t);
	free(b->recs);
	free(b->want);
	memset(b, 0, sizeof(*b));
}

/* Desired pointers are fixed up once the arrays stop moving. */
static void batch_link(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		const struct rec *rc = b->recs[i];

		b->t[i].want = rc->res_id && rc->spec && !rc->draft
				       ? &b->want[i]
				       : NULL;
	}
}

static void keep_observation(struct rec *rc, const struct observation *o)
{
	buf_free(&rc->obs.details);
	rc->obs = *o;
	memset(&rc->obs.details, 0, sizeof(rc->obs.details));
	buf_add(&rc->obs.details, buf_str(&o->details), o->details.len);
	rc->observed = true;
}

/* ---- planning ----------------------------------------------------------- */

/*
 * ACT_RESTAMP: the live resource already matches the spec, which only
 * carries a newer revision (a rollback or discard restoring what runs):
 * the provider records the revision; nothing to plan or approve. The same
 * for ACT_RESUME: a step of this revision was cut short (a crash) and is
 * finished; it was planned and approved already.
 */
enum action {
	ACT_NONE,
	ACT_CREATE,
	ACT_UPDATE,
	ACT_DESTROY,
	ACT_HEAL,
	ACT_RESTAMP,
	ACT_RESUME
};

static const struct spec *applied_spec(struct reconciler *r, struct rec *rc);
static bool same_effect(const struct spec *a, const struct spec *b);

static enum action action_of(struct reconciler *r, struct rec *rc,
			     const struct env_state *es)
{
	char drift[16];

	if (rc->draft)
		return ACT_NONE;
	if (!rc->res_id)
		return rc->obs.exists ? ACT_DESTROY : ACT_NONE;
	if (rc->destroy_requested)
		return ACT_DESTROY;
	if (!rc->spec)
		return ACT_NONE;
	if (!rc->obs.exists)
		return ACT_CREATE;
	if (rc->obs.applied_rev != rc->rev)
		return same_effect(applied_spec(r, rc), rc->spec) ? ACT_RESTAMP
								  : ACT_UPDATE;
	config_word(es ? es->config : NULL, "drift", "heal", drift,
		    sizeof(drift));
	if (rc->obs.drift[0])
		return strcmp(drift, "heal") ? ACT_NONE : ACT_HEAL;
	return rc->obs.settled ? ACT_NONE : ACT_RESUME;
}

/* The spec the live resource was made from, for "field: old -> new". */
static const struct spec *applied_spec(struct reconciler *r, struct rec *rc)
{
	BUF_AUTO text = BUF_INIT;

	if (rc->applied_text_rev == rc->obs.applied_rev)
		return rc->applied;
	if (rc->applied)
		spec_free(rc->applied);
	rc->applied = NULL;
	rc->applied_text_rev = rc->obs.applied_rev;
	if (store_history_text(r->opt.store, rc->env_id, rc->obs.applied_rev,
			       kind_at(rc->kind)->name, rc->name, &text) == 0)
		rc->applied =
			parse_copy(kind_at(rc->kind), buf_str(&text), text.len);
	return rc->applied;
}

static bool same_effect(const struct spec *a, const struct spec *b)
{
	if (!a || !b || a->kind != b->kind)
		return false;
	for (size_t i = 0; i < a->kind->nfields; i++) {
		BUF_AUTO x = BUF_INIT;
		BUF_AUTO y = BUF_INIT;

		spec_field_text(a, &a->kind->fields[i], &x);
		spec_field_text(b, &b->kind->fields[i], &y);
		if (strcmp(buf_str(&x), buf_str(&y)) != 0)
			return false;
	}
	return true;
}

static const char *const action_words[] = {
	[ACT_NONE] = "none",	 [ACT_CREATE] = "create",
	[ACT_UPDATE] = "update", [ACT_DESTROY] = "destroy",
	[ACT_HEAL] = "heal",
};
static const char action_marks[] = {
	[ACT_NONE] = ' ',    [ACT_CREATE] = '+', [ACT_UPDATE] = '~',
	[ACT_DESTROY] = '-', [ACT_HEAL] = '~',	 [ACT_RESTAMP] = ' ',
};

static bool plan_visible(enum action a)
{
	return a == ACT_CREATE || a == ACT_UPDATE || a == ACT_DESTROY ||
	       a == ACT_HEAL;
}

static void step_free(struct step *st)
{
	free(st->line);
	json_decref(st->json);
	free(st);
}

static void drop_step(struct env_state *es, const char *key)
{
	struct step *st = map_del(&es->steps, key, strlen(key));

	if (st) {
		es->plan_hash ^= st->hash;
		step_free(st);
	}
}

/* Whether the pool an endpoint names is declared and made. */
static bool pool_made(struct reconciler *r, const struct rec *rc,
		      const char *pool)
{
	char key[sizeof(rc->key)];
	const struct rec *p;

	rec_key(key, sizeof(key), rc->env, KIND_POOL_IDX, pool);
	p = map_get(&r->recs, key, strlen(key));
	return p && p->res_id && p->spec && !p->draft && p->obs.exists;
}

/* The first secret an endpoint's env names that its environment does
 * not hold, or NULL. */
static const char *secret_missing(struct reconciler *r, const struct rec *rc)
{
	const struct field_def *f = kind_field(&kind_endpoint, "env", 3);
	const struct spec_value *v;

	if (!f)
		return NULL;
	v = &rc->spec->v[kind_field_index(&kind_endpoint, f)];
	for (size_t i = 0; i < v->npairs; i++) {
		const char *val = v->pairs[i].value;

		if (!strncmp(val, "secret:", 7) &&
		    !store_secret_version(r->opt.store, rc->env, val + 7))
			return val + 7;
	}
	return NULL;
}

/*
 * An endpoint on a pool or secret that is not there yet waits for it
 * rather than fail: a tree copied or checked out in any order writes
 * endpoints/ before pools/ and secrets/. It goes on once the pool is
 * declared and made and the secret written.
 */
static void needs_wait(struct reconciler *r, struct rec *rc, enum action a)
{
	char pool[NAME_MAX_LEN + 1];
	const char *secret;

	rc->waiting[0] = '\0';
	if (rc->kind != KIND_ENDPOINT_IDX || !rc->spec ||
	    (a != ACT_CREATE && a != ACT_UPDATE))
		return;
	spec_text(rc->spec, "pool", pool, sizeof(pool));
	if (pool[0] && !pool_made(r, rc, pool)) {
		snprintf(rc->waiting, sizeof(rc->waiting),
			 "waiting for pools/%s", pool);
		return;
	}
	secret = secret_missing(r, rc);
	if (secret)
		snprintf(rc->waiting, sizeof(rc->waiting),
			 "waiting for secrets/%s", secret);
}

/* Says once, in its events and its environment's, what a resource
 * waits for: each thing, as it comes to wait for it (its pool, then a
 * secret). */
static void tell_waiting(struct reconciler *r, struct rec *rc)
{
	char text[sizeof(rc->key) + sizeof(rc->waiting) + 4];

	if (rc->res_id && rc->waiting[0] &&
	    strcmp(rc->waiting, rc->waiting_said)) {
		store_event(r->opt.store, rc->env_id, rc->res_id, rc->waiting);
		snprintf(text, sizeof(text), "%s/%s: %s",
			 kind_at(rc->kind)->dir, rc->name, rc->waiting);
		store_event(r->opt.store, rc->env_id, 0, text);
	}
	memcpy(rc->waiting_said, rc->waiting, sizeof(rc->waiting));
}

/* Keeps the environment's plan up to date with one resource's action. */
static void set_step(struct reconciler *r, struct env_state *es, struct rec *rc,
		     enum action a)
{
	BUF_AUTO fields = BUF_INIT;
	BUF_AUTO shown = BUF_INIT;
	BUF_AUTO line = BUF_INIT;
	json_t *changes;
	struct step *st;

	if (!plan_visible(a)) {
		drop_step(es, rc->key);
		return;
	}
	changes = json_array();
	if (a == ACT_UPDATE)
		spec_changes(applied_spec(r, rc), rc->spec, &fields, changes);
	if (a == ACT_HEAL)
		buf_printf(&fields, "drift: %s", rc->obs.drift);
	/* Values and drift are anyone's text; a step is one line of plan. */
	text_escape(&shown, fields.data, fields.len, 0);
	buf_printf(&line, "%c %s %s/%s%s%s%s%s%s\n", action_marks[a],
		   action_words[a], kind_at(rc->kind)->dir, rc->name,
		   fields.len ? ": " : "", buf_str(&shown),
		   rc->waiting[0] ? " (" : "", rc->waiting,
		   rc->waiting[0] ? ")" : "");
	st = map_get(&es->steps, rc->key, strlen(rc->key));
	if (st && !strcmp(st->line, buf_str(&line))) {
		json_decref(changes);
		return;
	}
	drop_step(es, rc->key);
	st = xcalloc(1, sizeof(*st));
	snprintf(st->key, sizeof(st->key), "%s", rc->key);
	st->line = buf_steal(&line);
	st->hash = map_hash(st->line, strlen(st->line)) | 1;
	st->json = json_pack("{s:s, s:s, s:s, s:s++, s:o}", "action",
			     action_words[a], "kind", kind_at(rc->kind)->name,
			     "name", rc->name, "path", kind_at(rc->kind)->dir,
			     "/", rc->name, "changes", changes);
	if (rc->waiting[0])
		json_object_set_new(st->json, "waiting",
				    json_string(rc->waiting));
	map_put(&es->steps, st->key, strlen(st->key), st);
	es->plan_hash ^= st->hash;
}

static int cmp_steps(const void *a, const void *b)
{
	return strcmp((*(struct step *const *)a)->key,
		      (*(struct step *const *)b)->key);
}

static bool manual(const struct env_state *es)
{
	char word[16];

	config_word(es->config, "approval", "auto", word, sizeof(word));
	return !strcmp(word, "manual");
}

/* The plan files, from the pending steps alone (sorted for reading). */
static void publish_plan(struct reconciler *r, struct env_state *es)
{
	struct observed_env oe = { .env_id = es->env_id };
	size_t n = es->steps.count, i = 0;
	struct step **sorted = xcalloc(n ? n : 1, sizeof(*sorted));
	json_t *steps = json_array(), *doc;
	BUF_AUTO text = BUF_INIT;
	char *json;
	void *v;

	if (n && es->plan_hash != es->published_hash)
		es->plan_no++;
	es->published_hash = n ? es->plan_hash : 0;
	es->published = true;
	for (size_t pos = 0; map_next(&es->steps, &pos, &v);)
		sorted[i++] = v;
	if (n > 1)
		qsort(sorted, n, sizeof(*sorted), cmp_steps);
	if (n)
		buf_printf(&text, "plan %" PRIu64 " for %s (approval: %s)\n",
			   es->plan_no, es->name,
			   manual(es) ? "manual" : "auto");
	for (i = 0; i < n; i++) {
		buf_adds(&text, sorted[i]->line);
		json_array_append(steps, sorted[i]->json);
	}
	if (n && manual(es) && es->approved != es->plan_no)
		buf_printf(&text,
			   "waiting for approval: echo 'approve %" PRIu64
			   "' > ctl\n",
			   es->plan_no);
	free(sorted);
	doc = json_pack("{s:s, s:o, s:s, s:o}", "environment", es->name, "plan",
			n ? json_integer((json_int_t)es->plan_no) : json_null(),
			"approval", manual(es) ? "manual" : "auto", "steps",
			steps);
	json = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	oe.plan_no = n ? es->plan_no : 0;
	oe.plan_text = (char *)buf_str(&text);
	oe.plan_json = json;
	oe.terraform = es->terraform;
	oe.applied_rev = es->applied_rev;
	oe.last_apply = es->last_apply;
	if (observed_put_env(r->opt.observed, &oe)) {
		share_note(&r->share, es->env_id, 0);
		if (r->opt.changed)
			r->opt.changed(r->opt.ctx, es->env_id, 0);
	}
	free(json);
}

/* ---- stepping ----------------------------------------------------------- */

static void backoff(struct rec *rc)
{
	double wait = 0.5 * pow(2.0, rc->failures < 8 ? rc->failures : 8);

	rc->failures++;
	rc->due = now_s() +
		  (wait < BACKOFF_MAX_SECONDS ? wait : BACKOFF_MAX_SECONDS);
}

static void stepped(struct target *t, struct rec *rc, int rc_step)
{
	if (rc_step < 0) {
		char res[NAME_MAX_LEN + 24];

		backoff(rc);
		snprintf(res, sizeof(res), "%s/%s", kind_at(rc->kind)->dir,
			 rc->name);
		log_for(LOG_LVL_INFO, rc->env, res, rc->rev, "%s: %s", rc->key,
			t->obs.error);
	} else {
		rc->failures = 0;
		/* It could only wait: the next step comes at the provider's
		 * pace, not at the next pass. */
		if (t->obs.retry_in_s > 0)
			rc->due = now_s() + t->obs.retry_in_s;
	}
	keep_observation(rc, &t->obs);
}

/* The chosen steps of one environment: together when the provider can
 * (its calls then share connections and round trips), else one by one. */
static void take_steps(const struct provider_ops *p, void *pstate,
		       struct batch *b, const bool *chosen)
{
	struct target **ts = xcalloc(b->n ? b->n : 1, sizeof(*ts));
	int *rcs = xcalloc(b->n ? b->n : 1, sizeof(*rcs));
	size_t *at = xcalloc(b->n ? b->n : 1, sizeof(*at));
	size_t n = 0;

	for (size_t i = 0; i < b->n; i++) {
		if (chosen[i]) {
			ts[n] = &b->t[i];
			at[n++] = i;
		}
	}
	if (p->step_many && n > 1) {
		p->step_many(pstate, ts, rcs, n);
	} else {
		for (size_t k = 0; k < n; k++)
			rcs[k] = p->step(pstate, ts[k]);
	}
	for (size_t k = 0; k < n; k++)
		stepped(ts[k], b->recs[at[k]], rcs[k]);
	free(at);
	free(rcs);
	free(ts);
}

/* Events say when a resource's state changes and when drift shows or
 * goes; status says what is true now. */
static void tell_drift(struct reconciler *r, struct rec *rc)
{
	char text[sizeof(rc->obs.drift) + 16];

	if (rc->res_id && strcmp(rc->drift_said, rc->obs.drift) != 0) {
		snprintf(text, sizeof(text), "drift: %s",
			 rc->obs.drift[0] ? rc->obs.drift : "none any more");
		store_event(r->opt.store, rc->env_id, rc->res_id, text);
		snprintf(rc->drift_said, sizeof(rc->drift_said), "%s",
			 rc->obs.drift);
	}
}

static void tell_events(struct reconciler *r, struct rec *rc,
			enum res_state state)
{
	char text[sizeof(rc->obs.error) + 64];

	tell_drift(r, rc);
	/* The first look after a start is no change: a restart must not
	 * write a line for every resource. */
	if (!rc->state_said)
		rc->state_said = (int)state + 1;
	if (rc->state_said != (int)state + 1) {
		snprintf(text, sizeof(text), "state: %s%s%s",
			 res_state_word(state), rc->obs.error[0] ? ": " : "",
			 rc->obs.error);
		store_event(r->opt.store, rc->env_id, rc->res_id, text);
		rc->state_said = (int)state + 1;
	}
}

/*
 * When the provider last looked. One that looks live at every pass says
 * 0 (now); status shows that to the second, so that every status is not
 * re-rendered and dropped from the kernel's cache twice a second for a
 * time nobody reads that finely.
 */
#define LIVE_STEP_S 1.0

static double observed_at_of(struct rec *rc)
{
	double now = now_s();

	if (rc->obs.observed_at > 0)
		return rc->obs.observed_at;
	if (now - rc->live_at >= LIVE_STEP_S)
		rc->live_at = now;
	return rc->live_at;
}

static void publish_res(struct reconciler *r, struct rec *rc,
			const struct env_state *es, enum action pending,
			bool held)
{
	struct observed_res o = {
		.res_id = rc->res_id,
		.state = rc->obs.state,
		.applied_rev = rc->obs.applied_rev,
		.observed_at = observed_at_of(rc),
		.hourly_cost_usd = rc->obs.hourly_cost_usd,
		.details = (char *)buf_str(&rc->obs.details),
		.error = rc->obs.error[0] ? rc->obs.error : NULL,
		.drift = rc->obs.drift[0] ? rc->obs.drift : NULL,
	};
	char reason[160] = "";

	if (!rc->res_id)
		return;
	o.synced = pending == ACT_NONE && rc->obs.exists &&
		   rc->obs.applied_rev == rc->rev;
	if (rc->waiting[0] && pending != ACT_NONE)
		snprintf(reason, sizeof(reason), "%s", rc->waiting);
	else if (held)
		snprintf(reason, sizeof(reason),
			 "plan %" PRIu64 " waits for approval (echo 'approve "
			 "%" PRIu64 "' > ctl)",
			 es->plan_no, es->plan_no);
	else if (!rc->obs.exists && pending == ACT_CREATE)
		snprintf(reason, sizeof(reason),
			 rc->failures ? "retrying after a failure"
				      : "settling: applied shortly");
	if (pending == ACT_CREATE && !rc->obs.error[0])
		o.state = RS_PENDING;
	o.reason = reason[0] ? reason : NULL;
	tell_events(r, rc, o.state);
	if (observed_put_res(r->opt.observed, &o)) {
		share_note(&r->share, rc->env_id, rc->res_id);
		if (r->opt.changed)
			r->opt.changed(r->opt.ctx, rc->env_id, rc->res_id);
	}
}

static void rec_free(struct rec *rc)
{
	buf_free(&rc->obs.details);
	if (rc->spec)
		spec_free(rc->spec);
	if (rc->applied)
		spec_free(rc->applied);
	free(rc);
}

static void forget_rec(struct reconciler *r, struct rec *rc)
{
	struct env_state *es = map_get_u64(&r->envs, &rc->env_id);

	if (es)
		drop_step(es, rc->key);
	if (rc->res_id)
		map_del(&r->by_res, &rc->res_id, sizeof(rc->res_id));
	map_del(&r->watched, rc->key, strlen(rc->key));
	map_del(&r->recs, rc->key, strlen(rc->key));
	rec_free(rc);
}

static void mark_applied(struct reconciler *r, struct env_state *es)
{
	struct change ch = { .op = CH_APPLIED, .env = es->name };
	struct change_result res;

	if (es->applied_rev >= es->rev)
		return;
	ch.rev = es->rev;
	snprintf(ch.who.comm, sizeof(ch.who.comm), "reconciler");
	if (store_apply(r->opt.store, &ch, &res) == 0) {
		es->applied_rev = es->rev;
		es->last_apply = now_s();
		publish_plan(r, es);
	}
}

/* An approved protected destroy has run: now the resource itself goes. */
static void finish_protected_destroy(struct reconciler *r, struct rec *rc)
{
	struct change ch = { .op = CH_RES_REMOVE,
			     .env = rc->env,
			     .kind = rc->kind,
			     .name = rc->name,
			     .approved = true };
	struct change_result res;
	char path[200];

	snprintf(path, sizeof(path), "%s/%s/%s", rc->env,
		 kind_at(rc->kind)->dir, rc->name);
	ch.path = path;
	snprintf(ch.who.comm, sizeof(ch.who.comm), "reconciler");
	if (store_apply(r->opt.store, &ch, &res) < 0)
		log_for(LOG_LVL_WARN, rc->env, path + strlen(rc->env) + 1,
			rc->rev, "%s: %s", rc->key, res.msg);
}

/*
 * Resources that change on their own (replicas crash, a step is under
 * way, a failure waits for its retry) are looked at every pass; the rest
 * when they change or at the environment's refresh. A provider that tells
 * of changes itself (env_changed) spares its running endpoints the looks.
 */
static void set_watched(struct reconciler *r, struct rec *rc, enum action a,
			bool tells_changes)
{
	bool watch = a != ACT_NONE || rc->failures || !rc->obs.settled ||
		     (rc->kind == KIND_ENDPOINT_IDX && rc->obs.exists &&
		      !tells_changes);

	if (watch == rc->watched)
		return;
	rc->watched = watch;
	if (watch)
		map_put(&r->watched, rc->key, strlen(rc->key), rc);
	else
		map_del(&r->watched, rc->key, strlen(rc->key));
}

/* One environment's share of a pass: observe, plan, step, publish. */
static void pass_env(struct reconciler *r, struct env_state *es,
		     struct rec **recs, size_t n, unsigned *budget)
{
	int pi = 0;
	const struct provider_ops *p = provider_of(es, &pi);
	void *pstate = r->provider_state[pi];
	struct batch b = { 0 };
	bool held, *chosen, *waits;
	double now = now_s();

	if (!p || !pstate)
		return;
	for (size_t i = 0; i < n; i++)
		batch_add(&b, recs[i], es);
	batch_link(&b);
	p->observe(pstate, b.t, b.n);
	for (size_t i = 0; i < b.n; i++) {
		keep_observation(b.recs[i], &b.t[i].obs);
		/* Drift healed by this very pass is still news. */
		tell_drift(r, b.recs[i]);
	}
	for (size_t i = 0; i < b.n; i++) {
		enum action a = action_of(r, b.recs[i], es);

		/* After every observation: a pool made this pass counts. */
		needs_wait(r, b.recs[i], a);
		tell_waiting(r, b.recs[i]);
		set_step(r, es, b.recs[i], a);
	}
	if (!es->published || es->plan_hash != es->published_hash)
		publish_plan(r, es);
	held = es->steps.count && es->approved != es->plan_no;
	chosen = xcalloc(b.n ? b.n : 1, sizeof(*chosen));
	waits = xcalloc(b.n ? b.n : 1, sizeof(*waits));
	for (size_t i = 0; i < b.n; i++) {
		struct rec *rc = b.recs[i];
		enum action a = action_of(r, rc, es);

		/* A protected destroy waits for approval whatever the
		 * environment's approval setting. */
		waits[i] = held && plan_visible(a) &&
			   (manual(es) || rc->destroy_requested);
		if (a != ACT_NONE && !waits[i] && !rc->waiting[0] &&
		    rc->due <= now && *budget) {
			(*budget)--;
			chosen[i] = true;
			if (rc->destroy_requested)
				b.t[i].want = NULL;
		}
	}
	take_steps(p, pstate, &b, chosen);
	for (size_t i = 0; i < b.n; i++) {
		struct rec *rc = b.recs[i];
		enum action a = action_of(r, rc, es);

		/* A step may rename what the provider makes next. */
		es->export_due |= chosen[i];
		if (chosen[i]) {
			if (rc->destroy_requested && !rc->obs.exists)
				finish_protected_destroy(r, rc);
			a = action_of(r, rc, es);
			set_step(r, es, rc, a);
		}
		set_watched(r, rc, a, p->info->tells_changes);
		publish_res(r, rc, es, a, waits[i] && a != ACT_NONE);
	}
	free(chosen);
	free(waits);
	if (!es->published || es->plan_hash != es->published_hash)
		publish_plan(r, es);
	for (size_t i = 0; i < b.n; i++) {
		struct rec *rc = b.recs[i];

		if (!rc->res_id && !rc->obs.exists)
			forget_rec(r, rc);
	}
	batch_free(&b);
}

/*
 * An environment with no step left has applied its newest revision, even
 * one that no resource of it looked at: a config whose effect an earlier
 * pass already took, or an environment with no resources.
 */
static void mark_envs_applied(struct reconciler *r)
{
	void *v;

	for (size_t pos = 0; map_next(&r->envs, &pos, &v);) {
		struct env_state *es = v;
		int pi = 0;

		if (!es->seen || es->steps.count || es->applied_rev >= es->rev)
			continue;
		/* Without a provider nothing was looked at, let alone done. */
		if (!provider_of(es, &pi) || !r->provider_state[pi])
			continue;
		if (store_leads(r->opt.store, es->env_id))
			mark_applied(r, es);
	}
}

/* ---- import ----------------------------------------------------------- */

static void import_said(struct reconciler *r, const struct env_state *es,
			const struct import_request *q, const char *what)
{
	char text[900];

	snprintf(text, sizeof(text), "import %s/%s %s: %s",
		 kind_at(q->kind)->dir, q->name, q->id, what);
	store_event(r->opt.store, es->env_id, 0, text);
	log_for(LOG_LVL_INFO, es->name, NULL, 0, "%s", text);
	if (r->opt.changed)
		r->opt.changed(r->opt.ctx, es->env_id, 0);
}

/* The spec as a new revision, made by whoever wrote the import: the
 * store checks it with that user's authority. */
static int commit_import(struct reconciler *r, const struct import_request *q,
			 const struct buf *spec, struct change_result *res)
{
	char path[NAME_MAX_LEN + 8];
	struct change ch = { .op = CH_RES_DRAFT,
			     .env = q->env,
			     .kind = q->kind,
			     .name = q->name,
			     .path = path,
			     .who = q->who };
	int rc;

	snprintf(path, sizeof(path), "%s/ctl", q->env);
	rc = store_apply(r->opt.store, &ch, res);
	if (rc)
		return rc;
	ch.op = CH_RES_COMMIT;
	ch.text = spec->data;
	ch.len = spec->len;
	rc = store_apply(r->opt.store, &ch, res);
	if (rc) {
		struct change_result gone;

		ch.op = CH_RES_REMOVE;
		store_apply(r->opt.store, &ch, &gone);
	}
	return rc;
}

static void import_again(struct reconciler *r, const struct import_request *q)
{
	pthread_mutex_lock(&r->lock);
	r->imports =
		xrealloc(r->imports, (r->nimports + 1) * sizeof(*r->imports));
	r->imports[r->nimports++] = *q;
	pthread_mutex_unlock(&r->lock);
}

static void take_import(struct reconciler *r, const struct import_request *q)
{
	struct env_state *es = env_by_name(r, q->env);
	int pi = 0;
	const struct provider_ops *p = provider_of(es, &pi);
	struct desired at = { .env = q->env, .kind = q->kind, .name = q->name };
	struct change_result res = { 0 };
	BUF_AUTO spec = BUF_INIT;
	char msg[600] = "", said[700];

	if (!es) {
		if (now_s() - q->asked_at < IMPORT_WAIT_SECONDS)
			import_again(r, q);
		else
			log_warn("import %s %s: no environment %s", q->name,
				 q->id, q->env);
		return;
	}
	if (!p || !p->adopt || !r->provider_state[pi]) {
		if (now_s() - q->asked_at < IMPORT_WAIT_SECONDS) {
			import_again(r, q);
			return;
		}
		import_said(r, es, q,
			    "refused: the environment's provider has nothing "
			    "to import");
		return;
	}
	at.config = es->config;
	at.owner_uid = es->uid;
	at.owner_gid = es->gid;
	if (p->adopt(r->provider_state[pi], &at, q->id, &spec, msg,
		     sizeof(msg)) < 0) {
		snprintf(said, sizeof(said), "refused: %s", msg);
		import_said(r, es, q, said);
		return;
	}
	if (commit_import(r, q, &spec, &res) < 0) {
		p->adopted(r->provider_state[pi], &at, 0);
		snprintf(said, sizeof(said), "refused: %s", res.msg);
		import_said(r, es, q, said);
		return;
	}
	p->adopted(r->provider_state[pi], &at, res.rev);
	snprintf(said, sizeof(said), "adopted as revision %" PRIu64, res.rev);
	import_said(r, es, q, said);
}

static void take_imports(struct reconciler *r)
{
	struct import_request *q;
	size_t n;

	pthread_mutex_lock(&r->lock);
	q = r->imports;
	n = r->nimports;
	r->imports = NULL;
	r->nimports = 0;
	pthread_mutex_unlock(&r->lock);
	for (size_t i = 0; i < n; i++)
		take_import(r, &q[i]);
	free(q);
}

/* ---- export/ ----------------------------------------------------------- */

static void export_nothing(const struct env_state *es, const char *provider,
			   struct buf *out)
{
	json_t *doc = json_object();
	char *text;

	json_object_set_new(
		doc, "//",
		json_sprintf("infrafs environment %s runs on the %s provider "
			     "(processes and devices of this machine): there "
			     "is nothing Terraform can manage",
			     es->name, provider));
	text = json_dumps(doc, JSON_INDENT(2));
	buf_adds(out, text);
	buf_addc(out, '\n');
	free(text);
	json_decref(doc);
}

/* Every resource es declares, as a provider's export wants them. */
static size_t declared_of(struct reconciler *r, const struct env_state *es,
			  struct desired **out)
{
	size_t n = 0, cap = 16;
	void *v;

	*out = xcalloc(cap, sizeof(**out));
	for (size_t pos = 0; map_next(&r->recs, &pos, &v);) {
		const struct rec *rc = v;

		if (strcmp(rc->env, es->name) || !rc->res_id || !rc->spec ||
		    rc->draft)
			continue;
		if (n == cap) {
			cap *= 2;
			*out = xrealloc(*out, cap * sizeof(**out));
		}
		(*out)[n++] = (struct desired){
			.env = rc->env,
			.kind = rc->kind,
			.name = rc->name,
			.rev = rc->rev,
			.spec = rc->spec,
			.config = es->config,
			.owner_uid = es->uid,
			.owner_gid = es->gid,
		};
	}
	return n;
}

static void export_env(struct reconciler *r, struct env_state *es)
{
	int pi = 0;
	const struct provider_ops *p = provider_of(es, &pi);
	BUF_AUTO text = BUF_INIT;
	struct desired *want;
	size_t n;

	if (!p || !r->provider_state[pi])
		return;
	es->export_due = false;
	if (!p->export_terraform) {
		export_nothing(es, p->info->name, &text);
	} else {
		n = declared_of(r, es, &want);
		p->export_terraform(r->provider_state[pi], es->name, es->config,
				    want, n, &text);
		free(want);
	}
	if (es->terraform && !strcmp(es->terraform, buf_str(&text)))
		return;
	free(es->terraform);
	es->terraform = xstrdup(buf_str(&text));
	publish_plan(r, es);
}

static void export_due(struct reconciler *r)
{
	void *v;

	for (size_t pos = 0; map_next(&r->envs, &pos, &v);) {
		struct env_state *es = v;

		if (es->seen && es->export_due)
			export_env(r, es);
	}
}

/*
 * `refresh` of one environment: its provider drops what it cached of it,
 * and the refresh due now looks at every resource (and for what runs
 * undeclared), acting where a step waits.
 */
static void refresh_env(struct reconciler *r, const char *name)
{
	struct env_state *es = env_by_name(r, name);
	int pi = 0;
	const struct provider_ops *p;
	void *v;

	if (!es)
		return;
	p = provider_of(es, &pi);
	if (p && p->refresh && r->provider_state[pi])
		p->refresh(r->provider_state[pi], es->name);
	es->next_refresh = 0;
	for (size_t pos = 0; map_next(&r->recs, &pos, &v);) {
		struct rec *rc = v;

		if (!strcmp(rc->env, es->name)) {
			rc->due = 0;
			rc->failures = 0;
		}
	}
}

static void take_refreshes(struct reconciler *r, struct buf *names)
{
	char *save = NULL;

	for (char *n = names->len ? strtok_r(names->data, "\n", &save) : NULL;
	     n; n = strtok_r(NULL, "\n", &save))
		refresh_env(r, n);
	buf_free(names);
}

static void take_requests(struct reconciler *r, struct ids *res_ids,
			  struct ids *env_ids, bool *sweep)
{
	struct buf refreshes;
	bool all_now;
	void *v;

	pthread_mutex_lock(&r->lock);
	all_now = r->refresh_all;
	r->refresh_all = false;
	refreshes = r->refresh_envs;
	memset(&r->refresh_envs, 0, sizeof(r->refresh_envs));
	*sweep = r->sweep;
	r->sweep = false;
	*res_ids = r->dirty_res;
	*env_ids = r->dirty_env;
	memset(&r->dirty_res, 0, sizeof(r->dirty_res));
	memset(&r->dirty_env, 0, sizeof(r->dirty_env));
	for (size_t pos = 0; map_next(&r->envs, &pos, &v);) {
		struct env_state *es = v;
		uint64_t *approved =
			map_get(&r->approvals, es->name, strlen(es->name));

		if (approved)
			es->approved = *approved;
	}
	pthread_mutex_unlock(&r->lock);
	take_refreshes(r, &refreshes);
	if (!all_now)
		return;
	for (size_t pos = 0; map_next(&r->recs, &pos, &v);) {
		((struct rec *)v)->due = 0;
		((struct rec *)v)->failures = 0;
		mark_eval(r, v);
	}
}

static bool rec_in_env(const struct rec *rc, const struct env_state *es)
{
	return rc->env_id == es->env_id || !strcmp(rc->env, es->name);
}

/*
 * Where the provider tells of changes, the refresh is only a safety net,
 * spread over the period: a resource is looked at once per refresh_s, in
 * one of SPREAD_SLOTS moments (a hash of its key), so that a write never
 * waits behind one pass of a thousand endpoints (0.3 s). Not one moment
 * each: every observe() pays a fixed cost (kubernetes walks the pods
 * once), which at a few looks a pass tripled the CPU of an environment
 * at rest.
 */
#define SPREAD_SLOTS 10

static void spread_looks(struct reconciler *r, const struct env_state *es,
			 double now)
{
	double period = (double)config_int(es->config, "refresh_s", 30);
	void *w;

	for (size_t at = 0; map_next(&r->recs, &at, &w);) {
		struct rec *rc = w;
		uint64_t slot;

		if (!rec_in_env(rc, es))
			continue;
		slot = map_hash(rc->key, strlen(rc->key)) % SPREAD_SLOTS;
		/* 0: not placed yet; beyond a period: refresh_s was shortened. */
		if (rc->next_look == 0 || rc->next_look > now + period) {
			rc->next_look =
				now + period * (double)slot / SPREAD_SLOTS;
		} else if (now >= rc->next_look) {
			rc->next_look = now + period;
			mark_eval(r, rc);
		}
	}
}

/* Every refresh_s, an environment's resources are all looked at again,
 * and the provider asked for what runs that is declared no more. */
static void due_refreshes(struct reconciler *r, double now)
{
	void *v;

	for (size_t pos = 0; map_next(&r->envs, &pos, &v);) {
		struct env_state *es = v;
		int pi = 0;
		const struct provider_ops *p = provider_of(es, &pi);
		bool spread = p && p->info->tells_changes;
		double period = (double)config_int(es->config, "refresh_s", 30);
		void *w;

		if (!es->seen)
			continue;
		if (spread)
			spread_looks(r, es, now);
		/* A refresh_s shortened counts from now, not from the end of
		 * the longer one already running. */
		if (es->next_refresh > now + period)
			es->next_refresh = now + period;
		if (now < es->next_refresh)
			continue;
		es->next_refresh = now + period;
		if (p && r->provider_state[pi])
			adopt_orphans(r, es, p, r->provider_state[pi]);
		for (size_t at = 0; !spread && map_next(&r->recs, &at, &w);) {
			if (rec_in_env(w, es))
				mark_eval(r, w);
		}
	}
}

static int cmp_by_env(const void *a, const void *b)
{
	const struct rec *x = *(struct rec *const *)a;
	const struct rec *y = *(struct rec *const *)b;

	return strcmp(x->env, y->env);
}

static void run_pass(struct reconciler *r)
{
	unsigned budget = STEPS_PER_PASS;
	struct ids res_ids, env_ids;
	double start = now_s();
	size_t evaluated;
	bool sweep;
	void *v;

	take_requests(r, &res_ids, &env_ids, &sweep);
	if (sweep)
		sync_from_model(r);
	else
		sync_changes(r, &res_ids, &env_ids);
	/* After the sync: an import written right after the config that
	 * made the environment's provider able to import finds it. */
	take_imports(r);
	free(res_ids.v);
	free(env_ids.v);
	due_refreshes(r, start);
	look_at_changed(r);
	for (size_t pos = 0; map_next(&r->watched, &pos, &v);)
		mark_eval(r, v);
	/* Group by environment: one provider batch each. */
	if (r->nevals > 1)
		qsort(r->evals, r->nevals, sizeof(*r->evals), cmp_by_env);
	for (size_t i = 0; i < r->nevals;) {
		size_t j = i;
		struct env_state *es;

		while (j < r->nevals &&
		       !strcmp(r->evals[j]->env, r->evals[i]->env))
			j++;
		es = env_by_name(r, r->evals[i]->env);
		for (size_t k = i; k < j; k++)
			r->evals[k]->eval = false;
		/* Another daemon sharing the store carries this one. */
		if (es && store_leads(r->opt.store, es->env_id))
			pass_env(r, es, r->evals + i, j - i, &budget);
		i = j;
	}
	mark_envs_applied(r);
	export_due(r);
	evaluated = r->nevals;
	r->nevals = 0;
	/* Records of environments that are gone, with nothing left live. */
	if (sweep) {
		for (size_t pos = 0; map_next(&r->recs, &pos, &v);) {
			struct rec *rc = v;

			if (!env_by_name(r, rc->env) && !rc->obs.exists) {
				forget_rec(r, rc);
				pos = 0;
			}
		}
	}
	/* Idle passes would hide what a change cost: keep the last pass that
	 * had something to look at. */
	if (evaluated) {
		pthread_mutex_lock(&r->lock);
		r->last_pass_evaluated = evaluated;
		r->last_pass_seconds = now_s() - start;
		pthread_mutex_unlock(&r->lock);
	}
}

static void add_sample(struct call_window *w, double now, uint64_t total,
		       size_t resources)
{
	w->at[w->next] = now;
	w->calls[w->next] = total;
	w->next = (w->next + 1) % CALL_SAMPLES;
	if (w->n < CALL_SAMPLES)
		w->n++;
	w->total = total;
	w->resources = resources;
}

/* What each provider has called so far, for metrics. */
static void sample_calls(struct reconciler *r, double now)
{
	size_t count[8] = { 0 };
	uint64_t total[8] = { 0 };
	void *v;

	if (now - r->calls_sampled < 1.0)
		return;
	r->calls_sampled = now;
	for (size_t pos = 0; map_next(&r->recs, &pos, &v);) {
		const struct rec *rc = v;
		const struct env_state *es = map_get_u64(&r->envs, &rc->env_id);
		int pi = 0;

		if (es && provider_of(es, &pi))
			count[pi]++;
	}
	for (int i = 0; builtin_providers[i] && i < 8; i++) {
		if (builtin_providers[i]->calls && r->provider_state[i])
			total[i] = builtin_providers[i]->calls(
				r->provider_state[i]);
	}
	pthread_mutex_lock(&r->lock);
	for (int i = 0; builtin_providers[i] && i < 8; i++)
		add_sample(&r->calls[i], now, total[i], count[i]);
	pthread_mutex_unlock(&r->lock);
}

bool reconciler_calls(struct reconciler *r, int provider, uint64_t *total,
		      uint64_t *last_minute, size_t *resources)
{
	const struct call_window *w;
	double now = now_s();
	uint64_t since = 0;

	if (provider < 0 || provider >= 8 || !builtin_providers[provider] ||
	    !builtin_providers[provider]->calls)
		return false;
	pthread_mutex_lock(&r->lock);
	w = &r->calls[provider];
	/* The oldest sample of the last minute is where it counts from. */
	for (size_t k = 0; k < w->n; k++) {
		size_t i = (w->next + CALL_SAMPLES - w->n + k) % CALL_SAMPLES;

		if (now - w->at[i] <= 60.0) {
			since = w->calls[i];
			break;
		}
	}
	*total = w->total;
	*last_minute = w->total - (since < w->total ? since : w->total);
	*resources = w->resources;
	pthread_mutex_unlock(&r->lock);
	return true;
}

static void *reconcile_loop(void *arg)
{
	struct reconciler *r = arg;

	pthread_mutex_lock(&r->lock);
	while (!r->stopping) {
		struct timespec until;
		double t = now_s() + PASS_SECONDS;

		pthread_mutex_unlock(&r->lock);
		run_pass(r);
		share_run(&r->share, now_s());
		sample_calls(r, now_s());
		pthread_mutex_lock(&r->lock);
		if (r->kicked) {
			r->kicked = false;
			continue;
		}
		until.tv_sec = (time_t)t;
		until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
		while (!r->stopping && !r->kicked &&
		       pthread_cond_timedwait(&r->cond, &r->lock, &until) == 0)
			;
		r->kicked = false;
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

void reconciler_stats(struct reconciler *r, double *pass_seconds,
		      size_t *evaluated)
{
	pthread_mutex_lock(&r->lock);
	*pass_seconds = r->last_pass_seconds;
	*evaluated = r->last_pass_evaluated;
	pthread_mutex_unlock(&r->lock);
}

/* ---- ctl --------------------------------------------------------------- */

static int store_change_for(struct reconciler *r, const char *env,
			    enum change_op op, uint64_t rev, const char *name,
			    const struct caller *who, char *msg, size_t msglen)
{
	struct change ch = {
		.op = op, .env = env, .name = name, .rev = rev, .who = *who
	};
	struct change_result res;
	char path[NAME_MAX_LEN + 8];
	int rc;

	snprintf(path, sizeof(path), "%s/ctl", env);
	ch.path = path;
	rc = store_apply(r->opt.store, &ch, &res);
	if (rc)
		snprintf(msg, msglen, "%s", res.msg);
	else
		wake(r);
	return rc;
}

static int parse_number(const char *s, uint64_t *out)
{
	char *end;

	if (!*s)
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || *end ? -EINVAL : 0;
}

static bool has_protected_destroy(const struct env *e)
{
	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < e->list[k].n; i++) {
			if (e->list[k].v[i]->destroy_requested)
				return true;
		}
	}
	return false;
}

static int approve(struct reconciler *r, const char *env, const char *arg,
		   const struct caller *who, char *msg, size_t msglen)
{
	struct observed_env oe = { 0 };
	struct model *m = store_model(r->opt.store);
	uint64_t env_id = 0, current, wanted;
	bool owner_only = false;
	uid_t owner = 0;
	uint64_t *slot;
	struct env *e;

	model_rdlock(m);
	e = model_env(m, env);
	if (e) {
		env_id = e->id;
		owner = e->uid;
		owner_only = has_protected_destroy(e);
	}
	model_unlock(m);
	/* A protected destroy needs someone who may write the policy. */
	if (owner_only && who->uid != 0 && who->uid != owner) {
		snprintf(msg, msglen,
			 "approve: the plan destroys protected resources; "
			 "only the owner of %s (uid %u) or root may approve "
			 "it",
			 env, (unsigned)owner);
		return -EACCES;
	}
	/* A new environment has no entry yet: oe stays as it was. */
	if (!observed_get_env(r->opt.observed, env_id, &oe) || !oe.plan_no) {
		observed_env_free(&oe);
		snprintf(msg, msglen, "approve: %s has no pending plan", env);
		return -EINVAL;
	}
	current = oe.plan_no;
	observed_env_free(&oe);
	if (*arg && parse_number(arg, &wanted) < 0) {
		snprintf(msg, msglen, "approve: expected a plan number, got %s",
			 arg);
		return -EINVAL;
	}
	if (*arg && wanted != current) {
		snprintf(msg, msglen,
			 "approve %" PRIu64 ": the current plan is %" PRIu64,
			 wanted, current);
		return -ESTALE;
	}
	pthread_mutex_lock(&r->lock);
	slot = map_get(&r->approvals, env, strlen(env));
	if (!slot) {
		/* The key lives right behind the number it maps to. */
		slot = xcalloc(1, sizeof(*slot) + strlen(env) + 1);
		memcpy(slot + 1, env, strlen(env) + 1);
		map_put(&r->approvals, (char *)(slot + 1), strlen(env), slot);
	}
	*slot = current;
	r->kicked = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static bool noted(const struct buf *names, const char *env)
{
	const char *all = buf_str(names), *p = all;
	size_t n = strlen(env);

	while ((p = strstr(p, env))) {
		if ((p == all || p[-1] == '\n') && p[n] == '\n')
			return true;
		p += n;
	}
	return false;
}

static void note_changed(struct reconciler *r, const char *what)
{
	pthread_mutex_lock(&r->lock);
	if (!map_get(&r->changed, what, strlen(what))) {
		char *copy = xstrdup(what);

		map_put(&r->changed, copy, strlen(copy), copy);
	}
	r->kicked = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* A provider's watch saw env's live objects change: the next pass looks
 * at every resource of env, without asking the provider to go back to
 * the live world (it just did). */
static void env_changed(void *ctx, const char *env)
{
	note_changed(ctx, env);
}

/* The same for one resource, or for every resource of one folder: with
 * a thousand endpoints, one pod's news costs one endpoint's look. */
static void res_changed(void *ctx, const char *env, const char *dir,
			const char *name)
{
	char what[sizeof(((struct rec *)0)->key)];

	snprintf(what, sizeof(what), "%s/%s/%s", env, dir, name ? name : "");
	note_changed(ctx, what);
}

static void look_at(struct reconciler *r, const char *what)
{
	const char *slash = strchr(what, '/');
	size_t n = strlen(what);
	void *v;

	if (slash && what[n - 1] != '/') {
		v = map_get(&r->recs, what, n);
		if (v)
			mark_eval(r, v);
		return;
	}
	for (size_t pos = 0; map_next(&r->recs, &pos, &v);) {
		const struct rec *rc = v;

		if (slash ? !strncmp(rc->key, what, n) : !strcmp(rc->env, what))
			mark_eval(r, v);
	}
}

static void look_at_changed(struct reconciler *r)
{
	struct map changed;
	void *v;

	pthread_mutex_lock(&r->lock);
	changed = r->changed;
	memset(&r->changed, 0, sizeof(r->changed));
	pthread_mutex_unlock(&r->lock);
	for (size_t pos = 0; map_next(&changed, &pos, &v);) {
		look_at(r, v);
		free(v);
	}
	map_free(&changed);
}

/* `refresh`: the reconciler's thread asks the provider; this only
 * leaves it a note, so a write to ctl never waits on a cloud. */
static void refresh_later(struct reconciler *r, const char *env)
{
	pthread_mutex_lock(&r->lock);
	/* Once each: a loop writing refresh must not grow the list. */
	if (!noted(&r->refresh_envs, env))
		buf_printf(&r->refresh_envs, "%s\n", env);
	r->kicked = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* `apply`: act and look again now, settle or not. */
static void due_now(struct reconciler *r)
{
	pthread_mutex_lock(&r->lock);
	r->refresh_all = true;
	r->kicked = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* An endpoint name or ARN: letters, digits and - : / . only, so that
 * what reaches an event or a request is plain. */
static bool id_is_plain(const char *id)
{
	if (!*id)
		return false;
	for (const char *c = id; *c; c++) {
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			    "0123456789-:/.",
			    *c))
			return false;
	}
	return true;
}

/* Why env cannot import KIND/NAME now, from the model alone (the FUSE
 * thread never asks a provider). */
static int import_refused(struct reconciler *r, const char *env, int kind,
			  const char *name, char *msg, size_t msglen)
{
	struct model *m = store_model(r->opt.store);
	const struct provider_ops *p = NULL;
	char word[32];
	struct env *e;
	int rc = 0;

	model_rdlock(m);
	e = model_env(m, env);
	config_word(e ? e->config.parsed : NULL, "provider", "local", word,
		    sizeof(word));
	p = provider_by_name(word);
	if (!e) {
		rc = -ENOENT;
		snprintf(msg, msglen, "import: no environment %s", env);
	} else if (model_res(e, kind, name)) {
		rc = -EEXIST;
		snprintf(msg, msglen, "import: %s/%s exists already",
			 kind_at(kind)->dir, name);
	} else if (!p || !p->adopt) {
		rc = -EOPNOTSUPP;
		snprintf(msg, msglen,
			 "import: %s runs on the %s provider, which has "
			 "nothing to import (a running process is not "
			 "importable): declare it with a spec",
			 env, word);
	}
	model_unlock(m);
	return rc;
}

/* `import endpoints/NAME ID`: checked here, carried out by the
 * reconciler's thread, which reads the cloud. */
static int import_later(struct reconciler *r, const char *env, const char *line,
			const struct caller *who, char *msg, size_t msglen)
{
	char path[NAME_MAX_LEN + 16] = "", id[IMPORT_ID_MAX + 2] = "";
	char extra[2] = "";
	const struct kind_def *k;
	struct import_request *q;
	char *slash;
	int rc;

	if (sscanf(line, "%*s %78s %257s %1s", path, id, extra) != 2 ||
	    !(slash = strchr(path, '/'))) {
		snprintf(msg, msglen,
			 "import: expected import endpoints/NAME ID, ID an "
			 "endpoint's name or ARN");
		return -EINVAL;
	}
	*slash = '\0';
	k = kind_by_dir(path);
	if (!k || kind_index(k) < 0 || !name_is_valid(slash + 1)) {
		snprintf(msg, msglen, "import: %s/%s: not KIND/NAME", path,
			 slash + 1);
		return -EINVAL;
	}
	if (strlen(id) > IMPORT_ID_MAX || !id_is_plain(id)) {
		snprintf(msg, msglen,
			 "import: ID: at most %d letters, digits and -:/.",
			 IMPORT_ID_MAX);
		return -EINVAL;
	}
	rc = import_refused(r, env, kind_index(k), slash + 1, msg, msglen);
	if (rc)
		return rc;
	pthread_mutex_lock(&r->lock);
	r->imports =
		xrealloc(r->imports, (r->nimports + 1) * sizeof(*r->imports));
	q = &r->imports[r->nimports++];
	memset(q, 0, sizeof(*q));
	snprintf(q->env, sizeof(q->env), "%s", env);
	snprintf(q->name, sizeof(q->name), "%s", slash + 1);
	memcpy(q->id, id, strlen(id) + 1); /* fits: checked above */
	q->kind = kind_index(k);
	q->who = *who;
	q->asked_at = now_s();
	r->kicked = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static int run_ctl(struct reconciler *r, const char *env, const char *line,
		   const struct caller *who, char *msg, size_t msglen)
{
	char cmd[32] = "", arg[64] = "";
	uint64_t rev;

	msg[0] = '\0';
	if (sscanf(line, "%31s %63s", cmd, arg) < 1)
		return -EINVAL;
	if (!strcmp(cmd, "apply")) {
		due_now(r);
		return 0;
	}
	if (!strcmp(cmd, "refresh")) {
		refresh_later(r, env);
		return 0;
	}
	if (!strcmp(cmd, "approve"))
		return approve(r, env, arg, who, msg, msglen);
	if (!strcmp(cmd, "import"))
		return import_later(r, env, line, who, msg, msglen);
	if (!strcmp(cmd, "discard")) {
		struct model *m = store_model(r->opt.store);
		struct env *e;

		model_rdlock(m);
		e = model_env(m, env);
		rev = e ? e->applied_rev : 0;
		model_unlock(m);
		if (!rev) {
			snprintf(msg, msglen,
				 "discard: nothing of %s was applied yet", env);
			return -EINVAL;
		}
		return store_change_for(r, env, CH_ROLLBACK, rev, NULL, who,
					msg, msglen);
	}
	if (!strcmp(cmd, "rollback")) {
		if (parse_number(arg, &rev) < 0) {
			snprintf(msg, msglen,
				 "rollback: expected a revision number");
			return -EINVAL;
		}
		return store_change_for(r, env, CH_ROLLBACK, rev, NULL, who,
					msg, msglen);
	}
	if (!strcmp(cmd, "promote")) {
		if (!arg[0]) {
			snprintf(msg, msglen,
				 "promote: expected an environment's name");
			return -EINVAL;
		}
		return store_change_for(r, env, CH_PROMOTE, 0, arg, who, msg,
					msglen);
	}
	snprintf(msg, msglen,
		 "%s: unknown command; ctl takes apply, approve [PLAN], "
		 "discard, import KIND/NAME ID, promote ENV, refresh, "
		 "rollback REV",
		 cmd);
	return -EINVAL;
}

/* ---- ctl through another daemon ---------------------------------------- */

/* The commands that act on a reconciler's own state (its plans, its
 * pace, its imports): in a shared store, the leading daemon's. The
 * others change the store, which every daemon shares. */
static bool acts_on_reconciler(const char *line)
{
	static const char *const cmds[] = { "apply", "approve", "import",
					    "refresh" };
	size_t n = strcspn(line, " \t\n");

	for (size_t i = 0; i < sizeof(cmds) / sizeof(*cmds); i++)
		if (n == strlen(cmds[i]) && !strncmp(line, cmds[i], n))
			return true;
	return false;
}

static uint64_t env_id_of(struct reconciler *r, const char *env)
{
	struct model *m = store_model(r->opt.store);
	const struct env *e;
	uint64_t id;

	model_rdlock(m);
	e = model_env(m, env);
	id = e ? e->id : 0;
	model_unlock(m);
	return id;
}

/*
 * Hands the command to the daemon that leads env. The caller's identity
 * goes with it, and the leader checks it as its own mount would; what
 * came of it is in the environment's events.
 */
static int forward(struct reconciler *r, uint64_t env_id, const char *env,
		   const char *line, const struct caller *who, char *msg,
		   size_t msglen)
{
	char holder[192], message[512];
	int n = (int)strcspn(line, "\n");

	if (store_unreachable_since(r->opt.store)) {
		snprintf(msg, msglen,
			 "the state store cannot be reached, so which daemon "
			 "reconciles %s is unknown; try again once it can",
			 env);
		return -EAGAIN;
	}
	store_reconciler_of(r->opt.store, env_id, holder, sizeof(holder));
	/* Nobody leads it yet (a new environment): this daemon keeps the
	 * command, as it may be the one that takes the lease next. */
	if (!holder[0])
		return run_ctl(r, env, line, who, msg, msglen);
	for (int i = 0; i < n; i++) {
		if ((unsigned char)line[i] < ' ' || line[i] == 0x7f) {
			snprintf(msg, msglen,
				 "a ctl command is one line of text");
			return -EINVAL;
		}
	}
	snprintf(message, sizeof(message), "%" PRIu64 " %u %u %d %.*s",
		 env_id, (unsigned)who->uid, (unsigned)who->gid, (int)who->pid,
		 n, line);
	if (store_announce(r->opt.store, message) < 0) {
		snprintf(msg, msglen,
			 "could not reach the reconciler of %s (%s): the "
			 "state store did not take the message",
			 env, holder);
		return -EIO;
	}
	log_for(LOG_LVL_INFO, env, NULL, 0,
		"%s: ctl %.*s sent to its reconciler, %s", env, n, line,
		holder);
	return 0;
}

/* A command another daemon forwarded (forward()), heard on the store's
 * watcher thread by every daemon; the one that leads carries it out. */
static void on_message(void *ctx, const char *message)
{
	struct reconciler *r = ctx;
	struct model *m = store_model(r->opt.store);
	struct caller who = { .comm = "forwarded" };
	unsigned long long env_id;
	unsigned uid, gid;
	char env[NAME_MAX_LEN + 1] = "", msg[600], text[800];
	const struct env *e;
	int pid, at = 0, rc;

	if (sscanf(message, "%llu %u %u %d %n", &env_id, &uid, &gid, &pid,
		   &at) != 4 ||
	    !at || !acts_on_reconciler(message + at) ||
	    !store_leads(r->opt.store, env_id))
		return;
	model_rdlock(m);
	e = model_env_by_id(m, env_id);
	if (e)
		snprintf(env, sizeof(env), "%s", e->name);
	model_unlock(m);
	if (!env[0])
		return;
	who.uid = uid;
	who.gid = gid;
	who.pid = pid;
	rc = run_ctl(r, env, message + at, &who, msg, sizeof(msg));
	snprintf(text, sizeof(text), "ctl %s (uid %u, through another mount): %s",
		 message + at, uid,
		 rc ? (msg[0] ? msg : strerror(-rc)) : "carried out");
	store_event(r->opt.store, env_id, 0, text);
}

int reconciler_ctl(struct reconciler *r, const char *env, const char *line,
		   const struct caller *who, char *msg, size_t msglen)
{
	uint64_t env_id;

	if (store_shared(r->opt.store) && acts_on_reconciler(line)) {
		env_id = env_id_of(r, env);
		if (env_id && !store_leads(r->opt.store, env_id))
			return forward(r, env_id, env, line, who, msg, msglen);
	}
	return run_ctl(r, env, line, who, msg, msglen);
}

/* ---- start and stop ---------------------------------------------------- */

static int host_secret(void *ctx, const char *env, const char *name,
		       char **value, size_t *len)
{
	struct reconciler *r = ctx;
	uint64_t version;

	return store_secret_value(r->opt.store, env, name, value, len,
				  &version);
}

static uint64_t host_secret_version(void *ctx, const char *env,
				    const char *name)
{
	struct reconciler *r = ctx;

	return store_secret_version(r->opt.store, env, name);
}

static void reconciler_stop_providers(struct reconciler *r)
{
	for (int i = 0; builtin_providers[i] && i < 8; i++) {
		if (r->provider_state[i])
			builtin_providers[i]->stop(r->provider_state[i]);
	}
}

int reconciler_start(const struct reconciler_options *opt,
		     struct reconciler **out)
{
	struct reconciler *r = xcalloc(1, sizeof(*r));

	r->opt = *opt;
	snprintf(r->state_dir, sizeof(r->state_dir), "%s", opt->state_dir);
	r->host.state_dir = r->state_dir;
	r->host.wake = wake;
	r->host.env_changed = env_changed;
	r->host.res_changed = res_changed;
	r->host.secret = host_secret;
	r->host.secret_version = host_secret_version;
	r->host.ctx = r;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	share_init(&r->share, opt->store, opt->observed, opt->changed,
		   opt->ctx);
	r->sweep = true; /* the first pass looks at everything */
	/* A provider refuses to start when its folders are not the
	 * daemon's own; the daemon does not run without it. */
	for (int i = 0; builtin_providers[i] && i < 8; i++) {
		if (builtin_providers[i]->start(&r->host,
						&r->provider_state[i]) < 0) {
			log_err("provider %s did not start",
				builtin_providers[i]->info->name);
			reconciler_stop_providers(r);
			free(r);
			return -EPERM;
		}
	}
	if (pthread_create(&r->thread, NULL, reconcile_loop, r) != 0) {
		reconciler_stop_providers(r);
		free(r);
		return -EAGAIN;
	}
	store_set_message_handler(opt->store, on_message, r);
	*out = r;
	return 0;
}

void reconciler_stop(struct reconciler *r)
{
	void *v;

	if (!r)
		return;
	store_set_message_handler(r->opt.store, NULL, NULL);
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	reconciler_stop_providers(r);
	for (size_t pos = 0; map_next(&r->recs, &pos, &v);)
		rec_free(v);
	map_free(&r->recs);
	map_free(&r->by_res);
	map_free(&r->watched);
	free(r->evals);
	share_free(&r->share);
	free(r->dirty_res.v);
	free(r->dirty_env.v);
	buf_free(&r->refresh_envs);
	for (size_t pos = 0; map_next(&r->changed, &pos, &v);)
		free(v);
	map_free(&r->changed);
	for (size_t pos = 0; map_next(&r->envs, &pos, &v);) {
		struct env_state *es = v;
		void *w;

		for (size_t at = 0; map_next(&es->steps, &at, &w);)
			step_free(w);
		map_free(&es->steps);
		if (es->config)
			spec_free(es->config);
		free(es->terraform);
		free(es);
	}
	map_free(&r->envs);
	for (size_t pos = 0; map_next(&r->approvals, &pos, &v);)
		free(v);
	map_free(&r->approvals);
	free(r->imports);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
}
