// SPDX-License-Identifier: MIT
/*
 * Pools as SageMaker HyperPod clusters, one instance group per pool.
 *
 * A cluster's name is fixed by the pool's, so a retry or a restart finds
 * it with DescribeCluster before it would create one; a create that
 * meets "already exists" is done. Changes of size or instance type are
 * UpdateCluster with the whole group, as the API wants it.
 *
 * An autoscaled pool (min_nodes below max_nodes) is HyperPod's managed
 * Karpenter on an EKS-orchestrated cluster: autoscaling is switched on in
 * SageMaker, and the bounds live in the EKS cluster's Kubernetes API as a
 * HyperpodNodeClass naming the pool's instance group and a NodePool whose
 * limits allow max_nodes nodes' worth of GPUs. Karpenter then owns the
 * group's node count, so infrafs stops sending one.
 */
#include "res.h"

#include "store/policy.h"
#include "util/text.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define GROUP "workers"
#define DEFAULT_ON_CREATE "on_create.sh"
#define NODE_POOLS "/apis/karpenter.sh/v1/nodepools/"
#define NODE_CLASS_GROUP "karpenter.sagemaker.amazonaws.com"
#define NODE_CLASSES "/apis/" NODE_CLASS_GROUP "/v1/hyperpodnodeclasses/"
#define APPLY "?fieldManager=infrafs&force=true"
#define GPU_RESOURCE "nvidia.com/gpu"
/* Who made a Karpenter object: this daemon's owner id, and the pool. */
#define OWNER_LABEL "infrafs/owner"
#define RESOURCE_ANNOTATION "infrafs/resource"

static const char *pool_instance_type(const struct spec *s, char *out,
				      size_t len)
{
	return aws_instance_type(s, "accelerators_per_node", true, out, len);
}

static bool autoscaled(const struct spec *s)
{
	int64_t nodes = spec_int(s, "nodes", 1);

	return spec_int(s, "min_nodes", nodes) !=
	       spec_int(s, "max_nodes", nodes);
}

/* "nvidia.com/gpu=16": the NodePool limit that allows max_nodes nodes. */
static void karpenter_bounds(const struct spec *s, char *out, size_t len)
{
	int64_t nodes = spec_int(s, "nodes", 1);

	snprintf(out, len, "%s=%" PRId64, GPU_RESOURCE,
		 spec_int(s, "max_nodes", nodes) *
			 spec_int(s, "accelerators_per_node", 1));
}

json_t *cluster_describe_input(const struct aws_res *r)
{
	return json_pack("{s:s}", "ClusterName", r->aws_name);
}

static json_t *live_group(const struct aws_res *r)
{
	json_t *groups = json_object_get(r->live, "InstanceGroups");
	size_t i;
	json_t *g;

	json_array_foreach(groups, i, g)
	{
		const char *name = json_string_value(
			json_object_get(g, "InstanceGroupName"));

		if (name && !strcmp(name, GROUP))
			return g;
	}
	return NULL;
}

static const char *live_text(json_t *obj, const char *field)
{
	return json_string_value(json_object_get(obj, field)) ?: "";
}

static int64_t live_int(json_t *obj, const char *field)
{
	return json_integer_value(json_object_get(obj, field));
}

static const char *live_autoscaling(const struct aws_res *r, const char *field)
{
	return live_text(json_object_get(r->live, "AutoScaling"), field);
}

static const char *live_eks_arn(const struct aws_res *r)
{
	return live_text(
		json_object_get(json_object_get(r->live, "Orchestrator"),
				"Eks"),
		"ClusterArn");
}

/* Karpenter's part is in place: switched on, and the bounds applied. */
static bool karpenter_matches(const struct aws_res *r, const struct spec *s)
{
	char bounds[96];

	karpenter_bounds(s, bounds, sizeof(bounds));
	return !strcmp(live_autoscaling(r, "Mode"), "Enable") &&
	       !strcmp(r->scaling, bounds);
}

static bool matches(const struct aws_res *r, const struct desired *want)
{
	json_t *g = live_group(r);
	char type[AWS_TYPE_LEN];

	if (!g || !pool_instance_type(want->spec, type, sizeof(type)) ||
	    strcmp(live_text(g, "InstanceType"), type))
		return false;
	if (autoscaled(want->spec))
		return karpenter_matches(r, want->spec);
	return live_int(g, "TargetCount") == spec_int(want->spec, "nodes", 1) &&
	       strcmp(live_autoscaling(r, "Mode"), "Enable") && !r->scaling[0];
}

static enum res_state state_of(const char *status, json_t *group)
{
	if (!strcmp(status, "Creating"))
		return RS_CREATING;
	if (!strcmp(status, "Deleting"))
		return RS_DELETING;
	if (!strcmp(status, "Failed"))
		return RS_FAILED;
	if (!strcmp(status, "InService"))
		return group && live_int(group, "CurrentCount") <
					       live_int(group, "TargetCount")
			       ? RS_DEGRADED
			       : RS_READY;
	return RS_UPDATING; /* Updating, SystemUpdating, RollingBack */
}

void cluster_fill(struct aws *a, struct aws_res *r, struct target *t)
{
	struct observation *o = &t->obs;
	json_t *g;
	const char *status, *failure;
	char type[AWS_TYPE_LEN] = "";

	if (!r->live) {
		o->exists = json_array_size(r->made) > 0;
		o->state = t->want ? RS_CREATING : RS_DELETING;
		return;
	}
	g = live_group(r);
	status = live_text(r->live, "ClusterStatus");
	failure = live_text(r->live, "FailureMessage");
	o->exists = true;
	o->state = state_of(status, g);
	if (o->state == RS_FAILED)
		snprintf(o->error, sizeof(o->error), "HyperPod: %s", failure);
	buf_printf(&o->details, "hyperpod_cluster: %s\narn: %s\n", r->aws_name,
		   live_text(r->live, "ClusterArn"));
	buf_printf(&o->details, "hyperpod_status: %s\n", status);
	if (g)
		buf_printf(&o->details,
			   "instance_type: %s\nnodes: %" PRId64 " of %" PRId64
			   "\n",
			   live_text(g, "InstanceType"),
			   live_int(g, "CurrentCount"),
			   live_int(g, "TargetCount"));
	if (failure[0])
		text_line(&o->details, "failure_message", failure);
	if (live_autoscaling(r, "Mode")[0])
		buf_printf(&o->details, "autoscaling: %s %s (%s)\n",
			   live_autoscaling(r, "AutoScalerType"),
			   live_autoscaling(r, "Mode"),
			   live_autoscaling(r, "Status"));
	if (r->scaling[0])
		buf_printf(&o->details, "karpenter_nodepool: %s (limits %s)\n",
			   r->aws_name, r->scaling);
	if (!strcmp(live_autoscaling(r, "Status"), "Failed"))
		snprintf(o->error, sizeof(o->error), "HyperPod autoscaling: %s",
			 live_autoscaling(r, "FailureMessage"));
	o->applied_rev = r->last_rev;
	if (!t->want)
		return;
	if (matches(r, t->want)) {
		o->applied_rev = t->want->rev;
		if (r->last_rev != t->want->rev) {
			r->last_rev = t->want->rev;
			aws_res_save(a, r);
		}
	}
	o->settled = matches(r, t->want) && o->state == RS_READY;
	if (g && pool_instance_type(t->want->spec, type, sizeof(type)))
		o->hourly_cost_usd = (double)live_int(g, "CurrentCount") *
				     aws_price(t->want->config, type, true);
}

/* ---- making it so ------------------------------------------------------------ */

static json_t *list_of(const char *text)
{
	json_t *out = json_array();
	char *copy = strdup(text), *save = NULL;

	for (char *item = copy ? strtok_r(copy, ", ", &save) : NULL; item;
	     item = strtok_r(NULL, ", ", &save))
		json_array_append_new(out, json_string(item));
	free(copy);
	return out;
}

/* count: the nodes to ask for; Karpenter's own count when autoscaled. */
static json_t *instance_groups(const struct desired *want, int64_t count)
{
	const struct spec *config = want->config;
	char type[AWS_TYPE_LEN] = "";

	pool_instance_type(want->spec, type, sizeof(type));
	return json_pack(
		"[{s:s, s:s, s:I, s:{s:s, s:s}, s:s, s:i}]",
		"InstanceGroupName", GROUP, "InstanceType", type,
		"InstanceCount", (json_int_t)count, "LifeCycleConfig",
		"SourceS3Uri", aws_config(config, "lifecycle_s3_uri", ""),
		"OnCreate",
		aws_config(config, "lifecycle_on_create", DEFAULT_ON_CREATE),
		"ExecutionRole", aws_config(config, "execution_role", ""),
		"ThreadsPerCore", 1);
}

static json_t *autoscaling_mode(const char *mode)
{
	return json_pack("{s:s, s:s}", "Mode", mode, "AutoScalerType",
			 "Karpenter");
}

/*
 * An EKS-orchestrated cluster provisions continuously and recovers nodes
 * itself, which Karpenter autoscaling needs; only then can a pool be
 * switched to autoscaling later without being made again.
 */
static void orchestrate_by_eks(json_t *in, const struct desired *want)
{
	const char *eks = aws_config(want->config, "eks_cluster_arn", NULL);

	if (!eks)
		return;
	json_object_set_new(in, "Orchestrator",
			    json_pack("{s:{s:s}}", "Eks", "ClusterArn", eks));
	json_object_set_new(in, "NodeProvisioningMode",
			    json_string("Continuous"));
	json_object_set_new(in, "NodeRecovery", json_string("Automatic"));
	if (!autoscaled(want->spec))
		return;
	json_object_set_new(
		in, "ClusterRole",
		json_string(aws_config(want->config, "cluster_role", "")));
	json_object_set_new(in, "AutoScaling", autoscaling_mode("Enable"));
}

static int create(struct aws *a, struct aws_res *r, struct target *t,
		  struct plan *p)
{
	const char *subnets = aws_config(t->want->config, "subnets", NULL);
	const char *groups =
		aws_config(t->want->config, "security_groups", NULL);
	bool scaled = autoscaled(t->want->spec);
	char what[96];
	json_t *in;

	snprintf(what, sizeof(what), "cluster/%s", r->aws_name);
	if (aws_res_made(a, r, what) < 0)
		return -EIO;
	/* Karpenter starts an autoscaled group from nothing. */
	in = json_pack("{s:s, s:o, s:o}", "ClusterName", r->aws_name,
		       "InstanceGroups",
		       instance_groups(t->want, scaled ? 0
						       : spec_int(t->want->spec,
								  "nodes", 1)),
		       "Tags", aws_tags(a, r, t->want->rev));
	orchestrate_by_eks(in, t->want);
	if (subnets && groups)
		json_object_set_new(in, "VpcConfig",
				    json_pack("{s:o, s:o}", "SecurityGroupIds",
					      list_of(groups), "Subnets",
					      list_of(subnets)));
	plan_call(p, &aws_sagemaker, "CreateCluster", in, AWS_OK_EXISTS);
	return 0;
}

/* ---- Karpenter's objects in the EKS cluster -------------------------------- */

/*
 * Karpenter's objects, in the order they are deleted: the NodePool first,
 * so Karpenter stops before its node class goes. Each is on the pool's
 * record as MADE+NAME from before it is applied until it is gone.
 */
static const struct karpenter_object {
	const char *made, *path, *get_op, *delete_op;
} karpenter_objects[] = {
	{ "nodepool/", NODE_POOLS, "get NodePool", "delete NodePool" },
	{ "nodeclass/", NODE_CLASSES, "get HyperpodNodeClass",
	  "delete HyperpodNodeClass" },
};

#define KARPENTER_OBJECTS \
	(sizeof(karpenter_objects) / sizeof(karpenter_objects[0]))

static void karpenter_record(const struct aws_res *r, size_t i, char *out,
			     size_t len)
{
	snprintf(out, len, "%s%s", karpenter_objects[i].made, r->aws_name);
}

static bool has_karpenter(const struct aws_res *r)
{
	char what[96];

	for (size_t i = 0; i < KARPENTER_OBJECTS; i++) {
		karpenter_record(r, i, what, sizeof(what));
		if (aws_res_has_made(r, what))
			return true;
	}
	return false;
}

void cluster_forget_karpenter(struct aws *a, struct aws_res *r)
{
	char what[96];

	for (size_t i = 0; i < KARPENTER_OBJECTS; i++) {
		karpenter_record(r, i, what, sizeof(what));
		aws_res_unmade(a, r, what);
	}
	r->scaling[0] = '\0';
	aws_res_save(a, r);
}

/* ENV/pool/NAME, as the owner annotation says it. */
static void resource_of(const struct aws_res *r, char *out, size_t len)
{
	const char *slash = strchr(r->key, '/');

	snprintf(out, len, "%.*s/pool/%s", (int)(slash - r->key), r->key,
		 slash + 1);
}

/* Who made the object: this daemon (label) for this pool (annotation). */
static json_t *managed_metadata(const struct aws *a, const struct aws_res *r)
{
	char resource[160];

	resource_of(r, resource, sizeof(resource));
	return json_pack("{s:s, s:{s:s, s:s}, s:{s:s}}", "name", r->aws_name,
			 "labels", "app.kubernetes.io/managed-by", "infrafs",
			 OWNER_LABEL, a->owner, "annotations",
			 RESOURCE_ANNOTATION, resource);
}

bool cluster_kube_ours(const struct aws *a, const struct aws_res *r,
		       json_t *object, char *why, size_t len)
{
	json_t *meta = json_object_get(object, "metadata");
	json_t *labels = json_object_get(meta, "labels");
	const char *owner =
		json_string_value(json_object_get(labels, OWNER_LABEL));
	const char *by = json_string_value(
		json_object_get(labels, "app.kubernetes.io/managed-by"));
	const char *res = json_string_value(json_object_get(
		json_object_get(meta, "annotations"), RESOURCE_ANNOTATION));
	char mine[160];

	resource_of(r, mine, sizeof(mine));
	/* An earlier infrafs labelled its objects managed-by only. */
	if (!owner && r->legacy_names && by && !strcmp(by, "infrafs"))
		return true;
	if (owner && !strcmp(owner, a->owner) && res && !strcmp(res, mine))
		return true;
	if (!owner)
		snprintf(why, len, "it carries no %s label", OWNER_LABEL);
	else if (strcmp(owner, a->owner))
		snprintf(why, len, "another infrafs made it (%s %.40s)",
			 OWNER_LABEL, owner);
	else
		snprintf(why, len, "it was made for %.100s",
			 res ? res : "another resource");
	return false;
}

static json_t *node_class(const struct aws *a, const struct aws_res *r)
{
	return json_pack("{s:s, s:s, s:o, s:{s:[s]}}", "apiVersion",
			 NODE_CLASS_GROUP "/v1", "kind", "HyperpodNodeClass",
			 "metadata", managed_metadata(a, r), "spec",
			 "instanceGroups", GROUP);
}

static json_t *node_pool(const struct aws *a, const struct aws_res *r,
			 const char *bounds)
{
	const char *eq = strchr(bounds, '=');
	char resource[64];

	snprintf(resource, sizeof(resource), "%.*s", (int)(eq - bounds),
		 bounds);
	return json_pack("{s:s, s:s, s:o, s:{s:{s:{s:{s:s, s:s, s:s}, s:s,"
			 " s:[{s:s, s:s}]}}, s:{s:s}}}",
			 "apiVersion", "karpenter.sh/v1", "kind", "NodePool",
			 "metadata", managed_metadata(a, r), "spec", "template",
			 "spec", "nodeClassRef", "group", NODE_CLASS_GROUP,
			 "kind", "HyperpodNodeClass", "name", r->aws_name,
			 "expireAfter", "Never", "requirements", "key",
			 "node.kubernetes.io/instance-type", "operator",
			 "Exists", "limits", resource, eq + 1);
}

static struct planned *plan_kube(struct aws_res *r, struct plan *p,
				 const char *op, const char *method,
				 const char *path, json_t *input, unsigned ok)
{
	struct planned *c =
		plan_rest(p, &aws_kubernetes, op, method, path, input, ok);

	if (c)
		c->kube = &r->kube;
	return c;
}

/*
 * The Kubernetes API's address and CA come from EKS, asked once; until
 * then the step's only call is that question.
 */
static bool plan_kube_api(struct aws_res *r, struct plan *p)
{
	char path[160];
	struct planned *c;

	if (r->kube.endpoint[0])
		return true;
	snprintf(path, sizeof(path), "/clusters/%s", r->eks);
	c = plan_rest(p, &aws_eks, "DescribeCluster", "GET", path, NULL,
		      AWS_OK_MISSING);
	if (c)
		c->post = POST_KUBE_API;
	return false;
}

/*
 * Reads object i before it is applied or deleted: one of the same name
 * that is not this pool's stops the step, leaves the record and stays
 * (a missing one is fine; skip: the calls to leave out then).
 */
static bool plan_kube_check(struct aws_res *r, struct plan *p, size_t i,
			    unsigned skip)
{
	char path[200], what[96];
	struct planned *c;

	karpenter_record(r, i, what, sizeof(what));
	snprintf(path, sizeof(path), "%s%s", karpenter_objects[i].path,
		 r->aws_name);
	c = plan_kube(r, p, karpenter_objects[i].get_op, "GET", path, NULL,
		      AWS_OK_MISSING);
	if (!c)
		return false;
	c->post = POST_KUBE_OWNED;
	c->skip_if_missing = skip;
	snprintf(c->arg, sizeof(c->arg), "%s", what);
	return true;
}

static int apply_karpenter(struct aws *a, struct aws_res *r,
			   const struct desired *want, struct plan *p)
{
	char bounds[96], path[200], what[96];
	struct planned *c;

	karpenter_bounds(want->spec, bounds, sizeof(bounds));
	if (!strcmp(r->scaling, bounds) || !plan_kube_api(r, p))
		return 0;
	for (size_t i = 0; i < KARPENTER_OBJECTS; i++) {
		karpenter_record(r, i, what, sizeof(what));
		if (aws_res_made(a, r, what) < 0)
			return -EIO;
		plan_kube_check(r, p, i, 0);
	}
	snprintf(path, sizeof(path), NODE_CLASSES "%s" APPLY, r->aws_name);
	plan_kube(r, p, "apply HyperpodNodeClass", "PATCH", path,
		  node_class(a, r), 0);
	snprintf(path, sizeof(path), NODE_POOLS "%s" APPLY, r->aws_name);
	c = plan_kube(r, p, "apply NodePool", "PATCH", path,
		      node_pool(a, r, bounds), 0);
	if (c) {
		c->post = POST_SET_SCALING;
		snprintf(c->arg, sizeof(c->arg), "%s", bounds);
	}
	return 0;
}

static void delete_karpenter(struct aws_res *r, struct plan *p)
{
	char what[96], path[200];
	struct planned *c;

	if (!plan_kube_api(r, p))
		return;
	for (size_t i = 0; i < KARPENTER_OBJECTS; i++) {
		karpenter_record(r, i, what, sizeof(what));
		if (!aws_res_has_made(r, what))
			continue;
		if (!plan_kube_check(r, p, i, 1))
			return;
		snprintf(path, sizeof(path), "%s%s", karpenter_objects[i].path,
			 r->aws_name);
		c = plan_kube(r, p, karpenter_objects[i].delete_op, "DELETE",
			      path, NULL, AWS_OK_MISSING);
		if (!c)
			return;
		c->post = POST_UNMADE;
		snprintf(c->arg, sizeof(c->arg), "%s", what);
	}
}

static int destroy(struct aws *a, struct aws_res *r, struct plan *p)
{
	if (has_karpenter(r)) {
		delete_karpenter(r, p);
		return 0;
	}
	if (!r->live) {
		json_array_clear(r->made);
		return aws_res_save(a, r);
	}
	if (strcmp(live_text(r->live, "ClusterStatus"), "Deleting"))
		plan_call(p, &aws_sagemaker, "DeleteCluster",
			  cluster_describe_input(r), AWS_OK_MISSING);
	return 0;
}

/*
 * Switching autoscaling on: HyperPod learns the role it scales with (it
 * cannot change while autoscaling is on) and Karpenter takes the group
 * from zero; already on, the group keeps Karpenter's count.
 */
static void update_autoscaled(struct aws_res *r, const struct desired *want,
			      struct plan *p)
{
	bool on = !strcmp(live_autoscaling(r, "Mode"), "Enable");
	json_t *g = live_group(r);
	json_t *in = json_pack(
		"{s:s, s:o, s:o}", "ClusterName", r->aws_name, "InstanceGroups",
		instance_groups(want, on && g ? live_int(g, "TargetCount") : 0),
		"AutoScaling", autoscaling_mode("Enable"));

	if (!on)
		json_object_set_new(in, "ClusterRole",
				    json_string(aws_config(
					    want->config, "cluster_role", "")));
	plan_call(p, &aws_sagemaker, "UpdateCluster", in, 0);
}

static int step_autoscaled(struct aws *a, struct aws_res *r, struct target *t,
			   struct plan *p)
{
	const char *eks = aws_config(t->want->config, "eks_cluster_arn", "");
	json_t *g = live_group(r);
	char type[AWS_TYPE_LEN] = "";

	if (strcmp(live_eks_arn(r), eks)) {
		snprintf(t->obs.error, sizeof(t->obs.error),
			 "min_nodes/max_nodes: HyperPod autoscaling needs the "
			 "cluster orchestrated by %s, and this pool's cluster "
			 "was made %s%s; HyperPod cannot change that (rmdir "
			 "the pool and make it again)",
			 eks, live_eks_arn(r)[0] ? "for " : "without EKS",
			 live_eks_arn(r));
		return -EINVAL;
	}
	snprintf(r->eks, sizeof(r->eks), "%s", aws_eks_cluster_name(eks));
	pool_instance_type(t->want->spec, type, sizeof(type));
	if (!g || strcmp(live_autoscaling(r, "Mode"), "Enable") ||
	    strcmp(live_text(g, "InstanceType"), type))
		update_autoscaled(r, t->want, p);
	return apply_karpenter(a, r, t->want, p);
}

/* Karpenter goes first, so nothing scales the group behind our back. */
static int step_fixed(struct aws_res *r, struct target *t, struct plan *p)
{
	struct planned *c;
	json_t *in;

	if (has_karpenter(r)) {
		delete_karpenter(r, p);
		return 0;
	}
	if (matches(r, t->want))
		return 0;
	in = json_pack(
		"{s:s, s:o}", "ClusterName", r->aws_name, "InstanceGroups",
		instance_groups(t->want, spec_int(t->want->spec, "nodes", 1)));
	if (!strcmp(live_autoscaling(r, "Mode"), "Enable"))
		json_object_set_new(in, "AutoScaling",
				    autoscaling_mode("Disable"));
	c = plan_call(p, &aws_sagemaker, "UpdateCluster", in, 0);
	if (c)
		c->post = POST_CLEAR_SCALING;
	return 0;
}

int cluster_step(struct aws *a, struct aws_res *r, struct target *t,
		 struct plan *p)
{
	const char *status = live_text(r->live, "ClusterStatus");

	if (!t->want)
		return destroy(a, r, p);
	if (!r->live)
		return create(a, r, t, p);
	if (aws_status_in_progress(status))
		return 0;
	if (!strcmp(status, "Failed")) {
		snprintf(t->obs.error, sizeof(t->obs.error),
			 "HyperPod: %s (rmdir the pool and make it again)",
			 live_text(r->live, "FailureMessage"));
		return -EIO;
	}
	if (autoscaled(t->want->spec))
		return step_autoscaled(a, r, t, p);
	return step_fixed(r, t, p);
}

/* ---- commit-time checks and cost ------------------------------------------- */

/* What HyperPod's Karpenter autoscaling needs, said before any call. */
static int autoscaling_check(const struct desired *want, char *msg, size_t len)
{
	const char *eks = aws_config(want->config, "eks_cluster_arn", NULL);
	char accelerator[64];

	if (!eks || !aws_eks_cluster_name(eks)) {
		snprintf(msg, len,
			 "config: aws.eks_cluster_arn is required for an "
			 "autoscaled pool (min_nodes below max_nodes): "
			 "HyperPod autoscales only EKS-orchestrated clusters, "
			 "as arn:aws:eks:REGION:ACCOUNT:cluster/NAME");
		return -EINVAL;
	}
	if (!aws_config(want->config, "cluster_role", NULL)) {
		snprintf(msg, len,
			 "config: aws.cluster_role is required for an "
			 "autoscaled pool (the IAM role HyperPod assumes to "
			 "add and remove nodes)");
		return -EINVAL;
	}
	if (spec_int(want->spec, "min_nodes", 1) != 0) {
		snprintf(msg, len,
			 "min_nodes: must be 0 for an autoscaled aws pool "
			 "(HyperPod's Karpenter scales an idle pool to zero "
			 "and keeps no floor)");
		return -EINVAL;
	}
	spec_text(want->spec, "accelerator", accelerator, sizeof(accelerator));
	if (strncmp(accelerator, "nvidia-", 7)) {
		snprintf(msg, len,
			 "max_nodes: the aws provider bounds an autoscaled "
			 "pool by its GPUs (a Karpenter limit on %s), and "
			 "accelerator %s has none",
			 GPU_RESOURCE, accelerator);
		return -EINVAL;
	}
	return 0;
}

int cluster_check(const struct desired *want, char *msg, size_t len)
{
	const struct spec *s = want->spec;
	char text[256];

	if (!aws_config(want->config, "lifecycle_s3_uri", NULL)) {
		snprintf(msg, len,
			 "config: aws.lifecycle_s3_uri is required for pools "
			 "(the s3:// folder holding the HyperPod lifecycle "
			 "scripts)");
		return -EINVAL;
	}
	spec_text(s, "capacity", text, sizeof(text));
	if (!strcmp(text, "spot")) {
		snprintf(msg, len,
			 "capacity: spot is not supported by the "
			 "aws provider (HyperPod has no spot "
			 "capacity)");
		return -EINVAL;
	}
	if (spec_field_set(s, "zones")) {
		snprintf(msg, len,
			 "zones: not supported by the aws provider; "
			 "place nodes with aws.subnets in config");
		return -EINVAL;
	}
	if (!pool_instance_type(s, text, sizeof(text))) {
		snprintf(msg, len,
			 "accelerators_per_node: no HyperPod instance type "
			 "offers that many of that accelerator; set "
			 "instance_type");
		return -EINVAL;
	}
	return autoscaled(s) ? autoscaling_check(want, msg, len) : 0;
}

double cluster_cost(const struct desired *want)
{
	char type[AWS_TYPE_LEN];

	if (!pool_instance_type(want->spec, type, sizeof(type)))
		return 0;
	/* An autoscaled pool may grow to max_nodes; the policy counts that. */
	return (double)spec_int(want->spec, "max_nodes",
				spec_int(want->spec, "nodes", 1)) *
	       aws_price(want->config, type, true);
}
