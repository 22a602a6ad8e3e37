/* SPDX-License-Identifier: MIT */
/*
 * What the kubernetes provider's files share: one connection per
 * environment (provider.c), the writes every step makes (cluster.c:
 * server-side apply, foreground delete, the ownership check), and the
 * two kinds of resource (endpoints.c, pools.c).
 */
#ifndef INFRAFS_PROVIDERS_KUBERNETES_KUBE_H
#define INFRAFS_PROVIDERS_KUBERNETES_KUBE_H

#include "api.h"
#include "objects.h"
#include "watch.h"

#include "providers/provider.h"
#include "util/filewatch.h"
#include "util/text.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* The longest a step's requests may take together, retries included:
 * the reconciler's thread serves every environment. */
#define KUBE_STEP_BUDGET_S 20.0

/* Whether a cluster serves an API, as far as known. */
enum kube_fact { KF_UNKNOWN, KF_SERVED, KF_NOT_SERVED };

/* What the provider knows of one environment's cluster. Only the
 * reconciler's thread touches it; the watch has a lock of its own. */
struct kenv {
	char env[NAME_MAX_LEN + 1];
	char ns[NAME_MAX_LEN + 1];
	/* kubeconfig, context and namespace: a change connects again. */
	char *key;
	/* The kubeconfig file: a new one is used without a restart. */
	struct file_watch kubeconfig;
	struct kube_api *api;
	struct kube_watch *watch;
	struct kube_handle handle; /* the reconciler's thread's */
	char error[512]; /* why there is no connection */
	bool ns_ready;
	/* The GPUs and revision of every pool declared, as last observed:
	 * the environment's quota is their sum; the accelerator finds the
	 * nodes of a pool no node is labelled for. {NAME: [gpus, rev,
	 * accelerator]} */
	json_t *pools;
	/* How each pool's nodes were found at its last look: {NAME:
	 * kube_placement_word}. */
	json_t *placements;
	/* Why the last step of each resource failed, until one succeeds:
	 * observations come from the watch, which knows nothing of it.
	 * {"endpoint/NAME": "Kubernetes: Forbidden: ..."} */
	json_t *step_errors;
	/* Each endpoint's pod trouble, found by one walk over the pods per
	 * observe() (troubles_at: which one). {"NAME": "Reason: message"} */
	json_t *troubles;
	uint64_t troubles_at;
	/* Deletes sent, "KIND/NAME": monotonic time. Another kind's watch
	 * event may start a pass before this object's own event says it is
	 * going: it is not asked twice within DELETE_PATIENCE_S. */
	json_t *deletes_sent;
	/* What each apply answered, "KIND/NAME": {"obj": ..., "before":
	 * the watch's resourceVersion of it then, "at": monotonic}, while
	 * the watch has nothing newer: see kube_get(). Never a Secret. */
	json_t *applied;
	const struct provider_host *host;
	char cluster[1100]; /* kube_cluster_key of the connection */
	enum kube_fact custom_metrics;
	double custom_metrics_at; /* when it was asked, monotonic */
	/* After a request got no answer, the steps of the next seconds fail
	 * at once with its reason: a server that hangs must not hold the
	 * reconciler's thread for every resource in turn. Monotonic. */
	double unreachable_until;
	char unreachable[512];
	struct kenv *next;
};

struct kprov {
	struct provider_host host;
	struct kenv *envs;
	uint64_t observations; /* observe() calls so far */
};

/*
 * What a cluster serves, as the environments that use it last saw, for
 * checks at commit (which never ask the network): unknown until a step
 * or a watch has asked. The cluster is named by kubeconfig and context.
 */
struct kube_facts {
	enum kube_fact custom_metrics; /* custom.metrics.k8s.io */
	enum kube_fact kserve; /* serving.kserve.io/v1beta1 */
};
void kube_cluster_key(const struct spec *config, char *out, size_t len);
void kube_facts_get(const char *cluster, struct kube_facts *out);
void kube_facts_set_custom_metrics(const char *cluster, bool served);
void kube_facts_set_kserve(const char *cluster, bool served);
/* Asks the server whether it serves custom.metrics.k8s.io, at most once
 * a minute per connection; the reconciler's thread. */
enum kube_fact kube_custom_metrics(struct kenv *e);

/* kubernetes.KEY of an environment's config, dflt when unset. */
const char *kube_config_value(const struct spec *config, const char *key,
			      const char *dflt);
/* drift = heal (the default): applies take fields back with force. */
bool kube_force(const struct desired *want);

/* metadata.KEY and metadata.SECTION.KEY of an object, strings. */
const char *kube_meta(json_t *obj, const char *key);
const char *kube_meta_in(json_t *obj, const char *section, const char *key);
/* The revision infrafs applied it from (annotation), 0 none. */
uint64_t kube_revision(json_t *obj);
int64_t kube_status_int(json_t *obj, const char *key);
/* status.conditions[type == type], or NULL. */
json_t *kube_condition(json_t *obj, const char *type);

/*
 * A copy of the object as last seen (NULL: none), or as this daemon's
 * last apply of it answered while the watch has not caught up: one
 * kind's event may start a pass before another kind's object, applied
 * in the same step, comes back through its watch.
 */
json_t *kube_get(struct kenv *e, enum kube_kind kind, const char *name);

/* Whether the watch holds an object of infrafs's by that name. */
bool kube_known(struct kenv *e, enum kube_kind kind, const char *name);

/*
 * Server-side apply of body as field manager infrafs. known: the watch
 * holds it as infrafs's; otherwise one GET first, and an object of that
 * name that infrafs did not make is refused (-EEXIST). -errno with
 * o->error saying why.
 */
int kube_apply(struct kenv *e, enum kube_kind kind, const char *name,
	       const char *body, bool force, bool known, struct observation *o);
int kube_apply_json(struct kenv *e, enum kube_kind kind, const char *name,
		    json_t *obj, bool force, bool known, struct observation *o);
/* A step's request (kube_call on the environment's connection), failing
 * at once while the server is known not to answer. */
int kube_step_call(struct kenv *e, const char *method, const char *path,
		   const char *content_type, const char *body,
		   struct kube_reply *r);
/* Deletes with foreground propagation; an object infrafs did not make
 * is left alone (0), one already gone is fine. */
int kube_delete(struct kenv *e, enum kube_kind kind, const char *name,
		bool known, struct observation *o);
/* Whether a delete of the object was sent in the last minute. */
bool kube_delete_sent(struct kenv *e, enum kube_kind kind, const char *name);
/* The environment's namespace, applied once when missing. */
int kube_ensure_namespace(struct kenv *e, struct observation *o);

void kube_endpoint_observe(struct kprov *k, struct kenv *e, struct target *t);
int kube_endpoint_step(struct kprov *k, struct kenv *e, struct target *t);
int kube_endpoint_check(const struct desired *want, char *msg, size_t len);
void kube_endpoint_list(struct kenv *e, struct buf *out);

void kube_pool_observe(struct kenv *e, struct target *t);
int kube_pool_step(struct kenv *e, struct target *t);
int kube_pool_check(const struct desired *want, char *msg, size_t len);
void kube_pool_list(struct kenv *e, struct buf *out);
/* How the pods of an endpoint on pool find its nodes: the NodePool's
 * where Karpenter runs; else those labelled infrafs.dev/pool=POOL; else,
 * when none is, those GPU feature discovery found the pool's
 * accelerator on. KPN_NONE for no pool. */
void kube_pool_placement(struct kenv *e, const char *pool,
			 struct kube_placement *out);

#endif
