// SPDX-License-Identifier: MIT
/*
 * Endpoints as SageMaker real-time endpoints.
 *
 * What an endpoint runs is a model (image, artifacts, environment) inside
 * an endpoint config (instance type, count); SageMaker never changes
 * either in place, so a change to what runs makes a new pair named after
 * the revision that asked for it, and UpdateEndpoint moves the endpoint
 * over. A change of replicas alone keeps the pair and calls
 * UpdateEndpointWeightsAndCapacities. Old pairs are deleted once the
 * endpoint is InService on the new one; rmdir deletes the endpoint, then
 * every pair made for it.
 *
 * Each step does the next thing the live endpoint lacks, and every create
 * reads "already existing" as done: a crash or a retry between any two
 * calls ends with one endpoint, never two.
 */
#include "res.h"

#include "store/policy.h"
#include "util/text.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define VARIANT "AllTraffic"
#define POLICY_NAME "infrafs-invocations-per-replica"
#define SCALABLE_DIMENSION "sagemaker:variant:DesiredInstanceCount"

/* What the declared spec asks SageMaker for. */
struct ep_want {
	char instance_type[AWS_TYPE_LEN];
	int64_t replicas, min, max;
	bool scaling;
	double target;
	char fp[17]; /* what the model and config are made from */
	uint64_t config_rev; /* the revision naming them */
	char model_name[64], config_name[64];
	/* The same as the record lists them: "model/NAME" and
	 * "endpoint-config/NAME". */
	char model_made[80], config_made[80];
	char scaling_sig[96]; /* "min:max:target", "" without autoscaling */
};

const char *endpoint_instance_type(const struct spec *s, char *out, size_t len)
{
	return aws_instance_type(s, "accelerators", false, out, len);
}

static uint64_t hash_add(uint64_t h, const char *s)
{
	size_t n = strlen(s) + 1; /* the NUL keeps "ab","c" from "a","bc" */
	uint64_t piece = map_hash(s, n);

	return (h ^ piece) * 0x100000001b3ULL + piece;
}

static void fingerprint(const struct desired *want, const char *type,
			char out[17])
{
	const struct spec_value *env = spec_field(want->spec, "env");
	uint64_t h = 0;

	h = hash_add(h, spec_str(want->spec, "image", ""));
	h = hash_add(h, spec_str(want->spec, "model", ""));
	h = hash_add(h, type);
	h = hash_add(h, aws_config(want->config, "execution_role", ""));
	for (size_t i = 0; env && i < env->npairs; i++) {
		h = hash_add(h, env->pairs[i].key);
		h = hash_add(h, env->pairs[i].value);
	}
	snprintf(out, 17, "%016" PRIx64, h);
}

static void want_of(const struct aws_res *r, const struct desired *want,
		    struct ep_want *w)
{
	char suffix[32];

	memset(w, 0, sizeof(*w));
	if (!endpoint_instance_type(want->spec, w->instance_type,
				    sizeof(w->instance_type)))
		snprintf(w->instance_type, sizeof(w->instance_type),
			 "ml.m5.xlarge");
	w->replicas = spec_int(want->spec, "replicas", 1);
	w->min = spec_int(want->spec, "min_replicas", w->replicas);
	w->max = spec_int(want->spec, "max_replicas", w->replicas);
	w->scaling = w->min < w->max;
	if (w->scaling) {
		char target[32];

		spec_text(want->spec, "scale_target", target, sizeof(target));
		w->target = strtod(target, NULL);
		snprintf(w->scaling_sig, sizeof(w->scaling_sig),
			 "%" PRId64 ":%" PRId64 ":%g", w->min, w->max,
			 w->target);
	}
	fingerprint(want, w->instance_type, w->fp);
	w->config_rev = strcmp(w->fp, r->config_fp) || !r->config_rev
				? want->rev
				: r->config_rev;
	snprintf(suffix, sizeof(suffix), "-r%" PRIu64, w->config_rev);
	aws_resource_name(r, suffix, w->model_name, sizeof(w->model_name));
	snprintf(w->config_name, sizeof(w->config_name), "%s", w->model_name);
	if (r->adopted_config[0] && !strcmp(w->fp, r->config_fp)) {
		snprintf(w->model_name, sizeof(w->model_name), "%s",
			 r->adopted_model);
		snprintf(w->config_name, sizeof(w->config_name), "%s",
			 r->adopted_config);
	}
	snprintf(w->model_made, sizeof(w->model_made), "model/%s",
		 w->model_name);
	snprintf(w->config_made, sizeof(w->config_made), "endpoint-config/%s",
		 w->config_name);
}

void endpoint_adopt_fingerprint(struct aws_res *r, const struct desired *want)
{
	char type[AWS_TYPE_LEN];

	if (!endpoint_instance_type(want->spec, type, sizeof(type)))
		snprintf(type, sizeof(type), "ml.m5.xlarge");
	fingerprint(want, type, r->config_fp);
}

/* Whether a record entry is the model or config the wanted spec uses. */
static bool in_use(const struct ep_want *w, const char *made)
{
	return !strcmp(made, w->model_made) || !strcmp(made, w->config_made);
}

/* ---- reading what runs ------------------------------------------------- */

json_t *endpoint_describe_input(const struct aws_res *r)
{
	return json_pack("{s:s}", "EndpointName", r->aws_name);
}

static json_t *variant_of(const struct aws_res *r)
{
	return json_array_get(json_object_get(r->live, "ProductionVariants"),
			      0);
}

static int64_t live_count(const struct aws_res *r, const char *field)
{
	return json_integer_value(json_object_get(variant_of(r), field));
}

static int64_t live_desired(const struct aws_res *r)
{
	json_t *d = json_object_get(variant_of(r), "DesiredInstanceCount");

	return d ? json_integer_value(d)
		 : live_count(r, "CurrentInstanceCount");
}

static const char *live_text(const struct aws_res *r, const char *field)
{
	return json_string_value(json_object_get(r->live, field)) ?: "";
}

static bool counts_match(const struct aws_res *r, const struct ep_want *w)
{
	int64_t desired = live_desired(r);

	if (w->scaling)
		return desired >= w->min && desired <= w->max;
	return desired == w->replicas;
}

static bool runs_config(const struct aws_res *r, const struct ep_want *w)
{
	return !strcmp(live_text(r, "EndpointConfigName"), w->config_name);
}

static bool matches(const struct aws_res *r, const struct ep_want *w)
{
	return runs_config(r, w) && counts_match(r, w) &&
	       !strcmp(r->scaling, w->scaling_sig);
}

/* Only the model and config in use are left of earlier revisions. */
static bool tidy(const struct aws_res *r, const struct ep_want *w)
{
	for (size_t i = 0; i < json_array_size(r->made); i++) {
		if (!in_use(w, json_string_value(json_array_get(r->made, i))))
			return false;
	}
	return true;
}

static enum res_state state_of(const char *status, int64_t current,
			       int64_t desired)
{
	if (!strcmp(status, "Creating"))
		return RS_CREATING;
	if (!strcmp(status, "Deleting"))
		return RS_DELETING;
	if (!strcmp(status, "Failed") ||
	    !strcmp(status, "UpdateRollbackFailed"))
		return RS_FAILED;
	if (!strcmp(status, "OutOfService"))
		return RS_DEGRADED;
	if (!strcmp(status, "InService"))
		return current < desired ? RS_DEGRADED : RS_READY;
	return RS_UPDATING; /* Updating, SystemUpdating, RollingBack */
}

static void details(const struct aws_res *r, const struct ep_want *w,
		    struct buf *out)
{
	const char *reason = live_text(r, "FailureReason");

	buf_printf(out, "sagemaker_endpoint: %s\n", r->aws_name);
	buf_printf(out, "arn: %s\n", live_text(r, "EndpointArn"));
	/* Where clients send requests (SageMaker Runtime, signed). */
	if (r->settings.region[0])
		buf_printf(out,
			   "invoke_url: https://runtime.sagemaker.%s."
			   "amazonaws.com/endpoints/%s/invocations\n",
			   r->settings.region, r->aws_name);
	buf_printf(out, "sagemaker_status: %s\n",
		   live_text(r, "EndpointStatus"));
	buf_printf(out, "endpoint_config: %s\n",
		   live_text(r, "EndpointConfigName"));
	if (w)
		buf_printf(out, "instance_type: %s\n", w->instance_type);
	buf_printf(out, "replicas: %" PRId64 " of %" PRId64 "\n",
		   live_count(r, "CurrentInstanceCount"), live_desired(r));
	if (r->scaling[0])
		buf_printf(out,
			   "autoscaling: %s (min:max:invocations per "
			   "replica)\n",
			   r->scaling);
	if (reason[0])
		text_line(out, "failure_reason", reason);
}

/* A count changed on the console or by hand, not by infrafs. */
static void note_drift(const struct aws_res *r, const struct ep_want *w,
		       struct target *t)
{
	if (r->last_rev != t->want->rev || w->scaling || !runs_config(r, w) ||
	    counts_match(r, w) ||
	    strcmp(live_text(r, "EndpointStatus"), "InService") != 0)
		return;
	snprintf(t->obs.drift, sizeof(t->obs.drift),
		 "replicas: %" PRId64 " -> %" PRId64 " outside infrafs",
		 w->replicas, live_desired(r));
}

void endpoint_fill(struct aws *a, struct aws_res *r, struct target *t)
{
	struct observation *o = &t->obs;
	struct ep_want w;
	int64_t current, desired;

	if (!r->live) {
		o->exists = json_array_size(r->made) > 0;
		o->state = t->want ? RS_CREATING : RS_DELETING;
		if (o->exists)
			buf_printf(&o->details,
				   "sagemaker_endpoint: %s (not made yet)\n",
				   r->aws_name);
		return;
	}
	o->exists = true;
	current = live_count(r, "CurrentInstanceCount");
	desired = live_desired(r);
	o->state = state_of(live_text(r, "EndpointStatus"), current, desired);
	if (o->state == RS_FAILED)
		snprintf(o->error, sizeof(o->error), "SageMaker: %s",
			 live_text(r, "FailureReason"));
	o->applied_rev = r->last_rev;
	if (!t->want) {
		details(r, NULL, &o->details);
		return;
	}
	want_of(r, t->want, &w);
	details(r, &w, &o->details);
	if (matches(r, &w)) {
		o->applied_rev = t->want->rev;
		if (r->last_rev != t->want->rev) {
			r->last_rev = t->want->rev;
			aws_res_save(a, r);
		}
	}
	o->settled = matches(r, &w) && o->state == RS_READY && tidy(r, &w);
	note_drift(r, &w, t);
	o->hourly_cost_usd = (double)(current > 0 ? current : desired) *
			     aws_price(t->want->config, w.instance_type, false);
}

/* ---- making it so ---------------------------------------------------------- */

static json_t *environment_of(const struct spec *s)
{
	const struct spec_value *env = spec_field(s, "env");
	json_t *out = json_object();
	const char *model = spec_str(s, "model", "");

	/* Hugging Face's serving containers read the model id from here. */
	if (!strncmp(model, "hf://", 5))
		json_object_set_new(out, "HF_MODEL_ID", json_string(model + 5));
	for (size_t i = 0; env && i < env->npairs; i++)
		json_object_set_new(out, env->pairs[i].key,
				    json_string(env->pairs[i].value));
	return out;
}

/* A create that meets the name reads the tags before counting it made. */
static void verify_existing(struct planned *c, const char *what)
{
	if (!c)
		return;
	c->verify_existing = true;
	snprintf(c->arg, sizeof(c->arg), "%s", what);
}

static int create_model(struct aws *a, struct aws_res *r, struct target *t,
			const struct ep_want *w, struct plan *p)
{
	const struct spec *s = t->want->spec;
	const char *image = spec_str(s, "image", "");
	const char *model = spec_str(s, "model", "");
	json_t *container;

	if (aws_res_made(a, r, w->model_made) < 0)
		return -EIO;
	container = json_pack("{s:s, s:o}", "Image", image, "Environment",
			      environment_of(s));
	if (!strncmp(model, "s3://", 5))
		json_object_set_new(container, "ModelDataUrl",
				    json_string(model));
	verify_existing(
		plan_call(p, &aws_sagemaker, "CreateModel",
			  json_pack("{s:s, s:s, s:o, s:o}", "ModelName",
				    w->model_name, "ExecutionRoleArn",
				    aws_config(t->want->config,
					       "execution_role", ""),
				    "PrimaryContainer", container, "Tags",
				    aws_tags(a, r, t->want->rev)),
			  AWS_OK_EXISTS),
		w->model_made);
	return 0;
}

static int create_config(struct aws *a, struct aws_res *r, struct target *t,
			 const struct ep_want *w, struct plan *p)
{
	int64_t initial = w->replicas < w->min	 ? w->min
			  : w->replicas > w->max ? w->max
						 : w->replicas;

	if (aws_res_made(a, r, w->config_made) < 0)
		return -EIO;
	verify_existing(
		plan_call(p, &aws_sagemaker, "CreateEndpointConfig",
			  json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:f}], s:o}",
				    "EndpointConfigName", w->config_name,
				    "ProductionVariants", "VariantName",
				    VARIANT, "ModelName", w->model_name,
				    "InitialInstanceCount", (json_int_t)initial,
				    "InstanceType", w->instance_type,
				    "InitialVariantWeight", 1.0, "Tags",
				    aws_tags(a, r, t->want->rev)),
			  AWS_OK_EXISTS),
		w->config_made);
	return 0;
}

/*
 * Model and config for what is wanted, then the endpoint onto them. Every
 * name is in the record before its create goes out.
 */
static int move_to_config(struct aws *a, struct aws_res *r, struct target *t,
			  const struct ep_want *w, struct plan *p)
{
	if (strcmp(r->config_fp, w->fp) || r->config_rev != w->config_rev) {
		/* What it was adopted on is left as it was found. */
		if (strcmp(r->config_fp, w->fp))
			r->adopted_model[0] = r->adopted_config[0] = '\0';
		snprintf(r->config_fp, sizeof(r->config_fp), "%s", w->fp);
		r->config_rev = w->config_rev;
		if (aws_res_save(a, r) < 0)
			return -EIO;
	}
	if (create_model(a, r, t, w, p) < 0 || create_config(a, r, t, w, p) < 0)
		return -EIO;
	if (!r->live)
		plan_call(p, &aws_sagemaker, "CreateEndpoint",
			  json_pack("{s:s, s:s, s:o}", "EndpointName",
				    r->aws_name, "EndpointConfigName",
				    w->config_name, "Tags",
				    aws_tags(a, r, t->want->rev)),
			  AWS_OK_EXISTS);
	else
		plan_call(p, &aws_sagemaker, "UpdateEndpoint",
			  json_pack("{s:s, s:s}", "EndpointName", r->aws_name,
				    "EndpointConfigName", w->config_name),
			  0);
	return 0;
}

static json_t *scalable_target(const struct aws_res *r)
{
	char id[128];

	snprintf(id, sizeof(id), "endpoint/%s/variant/%s", r->aws_name,
		 VARIANT);
	return json_pack("{s:s, s:s, s:s}", "ServiceNamespace", "sagemaker",
			 "ResourceId", id, "ScalableDimension",
			 SCALABLE_DIMENSION);
}

/* The target tracking policy's name: infrafs's own, or the one an
 * imported endpoint came with. */
static const char *policy_name(const struct aws_res *r)
{
	return r->adopted_policy[0] ? r->adopted_policy : POLICY_NAME;
}

static void register_scaling(struct aws_res *r, const struct ep_want *w,
			     struct plan *p)
{
	json_t *reg = scalable_target(r), *policy = scalable_target(r);
	struct planned *last;

	json_object_set_new(reg, "MinCapacity", json_integer(w->min));
	json_object_set_new(reg, "MaxCapacity", json_integer(w->max));
	plan_call(p, &aws_autoscaling, "RegisterScalableTarget", reg, 0);
	json_object_set_new(policy, "PolicyName", json_string(policy_name(r)));
	json_object_set_new(policy, "PolicyType",
			    json_string("TargetTrackingScaling"));
	json_object_set_new(
		policy, "TargetTrackingScalingPolicyConfiguration",
		json_pack("{s:f, s:{s:s}}", "TargetValue", w->target,
			  "PredefinedMetricSpecification",
			  "PredefinedMetricType",
			  "SageMakerVariantInvocationsPerInstance"));
	last = plan_call(p, &aws_autoscaling, "PutScalingPolicy", policy, 0);
	if (last) {
		last->post = POST_SET_SCALING;
		snprintf(last->arg, sizeof(last->arg), "%s", w->scaling_sig);
	}
}

static void remove_scaling(struct aws_res *r, struct plan *p)
{
	json_t *policy = scalable_target(r);
	struct planned *last;

	json_object_set_new(policy, "PolicyName", json_string(policy_name(r)));
	plan_call(p, &aws_autoscaling, "DeleteScalingPolicy", policy,
		  AWS_OK_MISSING);
	last = plan_call(p, &aws_autoscaling, "DeregisterScalableTarget",
			 scalable_target(r), AWS_OK_MISSING);
	if (last)
		last->post = POST_CLEAR_SCALING;
}

static void set_count(struct aws_res *r, const struct ep_want *w,
		      struct plan *p)
{
	plan_call(p, &aws_sagemaker, "UpdateEndpointWeightsAndCapacities",
		  json_pack("{s:s, s:[{s:s, s:I}]}", "EndpointName",
			    r->aws_name, "DesiredWeightsAndCapacities",
			    "VariantName", VARIANT, "DesiredInstanceCount",
			    (json_int_t)w->replicas),
		  0);
}

/* Models and configs of earlier revisions, once nothing uses them. */
static void delete_old(struct aws_res *r, const struct ep_want *w,
		       struct plan *p)
{
	for (size_t i = 0; i < json_array_size(r->made); i++) {
		const char *m = json_string_value(json_array_get(r->made, i));

		if (!in_use(w, m))
			plan_owned_delete(p, m);
	}
}

static int destroy(struct aws_res *r, struct plan *p)
{
	if (r->scaling[0]) {
		remove_scaling(r, p);
		return 0;
	}
	if (r->live) {
		if (strcmp(live_text(r, "EndpointStatus"), "Deleting"))
			plan_call(p, &aws_sagemaker, "DeleteEndpoint",
				  endpoint_describe_input(r), AWS_OK_MISSING);
		return 0;
	}
	for (size_t i = 0; i < json_array_size(r->made); i++)
		plan_owned_delete(
			p, json_string_value(json_array_get(r->made, i)));
	return 0;
}

int endpoint_step(struct aws *a, struct aws_res *r, struct target *t,
		  struct plan *p)
{
	const char *status = live_text(r, "EndpointStatus");
	struct ep_want w;

	if (!t->want)
		return destroy(r, p);
	if (r->live && aws_status_in_progress(status))
		return 0; /* SageMaker is at it; the next look tells */
	want_of(r, t->want, &w);
	if (r->live && !strcmp(status, "Failed")) {
		if (runs_config(r, &w)) {
			snprintf(t->obs.error, sizeof(t->obs.error),
				 "SageMaker: %s (change the spec to try again)",
				 live_text(r, "FailureReason"));
			return -EIO;
		}
		/* A failed endpoint cannot be updated: make it anew. */
		plan_call(p, &aws_sagemaker, "DeleteEndpoint",
			  endpoint_describe_input(r), AWS_OK_MISSING);
		return 0;
	}
	if (!r->live || !runs_config(r, &w))
		return move_to_config(a, r, t, &w, p);
	if (w.scaling && strcmp(r->scaling, w.scaling_sig))
		register_scaling(r, &w, p);
	else if (!w.scaling && r->scaling[0])
		remove_scaling(r, p);
	else if (!counts_match(r, &w))
		set_count(r, &w, p);
	else
		delete_old(r, &w, p);
	return 0;
}

/* ---- commit-time checks and cost ----------------------------------------- */

static int refuse(char *msg, size_t len, const char *field, const char *why)
{
	snprintf(msg, len, "%s: %s", field, why);
	return -EINVAL;
}

static int check_env(const struct spec *s, char *msg, size_t len)
{
	const struct spec_value *env = spec_field(s, "env");

	for (size_t i = 0; env && i < env->npairs; i++) {
		if (!strncmp(env->pairs[i].value, "secret:", 7)) {
			snprintf(
				msg, len,
				"env.%s: secret values are not passed by the "
				"aws provider (DescribeModel would show them); "
				"read them from AWS Secrets Manager in the "
				"container",
				env->pairs[i].key);
			return -EINVAL;
		}
	}
	return 0;
}

static int check_scaling(const struct spec *s, char *msg, size_t len)
{
	char metric[64];
	int64_t replicas = spec_int(s, "replicas", 1);
	int64_t min = spec_int(s, "min_replicas", replicas);
	int64_t max = spec_int(s, "max_replicas", replicas);

	if (replicas < 1 || min < 1)
		return refuse(msg, len,
			      replicas < 1 ? "replicas" : "min_replicas",
			      "a SageMaker real-time endpoint keeps at least "
			      "1 instance; rmdir the endpoint to remove it");
	spec_text(s, "scale_metric", metric, sizeof(metric));
	if (metric[0] && strcmp(metric, "invocations_per_replica"))
		return refuse(msg, len, "scale_metric",
			      "the aws provider scales on "
			      "invocations_per_replica (SageMaker's "
			      "SageMakerVariantInvocationsPerInstance)");
	if (min < max && (!metric[0] || !spec_field_set(s, "scale_target")))
		return refuse(msg, len, "scale_metric",
			      "min_replicas < max_replicas needs scale_metric "
			      "= invocations_per_replica and scale_target");
	return 0;
}

int endpoint_check(const struct desired *want, char *msg, size_t len)
{
	const struct spec *s = want->spec;
	const char *model;
	char text[AWS_TYPE_LEN];

	if (spec_field_set(s, "command"))
		return refuse(msg, len, "command",
			      "not supported by the aws provider: SageMaker "
			      "runs the image's own serving command");
	if (spec_field_set(s, "pool"))
		return refuse(msg, len, "pool",
			      "not supported by the aws provider: SageMaker "
			      "endpoints run on their own instances");
	if (spec_field_set(s, "port") || spec_field_set(s, "health_path"))
		return refuse(msg, len,
			      spec_field_set(s, "port") ? "port"
							: "health_path",
			      "not supported by the aws provider: SageMaker "
			      "containers serve /ping and /invocations on "
			      "8080");
	if (!spec_str(s, "image", "")[0])
		return refuse(msg, len, "image",
			      "required by the aws provider (the serving "
			      "container's image URI in ECR)");
	model = spec_str(s, "model", "");
	if (model[0] && strncmp(model, "s3://", 5) &&
	    strncmp(model, "hf://", 5))
		return refuse(msg, len, "model",
			      "the aws provider takes s3:// artifacts or an "
			      "hf:// model id");
	if (!endpoint_instance_type(s, text, sizeof(text)))
		return refuse(msg, len, "accelerators",
			      "no SageMaker instance type offers that many "
			      "of that accelerator; set instance_type");
	if (strncmp(text, "ml.", 3))
		return refuse(msg, len, "instance_type",
			      "SageMaker instance types start with ml. "
			      "(ml.g5.xlarge)");
	if (check_env(s, msg, len) < 0)
		return -EINVAL;
	return check_scaling(s, msg, len);
}

/* The most it may cost: max_replicas instances, for budgets. */
double endpoint_cost(const struct desired *want)
{
	char type[AWS_TYPE_LEN];
	int64_t replicas = spec_int(want->spec, "replicas", 1);

	if (!endpoint_instance_type(want->spec, type, sizeof(type)))
		return 0;
	return (double)spec_int(want->spec, "max_replicas", replicas) *
	       aws_price(want->config, type, false);
}

/* ---- as Terraform ----------------------------------------------------------- */

/* A literal in Terraform's JSON syntax: "${" and "%{" would start an
 * interpolation or a directive, so a user's "${x}" stays text. */
static json_t *tf_literal(const char *text)
{
	struct buf out = BUF_INIT;
	json_t *s;

	for (const char *c = text; *c; c++) {
		if ((*c == '$' || *c == '%') && c[1] == '{')
			buf_addc(&out, *c);
		buf_addc(&out, *c);
	}
	s = json_string(buf_str(&out));
	buf_free(&out);
	return s;
}

static json_t *tf_ref(const char *type, const char *local, const char *attr)
{
	char text[200];

	snprintf(text, sizeof(text), "${%s.%s.%s}", type, local, attr);
	return json_string(text);
}

/* The tags as a map; infrafs:revision says which revision made the
 * object, which Terraform cannot know, so it leaves it as it is. */
static json_t *tf_tags(const struct aws *a, const struct aws_res *r,
		       uint64_t rev)
{
	json_t *list = aws_tags(a, r, rev), *tags = json_object(), *t;
	size_t i;

	json_array_foreach(list, i, t)
	{
		json_object_set(tags,
				json_string_value(json_object_get(t, "Key")),
				json_object_get(t, "Value"));
	}
	json_decref(list);
	return tags;
}

static json_t *tf_lifecycle(void)
{
	return json_pack("{s:[s]}", "ignore_changes",
			 "tags[\"infrafs:revision\"]");
}

/* A replica change moves the endpoint's count, not the config's
 * initial one, as infrafs does (UpdateEndpointWeightsAndCapacities). */
static json_t *tf_config_lifecycle(void)
{
	return json_pack("{s:[s, s]}", "ignore_changes",
			 "tags[\"infrafs:revision\"]",
			 "production_variants[0].initial_instance_count");
}

/* A secret:NAME value becomes a sensitive variable the user supplies. */
static json_t *tf_env_value(const char *value, json_t *variables)
{
	char name[NAME_MAX_LEN + 16];

	if (strncmp(value, "secret:", 7))
		return tf_literal(value);
	snprintf(name, sizeof(name), "secret_%s", value + 7);
	for (char *c = name; *c; c++)
		if (*c == '-')
			*c = '_';
	json_object_set_new(variables, name,
			    json_pack("{s:s, s:b, s:s}", "type", "string",
				      "sensitive", 1, "description",
				      "the infrafs secret of that name"));
	return json_sprintf("${var.%s}", name);
}

static json_t *tf_model(const struct aws *a, const struct aws_res *r,
			const struct desired *want, const struct ep_want *w,
			json_t *variables)
{
	const struct spec *s = want->spec;
	const char *model = spec_str(s, "model", "");
	json_t *env = environment_of(s), *tf_env = json_object(), *container;
	const char *key;
	json_t *v;

	json_object_foreach(env, key, v)
	{
		json_object_set_new(
			tf_env, key,
			tf_env_value(json_string_value(v), variables));
	}
	json_decref(env);
	container = json_pack("{s:o}", "image",
			      tf_literal(spec_str(s, "image", "")));
	/* SageMaker answers {} for none, which Terraform reads as unset. */
	if (json_object_size(tf_env))
		json_object_set(container, "environment", tf_env);
	json_decref(tf_env);
	if (!strncmp(model, "s3://", 5))
		json_object_set_new(container, "model_data_url",
				    tf_literal(model));
	return json_pack(
		"{s:s, s:o, s:[o], s:o, s:o}", "name", w->model_name,
		"execution_role_arn",
		tf_literal(aws_config(want->config, "execution_role", "")),
		"primary_container", container, "tags",
		tf_tags(a, r, w->config_rev), "lifecycle", tf_lifecycle());
}

static json_t *tf_config(const struct aws *a, const struct aws_res *r,
			 const struct ep_want *w, const char *local)
{
	int64_t initial = w->replicas < w->min	 ? w->min
			  : w->replicas > w->max ? w->max
						 : w->replicas;

	return json_pack(
		"{s:s, s:[{s:s, s:o, s:I, s:s, s:f}], s:o, s:o}", "name",
		w->config_name, "production_variants", "variant_name", VARIANT,
		"model_name", tf_ref("aws_sagemaker_model", local, "name"),
		"initial_instance_count", (json_int_t)initial, "instance_type",
		w->instance_type, "initial_variant_weight", 1.0, "tags",
		tf_tags(a, r, w->config_rev), "lifecycle",
		tf_config_lifecycle());
}

static json_t *tf_endpoint(const struct aws *a, const struct aws_res *r,
			   const struct desired *want, const char *local)
{
	return json_pack(
		"{s:s, s:o, s:o, s:o}", "name", r->aws_name,
		"endpoint_config_name",
		tf_ref("aws_sagemaker_endpoint_configuration", local, "name"),
		"tags", tf_tags(a, r, want->rev), "lifecycle", tf_lifecycle());
}

static json_t *tf_scaling_target(const struct ep_want *w, const char *local)
{
	char id[200];

	snprintf(id, sizeof(id),
		 "endpoint/${aws_sagemaker_endpoint.%s.name}"
		 "/variant/" VARIANT,
		 local);
	return json_pack("{s:s, s:s, s:s, s:I, s:I}", "service_namespace",
			 "sagemaker", "resource_id", id, "scalable_dimension",
			 SCALABLE_DIMENSION, "min_capacity", (json_int_t)w->min,
			 "max_capacity", (json_int_t)w->max);
}

static json_t *tf_scaling_policy(const struct aws_res *r,
				 const struct ep_want *w, const char *local)
{
	const char *target = "aws_appautoscaling_target";

	return json_pack(
		"{s:s, s:s, s:o, s:o, s:o, s:{s:f, s:{s:s}}}", "name",
		policy_name(r), "policy_type", "TargetTrackingScaling",
		"service_namespace", tf_ref(target, local, "service_namespace"),
		"resource_id", tf_ref(target, local, "resource_id"),
		"scalable_dimension",
		tf_ref(target, local, "scalable_dimension"),
		"target_tracking_scaling_policy_configuration", "target_value",
		w->target, "predefined_metric_specification",
		"predefined_metric_type",
		"SageMakerVariantInvocationsPerInstance");
}

static void tf_add(json_t *resource, const char *type, const char *local,
		   json_t *body)
{
	json_t *of_type = json_object_get(resource, type);

	if (!of_type) {
		of_type = json_object();
		json_object_set_new(resource, type, of_type);
	}
	json_object_set_new(of_type, local, body);
}

void endpoint_terraform(const struct aws *a, const struct aws_res *r,
			const struct desired *want, const char *local,
			json_t *resource, json_t *variables)
{
	struct ep_want w;

	want_of(r, want, &w);
	tf_add(resource, "aws_sagemaker_model", local,
	       tf_model(a, r, want, &w, variables));
	tf_add(resource, "aws_sagemaker_endpoint_configuration", local,
	       tf_config(a, r, &w, local));
	tf_add(resource, "aws_sagemaker_endpoint", local,
	       tf_endpoint(a, r, want, local));
	if (!w.scaling)
		return;
	tf_add(resource, "aws_appautoscaling_target", local,
	       tf_scaling_target(&w, local));
	tf_add(resource, "aws_appautoscaling_policy", local,
	       tf_scaling_policy(r, &w, local));
}
