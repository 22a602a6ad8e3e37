// SPDX-License-Identifier: MIT
/*
 * The kubernetes provider: an endpoint becomes a Deployment, a Service,
 * a HorizontalPodAutoscaler when it scales and a Secret for its secret
 * values (objects.c), in the environment's namespace of the cluster its
 * config names. Steps are server-side applies as field manager infrafs;
 * observations come from list+watch (watch.c), so observe() reads
 * memory and a change in the cluster shows at once.
 *
 * Ownership: every object carries app.kubernetes.io/managed-by=infrafs,
 * and an object of the same name without it is never changed or
 * deleted. A field someone else changed shows as drift; drift = heal
 * applies again with force, drift = report leaves it.
 */
#include "kube.h"

#include "store/policy.h"
#include "util/log.h"
#include "util/map.h"
#include "util/text.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const kube_kinds[] = { "pool", "endpoint", NULL };

static const char *const kube_unsupported[] = {
	"pool.capacity, zones, instance_type where Karpenter is not installed",
	"labelled nodes are what they are; the pool only selects them",
	"a MIG slice or time-shared GPU as a pool's accelerator by "
	"nvidia.com/gpu.product",
	"it is not the whole GPU declared; label its nodes "
	"infrafs.dev/pool=NAME",
	"endpoint.instance_type",
	"the scheduler picks nodes; use pool, or accelerator and "
	"accelerators",
	"endpoint.min_replicas = 0 with autoscaling",
	"a HorizontalPodAutoscaler keeps at least 1 replica",
	"endpoint.scale_metric = gpu_utilization with kubernetes.serving = "
	"kserve",
	"KServe scales on concurrency or rps",
	NULL,
};

static void kube_render_more(struct buf *out);

static const struct provider_info kube_info = {
	.name = "kubernetes",
	.summary =
		"Any Kubernetes cluster, reached as kubectl does: an endpoint "
		"is a Deployment (nvidia.com/gpu = accelerators, a readiness "
		"probe on port and health_path), a Service (url: in status), "
		"a HorizontalPodAutoscaler (autoscaling/v2) when min_replicas "
		"< max_replicas, and a Secret for env.NAME = secret:S; all "
		"applied server-side as field manager infrafs and observed by "
		"list+watch. Config keys: kubernetes.kubeconfig, "
		"kubernetes.context, kubernetes.namespace, "
		"kubernetes.service_type, kubernetes.node_class, "
		"kubernetes.serving. See infrafs-kubernetes(7).",
	.kinds = kube_kinds,
	.unsupported = kube_unsupported,
	.render_more = kube_render_more,
	.tells_changes = true,
};

static void kube_render_more(struct buf *out)
{
	buf_adds(out,
		 "config keys:\n"
		 "  kubernetes.kubeconfig: the kubeconfig file (default "
		 "$KUBECONFIG, then ~/.kube/config of the daemon's user, "
		 "then the pod's service account); root or the daemon's "
		 "user only\n"
		 "  kubernetes.context: the context (default the file's "
		 "current-context); root or the daemon's user only\n"
		 "  kubernetes.namespace: default infrafs-ENV, created when "
		 "missing\n"
		 "  kubernetes.service_type: ClusterIP (default), NodePort or "
		 "LoadBalancer\n"
		 "  kubernetes.serving: deployment (default), or kserve for "
		 "one InferenceService (serving.kserve.io/v1beta1) per "
		 "endpoint where KServe is installed\n"
		 "  kubernetes.node_class: a pool's Karpenter node class, "
		 "GROUP/KIND/NAME (default karpenter.k8s.aws/EC2NodeClass/"
		 "default)\n"
		 "credentials: client certificates, bearer tokens and token "
		 "files, exec plugins (client.authentication.k8s.io), "
		 "in-cluster service accounts\n"
		 "refused in a kubeconfig: insecure-skip-tls-verify, "
		 "auth-provider, a server that is not https\n"
		 "scale_metric as the HorizontalPodAutoscaler's Pods metric "
		 "(a metrics adapter must serve custom.metrics.k8s.io):\n");
	buf_adds(out, "  rps, invocations_per_replica: "
		      "http_requests_per_second\n"
		      "  concurrency: http_requests_in_flight\n"
		      "  gpu_utilization: DCGM_FI_DEV_GPU_UTIL\n");
	buf_adds(out,
		 "pools: a Karpenter NodePool where karpenter.sh/v1 is "
		 "served; else the nodes labelled infrafs.dev/pool=NAME; "
		 "else, while no node is, the nodes in no pool whose GPU "
		 "feature discovery label nvidia.com/gpu.product names the "
		 "pool's accelerator:\n");
	kube_gpu_products_render(out);
}

/* The kubeconfig as kubectl finds it, or NULL for the pod's own account
 * (and for no kubeconfig at all: kube_api_open says so). */
static void kubeconfig_path(const struct spec *config, char *out, size_t len)
{
	const char *set = kube_config_value(config, "kubeconfig", NULL);
	const char *env = getenv("KUBECONFIG");
	const char *home;
	struct passwd pwd, *pw = NULL;
	char pwbuf[1024];
	struct stat st;

	out[0] = '\0';
	if (set) {
		snprintf(out, len, "%s", set);
		return;
	}
	if (env && env[0]) {
		/* kubectl merges a list; the first file is taken here. */
		snprintf(out, len, "%.*s", (int)strcspn(env, ":"), env);
		return;
	}
	/* $HOME first, as kubectl: the daemon's own home otherwise. */
	home = getenv("HOME");
	if ((!home || !home[0]) &&
	    getpwuid_r(geteuid(), &pwd, pwbuf, sizeof(pwbuf), &pw) == 0 && pw)
		home = pw->pw_dir;
	if (home && home[0])
		snprintf(out, len, "%s/.kube/config", home);
	if (stat(out, &st) < 0 && getenv("KUBERNETES_SERVICE_HOST"))
		out[0] = '\0';
}

static void kenv_disconnect(struct kenv *e)
{
	kube_watch_stop(e->watch);
	e->watch = NULL;
	kube_handle_close(&e->handle);
	kube_api_close(e->api);
	e->api = NULL;
	e->ns_ready = false;
	/* Another cluster, perhaps: its answers say nothing of it. */
	json_decref(e->applied);
	e->applied = NULL;
}

static void kenv_free(struct kenv *e)
{
	kenv_disconnect(e);
	file_watch_free(&e->kubeconfig);
	json_decref(e->pools);
	json_decref(e->placements);
	json_decref(e->step_errors);
	json_decref(e->troubles);
	json_decref(e->deletes_sent);
	free(e->key);
	free(e);
}

/*
 * Which resources an object of kind k bears on: "endpoints" or "pools"
 * in *dir, and the resource's name (NULL: every one of *dir). False
 * when the whole environment must be looked at.
 */
static bool bears_on(enum kube_kind k, json_t *obj, const char **dir,
		     const char **name)
{
	switch (k) {
	case KK_DEPLOYMENT:
	case KK_SERVICE:
	case KK_HPA:
	case KK_ISVC:
		*dir = "endpoints";
		*name = kube_meta_in(obj, "labels", KUBE_LABEL_ENDPOINT);
		return *name != NULL;
	case KK_NODE:
	case KK_NODEPOOL:
		*dir = "pools";
		*name = kube_meta_in(obj, "labels", KUBE_LABEL_POOL);
		return *name != NULL;
	case KK_QUOTA:
	case KK_GPU_NODE: /* a node of a pool no node is labelled for */
		*dir = "pools";
		*name = NULL;
		return true;
	default:
		return false;
	}
}

/*
 * From the watch threads: what the object that changed bears on is
 * looked at again, settled or not; everything, when that is not known.
 * A pod bears on its endpoint and on the pools' GPU counts.
 */
static void woken(void *ctx, enum kube_kind k, json_t *obj)
{
	const struct kenv *e = ctx;
	const struct provider_host *h = e->host;
	const char *dir, *name;

	if (obj && h->res_changed && k == KK_POD &&
	    (name = kube_meta_in(obj, "labels", KUBE_LABEL_ENDPOINT))) {
		h->res_changed(h->ctx, e->env, "endpoints", name);
		h->res_changed(h->ctx, e->env, "pools", NULL);
	} else if (obj && h->res_changed && bears_on(k, obj, &dir, &name)) {
		h->res_changed(h->ctx, e->env, dir, name);
	} else if (h->env_changed) {
		h->env_changed(h->ctx, e->env);
	} else {
		h->wake(h->ctx);
	}
}

/* infrafs-ENV, within the 63 characters of a namespace: a long ENV is
 * cut and a hash of the whole keeps two such names apart. */
static void default_namespace(const char *env, char *out, size_t len)
{
	size_t n = strlen(env);

	if (n + 8 <= NAME_MAX_LEN) {
		snprintf(out, len, "infrafs-%s", env);
		return;
	}
	snprintf(out, len, "infrafs-%.*s-%08" PRIx32, (int)(NAME_MAX_LEN - 17),
		 env, (uint32_t)map_hash(env, n));
}

static void kenv_connect(struct kenv *e, const struct spec *config,
			 const char *key)
{
	char path[1024], selector[256];

	kenv_disconnect(e);
	free(e->key);
	e->key = xstrdup(key);
	e->error[0] = '\0';
	kubeconfig_path(config, path, sizeof(path));
	file_watch_free(&e->kubeconfig);
	file_watch_init(&e->kubeconfig, path[0] ? path : NULL);
	if (kube_api_open(path[0] ? path : NULL,
			  kube_config_value(config, "context", NULL), &e->api,
			  e->error, sizeof(e->error)) < 0) {
		log_for(LOG_LVL_WARN, e->env, NULL, 0, "kubernetes: %s",
			e->error);
		return;
	}
	snprintf(e->ns, sizeof(e->ns), "%s",
		 kube_config_value(config, "namespace", NULL) ?: "");
	if (!e->ns[0])
		default_namespace(e->env, e->ns, sizeof(e->ns));
	snprintf(selector, sizeof(selector), "%s=%s,%s=%s", KUBE_LABEL_MANAGED,
		 KUBE_MANAGER, KUBE_LABEL_ENV, e->env);
	e->watch = kube_watch_start(e->api, e->ns, selector, woken, e);
	log_for(LOG_LVL_INFO, e->env, NULL, 0, "kubernetes: %s, namespace %s",
		kube_api_server(e->api), e->ns);
}

static struct kenv *kenv_find(struct kprov *k, const char *env)
{
	for (struct kenv *e = k->envs; e; e = e->next) {
		if (!strcmp(e->env, env))
			return e;
	}
	return NULL;
}

/*
 * The environment's connection as its config says now; a config that
 * changed (another kubeconfig, context or namespace) connects again. A
 * resource no longer declared keeps the last one.
 */
static struct kenv *kenv_of(struct kprov *k, const char *env,
			    const struct spec *config)
{
	struct kenv *e = kenv_find(k, env);
	char key[1400], path[1024], cluster[1100];

	if (!e) {
		e = xcalloc(1, sizeof(*e));
		snprintf(e->env, sizeof(e->env), "%s", env);
		e->pools = json_object();
		e->placements = json_object();
		e->step_errors = json_object();
		e->host = &k->host;
		file_watch_init(&e->kubeconfig, NULL);
		e->next = k->envs;
		k->envs = e;
	}
	if (!config)
		return e;
	kube_cluster_key(config, cluster, sizeof(cluster));
	snprintf(key, sizeof(key), "%s\n%s", cluster,
		 kube_config_value(config, "namespace", ""));
	kubeconfig_path(config, path, sizeof(path));
	if (!e->key || strcmp(e->key, key) != 0) {
		snprintf(e->cluster, sizeof(e->cluster), "%s", cluster);
		e->custom_metrics = KF_UNKNOWN;
		kenv_connect(e, config, key);
	} else if (file_watch_changed(&e->kubeconfig)) {
		log_for(LOG_LVL_INFO, env, NULL, 0,
			"kubernetes: %s changed; connecting again", path);
		kenv_connect(e, config, key);
	}
	return e;
}

void kube_cluster_key(const struct spec *config, char *out, size_t len)
{
	char path[1024];

	kubeconfig_path(config, path, sizeof(path));
	snprintf(out, len, "%s\n%s", path,
		 kube_config_value(config, "context", ""));
}

/* ---- the table ------------------------------------------------------- */

/*
 * Nothing can be known yet (no connection, or the first lists are not
 * in): the resource is said to exist, so that what was made is never
 * forgotten, and the reason is its error.
 */
static bool observe_unknown(struct kenv *e, struct target *t)
{
	struct observation *o = &t->obs;

	if (e->watch && kube_watch_synced(e->watch))
		return false;
	o->exists = true;
	if (!e->watch) {
		o->state = RS_FAILED;
		snprintf(o->error, sizeof(o->error), "%s", e->error);
		return true;
	}
	o->state = RS_PENDING;
	kube_watch_error(e->watch, o->error, sizeof(o->error));
	if (!o->error[0])
		snprintf(o->error, sizeof(o->error),
			 "waiting for the first list from %s",
			 kube_api_server(e->api));
	return true;
}

static void step_key(const struct target *t, char *out, size_t len)
{
	snprintf(out, len, "%s/%s",
		 t->kind == KIND_POOL_IDX ? "pool" : "endpoint", t->name);
}

/* A failed step's reason stays in status until a step succeeds. */
static void recall_step_error(struct kenv *e, struct target *t)
{
	char key[96];
	const char *why;

	step_key(t, key, sizeof(key));
	if (!t->obs.exists && !t->want) {
		json_object_del(e->step_errors, key);
		return;
	}
	why = json_string_value(json_object_get(e->step_errors, key));
	if (why && !t->obs.error[0])
		snprintf(t->obs.error, sizeof(t->obs.error), "%s", why);
}

static void observe_one(struct kprov *k, struct target *t)
{
	struct kenv *e = kenv_of(k, t->env, t->want ? t->want->config : NULL);

	observation_clear(&t->obs);
	if (observe_unknown(e, t))
		return;
	kube_facts_set_kserve(e->cluster, kube_watch_served(e->watch, KK_ISVC));
	if (t->kind == KIND_POOL_IDX)
		kube_pool_observe(e, t);
	else
		kube_endpoint_observe(k, e, t);
	recall_step_error(e, t);
}

/* Pools first: an endpoint's pods go where its pool's nodes are, which
 * the pool's look finds (kube_pool_placement). */
static void kube_observe(void *state, struct target *targets, size_t n)
{
	struct kprov *k = state;

	k->observations++;
	for (size_t i = 0; i < n; i++) {
		if (targets[i].kind == KIND_POOL_IDX)
			observe_one(k, &targets[i]);
	}
	for (size_t i = 0; i < n; i++) {
		if (targets[i].kind != KIND_POOL_IDX)
			observe_one(k, &targets[i]);
	}
}

static int kube_step(void *state, struct target *t)
{
	struct kprov *k = state;
	struct kenv *e = kenv_of(k, t->env, t->want ? t->want->config : NULL);
	char key[96];
	int rc;

	if (!e->api) {
		snprintf(t->obs.error, sizeof(t->obs.error), "%s",
			 e->error[0] ? e->error : "no connection");
		return -EIO;
	}
	t->obs.error[0] = '\0';
	rc = t->kind == KIND_POOL_IDX ? kube_pool_step(e, t)
				      : kube_endpoint_step(k, e, t);
	step_key(t, key, sizeof(key));
	if (rc < 0) {
		json_object_set_new(e->step_errors, key,
				    json_string(t->obs.error));
		log_for(LOG_LVL_WARN, t->env, t->name,
			t->want ? t->want->rev : 0, "kubernetes: %s",
			t->obs.error);
	} else {
		json_object_del(e->step_errors, key);
	}
	return rc < 0 ? rc : 0;
}

static int kube_check(const struct desired *want, char *msg, size_t len)
{
	return want->kind == KIND_POOL_IDX
		       ? kube_pool_check(want, msg, len)
		       : kube_endpoint_check(want, msg, len);
}

/* ---- the rest of the table ------------------------------------------- */

static void kube_list(void *state, const char *env, struct buf *out)
{
	struct kenv *e = kenv_find(state, env);

	if (e && e->watch) {
		kube_pool_list(e, out);
		kube_endpoint_list(e, out);
	}
}

static void kube_refresh(void *state, const char *env)
{
	struct kenv *e = kenv_find(state, env);

	if (e && e->watch)
		kube_watch_relist(e->watch);
}

static uint64_t kube_calls(void *state)
{
	struct kprov *k = state;
	uint64_t n = 0;

	for (struct kenv *e = k->envs; e; e = e->next)
		n += e->api ? kube_api_requests(e->api) : 0;
	return n;
}

static int refuse(char *msg, size_t len, const char *key, const char *why)
{
	snprintf(msg, len, "%s: %s", key, why);
	return -EINVAL;
}

static bool one_of(const char *v, const char *const *choices)
{
	for (size_t i = 0; choices[i]; i++) {
		if (!strcmp(v, choices[i]))
			return true;
	}
	return false;
}

static int kube_check_config(const struct spec *config, char *msg, size_t len)
{
	static const char *const keys[] = { "kubeconfig", "context",
					    "namespace",  "service_type",
					    "node_class", "serving",
					    NULL };
	static const char *const service_types[] = { "ClusterIP", "NodePort",
						     "LoadBalancer", NULL };
	const struct spec_value *v = spec_field(config, "kubernetes");
	const char *ns = kube_config_value(config, "namespace", NULL);
	const char *type = kube_config_value(config, "service_type", NULL);
	const char *serving = kube_config_value(config, "serving", NULL);
	static const char *const servings[] = { "deployment", "kserve", NULL };

	for (size_t i = 0; v && i < v->npairs; i++) {
		if (!one_of(v->pairs[i].key, keys)) {
			snprintf(msg, len,
				 "line %u: kubernetes.%s: unknown key; known: "
				 "kubeconfig, context, namespace, "
				 "service_type, node_class, serving",
				 v->pairs[i].line, v->pairs[i].key);
			return -EINVAL;
		}
	}
	if (ns && !name_is_valid(ns))
		return refuse(msg, len, "kubernetes.namespace",
			      "a namespace is 1 to 63 lowercase letters, "
			      "digits and '-', starting and ending with a "
			      "letter or digit");
	if (serving && !one_of(serving, servings))
		return refuse(msg, len, "kubernetes.serving",
			      "expected deployment or kserve");
	if (type && !one_of(type, service_types))
		return refuse(msg, len, "kubernetes.service_type",
			      "expected ClusterIP, NodePort or LoadBalancer");
	return 0;
}

static double kube_hourly_cost(const struct desired *want)
{
	(void)want;
	return 0; /* the cluster's nodes are paid for by whoever runs them */
}

static int kube_start(const struct provider_host *host, void **state)
{
	struct kprov *k = xcalloc(1, sizeof(*k));

	k->host = *host;
	*state = k;
	return 0;
}

static void kube_stop(void *state)
{
	struct kprov *k = state;

	while (k->envs) {
		struct kenv *e = k->envs;

		k->envs = e->next;
		kenv_free(e);
	}
	free(k);
}

const struct provider_ops kubernetes_provider = {
	.info = &kube_info,
	.start = kube_start,
	.stop = kube_stop,
	.observe = kube_observe,
	.step = kube_step,
	.refresh = kube_refresh,
	.calls = kube_calls,
	.list = kube_list,
	.check = kube_check,
	.check_config = kube_check_config,
	.hourly_cost = kube_hourly_cost,
};
