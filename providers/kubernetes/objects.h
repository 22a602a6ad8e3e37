/* SPDX-License-Identifier: MIT */
/*
 * The Kubernetes objects an endpoint is made of, rendered from its spec
 * in one place: a Deployment, a Service, a HorizontalPodAutoscaler when
 * it scales, and a Secret for its env.NAME = secret:S values. Every one
 * carries the labels that mark it as infrafs's and the revision it was
 * applied from.
 */
#ifndef INFRAFS_PROVIDERS_KUBERNETES_OBJECTS_H
#define INFRAFS_PROVIDERS_KUBERNETES_OBJECTS_H

#include "providers/provider.h"
#include "util/buf.h"

#include <jansson.h>
#include <stdbool.h>

#define KUBE_MANAGER "infrafs"
#define KUBE_LABEL_MANAGED "app.kubernetes.io/managed-by"
#define KUBE_LABEL_NAME "app.kubernetes.io/name"
#define KUBE_LABEL_ENV "infrafs.dev/env"
#define KUBE_LABEL_ENDPOINT "infrafs.dev/endpoint"
#define KUBE_LABEL_POOL "infrafs.dev/pool"
/* GPU feature discovery's label: the GPU's model as NVML names it. */
#define KUBE_LABEL_GPU_PRODUCT "nvidia.com/gpu.product"
#define KUBE_ANN_REVISION "infrafs.dev/revision"
#define KUBE_ANN_SECRETS "infrafs.dev/secrets-version"

/* Whether an endpoint has an autoscaler: min_replicas < max_replicas. */
bool kube_autoscaled(const struct spec *s);

/* The name of the Secret holding an endpoint's secret values. */
void kube_secret_name(const char *endpoint, char *out, size_t len);
/* Whether the spec names any secret:S value. */
bool kube_uses_secrets(const struct spec *s);

/*
 * The nvidia.com/gpu.product values of an accelerator (nvidia-a100-80gb:
 * NVIDIA-A100-SXM4-80GB, ...), NULL-terminated; NULL for cpu and for
 * a name not known. A node the table does not know (a MIG slice, a
 * time-shared GPU, a model newer than the table) joins a pool by the
 * infrafs.dev/pool label.
 */
const char *const *kube_gpu_products(const char *accelerator);
bool kube_gpu_product_is(const char *accelerator, const char *product);
/* The table, one "  ACCELERATOR: PRODUCT ..." line each. */
void kube_gpu_products_render(struct buf *out);

/* How the pods of an endpoint on a pool find the pool's nodes. */
enum kube_pool_nodes {
	KPN_NONE, /* no pool: wherever the scheduler puts them */
	KPN_NODEPOOL, /* Karpenter's: infrafs.dev/pool and infrafs.dev/env */
	KPN_LABEL, /* an administrator's: infrafs.dev/pool */
	KPN_GPU_PRODUCT, /* no node labelled: the accelerator's product */
};
struct kube_placement {
	enum kube_pool_nodes nodes;
	char accelerator[32]; /* the pool's, for KPN_GPU_PRODUCT */
};
/* The word KUBE_ANN_NODES holds for it: which way was applied. */
const char *kube_placement_word(enum kube_pool_nodes nodes);
#define KUBE_ANN_NODES "infrafs.dev/pool-nodes"

/* secrets_version changes when a secret it uses is rewritten, which
 * rolls the pods. */
json_t *kube_deployment(const struct desired *want, const char *ns,
			uint64_t secrets_version,
			const struct kube_placement *where);
json_t *kube_service(const struct desired *want, const char *ns,
		     const char *service_type);
/* NULL with err set when scale_metric has no HPA metric. */
json_t *kube_hpa(const struct desired *want, const char *ns, char *err,
		 size_t errlen);
/* The custom metric an HPA reads for scale_metric, NULL for none. */
const char *kube_metric_name(const char *scale_metric);

/*
 * The Secret, as JSON in a wiping buffer (the values never pass through
 * jansson's allocations). secret() opens each value as the provider
 * host does. -errno with err naming the env key and secret.
 */
int kube_secret_body(const struct desired *want, const char *ns,
		     const struct provider_host *host, struct buf *out,
		     char *err, size_t errlen);

/* kubernetes.serving = kserve: one InferenceService instead of the
 * Deployment, Service and autoscaler. */
json_t *kube_inference_service(const struct desired *want, const char *ns,
			       uint64_t secrets_version);
/* KServe's scaleMetric for scale_metric, NULL where it has none. */
const char *kube_kserve_metric(const char *scale_metric);

/* The NodePool of a pool where Karpenter runs: infrafs-ENV-NAME. */
void kube_nodepool_name(const char *env, const char *pool, char *out,
			size_t len);
/* node_class is GROUP/KIND/NAME (kubernetes.node_class). */
#define KUBE_NODE_CLASS "karpenter.k8s.aws/EC2NodeClass/default"
json_t *kube_nodepool(const struct desired *want, const char *node_class);
/* The GPUs a pool declares: nodes x accelerators_per_node, 0 for cpu. */
int64_t kube_pool_gpus(const struct spec *s);

/* The environment's GPU quota, where pools are labelled nodes: hard is
 * the sum of every pool's GPUs; pool_revs holds one
 * pools.infrafs.dev/NAME annotation per pool, its revision. */
#define KUBE_QUOTA_NAME "infrafs-gpus"
#define KUBE_ANN_POOL_PREFIX "pools.infrafs.dev/"
json_t *kube_quota(const char *env, const char *ns, int64_t gpus,
		   json_t *pool_revs);

/* Whether obj's labels mark it as made by infrafs for environment env:
 * another environment's object in the same namespace (a namespace any
 * owner may name) is not this one's to change or delete. */
bool kube_ours(json_t *obj, const char *env);

#endif
