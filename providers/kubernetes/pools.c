// SPDX-License-Identifier: MIT
/*
 * Pools, two ways, chosen by what the cluster serves:
 *
 *   Karpenter (karpenter.sh/v1 NodePool served): a pool is a NodePool,
 *   infrafs-ENV-NAME, whose nodes carry infrafs.dev/pool=NAME and
 *   infrafs.dev/env=ENV. Karpenter makes nodes for pods that need them,
 *   within limits from max_nodes; the pool's status counts them.
 *
 *   Otherwise (clusters on premises): a pool is the nodes an
 *   administrator labelled infrafs.dev/pool=NAME, or, while none is,
 *   the nodes in no pool where GPU feature discovery found the pool's
 *   accelerator (nvidia.com/gpu.product, gpu_products.c). infrafs makes
 *   no node; it counts the ready ones against `nodes`, says
 *   "insufficient capacity" when they are fewer, and keeps the
 *   namespace's GPU quota (ResourceQuota infrafs-gpus) at the sum of the
 *   pools' GPUs, so the environment cannot take more than it declared.
 */
#include "kube.h"

#include "store/policy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool karpenter(struct kenv *e)
{
	return kube_watch_served(e->watch, KK_NODEPOOL);
}

/*
 * The nodes of one pool: those whose label equals value, in the watch
 * of kind (KK_NODE), or, for a pool no administrator labelled, the
 * nodes GPU feature discovery found the accelerator on (KK_GPU_NODE).
 */
struct pool_nodes {
	enum kube_kind kind;
	const char *label, *value;
	const char *accelerator;
	int nodes, ready;
	int64_t gpus; /* allocatable */
	struct buf names;
	struct buf products; /* GPU feature discovery's product label */
};

static void pool_nodes_by(struct pool_nodes *p,
			  const struct kube_placement *where, const char *pool)
{
	if (where->nodes == KPN_GPU_PRODUCT) {
		p->kind = KK_GPU_NODE;
		p->accelerator = where->accelerator;
	} else {
		p->kind = KK_NODE;
		p->label = KUBE_LABEL_POOL;
		p->value = pool;
	}
}

static bool pool_has(const struct pool_nodes *p, json_t *node)
{
	const char *v;

	if (p->kind == KK_GPU_NODE)
		return kube_gpu_product_is(
			p->accelerator,
			kube_meta_in(node, "labels", KUBE_LABEL_GPU_PRODUCT));
	v = kube_meta_in(node, "labels", p->label);
	return v && !strcmp(v, p->value);
}

static int64_t quantity(json_t *map, const char *key)
{
	const char *v = json_string_value(json_object_get(map, key));

	return v ? strtoll(v, NULL, 10)
		 : json_integer_value(json_object_get(map, key));
}

static bool node_ready(json_t *node)
{
	json_t *c = kube_condition(node, "Ready");
	const char *s = json_string_value(json_object_get(c, "status"));

	return s && !strcmp(s, "True") &&
	       !json_is_true(json_object_get(json_object_get(node, "spec"),
					     "unschedulable"));
}

static void count_node(void *ctx, json_t *node)
{
	struct pool_nodes *p = ctx;
	const char *product =
		kube_meta_in(node, "labels", KUBE_LABEL_GPU_PRODUCT);

	if (!pool_has(p, node))
		return;
	p->nodes++;
	if (!node_ready(node))
		return;
	p->ready++;
	p->gpus += quantity(
		json_object_get(json_object_get(node, "status"), "allocatable"),
		"nvidia.com/gpu");
	if (p->names.len < 200)
		buf_printf(&p->names, "%s%s", p->names.len ? ", " : "",
			   kube_meta(node, "name") ?: "");
	if (product && !strstr(buf_str(&p->products), product))
		buf_printf(&p->products, "%s%s", p->products.len ? ", " : "",
			   product);
}

/* GPUs infrafs's pods request on the pool's nodes. */
struct gpu_use {
	struct kube_watch *watch;
	const struct pool_nodes *pool;
	int64_t used;
};

static void count_pod(void *ctx, json_t *pod)
{
	struct gpu_use *u = ctx;
	const char *node_name = json_string_value(
		json_object_get(json_object_get(pod, "spec"), "nodeName"));
	json_t *node, *containers, *c;
	size_t i;
	bool in_pool;

	if (!node_name)
		return;
	node = kube_watch_get(u->watch, u->pool->kind, node_name);
	in_pool = node && pool_has(u->pool, node);
	json_decref(node);
	if (!in_pool)
		return;
	containers =
		json_object_get(json_object_get(pod, "spec"), "containers");
	json_array_foreach(containers, i, c) u->used += quantity(
		json_object_get(json_object_get(c, "resources"), "requests"),
		"nvidia.com/gpu");
}

static void collect(void *ctx, json_t *obj)
{
	json_array_append_new(ctx, json_deep_copy(obj));
}

/* Nodes, their GPUs, and what infrafs's pods on them request. The pods
 * are gathered first: count_pod looks nodes up, which takes the lock
 * kube_watch_each holds. */
static void report_nodes(struct kenv *e, struct pool_nodes *p,
			 struct observation *o)
{
	struct gpu_use use = { e->watch, p, 0 };
	json_t *pods = json_array();
	json_t *pod;
	size_t i;

	kube_watch_each(e->watch, p->kind, NULL, NULL, count_node, p);
	kube_watch_each(e->watch, KK_POD, NULL, NULL, collect, pods);
	json_array_foreach(pods, i, pod) count_pod(&use, pod);
	json_decref(pods);
	buf_printf(&o->details, "nodes: %d ready of %d%s%s%s\n", p->ready,
		   p->nodes, p->names.len ? " (" : "", buf_str(&p->names),
		   p->names.len ? ")" : "");
	if (p->products.len)
		text_line(&o->details, "gpu_product", buf_str(&p->products));
	buf_printf(&o->details,
		   "gpus: %" PRId64 " allocatable, %" PRId64
		   " requested by infrafs\n",
		   p->gpus, use.used);
}

static void pool_nodes_free(struct pool_nodes *p)
{
	buf_free(&p->names);
	buf_free(&p->products);
}

/* The pool's GPUs, revision and accelerator, kept for the environment's
 * quota and for the endpoints placed on it. */
static void remember(struct kenv *e, const struct target *t)
{
	if (t->want)
		json_object_set_new(
			e->pools, t->name,
			json_pack(
				"[I, I, s]",
				(json_int_t)kube_pool_gpus(t->want->spec),
				(json_int_t)t->want->rev,
				spec_str(t->want->spec, "accelerator", "cpu")));
	else
		json_object_del(e->pools, t->name);
}

static void count_one(void *ctx, json_t *obj)
{
	(void)obj;
	++*(int *)ctx;
}

void kube_pool_placement(struct kenv *e, const char *pool,
			 struct kube_placement *out)
{
	const char *accelerator = json_string_value(
		json_array_get(json_object_get(e->pools, pool ?: ""), 2));
	int labelled = 0;

	memset(out, 0, sizeof(*out));
	if (!pool || !pool[0])
		return;
	if (karpenter(e)) {
		out->nodes = KPN_NODEPOOL;
		return;
	}
	out->nodes = KPN_LABEL;
	kube_watch_each(e->watch, KK_NODE, KUBE_LABEL_POOL, pool, count_one,
			&labelled);
	if (labelled || !kube_gpu_products(accelerator))
		return;
	out->nodes = KPN_GPU_PRODUCT;
	snprintf(out->accelerator, sizeof(out->accelerator), "%s", accelerator);
}

static void observe_nodepool(struct kenv *e, struct target *t)
{
	struct observation *o = &t->obs;
	char name[160];
	json_t *np, *ready;
	const char *status;
	struct pool_nodes p = { .kind = KK_NODE,
				.label = "karpenter.sh/nodepool" };

	kube_nodepool_name(t->env, t->name, name, sizeof(name));
	p.value = name;
	np = kube_get(e, KK_NODEPOOL, name);
	o->exists = np != NULL;
	if (!np) {
		o->state = RS_PENDING;
		return;
	}
	o->applied_rev = kube_revision(np);
	o->settled = t->want && o->applied_rev == t->want->rev;
	ready = kube_condition(np, "Ready");
	status = json_string_value(json_object_get(ready, "status"));
	if (kube_meta(np, "deletionTimestamp")) {
		o->state = RS_DELETING;
	} else if (status && !strcmp(status, "True")) {
		o->state = RS_READY;
	} else {
		o->state = RS_CREATING;
		if (status && !strcmp(status, "False"))
			snprintf(o->error, sizeof(o->error),
				 "Karpenter: NodePool not ready: %s",
				 json_string_value(
					 json_object_get(ready, "message"))
					 ?: "");
	}
	buf_printf(&o->details, "nodepool: %s\n", name);
	report_nodes(e, &p, o);
	pool_nodes_free(&p);
	json_decref(np);
}

/* pools.infrafs.dev/NAME on the quota: the revision it was kept for. */
static uint64_t quota_revision(json_t *quota, const char *pool)
{
	char key[128];
	const char *v;

	snprintf(key, sizeof(key), "%s%s", KUBE_ANN_POOL_PREFIX, pool);
	v = kube_meta_in(quota, "annotations", key);
	return v ? strtoull(v, NULL, 10) : 0;
}

/* Which nodes were the pool's at its last look. When that changes (an
 * administrator labelled the pool's first node), the endpoints on it
 * must follow, though nothing of theirs changed. */
static void note_placement(struct kenv *e, const struct target *t,
			   enum kube_pool_nodes nodes)
{
	const char *word = kube_placement_word(nodes);
	const char *was =
		json_string_value(json_object_get(e->placements, t->name));
	const struct provider_host *h = e->host;

	if (!t->want) {
		json_object_del(e->placements, t->name);
		return;
	}
	if (was && strcmp(was, word) && h->res_changed)
		h->res_changed(h->ctx, e->env, "endpoints", NULL);
	json_object_set_new(e->placements, t->name, json_string(word));
}

static void say_selection(const struct pool_nodes *p, struct buf *out)
{
	const char *const *names = kube_gpu_products(p->accelerator);

	if (p->kind == KK_NODE) {
		buf_printf(out, "node_selector: %s=%s\n", p->label, p->value);
		return;
	}
	buf_printf(out, "node_selector: %s in (", KUBE_LABEL_GPU_PRODUCT);
	for (size_t i = 0; names && names[i]; i++)
		buf_printf(out, "%s%s", i ? ", " : "", names[i]);
	buf_printf(out, "), no %s\n", KUBE_LABEL_POOL);
}

static void say_insufficient(const struct pool_nodes *p, const char *pool,
			     int64_t want_nodes, struct observation *o)
{
	if (p->kind == KK_NODE)
		snprintf(o->error, sizeof(o->error),
			 "insufficient capacity: %d of %" PRId64
			 " nodes labelled %s=%s are ready (kubectl label node "
			 "NODE %s=%s)",
			 p->ready, want_nodes, KUBE_LABEL_POOL, pool,
			 KUBE_LABEL_POOL, pool);
	else
		snprintf(o->error, sizeof(o->error),
			 "insufficient capacity: %d of %" PRId64
			 " nodes are ready: no node is labelled %s=%s, and GPU "
			 "feature discovery found %s on %d ready node(s) in no "
			 "pool (kubectl label node NODE %s=%s)",
			 p->ready, want_nodes, KUBE_LABEL_POOL, pool,
			 p->accelerator, p->ready, KUBE_LABEL_POOL, pool);
}

static void observe_labelled(struct kenv *e, struct target *t)
{
	struct observation *o = &t->obs;
	json_t *quota = kube_get(e, KK_QUOTA, KUBE_QUOTA_NAME);
	struct kube_placement where;
	struct pool_nodes p = { 0 };
	int64_t want_nodes = t->want ? spec_int(t->want->spec, "nodes", 1) : 0;

	kube_pool_placement(e, t->name, &where);
	pool_nodes_by(&p, &where, t->name);
	note_placement(e, t, where.nodes);
	o->applied_rev = quota ? quota_revision(quota, t->name) : 0;
	o->exists = o->applied_rev != 0;
	o->settled = t->want && o->applied_rev == t->want->rev;
	say_selection(&p, &o->details);
	report_nodes(e, &p, o);
	if (!o->exists)
		o->state = RS_PENDING;
	else if (p.ready >= want_nodes)
		o->state = RS_READY;
	else
		o->state = p.ready ? RS_DEGRADED : RS_FAILED;
	if (o->exists && p.ready < want_nodes)
		say_insufficient(&p, t->name, want_nodes, o);
	if (quota)
		buf_printf(
			&o->details, "quota: %s, %s nvidia.com/gpu\n",
			KUBE_QUOTA_NAME,
			json_string_value(json_object_get(
				json_object_get(json_object_get(quota, "spec"),
						"hard"),
				"requests.nvidia.com/gpu"))
				?: "?");
	pool_nodes_free(&p);
	json_decref(quota);
}

void kube_pool_observe(struct kenv *e, struct target *t)
{
	remember(e, t);
	if (karpenter(e))
		observe_nodepool(e, t);
	else
		observe_labelled(e, t);
}

/* Settings only a NodePool can honour: labelled nodes are what they
 * are. */
static int check_labelled(const struct desired *want, struct observation *o)
{
	static const char *const fields[] = { "zones", "instance_type",
					      "capacity", NULL };

	for (size_t i = 0; fields[i]; i++) {
		if (!spec_field_set(want->spec, fields[i]))
			continue;
		snprintf(o->error, sizeof(o->error),
			 "%s: needs Karpenter (karpenter.sh/v1), which this "
			 "cluster does not serve; a pool of labelled nodes "
			 "takes the nodes as they are",
			 fields[i]);
		return -EINVAL;
	}
	return 0;
}

/* The quota for every pool remembered: their GPUs summed, each one's
 * revision annotated. */
static int apply_quota(struct kenv *e, struct observation *o)
{
	json_t *revs = json_object(), *quota, *v;
	const char *name;
	int64_t gpus = 0;
	int rc;

	json_object_foreach(e->pools, name, v)
	{
		char key[128], rev[32];

		gpus += json_integer_value(json_array_get(v, 0));
		snprintf(key, sizeof(key), "%s%s", KUBE_ANN_POOL_PREFIX, name);
		snprintf(rev, sizeof(rev), "%" JSON_INTEGER_FORMAT,
			 json_integer_value(json_array_get(v, 1)));
		json_object_set_new(revs, key, json_string(rev));
	}
	if (!json_object_size(e->pools)) {
		json_decref(revs);
		return kube_delete(e, KK_QUOTA, KUBE_QUOTA_NAME,
				   kube_known(e, KK_QUOTA, KUBE_QUOTA_NAME), o);
	}
	quota = kube_quota(e->env, e->ns, gpus, revs);
	rc = kube_apply_json(e, KK_QUOTA, KUBE_QUOTA_NAME, quota, true,
			     kube_known(e, KK_QUOTA, KUBE_QUOTA_NAME), o);
	json_decref(quota);
	return rc;
}

static int delete_nodepool(struct kenv *e, const char *name,
			   struct observation *o)
{
	json_t *np = kube_watch_get(e->watch, KK_NODEPOOL, name);
	int rc = 0;

	/* Asked to go already: Karpenter is draining its nodes. */
	if (np && (kube_meta(np, "deletionTimestamp") ||
		   kube_delete_sent(e, KK_NODEPOOL, name)))
		o->retry_in_s = 1.0;
	else if (np)
		rc = kube_delete(e, KK_NODEPOOL, name, kube_ours(np, e->env),
				 o);
	json_decref(np);
	return rc;
}

int kube_pool_step(struct kenv *e, struct target *t)
{
	struct observation *o = &t->obs;
	char name[160];
	int rc;

	remember(e, t);
	if (karpenter(e)) {
		kube_nodepool_name(t->env, t->name, name, sizeof(name));
		if (t->want) {
			json_t *np = kube_nodepool(
				t->want,
				kube_config_value(t->want->config, "node_class",
						  KUBE_NODE_CLASS));

			rc = kube_apply_json(
				e, KK_NODEPOOL, name, np, kube_force(t->want),
				kube_known(e, KK_NODEPOOL, name), o);
			json_decref(np);
			return rc;
		}
		return delete_nodepool(e, name, o);
	}
	if (t->want && check_labelled(t->want, o) < 0)
		return -EINVAL;
	rc = kube_ensure_namespace(e, o);
	return rc ? rc : apply_quota(e, o);
}

int kube_pool_check(const struct desired *want, char *msg, size_t len)
{
	const char *cls =
		kube_config_value(want->config, "node_class", KUBE_NODE_CLASS);
	char group[128], kind[64], name[128];

	if (sscanf(cls, "%127[^/]/%63[^/]/%127s", group, kind, name) != 3) {
		snprintf(msg, len,
			 "kubernetes.node_class: expected GROUP/KIND/NAME "
			 "(karpenter.k8s.aws/EC2NodeClass/default), got %s",
			 cls);
		return -EINVAL;
	}
	return 0;
}

static void name_of_nodepool(void *ctx, json_t *obj)
{
	const char *name = kube_meta_in(obj, "labels", KUBE_LABEL_POOL);

	if (name && name_is_valid(name))
		buf_printf(ctx, "pool/%s\n", name);
}

void kube_pool_list(struct kenv *e, struct buf *out)
{
	json_t *quota = kube_watch_get(e->watch, KK_QUOTA, KUBE_QUOTA_NAME);
	json_t *anns = json_object_get(json_object_get(quota, "metadata"),
				       "annotations");
	size_t prefix = strlen(KUBE_ANN_POOL_PREFIX);
	const char *key;
	json_t *v;

	kube_watch_each(e->watch, KK_NODEPOOL, NULL, NULL, name_of_nodepool,
			out);
	json_object_foreach(anns, key, v)
	{
		if (!strncmp(key, KUBE_ANN_POOL_PREFIX, prefix) &&
		    name_is_valid(key + prefix))
			buf_printf(out, "pool/%s\n", key + prefix);
	}
	json_decref(quota);
}
