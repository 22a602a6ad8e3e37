// SPDX-License-Identifier: MIT
/*
 * Pools as SageMaker HyperPod clusters, one instance group per pool.
 *
 * A cluster's name is fixed by the pool's, so a retry or a restart finds
 * it with DescribeCluster before it would create one; a create that
 * meets "already exists" is done. Changes of size or instance type are
 * UpdateCluster with the whole group, as the API wants it.
 */
#include "res.h"

#include "store/policy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define GROUP "workers"
#define DEFAULT_ON_CREATE "on_create.sh"

static const char *pool_instance_type(const struct spec *s, char *out,
				      size_t len)
{
	return aws_instance_type(s, "accelerators_per_node", true, out, len);
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

static bool matches(const struct aws_res *r, const struct desired *want)
{
	json_t *g = live_group(r);
	char type[64];

	if (!g || !pool_instance_type(want->spec, type, sizeof(type)))
		return false;
	return !strcmp(live_text(g, "InstanceType"), type) &&
	       live_int(g, "TargetCount") == spec_int(want->spec, "nodes", 1);
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
	char type[64] = "";

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
		buf_printf(&o->details, "failure_message: %s\n", failure);
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
	char copy[1024], *save = NULL;

	snprintf(copy, sizeof(copy), "%s", text);
	for (char *item = strtok_r(copy, ", ", &save); item;
	     item = strtok_r(NULL, ", ", &save))
		json_array_append_new(out, json_string(item));
	return out;
}

static json_t *instance_groups(const struct desired *want)
{
	const struct spec *config = want->config;
	char type[64] = "";

	pool_instance_type(want->spec, type, sizeof(type));
	return json_pack(
		"[{s:s, s:s, s:I, s:{s:s, s:s}, s:s, s:i}]",
		"InstanceGroupName", GROUP, "InstanceType", type,
		"InstanceCount", (json_int_t)spec_int(want->spec, "nodes", 1),
		"LifeCycleConfig", "SourceS3Uri",
		aws_config(config, "lifecycle_s3_uri", ""), "OnCreate",
		aws_config(config, "lifecycle_on_create", DEFAULT_ON_CREATE),
		"ExecutionRole", aws_config(config, "execution_role", ""),
		"ThreadsPerCore", 1);
}

static int create(struct aws *a, struct aws_res *r, struct target *t,
		  struct plan *p)
{
	const char *subnets = aws_config(t->want->config, "subnets", NULL);
	const char *groups =
		aws_config(t->want->config, "security_groups", NULL);
	char what[96];
	json_t *in;

	snprintf(what, sizeof(what), "cluster/%s", r->aws_name);
	if (aws_res_made(a, r, what) < 0)
		return -EIO;
	in = json_pack("{s:s, s:o, s:o}", "ClusterName", r->aws_name,
		       "InstanceGroups", instance_groups(t->want), "Tags",
		       aws_tags(r, t->want->rev));
	if (subnets && groups)
		json_object_set_new(in, "VpcConfig",
				    json_pack("{s:o, s:o}", "SecurityGroupIds",
					      list_of(groups), "Subnets",
					      list_of(subnets)));
	plan_call(p, &aws_sagemaker, "CreateCluster", in, AWS_OK_EXISTS);
	return 0;
}

static int destroy(struct aws *a, struct aws_res *r, struct plan *p)
{
	if (!r->live) {
		json_array_clear(r->made);
		return aws_res_save(a, r);
	}
	if (strcmp(live_text(r->live, "ClusterStatus"), "Deleting"))
		plan_call(p, &aws_sagemaker, "DeleteCluster",
			  cluster_describe_input(r), AWS_OK_MISSING);
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
	if (!matches(r, t->want))
		plan_call(p, &aws_sagemaker, "UpdateCluster",
			  json_pack("{s:s, s:o}", "ClusterName", r->aws_name,
				    "InstanceGroups", instance_groups(t->want)),
			  0);
	return 0;
}

/* ---- commit-time checks and cost ------------------------------------------- */

int cluster_check(const struct desired *want, char *msg, size_t len)
{
	const struct spec *s = want->spec;
	int64_t nodes = spec_int(s, "nodes", 1);
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
	if (spec_int(s, "min_nodes", nodes) != nodes ||
	    spec_int(s, "max_nodes", nodes) != nodes) {
		snprintf(msg, len,
			 "%s: the aws provider sizes HyperPod pools by nodes; "
			 "min_nodes and max_nodes must equal it",
			 spec_int(s, "min_nodes", nodes) != nodes
				 ? "min_nodes"
				 : "max_nodes");
		return -EINVAL;
	}
	if (!pool_instance_type(s, text, sizeof(text))) {
		snprintf(msg, len,
			 "accelerators_per_node: no HyperPod instance type "
			 "offers that many of that accelerator; set "
			 "instance_type");
		return -EINVAL;
	}
	return 0;
}

double cluster_cost(const struct desired *want)
{
	char type[64];

	if (!pool_instance_type(want->spec, type, sizeof(type)))
		return 0;
	return (double)spec_int(want->spec, "nodes", 1) *
	       aws_price(want->config, type, true);
}
