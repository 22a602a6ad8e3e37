/* SPDX-License-Identifier: MIT */
/*
 * What the daemon knows of the objects infrafs made in one namespace,
 * kept current by list+watch: one thread per kind lists once, then
 * watches from that list's resourceVersion (bookmarks keep it fresh; a
 * 410 Gone lists again; a lost stream reconnects with back-off). So the
 * provider's observe() reads memory, never the network, and a thousand
 * endpoints cost four watches rather than a thousand GETs per refresh.
 */
#ifndef INFRAFS_PROVIDERS_KUBERNETES_WATCH_H
#define INFRAFS_PROVIDERS_KUBERNETES_WATCH_H

#include "api.h"

#include <jansson.h>
#include <stdbool.h>

enum kube_kind {
	KK_DEPLOYMENT,
	KK_SERVICE,
	KK_HPA,
	KK_POD,
	KK_QUOTA,
	KK_NODE, /* nodes that carry infrafs.dev/pool */
	/* nodes GPU feature discovery labelled nvidia.com/gpu.product that
	 * carry no infrafs.dev/pool: a selector cannot say "this label or
	 * that", so the nodes a pool may use take two watches. */
	KK_GPU_NODE,
	KK_NODEPOOL, /* karpenter.sh/v1, where Karpenter is installed */
	KK_ISVC, /* serving.kserve.io/v1beta1, where KServe is installed */
	/* Never watched: their values would sit in the daemon's memory. */
	KK_SECRET,
	KK_NAMESPACE,
};

/* The kinds watched: those before KK_SECRET. */
#define KK_WATCHED KK_SECRET

/* "/apis/apps/v1/namespaces/NS/deployments" and the like. */
void kube_kind_path(enum kube_kind k, const char *ns, char *out, size_t len);
const char *kube_kind_name(enum kube_kind k); /* "deployment" */
bool kube_kind_cluster_scoped(enum kube_kind k);

struct kube_watch;

/*
 * Starts watching ns for objects that carry every label of selector
 * ("key=value,key=value", unescaped), and the cluster for nodes that
 * belong to a pool or have GPUs, and for infrafs's NodePools. changed(ctx, k, obj) is
 * called from the watch threads after every change seen, with the object
 * of kind k that changed (to read, not keep), or with obj NULL when any
 * object of k may have: after a list, and when a watch fails or heals.
 */
struct kube_watch *
kube_watch_start(struct kube_api *api, const char *ns, const char *selector,
		 void (*changed)(void *ctx, enum kube_kind k, json_t *obj),
		 void *ctx);
/* Stops the threads (within about a second) and frees what they knew. */
void kube_watch_stop(struct kube_watch *w);

/* A copy of the object of kind named name as last seen, or NULL. */
json_t *kube_watch_get(struct kube_watch *w, enum kube_kind k,
		       const char *name);
/* The resourceVersion of the object of kind k named name as last seen,
 * "" when none is held. */
void kube_watch_version(struct kube_watch *w, enum kube_kind k,
			const char *name, char *out, size_t len);
/* Calls fn on each object of kind k whose label key equals value (all
 * when key is NULL), under the watch's lock: fn must not block, and
 * must copy what it keeps (json_deep_copy), never take a reference. */
void kube_watch_each(struct kube_watch *w, enum kube_kind k, const char *key,
		     const char *value, void (*fn)(void *ctx, json_t *obj),
		     void *ctx);
/* Whether the server serves kind k at all (a custom resource such as
 * Karpenter's NodePool may not be installed); false until listed. */
bool kube_watch_served(struct kube_watch *w, enum kube_kind k);
/* Whether every kind has been listed at least once. */
bool kube_watch_synced(struct kube_watch *w);
/* Why a kind's watch is failing now, "" when none is: copied to out. */
void kube_watch_error(struct kube_watch *w, char *out, size_t len);
/* Drops what is known and lists every kind again (`refresh`). */
void kube_watch_relist(struct kube_watch *w);

#endif
