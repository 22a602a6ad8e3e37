// SPDX-License-Identifier: MIT
/*
 * The objects a spec becomes on Kubernetes (providers/kubernetes/
 * objects.c), checked field by field: what the Deployment, autoscaler,
 * Secret, NodePool and quota carry, and what they leave to others (the
 * replicas an autoscaler owns). The file-system tests check the same
 * objects through kubectl; these pin the rendering itself.
 */
#include "providers/kubernetes/objects.h"
#include "spec/schema.h"
#include "store/secretbox.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static struct spec *parse(const struct kind_def *k, const char *text)
{
	struct spec *s = NULL;
	struct spec_error err;

	if (spec_parse(k, text, strlen(text), &s, &err) < 0)
		fprintf(stderr, "%s\n", err.msg);
	return s;
}

static json_t *at(json_t *doc, const char *path)
{
	json_t *v = doc;
	char key[64];

	while (*path && v) {
		size_t n = strcspn(path, "|");

		snprintf(key, sizeof(key), "%.*s", (int)n, path);
		v = json_is_array(v) ? json_array_get(v, strtoul(key, NULL, 10))
				     : json_object_get(v, key);
		path += n + (path[n] == '|');
	}
	return v;
}

static const char *str_at(json_t *doc, const char *path)
{
	return json_string_value(at(doc, path));
}

static int fake_secret(void *ctx, const char *env, const char *name,
		       char **value, size_t *len)
{
	(void)ctx, (void)env;
	if (strcmp(name, "hf"))
		return -ENOENT;
	/* As the daemon hands a secret: a locked buffer. */
	*value = secret_alloc(8);
	memcpy(*value, "hunter2", 7);
	*len = 7;
	return 0;
}

static void test_deployment(void)
{
	struct spec *cfg = parse(&kind_config, "provider = kubernetes\n");
	struct spec *s = parse(&kind_endpoint,
			       "image = r/m:1\nreplicas = 3\nport = 9000\n"
			       "accelerators = 2\npool = gpu\n"
			       "env.A = 1\nenv.T = secret:hf\n");
	struct desired want = {
		.env = "dev", .name = "chat", .rev = 7, .spec = s, .config = cfg
	};
	struct kube_placement labelled = { .nodes = KPN_LABEL };
	struct kube_placement nodepool = { .nodes = KPN_NODEPOOL };
	json_t *d = kube_deployment(&want, "infrafs-dev", 0x1234, &labelled);
	json_t *c = at(d, "spec|template|spec|containers|0");

	CHECK_STR(str_at(d, "metadata|annotations|infrafs.dev/revision"), "7");
	CHECK_STR(str_at(d, "metadata|labels|app.kubernetes.io/managed-by"),
		  "infrafs");
	CHECK_INT(json_integer_value(at(d, "spec|replicas")), 3);
	CHECK_STR(str_at(c, "image"), "r/m:1");
	CHECK_STR(str_at(c, "resources|limits|nvidia.com/gpu"), "2");
	CHECK_INT(json_integer_value(at(c, "readinessProbe|httpGet|port")),
		  9000);
	CHECK_STR(str_at(c, "env|0|name"), "PORT");
	CHECK_STR(str_at(c, "env|2|valueFrom|secretKeyRef|name"),
		  "chat-secrets");
	CHECK_STR(str_at(c, "env|2|valueFrom|secretKeyRef|key"), "hf");
	CHECK_STR(str_at(d, "spec|template|spec|nodeSelector|infrafs.dev/pool"),
		  "gpu");
	CHECK(!at(d, "spec|template|spec|nodeSelector|infrafs.dev/env"));
	CHECK(!at(d, "spec|template|spec|affinity"));
	CHECK_STR(str_at(d, "metadata|annotations|infrafs.dev/pool-nodes"),
		  "label");
	CHECK_STR(str_at(d, "spec|template|spec|tolerations|0|key"),
		  "nvidia.com/gpu");
	CHECK_STR(str_at(d, "spec|template|metadata|annotations|"
			    "infrafs.dev/secrets-version"),
		  "0000000000001234");
	json_decref(d);
	/* Where Karpenter makes the pool's nodes, the environment too. */
	d = kube_deployment(&want, "infrafs-dev", 0, &nodepool);
	CHECK_STR(str_at(d, "spec|template|spec|nodeSelector|infrafs.dev/env"),
		  "dev");
	CHECK(!at(d, "spec|template|metadata|annotations"));
	json_decref(d);
	spec_free(s);
	spec_free(cfg);
}

/* A pool no node is labelled for: the nodes GPU feature discovery found
 * its accelerator on, and that no administrator gave a pool. */
static void test_gpu_product_placement(void)
{
	struct spec *s = parse(&kind_endpoint, "image = r/m:1\npool = gpu\n"
					       "accelerators = 1\n");
	struct desired want = {
		.env = "dev", .name = "chat", .rev = 1, .spec = s
	};
	struct kube_placement where = { .nodes = KPN_GPU_PRODUCT,
					.accelerator = "nvidia-a100-80gb" };
	json_t *d = kube_deployment(&want, "ns", 0, &where);
	json_t *terms = at(d, "spec|template|spec|affinity|nodeAffinity|"
			      "requiredDuringSchedulingIgnoredDuringExecution|"
			      "nodeSelectorTerms");
	json_t *in = at(terms, "0|matchExpressions|0");

	CHECK_INT(json_array_size(terms), 1);
	CHECK_STR(str_at(in, "key"), "nvidia.com/gpu.product");
	CHECK_STR(str_at(in, "operator"), "In");
	CHECK_STR(str_at(in, "values|0"), "NVIDIA-A100-SXM4-80GB");
	CHECK_STR(str_at(in, "values|1"), "NVIDIA-A100-80GB-PCIe");
	CHECK_STR(str_at(terms, "0|matchExpressions|1|key"),
		  "infrafs.dev/pool");
	CHECK_STR(str_at(terms, "0|matchExpressions|1|operator"),
		  "DoesNotExist");
	CHECK(!at(d, "spec|template|spec|nodeSelector"));
	CHECK_STR(str_at(d, "metadata|annotations|infrafs.dev/pool-nodes"),
		  "gpu-product");
	json_decref(d);
	/* The names are exact: an A10 is not an A10G, a slice not a GPU. */
	CHECK(kube_gpu_product_is("nvidia-a10g", "NVIDIA-A10G"));
	CHECK(!kube_gpu_product_is("nvidia-a10g", "NVIDIA-A10"));
	CHECK(kube_gpu_product_is("nvidia-t4", "Tesla-T4"));
	CHECK(kube_gpu_product_is("nvidia-a100-40gb", "A100-SXM4-40GB"));
	CHECK(!kube_gpu_product_is("nvidia-a100-40gb",
				   "NVIDIA-A100-SXM4-80GB"));
	CHECK(!kube_gpu_product_is("nvidia-a100-40gb",
				   "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"));
	CHECK(!kube_gpu_product_is("nvidia-h100-80gb",
				   "NVIDIA-H100-80GB-HBM3-SHARED"));
	CHECK(!kube_gpu_product_is("cpu", "NVIDIA-H100-80GB-HBM3"));
	CHECK(!kube_gpu_product_is("nvidia-h200-141gb", NULL));
	spec_free(s);
	/* No pool, a model named: that model's nodes all the same. */
	s = parse(&kind_endpoint, "image = r/m:1\naccelerators = 1\n"
				  "accelerator = nvidia-l4\n");
	want.spec = s;
	d = kube_deployment(&want, "ns", 0, &(struct kube_placement){ 0 });
	CHECK_STR(str_at(d, "spec|template|spec|affinity|nodeAffinity|"
			    "requiredDuringSchedulingIgnoredDuringExecution|"
			    "nodeSelectorTerms|0|matchExpressions|0|values|0"),
		  "NVIDIA-L4");
	CHECK(!at(d, "metadata|annotations|infrafs.dev/pool-nodes"));
	json_decref(d);
	spec_free(s);
	/* Nor a model without GPUs asked for, nor cpu. */
	s = parse(&kind_endpoint, "image = r/m:1\naccelerator = nvidia-l4\n");
	want.spec = s;
	d = kube_deployment(&want, "ns", 0, &(struct kube_placement){ 0 });
	CHECK(!at(d, "spec|template|spec|affinity"));
	json_decref(d);
	CHECK(kube_gpu_products("cpu") == NULL);
	spec_free(s);
}

static void test_autoscaler(void)
{
	struct spec *s = parse(&kind_endpoint,
			       "image = r/m:1\nreplicas = 2\nmin_replicas = 1\n"
			       "max_replicas = 5\nscale_metric = "
			       "gpu_utilization\nscale_target = 70\n");
	struct desired want = {
		.env = "dev", .name = "chat", .rev = 2, .spec = s
	};
	char err[200] = "";
	struct kube_placement nowhere = { .nodes = KPN_NONE };
	json_t *d = kube_deployment(&want, "ns", 0, &nowhere);
	json_t *h = kube_hpa(&want, "ns", err, sizeof(err));

	/* The replicas are the autoscaler's. */
	CHECK(kube_autoscaled(s));
	CHECK(!at(d, "spec|replicas"));
	CHECK_INT(json_integer_value(at(h, "spec|minReplicas")), 1);
	CHECK_INT(json_integer_value(at(h, "spec|maxReplicas")), 5);
	CHECK_STR(str_at(h, "spec|metrics|0|pods|metric|name"),
		  "DCGM_FI_DEV_GPU_UTIL");
	CHECK_STR(str_at(h, "spec|metrics|0|pods|target|averageValue"), "70");
	CHECK_STR(str_at(h, "spec|scaleTargetRef|name"), "chat");
	CHECK(kube_kserve_metric("gpu_utilization") == NULL);
	CHECK_STR(kube_kserve_metric("invocations_per_replica"), "rps");
	json_decref(d);
	json_decref(h);
	spec_free(s);
}

static void test_secret(void)
{
	struct spec *s =
		parse(&kind_endpoint, "image = r/m:1\nenv.T = secret:hf\n"
				      "env.U = secret:missing\n");
	struct spec *ok =
		parse(&kind_endpoint, "image = r/m:1\nenv.T = secret:hf\n");
	struct provider_host host = { .secret = fake_secret };
	struct desired want = {
		.env = "dev", .name = "chat", .rev = 4, .spec = ok
	};
	struct buf body = BUF_INIT;
	char err[200] = "";
	json_t *doc;

	CHECK_INT(kube_secret_body(&want, "ns", &host, &body, err, sizeof(err)),
		  0);
	doc = json_loads(buf_str(&body), 0, NULL);
	CHECK_STR(str_at(doc, "kind"), "Secret");
	CHECK_STR(str_at(doc, "metadata|name"), "chat-secrets");
	CHECK_STR(str_at(doc, "data|hf"), "aHVudGVyMg==");
	json_decref(doc);
	buf_free(&body);
	want.spec = s;
	CHECK(kube_secret_body(&want, "ns", &host, &body, err, sizeof(err)) <
	      0);
	CHECK(strstr(err, "env.U: secret missing cannot be read") != NULL);
	buf_free(&body);
	spec_free(s);
	spec_free(ok);
}

static void test_pool(void)
{
	struct spec *s =
		parse(&kind_pool, "accelerator = nvidia-h100-80gb\n"
				  "accelerators_per_node = 8\nnodes = 1\n"
				  "max_nodes = 4\ncapacity = spot\n"
				  "zones = us-east-1a, us-east-1b\n"
				  "labels.team = nlp\n");
	struct desired want = {
		.env = "dev", .name = "train", .rev = 3, .spec = s
	};
	json_t *np = kube_nodepool(&want, "karpenter.k8s.aws/EC2NodeClass/gpu");
	json_t *reqs = at(np, "spec|template|spec|requirements");
	json_t *q;
	size_t found = 0, i;
	json_t *r;

	CHECK_STR(str_at(np, "metadata|name"), "infrafs-dev-train");
	CHECK(!at(np, "metadata|namespace"));
	CHECK_STR(str_at(np, "spec|limits|nvidia.com/gpu"), "32");
	CHECK_STR(str_at(np, "spec|limits|nodes"), "4");
	CHECK_STR(str_at(np, "spec|template|spec|nodeClassRef|name"), "gpu");
	CHECK_STR(str_at(np, "spec|template|metadata|labels|team"), "nlp");
	CHECK_STR(str_at(np, "spec|template|spec|taints|0|key"),
		  "nvidia.com/gpu");
	json_array_foreach(reqs, i, r)
	{
		const char *key = str_at(r, "key");

		if (!strcmp(key, "karpenter.sh/capacity-type"))
			found += !strcmp(str_at(r, "values|0"), "spot");
		if (!strcmp(key, "topology.kubernetes.io/zone"))
			found += json_array_size(at(r, "values")) == 2;
		if (!strcmp(key, "karpenter.k8s.aws/instance-gpu-name"))
			found += !strcmp(str_at(r, "values|0"), "h100");
	}
	CHECK_INT(found, 3);
	CHECK_INT(kube_pool_gpus(s), 32);
	q = kube_quota("dev", "infrafs-dev", 32,
		       json_pack("{s:s}", "pools.infrafs.dev/train", "3"));
	CHECK_STR(str_at(q, "spec|hard|requests.nvidia.com/gpu"), "32");
	CHECK_STR(str_at(q, "metadata|annotations|pools.infrafs.dev/train"),
		  "3");
	json_decref(q);
	json_decref(np);
	spec_free(s);
}

int main(void)
{
	test_deployment();
	test_gpu_product_placement();
	test_autoscaler();
	test_secret();
	test_pool();
	return check_report("kube_objects");
}
