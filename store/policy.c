// SPDX-License-Identifier: MIT
#include "policy.h"

#include "providers/provider.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void spec_text(const struct spec *s, const char *field, char *out,
	       size_t outlen)
{
	const struct field_def *f = kind_field(s->kind, field, strlen(field));
	BUF_AUTO b = BUF_INIT;

	out[0] = '\0';
	if (!f)
		return;
	spec_field_text(s, f, &b);
	snprintf(out, outlen, "%.*s", (int)strcspn(buf_str(&b), "\n"),
		 buf_str(&b));
}

const char *spec_map_get(const struct spec *s, const char *field,
			 const char *key)
{
	const struct spec_value *v = s ? spec_field(s, field) : NULL;

	for (size_t i = 0; v && i < v->npairs; i++) {
		if (!strcmp(v->pairs[i].key, key))
			return v->pairs[i].value;
	}
	return NULL;
}

int64_t spec_int(const struct spec *s, const char *field, int64_t dflt)
{
	char text[32];
	char *end;
	long long v;

	spec_text(s, field, text, sizeof(text));
	if (!text[0])
		return dflt;
	v = strtoll(text, &end, 10);
	return *end ? dflt : v;
}

static bool list_has(const struct spec_value *v, const char *item)
{
	for (size_t i = 0; i < v->nitems; i++) {
		if (strcmp(v->items[i], item) == 0)
			return true;
	}
	return false;
}

static const struct spec_value *policy_value(const struct env *e,
					     const char *field)
{
	const struct spec *p = e->policy.parsed;
	const struct field_def *f;

	if (!p)
		return NULL;
	f = kind_field(p->kind, field, strlen(field));
	if (!f || !p->v[kind_field_index(p->kind, f)].set)
		return NULL;
	return &p->v[kind_field_index(p->kind, f)];
}

/*
 * Devices a resource holds at its most: autoscaling may take it to its
 * upper bound, so that is what counts against the limit. Endpoints placed
 * on a pool use that pool's devices and add none of their own.
 */
static int64_t accelerators_of(int kind, const struct spec *s)
{
	char acc[64];

	if (kind == KIND_POOL_IDX) {
		int64_t nodes = spec_int(s, "nodes", 1);
		int64_t maxn = spec_int(s, "max_nodes", nodes);

		spec_text(s, "accelerator", acc, sizeof(acc));
		if (!strcmp(acc, "cpu") || !acc[0])
			return 0;
		return (nodes > maxn ? nodes : maxn) *
		       spec_int(s, "accelerators_per_node", 1);
	}
	spec_text(s, "pool", acc, sizeof(acc));
	if (acc[0])
		return 0;
	{
		int64_t reps = spec_int(s, "replicas", 1);
		int64_t maxr = spec_int(s, "max_replicas", reps);

		return (reps > maxr ? reps : maxr) *
		       spec_int(s, "accelerators", 0);
	}
}

static int64_t env_accelerators(const struct env *e, int kind, const char *name,
				const struct spec *proposed)
{
	int64_t total = accelerators_of(kind, proposed);

	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < e->list[k].n; i++) {
			const struct resource *r = e->list[k].v[i];

			if (!r->spec.parsed ||
			    (k == kind && !strcmp(r->name, name)))
				continue;
			total += accelerators_of(k, r->spec.parsed);
		}
	}
	return total;
}

static int check_lists(const struct env *e, int kind, const char *name,
		       const struct spec *s, char *msg, size_t msglen)
{
	const struct spec_value *allowed =
		policy_value(e, "allowed_accelerators");
	const struct spec_value *cap = policy_value(e, "allowed_capacity");
	const struct spec_value *labels = policy_value(e, "require_labels");
	const char *dir = kind_at(kind)->dir;
	char acc[64];

	spec_text(s, "accelerator", acc, sizeof(acc));
	if (allowed && acc[0] && !list_has(allowed, acc)) {
		snprintf(msg, msglen,
			 "policy allowed_accelerators: %s is not allowed in "
			 "%s (allowed: %s)",
			 acc, e->name, allowed->text);
		return -EACCES;
	}
	if (cap && kind == KIND_POOL_IDX) {
		spec_text(s, "capacity", acc, sizeof(acc));
		if (!list_has(cap, acc)) {
			snprintf(msg, msglen,
				 "policy allowed_capacity: %s is not allowed "
				 "in %s (allowed: %s)",
				 acc, e->name, cap->text);
			return -EACCES;
		}
	}
	/* Only kinds that carry labels can be asked for them. */
	const struct field_def *lf = kind_field(s->kind, "labels", 6);

	for (size_t i = 0; labels && lf && i < labels->nitems; i++) {
		const struct spec_value *v =
			&s->v[kind_field_index(s->kind, lf)];
		bool found = false;

		for (size_t j = 0; j < v->npairs; j++)
			found |= !strcmp(v->pairs[j].key, labels->items[i]);
		if (!found) {
			snprintf(msg, msglen,
				 "policy require_labels: %s/%s lacks label "
				 "%s (labels.%s = ...)",
				 dir, name, labels->items[i], labels->items[i]);
			return -EACCES;
		}
	}
	return 0;
}

static int64_t pool_nodes(const struct spec *s)
{
	int64_t nodes = spec_int(s, "nodes", 1);
	int64_t maxn = spec_int(s, "max_nodes", nodes);

	return nodes > maxn ? nodes : maxn;
}

/*
 * Quantities over a limit are refused only when they grow: a policy
 * tightened below what is declared holds it where it is and lets it
 * shrink, rather than refusing every edit until it is fixed at once.
 */
static int check_quantities(const struct env *e, int kind, const char *name,
			    const struct spec *s, const struct spec *current,
			    char *msg, size_t msglen)
{
	const struct spec_value *max_acc = policy_value(e, "max_accelerators");
	const struct spec_value *max_nodes =
		policy_value(e, "max_nodes_per_pool");

	if (max_nodes && kind == KIND_POOL_IDX) {
		int64_t want = pool_nodes(s);
		int64_t had = current ? pool_nodes(current) : 0;

		if (want > max_nodes->i && want > had) {
			snprintf(msg, msglen,
				 "policy max_nodes_per_pool: %" PRId64
				 " requested for pools/%s, limit %" PRId64,
				 want, name, max_nodes->i);
			return -EDQUOT;
		}
	}
	if (max_acc) {
		int64_t total = env_accelerators(e, kind, name, s);
		int64_t before =
			current ? env_accelerators(e, kind, name, current)
				: total - accelerators_of(kind, s);

		if (total > max_acc->i && total > before) {
			snprintf(msg, msglen,
				 "policy max_accelerators: %" PRId64
				 " requested in %s, limit %" PRId64,
				 total, e->name, max_acc->i);
			return -EDQUOT;
		}
	}
	return 0;
}

int policy_check(const struct env *e, int kind, const char *name,
		 const struct spec *proposed, const struct spec *current,
		 char *msg, size_t msglen)
{
	int rc = check_lists(e, kind, name, proposed, msg, msglen);

	if (rc)
		return rc;
	return check_quantities(e, kind, name, proposed, current, msg, msglen);
}

const struct provider_ops *env_provider(const struct env *e)
{
	char name[32] = "local";

	if (e->config.parsed)
		spec_text(e->config.parsed, "provider", name, sizeof(name));
	return provider_by_name(name);
}

static double cost_of(const struct provider_ops *p, const struct env *e,
		      int kind, const char *name, const struct spec *s)
{
	struct desired d = { .env = e->name,
			     .kind = kind,
			     .name = name,
			     .spec = s,
			     .config = e->config.parsed };

	return s ? p->hourly_cost(&d) : 0;
}

/* Everything declared but kind/name (name NULL: everything). */
static double others_cost(const struct provider_ops *p, const struct env *e,
			  int kind, const char *name)
{
	double total = 0;

	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < e->list[k].n; i++) {
			const struct resource *o = e->list[k].v[i];

			if (name && k == kind && !strcmp(o->name, name))
				continue;
			total += cost_of(p, e, k, o->name, o->spec.parsed);
		}
	}
	return total;
}

double policy_env_cost(const struct env *e, int kind, const char *name,
		       const struct spec *proposed)
{
	const struct provider_ops *p = env_provider(e);

	if (!p || !p->hourly_cost)
		return -1;
	return others_cost(p, e, kind, name) +
	       (name ? cost_of(p, e, kind, name, proposed) : 0);
}

/* Like the other quantities, refused only when it grows past the limit. */
static int cost_over_limit(const struct env *e, const struct spec_value *limit,
			   double before, double total, char *msg,
			   size_t msglen)
{
	if (total <= limit->d + 1e-9 || total <= before + 1e-9)
		return 0;
	snprintf(msg, msglen,
		 "policy max_hourly_cost_usd: %.2f requested in %s, limit %.2f",
		 total, e->name, limit->d);
	return -EDQUOT;
}

int policy_check_cost(const struct env *e, int kind, const char *name,
		      const struct spec *proposed, const struct spec *current,
		      char *msg, size_t msglen)
{
	const struct provider_ops *p = env_provider(e);
	const struct spec_value *limit = policy_value(e, "max_hourly_cost_usd");
	double others;

	if (!p || !p->hourly_cost || !limit)
		return 0;
	others = others_cost(p, e, kind, name);
	return cost_over_limit(e, limit,
			       others + cost_of(p, e, kind, name, current),
			       others + cost_of(p, e, kind, name, proposed),
			       msg, msglen);
}

int policy_check_env_cost(const struct env *before, const struct env *after,
			  char *msg, size_t msglen)
{
	const struct spec_value *limit =
		policy_value(after, "max_hourly_cost_usd");
	double was = policy_env_cost(before, 0, NULL, NULL);
	double total = policy_env_cost(after, 0, NULL, NULL);

	if (!limit || total < 0)
		return 0;
	return cost_over_limit(after, limit, was < 0 ? 0 : was, total, msg,
			       msglen);
}

int policy_violation(const struct env *e, int kind, const char *name,
		     const struct spec *s, char *msg, size_t msglen)
{
	const struct spec_value *max_acc = policy_value(e, "max_accelerators");
	const struct spec_value *max_nodes =
		policy_value(e, "max_nodes_per_pool");
	int rc = check_lists(e, kind, name, s, msg, msglen);

	if (rc)
		return rc;
	if (max_nodes && kind == KIND_POOL_IDX &&
	    pool_nodes(s) > max_nodes->i) {
		snprintf(msg, msglen, "policy max_nodes_per_pool");
		return -EDQUOT;
	}
	if (max_acc && accelerators_of(kind, s) > 0 &&
	    env_accelerators(e, kind, name, s) > max_acc->i) {
		snprintf(msg, msglen, "policy max_accelerators");
		return -EDQUOT;
	}
	return 0;
}

/* Fields that decide what a replica does with the environment it gets. */
static const char *const secret_reaching_fields[] = { "command", "image", "env",
						      NULL };

static bool spec_uses_secret(const struct spec *s)
{
	const struct spec_value *v = s ? spec_field(s, "env") : NULL;

	for (size_t i = 0; v && i < v->npairs; i++) {
		if (!strncmp(v->pairs[i].value, "secret:", 7))
			return true;
	}
	return false;
}

static bool field_differs(const struct spec *a, const struct spec *b,
			  const char *field)
{
	const struct field_def *f = kind_field(a->kind, field, strlen(field));
	BUF_AUTO ta = BUF_INIT;
	BUF_AUTO tb = BUF_INIT;

	if (!f)
		return false;
	spec_field_text(a, f, &ta);
	spec_field_text(b, f, &tb);
	return strcmp(buf_str(&ta), buf_str(&tb)) != 0;
}

/* The first of command, image, env that differs, or NULL. */
static const char *secret_reaching_change(const struct spec *proposed,
					  const struct spec *current)
{
	for (size_t i = 0; secret_reaching_fields[i]; i++) {
		if (!current ||
		    field_differs(proposed, current, secret_reaching_fields[i]))
			return secret_reaching_fields[i];
	}
	return NULL;
}

bool policy_secrets_open_to_group(const struct env *e)
{
	char word[16] = "";

	if (e->policy.parsed)
		spec_text(e->policy.parsed, "secrets_use", word, sizeof(word));
	return !strcmp(word, "group");
}

/*
 * With secrets_use = group anyone who got this far may: the file system
 * let them write the environment, which is what the group may do.
 */
static bool may_use_secrets(const struct env *e, uid_t uid)
{
	return uid == 0 || uid == e->uid || policy_secrets_open_to_group(e);
}

int policy_check_secret_write(const struct env *e, uid_t uid, char *msg,
			      size_t msglen)
{
	if (may_use_secrets(e, uid))
		return 0;
	snprintf(msg, msglen,
		 "policy secrets_use: only the owner of %s (uid %u) or root "
		 "may set or remove its secrets (secrets_use = owner; "
		 "secrets_use = group lets the group)",
		 e->name, (unsigned)e->uid);
	return -EACCES;
}

int policy_check_secrets_use(const struct env *e, int kind, const char *name,
			     const struct spec *proposed,
			     const struct spec *current, uid_t uid, char *msg,
			     size_t msglen)
{
	const char *field;

	if (!spec_uses_secret(proposed) || may_use_secrets(e, uid))
		return 0;
	field = secret_reaching_change(proposed, current);
	if (!field)
		return 0;
	snprintf(msg, msglen,
		 "policy secrets_use: %s/%s passes a secret to its replicas; "
		 "only the owner of %s (uid %u) or root may %s%s (secrets_use "
		 "= owner; secrets_use = group lets the group)",
		 kind_at(kind)->dir, name, e->name, (unsigned)e->uid,
		 current ? "change its " : "declare it", current ? field : "");
	return -EACCES;
}

bool policy_field_needs_secrets_use(const struct resource *r, const char *field)
{
	if (policy_secrets_open_to_group(r->env) ||
	    !spec_uses_secret(r->spec.parsed))
		return false;
	for (size_t i = 0; secret_reaching_fields[i]; i++) {
		if (!strcmp(field, secret_reaching_fields[i]))
			return true;
	}
	return false;
}
