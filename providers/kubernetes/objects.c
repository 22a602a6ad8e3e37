// SPDX-License-Identifier: MIT
#include "objects.h"

#include "store/policy.h"
#include "store/secretbox.h"
#include "util/wipe.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

/* The container's name; a spec has one container. */
#define CONTAINER "server"

bool kube_autoscaled(const struct spec *s)
{
	int64_t replicas = spec_int(s, "replicas", 1);

	return spec_int(s, "min_replicas", replicas) <
	       spec_int(s, "max_replicas", replicas);
}

void kube_secret_name(const char *endpoint, char *out, size_t len)
{
	snprintf(out, len, "%s-secrets", endpoint);
}

bool kube_uses_secrets(const struct spec *s)
{
	const struct spec_value *env = spec_field(s, "env");

	for (size_t i = 0; env && i < env->npairs; i++) {
		if (!strncmp(env->pairs[i].value, "secret:", 7))
			return true;
	}
	return false;
}

static json_t *labels(const struct desired *want)
{
	return json_pack("{s:s, s:s, s:s, s:s}", KUBE_LABEL_MANAGED,
			 KUBE_MANAGER, KUBE_LABEL_NAME, want->name,
			 KUBE_LABEL_ENV, want->env, KUBE_LABEL_ENDPOINT,
			 want->name);
}

static json_t *metadata(const struct desired *want, const char *name,
			const char *ns)
{
	char rev[32];

	snprintf(rev, sizeof(rev), "%" PRIu64, want->rev);
	return json_pack("{s:s, s:s, s:o, s:{s:s}}", "name", name, "namespace",
			 ns, "labels", labels(want), "annotations",
			 KUBE_ANN_REVISION, rev);
}

static json_t *object(const char *api_version, const char *kind,
		      const struct desired *want, const char *name,
		      const char *ns)
{
	return json_pack("{s:s, s:s, s:o}", "apiVersion", api_version, "kind",
			 kind, "metadata", metadata(want, name, ns));
}

static json_t *container_env(const struct desired *want)
{
	const struct spec_value *env = spec_field(want->spec, "env");
	const char *model = spec_str(want->spec, "model", "");
	char port[24], secret[80];
	json_t *list = json_array();

	kube_secret_name(want->name, secret, sizeof(secret));
	snprintf(port, sizeof(port), "%" PRId64,
		 spec_int(want->spec, "port", 8080));
	json_array_append_new(
		list, json_pack("{s:s, s:s}", "name", "PORT", "value", port));
	if (model[0])
		json_array_append_new(list, json_pack("{s:s, s:s}", "name",
						      "INFRAFS_MODEL_URI",
						      "value", model));
	for (size_t i = 0; env && i < env->npairs; i++) {
		const char *key = env->pairs[i].key;
		const char *val = env->pairs[i].value;

		if (spec_env_name_reserved(key, strlen(key)))
			continue;
		if (strncmp(val, "secret:", 7) != 0)
			json_array_append_new(list,
					      json_pack("{s:s, s:s}", "name",
							key, "value", val));
		else
			json_array_append_new(
				list,
				json_pack("{s:s, s:{s:{s:s, s:s}}}", "name",
					  key, "valueFrom", "secretKeyRef",
					  "name", secret, "key", val + 7));
	}
	return list;
}

static json_t *container(const struct desired *want)
{
	const struct spec *s = want->spec;
	int64_t port = spec_int(s, "port", 8080);
	int64_t gpus = spec_int(s, "accelerators", 0);
	const char *command = spec_str(s, "command", "");
	json_t *c = json_pack(
		"{s:s, s:s, s:o, s:[{s:s, s:I, s:s}], s:{s:{s:s, s:I}, "
		"s:i, s:i}}",
		"name", CONTAINER, "image", spec_str(s, "image", ""), "env",
		container_env(want), "ports", "name", "http", "containerPort",
		(json_int_t)port, "protocol", "TCP", "readinessProbe",
		"httpGet", "path", spec_str(s, "health_path", "/health"),
		"port", (json_int_t)port, "periodSeconds", 5,
		"failureThreshold", 3);

	if (command[0])
		json_object_set_new(
			c, "command",
			json_pack("[s, s, s]", "/bin/sh", "-c", command));
	if (gpus > 0) {
		char n[24];

		snprintf(n, sizeof(n), "%" PRId64, gpus);
		json_object_set_new(c, "resources",
				    json_pack("{s:{s:s}, s:{s:s}}", "limits",
					      "nvidia.com/gpu", n, "requests",
					      "nvidia.com/gpu", n));
	}
	return c;
}

const char *kube_placement_word(enum kube_pool_nodes nodes)
{
	switch (nodes) {
	case KPN_NODEPOOL:
		return "nodepool";
	case KPN_LABEL:
		return "label";
	case KPN_GPU_PRODUCT:
		return "gpu-product";
	case KPN_NONE:
		break;
	}
	return NULL;
}

/* Nodes of the accelerator's model that no administrator gave a pool:
 * a node labelled for a pool is that pool's alone. */
static json_t *gpu_product_affinity(const char *accelerator)
{
	json_t *values = json_array();

	for (const char *const *p = kube_gpu_products(accelerator); p && *p;
	     p++)
		json_array_append_new(values, json_string(*p));
	return json_pack("{s:{s:{s:[{s:[{s:s, s:s, s:o}, {s:s, s:s}]}]}}}",
			 "nodeAffinity",
			 "requiredDuringSchedulingIgnoredDuringExecution",
			 "nodeSelectorTerms", "matchExpressions", "key",
			 KUBE_LABEL_GPU_PRODUCT, "operator", "In", "values",
			 values, "key", KUBE_LABEL_POOL, "operator",
			 "DoesNotExist");
}

/* A NodePool labels its nodes with the environment too, so that two
 * environments' pools of one name do not share nodes. Labelled nodes
 * are the administrator's: pool only. */
static json_t *pool_selector(const struct desired *want, const char *pool,
			     enum kube_pool_nodes nodes)
{
	if (nodes == KPN_NODEPOOL)
		return json_pack("{s:s, s:s}", KUBE_LABEL_POOL, pool,
				 KUBE_LABEL_ENV, want->env);
	return json_pack("{s:s}", KUBE_LABEL_POOL, pool);
}

/* An endpoint on no pool that names its GPU model: the nodes GPU
 * feature discovery found that model on, as for a pool of them. */
static const char *own_gpu_model(const struct desired *want)
{
	const char *model = spec_str(want->spec, "accelerator", "cpu");

	return spec_int(want->spec, "accelerators", 0) > 0 &&
			       kube_gpu_products(model)
		       ? model
		       : NULL;
}

static json_t *pod_spec(const struct desired *want,
			const struct kube_placement *where)
{
	const char *pool = spec_str(want->spec, "pool", "");
	json_t *spec = json_pack("{s:[o]}", "containers", container(want));

	if (pool[0] && where->nodes == KPN_GPU_PRODUCT)
		json_object_set_new(spec, "affinity",
				    gpu_product_affinity(where->accelerator));
	else if (pool[0] && where->nodes != KPN_NONE)
		json_object_set_new(spec, "nodeSelector",
				    pool_selector(want, pool, where->nodes));
	else if (!pool[0] && own_gpu_model(want))
		json_object_set_new(spec, "affinity",
				    gpu_product_affinity(own_gpu_model(want)));
	if (spec_int(want->spec, "accelerators", 0) > 0)
		json_object_set_new(spec, "tolerations",
				    json_pack("[{s:s, s:s, s:s}]", "key",
					      "nvidia.com/gpu", "operator",
					      "Exists", "effect",
					      "NoSchedule"));
	return spec;
}

json_t *kube_deployment(const struct desired *want, const char *ns,
			uint64_t secrets_version,
			const struct kube_placement *where)
{
	json_t *d = object("apps/v1", "Deployment", want, want->name, ns);
	json_t *template_meta = json_pack("{s:o}", "labels", labels(want));
	const char *nodes = spec_str(want->spec, "pool", "")[0]
				    ? kube_placement_word(where->nodes)
				    : NULL;
	json_t *spec;

	if (nodes)
		json_object_set_new(
			json_object_get(json_object_get(d, "metadata"),
					"annotations"),
			KUBE_ANN_NODES, json_string(nodes));

	if (secrets_version) {
		char v[32];

		snprintf(v, sizeof(v), "%016" PRIx64, secrets_version);
		json_object_set_new(template_meta, "annotations",
				    json_pack("{s:s}", KUBE_ANN_SECRETS, v));
	}
	spec = json_pack("{s:{s:{s:s, s:s}}, s:{s:o, s:o}}", "selector",
			 "matchLabels", KUBE_LABEL_ENV, want->env,
			 KUBE_LABEL_ENDPOINT, want->name, "template",
			 "metadata", template_meta, "spec",
			 pod_spec(want, where));
	/* With an autoscaler, replicas are the autoscaler's: applying them
	 * too would fight it at every apply. */
	if (!kube_autoscaled(want->spec))
		json_object_set_new(
			spec, "replicas",
			json_integer(spec_int(want->spec, "replicas", 1)));
	json_object_set_new(d, "spec", spec);
	return d;
}

const char *kube_kserve_metric(const char *scale_metric)
{
	if (!strcmp(scale_metric, "concurrency"))
		return "concurrency";
	if (!strcmp(scale_metric, "rps") ||
	    !strcmp(scale_metric, "invocations_per_replica"))
		return "rps";
	return NULL;
}

json_t *kube_inference_service(const struct desired *want, const char *ns,
			       uint64_t secrets_version)
{
	const struct spec *s = want->spec;
	json_t *isvc = object("serving.kserve.io/v1beta1", "InferenceService",
			      want, want->name, ns);
	json_t *predictor = pod_spec(want, false);
	json_t *c = json_array_get(json_object_get(predictor, "containers"), 0);
	int64_t replicas = spec_int(s, "replicas", 1);
	const char *metric =
		kube_kserve_metric(spec_str(s, "scale_metric", ""));
	const struct spec_value *target = spec_field(s, "scale_target");

	/* KServe's own name for the serving container. */
	json_object_set_new(c, "name", json_string("kserve-container"));
	json_object_set_new(
		predictor, "minReplicas",
		json_integer(spec_int(s, "min_replicas", replicas)));
	json_object_set_new(
		predictor, "maxReplicas",
		json_integer(spec_int(s, "max_replicas", replicas)));
	if (metric && target && target->set) {
		json_object_set_new(predictor, "scaleMetric",
				    json_string(metric));
		json_object_set_new(predictor, "scaleTarget",
				    json_integer((json_int_t)target->d));
	}
	if (secrets_version) {
		char v[32];

		snprintf(v, sizeof(v), "%016" PRIx64, secrets_version);
		json_object_set_new(predictor, "annotations",
				    json_pack("{s:s}", KUBE_ANN_SECRETS, v));
	}
	json_object_set_new(isvc, "spec",
			    json_pack("{s:o}", "predictor", predictor));
	return isvc;
}

json_t *kube_service(const struct desired *want, const char *ns,
		     const char *service_type)
{
	json_t *svc = object("v1", "Service", want, want->name, ns);
	int64_t port = spec_int(want->spec, "port", 8080);

	json_object_set_new(
		svc, "spec",
		json_pack("{s:s, s:{s:s, s:s}, s:[{s:s, s:I, s:s, s:s}]}",
			  "type", service_type, "selector", KUBE_LABEL_ENV,
			  want->env, KUBE_LABEL_ENDPOINT, want->name, "ports",
			  "name", "http", "port", (json_int_t)port,
			  "targetPort", "http", "protocol", "TCP"));
	return svc;
}

/* scale_metric as the pod metric a metrics adapter serves. */
static const char *const metric_names[][2] = {
	{ "rps", "http_requests_per_second" },
	{ "invocations_per_replica", "http_requests_per_second" },
	{ "concurrency", "http_requests_in_flight" },
	{ "gpu_utilization", "DCGM_FI_DEV_GPU_UTIL" },
};

const char *kube_metric_name(const char *scale_metric)
{
	for (size_t i = 0; i < sizeof(metric_names) / sizeof(metric_names[0]);
	     i++) {
		if (!strcmp(metric_names[i][0], scale_metric))
			return metric_names[i][1];
	}
	return NULL;
}

json_t *kube_hpa(const struct desired *want, const char *ns, char *err,
		 size_t errlen)
{
	const struct spec *s = want->spec;
	const char *metric = kube_metric_name(spec_str(s, "scale_metric", ""));
	const struct spec_value *target = spec_field(s, "scale_target");
	int64_t replicas = spec_int(s, "replicas", 1);
	json_t *hpa;
	char value[32];

	if (!metric || !target || !target->set) {
		snprintf(err, errlen,
			 "scale_metric and scale_target are needed when "
			 "min_replicas < max_replicas");
		return NULL;
	}
	snprintf(value, sizeof(value), "%.15g", target->d);
	hpa = object("autoscaling/v2", "HorizontalPodAutoscaler", want,
		     want->name, ns);
	json_object_set_new(
		hpa, "spec",
		json_pack("{s:{s:s, s:s, s:s}, s:I, s:I, "
			  "s:[{s:s, s:{s:{s:s}, s:{s:s, s:s}}}]}",
			  "scaleTargetRef", "apiVersion", "apps/v1", "kind",
			  "Deployment", "name", want->name, "minReplicas",
			  (json_int_t)spec_int(s, "min_replicas", replicas),
			  "maxReplicas",
			  (json_int_t)spec_int(s, "max_replicas", replicas),
			  "metrics", "type", "Pods", "pods", "metric", "name",
			  metric, "target", "type", "AverageValue",
			  "averageValue", value));
	return hpa;
}

static void add_json_string(struct buf *out, const char *s)
{
	json_t *v = json_string(s);
	char *text = json_dumps(v, JSON_ENCODE_ANY);

	wipebuf_add(out, text, strlen(text));
	free(text);
	json_decref(v);
}

static void add_base64(struct buf *out, const char *value, size_t len)
{
	size_t room = 4 * ((len + 2) / 3) + 1;
	WIPEBUF_AUTO b64 = BUF_INIT;

	wipebuf_reserve(&b64, room);
	EVP_EncodeBlock((unsigned char *)b64.data, (const unsigned char *)value,
			(int)len);
	wipebuf_add(out, "\"", 1);
	wipebuf_add(out, b64.data, strlen(b64.data));
	wipebuf_add(out, "\"", 1);
}

int kube_secret_body(const struct desired *want, const char *ns,
		     const struct provider_host *host, struct buf *out,
		     char *err, size_t errlen)
{
	const struct spec_value *env = spec_field(want->spec, "env");
	char name[80];
	json_t *head;
	char *text;
	bool first = true;

	kube_secret_name(want->name, name, sizeof(name));
	head = object("v1", "Secret", want, name, ns);
	json_object_set_new(head, "type", json_string("Opaque"));
	text = json_dumps(head, JSON_COMPACT);
	json_decref(head);
	/* Everything but the closing brace, then "data". */
	wipebuf_add(out, text, strlen(text) - 1);
	free(text);
	wipebuf_add(out, ",\"data\":{", 9);
	for (size_t i = 0; env && i < env->npairs; i++) {
		const char *val = env->pairs[i].value;
		char *value = NULL;
		size_t len = 0;
		int rc;

		if (strncmp(val, "secret:", 7) != 0)
			continue;
		rc = host->secret ? host->secret(host->ctx, want->env, val + 7,
						 &value, &len)
				  : -ENOSYS;
		if (rc < 0) {
			snprintf(err, errlen,
				 "env.%s: secret %s cannot be read (%s)",
				 env->pairs[i].key, val + 7, strerror(-rc));
			return rc;
		}
		if (!first)
			wipebuf_add(out, ",", 1);
		first = false;
		add_json_string(out, val + 7);
		wipebuf_add(out, ":", 1);
		add_base64(out, value, len);
		secret_wipe_free(value, len);
	}
	wipebuf_add(out, "}}", 2);
	return 0;
}

void kube_nodepool_name(const char *env, const char *pool, char *out,
			size_t len)
{
	snprintf(out, len, "infrafs-%s-%s", env, pool);
}

int64_t kube_pool_gpus(const struct spec *s)
{
	if (!strcmp(spec_str(s, "accelerator", "cpu"), "cpu"))
		return 0;
	return spec_int(s, "max_nodes", spec_int(s, "nodes", 1)) *
	       spec_int(s, "accelerators_per_node", 1);
}

/* Karpenter's AWS provider names GPUs by these instance labels; other
 * node classes get no accelerator requirement (their labels differ). */
static const char *aws_gpu_name(const char *accelerator)
{
	static const char *const names[][2] = {
		{ "nvidia-t4", "t4" },		 { "nvidia-l4", "l4" },
		{ "nvidia-a10g", "a10g" },	 { "nvidia-a100-40gb", "a100" },
		{ "nvidia-a100-80gb", "a100" },	 { "nvidia-h100-80gb", "h100" },
		{ "nvidia-h200-141gb", "h200" }, { "nvidia-b200", "b200" },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcmp(names[i][0], accelerator))
			return names[i][1];
	}
	return NULL;
}

static void require(json_t *reqs, const char *key, json_t *values)
{
	json_array_append_new(reqs,
			      json_pack("{s:s, s:s, s:o}", "key", key,
					"operator", "In", "values", values));
}

static json_t *requirements(const struct spec *s, const char *group)
{
	const struct spec_value *zones = spec_field(s, "zones");
	const char *acc = spec_str(s, "accelerator", "cpu");
	const char *gpu = aws_gpu_name(acc);
	json_t *reqs = json_array();
	char count[24];

	require(reqs, "karpenter.sh/capacity-type",
		json_pack("[s]", spec_str(s, "capacity", "on-demand")));
	if (zones && zones->nitems) {
		json_t *z = json_array();

		for (size_t i = 0; i < zones->nitems; i++)
			json_array_append_new(z, json_string(zones->items[i]));
		require(reqs, "topology.kubernetes.io/zone", z);
	}
	if (spec_field_set(s, "instance_type"))
		require(reqs, "node.kubernetes.io/instance-type",
			json_pack("[s]", spec_str(s, "instance_type", "")));
	if (gpu && !strcmp(group, "karpenter.k8s.aws")) {
		snprintf(count, sizeof(count), "%" PRId64,
			 spec_int(s, "accelerators_per_node", 1));
		require(reqs, "karpenter.k8s.aws/instance-gpu-name",
			json_pack("[s]", gpu));
		require(reqs, "karpenter.k8s.aws/instance-gpu-count",
			json_pack("[s]", count));
	}
	return reqs;
}

static json_t *node_labels(const struct desired *want)
{
	const struct spec_value *extra = spec_field(want->spec, "labels");
	json_t *l = json_pack("{s:s, s:s}", KUBE_LABEL_POOL, want->name,
			      KUBE_LABEL_ENV, want->env);

	for (size_t i = 0; extra && i < extra->npairs; i++)
		json_object_set_new(l, extra->pairs[i].key,
				    json_string(extra->pairs[i].value));
	return l;
}

json_t *kube_nodepool(const struct desired *want, const char *node_class)
{
	const struct spec *s = want->spec;
	char name[160], group[128] = "", kind[64] = "", cls[128] = "";
	json_t *np, *limits, *tspec;
	int64_t max_nodes = spec_int(s, "max_nodes", spec_int(s, "nodes", 1));
	int64_t gpus = kube_pool_gpus(s);

	sscanf(node_class, "%127[^/]/%63[^/]/%127s", group, kind, cls);
	kube_nodepool_name(want->env, want->name, name, sizeof(name));
	np = object("karpenter.sh/v1", "NodePool", want, name, "");
	json_object_del(json_object_get(np, "metadata"), "namespace");
	json_object_set_new(
		json_object_get(json_object_get(np, "metadata"), "labels"),
		KUBE_LABEL_POOL, json_string(want->name));
	tspec = json_pack("{s:{s:s, s:s, s:s}, s:o}", "nodeClassRef", "group",
			  group, "kind", kind, "name", cls, "requirements",
			  requirements(s, group));
	if (gpus > 0)
		json_object_set_new(tspec, "taints",
				    json_pack("[{s:s, s:s}]", "key",
					      "nvidia.com/gpu", "effect",
					      "NoSchedule"));
	limits = json_object();
	{
		char n[24];

		snprintf(n, sizeof(n), "%" PRId64, max_nodes);
		json_object_set_new(limits, "nodes", json_string(n));
		if (gpus > 0) {
			snprintf(n, sizeof(n), "%" PRId64, gpus);
			json_object_set_new(limits, "nvidia.com/gpu",
					    json_string(n));
		}
	}
	json_object_set_new(np, "spec",
			    json_pack("{s:{s:{s:o}, s:o}, s:o}", "template",
				      "metadata", "labels", node_labels(want),
				      "spec", tspec, "limits", limits));
	return np;
}

json_t *kube_quota(const char *env, const char *ns, int64_t gpus,
		   json_t *pool_revs)
{
	char n[24];

	snprintf(n, sizeof(n), "%" PRId64, gpus);
	return json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s, s:s}, s:o}, "
			 "s:{s:{s:s, s:s}}}",
			 "apiVersion", "v1", "kind", "ResourceQuota",
			 "metadata", "name", KUBE_QUOTA_NAME, "namespace", ns,
			 "labels", KUBE_LABEL_MANAGED, KUBE_MANAGER,
			 KUBE_LABEL_ENV, env, "annotations", pool_revs, "spec",
			 "hard", "requests.nvidia.com/gpu", n,
			 "limits.nvidia.com/gpu", n);
}

bool kube_ours(json_t *obj, const char *env)
{
	json_t *l = json_object_get(json_object_get(obj, "metadata"), "labels");
	const char *by =
		json_string_value(json_object_get(l, KUBE_LABEL_MANAGED));
	const char *of = json_string_value(json_object_get(l, KUBE_LABEL_ENV));

	return by && !strcmp(by, KUBE_MANAGER) && of && !strcmp(of, env);
}
