// SPDX-License-Identifier: MIT
/*
 * `import endpoints/NAME ID`: a SageMaker endpoint infrafs did not make
 * becomes a declared endpoint without being made again. The reconciler
 * asks here, in its own thread; this reads the endpoint, its config and
 * its model, says them as a spec, and keeps a record that owns the
 * endpoint (owned_of, as if its tags had said so) and names the model
 * and config it runs on, so that the first step finds nothing to do.
 *
 * The record is written before the spec is committed and marked
 * adopting until then: a crash in between leaves a record nobody lists
 * (so nothing destroys the endpoint as undeclared), and a commit that
 * is refused forgets it.
 */
#include "res.h"

#include "spec/schema.h"
#include "store/policy.h"
#include "util/text.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VARIANT "AllTraffic"

/* What was read of the endpoint, each answer owned. */
struct found {
	json_t *endpoint, *config, *model;
	json_t *variant; /* borrowed from config */
	int64_t replicas;
};

static void found_free(struct found *f)
{
	json_decref(f->endpoint);
	json_decref(f->config);
	json_decref(f->model);
}

static const char *text_of(json_t *o, const char *field)
{
	return json_string_value(json_object_get(o, field)) ?: "";
}

/* NAME, or the NAME of arn:PARTITION:sagemaker:REGION:ACCOUNT:endpoint/NAME
 * in this environment's region. */
static int endpoint_name(const char *id, const char *region, char *out,
			 size_t len, char *msg, size_t msglen)
{
	const char *slash = strstr(id, ":endpoint/");
	char want[96];

	if (strncmp(id, "arn:", 4)) {
		snprintf(out, len, "%s", id);
		return 0;
	}
	snprintf(want, sizeof(want), ":sagemaker:%s:", region);
	if (!slash || !strstr(id, want)) {
		snprintf(msg, msglen,
			 "%s is not the ARN of a SageMaker endpoint in %s", id,
			 region);
		return -EINVAL;
	}
	snprintf(out, len, "%s", slash + 10);
	return 0;
}

static int name_of(const char *id, const char *region, char *out, size_t len,
		   char *msg, size_t msglen)
{
	int rc = endpoint_name(id, region, out, len, msg, msglen);

	if (!rc && (!out[0] || strlen(out) > 63)) {
		snprintf(msg, msglen,
			 "%s: a SageMaker endpoint name is 1 to 63 characters",
			 out);
		return -EINVAL;
	}
	return rc;
}

static int read_call(struct aws_client *c, const char *op, json_t *in,
		     json_t **out, char *msg, size_t len)
{
	return aws_call1(c, &aws_sagemaker, op, in, out, msg, len) ? -EIO : 0;
}

/* Made by an infrafs, this one or another: not ours to adopt. */
static int refuse_infrafs(struct aws_client *c, const struct found *f,
			  char *msg, size_t len)
{
	json_t *tags = NULL, *t;
	size_t i;
	int rc = read_call(c, "ListTags",
			   json_pack("{s:s, s:i}", "ResourceArn",
				     text_of(f->endpoint, "EndpointArn"),
				     "MaxResults", 50),
			   &tags, msg, len);

	json_array_foreach(json_object_get(tags, "Tags"), i, t)
	{
		if (!strcmp(text_of(t, "Key"), "infrafs:owner")) {
			snprintf(msg, len,
				 "%s was made by infrafs (infrafs:owner %s); "
				 "it is managed where it was declared",
				 text_of(f->endpoint, "EndpointName"),
				 text_of(t, "Value"));
			rc = -EEXIST;
		}
	}
	json_decref(tags);
	return rc;
}

/* What infrafs can run as one endpoint spec, and why not otherwise. */
static int check_shape(const struct found *f, char *msg, size_t len)
{
	const char *name = text_of(f->endpoint, "EndpointName");
	json_t *variants = json_object_get(f->config, "ProductionVariants");

	if (strcmp(text_of(f->endpoint, "EndpointStatus"), "InService")) {
		snprintf(msg, len, "%s is %s; import it once it is InService",
			 name, text_of(f->endpoint, "EndpointStatus"));
		return -EBUSY;
	}
	if (json_array_size(variants) != 1 ||
	    strcmp(text_of(f->variant, "VariantName"), VARIANT) ||
	    !json_object_get(f->variant, "InstanceType")) {
		snprintf(msg, len,
			 "%s: infrafs runs one instance-based production "
			 "variant named " VARIANT,
			 name);
		return -EINVAL;
	}
	if (json_object_get(f->model, "Containers") ||
	    !json_object_get(f->model, "PrimaryContainer")) {
		snprintf(msg, len,
			 "%s: model %s has several containers; infrafs runs "
			 "one",
			 name, text_of(f->model, "ModelName"));
		return -EINVAL;
	}
	return 0;
}

static int read_endpoint(struct aws_client *c, const char *name,
			 struct found *f, char *msg, size_t len)
{
	json_t *live;

	if (read_call(c, "DescribeEndpoint",
		      json_pack("{s:s}", "EndpointName", name), &f->endpoint,
		      msg, len))
		return -ENOENT;
	if (refuse_infrafs(c, f, msg, len))
		return -EEXIST;
	if (read_call(c, "DescribeEndpointConfig",
		      json_pack("{s:s}", "EndpointConfigName",
				text_of(f->endpoint, "EndpointConfigName")),
		      &f->config, msg, len))
		return -EIO;
	f->variant = json_array_get(
		json_object_get(f->config, "ProductionVariants"), 0);
	if (read_call(c, "DescribeModel",
		      json_pack("{s:s}", "ModelName",
				text_of(f->variant, "ModelName")),
		      &f->model, msg, len))
		return -EIO;
	live = json_array_get(
		json_object_get(f->endpoint, "ProductionVariants"), 0);
	f->replicas = json_integer_value(
		json_object_get(live, "DesiredInstanceCount")
			?: json_object_get(f->variant, "InitialInstanceCount"));
	return check_shape(f, msg, len);
}

/* An autoscaled endpoint's bounds and its one target tracking policy on
 * invocations per instance: what infrafs runs itself, under that
 * policy's name. */
struct scaling {
	bool on;
	int64_t min, max;
	char target[32]; /* as the spec says it */
	char policy[256];
};

/* The one policy infrafs can keep, or why not. */
static int take_policy(json_t *policies, const char *name, struct scaling *s,
		       char *msg, size_t len)
{
	json_t *p = json_array_get(policies, 0);
	json_t *conf =
		json_object_get(p, "TargetTrackingScalingPolicyConfiguration");
	json_t *metric = json_object_get(conf, "PredefinedMetricSpecification");

	if (json_array_size(policies) != 1 ||
	    strcmp(text_of(p, "PolicyType"), "TargetTrackingScaling") ||
	    strcmp(text_of(metric, "PredefinedMetricType"),
		   "SageMakerVariantInvocationsPerInstance") ||
	    json_number_value(json_object_get(conf, "TargetValue")) <= 0) {
		snprintf(msg, len,
			 "%s is autoscaled by policies infrafs does not run "
			 "(it runs one target tracking policy on "
			 "SageMakerVariantInvocationsPerInstance)",
			 name);
		return -EINVAL;
	}
	snprintf(s->policy, sizeof(s->policy), "%s", text_of(p, "PolicyName"));
	snprintf(s->target, sizeof(s->target), "%g",
		 json_number_value(json_object_get(conf, "TargetValue")));
	return 0;
}

static int read_scaling(struct aws_client *c, const char *name,
			struct scaling *s, char *msg, size_t len)
{
	static const char dim[] = "sagemaker:variant:DesiredInstanceCount";
	char id[200];
	json_t *out = NULL, *target;
	int rc;

	snprintf(id, sizeof(id), "endpoint/%s/variant/" VARIANT, name);
	rc = aws_call1(c, &aws_autoscaling, "DescribeScalableTargets",
		       json_pack("{s:s, s:[s], s:s}", "ServiceNamespace",
				 "sagemaker", "ResourceIds", id,
				 "ScalableDimension", dim),
		       &out, msg, len);
	target = json_array_get(json_object_get(out, "ScalableTargets"), 0);
	if (rc || !target) {
		json_decref(out);
		return rc ? -EIO : 0;
	}
	s->on = true;
	s->min = json_integer_value(json_object_get(target, "MinCapacity"));
	s->max = json_integer_value(json_object_get(target, "MaxCapacity"));
	json_decref(out);
	out = NULL;
	if (s->min < 1 || s->min >= s->max) {
		snprintf(msg, len,
			 "%s is registered for autoscaling from %" PRId64
			 " to %" PRId64 " instances; infrafs autoscales from "
			 "at least 1 to more",
			 name, s->min, s->max);
		return -EINVAL;
	}
	rc = aws_call1(c, &aws_autoscaling, "DescribeScalingPolicies",
		       json_pack("{s:s, s:s, s:s}", "ServiceNamespace",
				 "sagemaker", "ResourceId", id,
				 "ScalableDimension", dim),
		       &out, msg, len);
	if (!rc)
		rc = take_policy(json_object_get(out, "ScalingPolicies"), name,
				 s, msg, len);
	else
		rc = -EIO;
	json_decref(out);
	return rc;
}

/* The count the endpoint runs at, within what it may scale to. */
static int64_t replicas_within(const struct found *f, const struct scaling *s)
{
	if (!s->on)
		return f->replicas;
	return f->replicas < s->min   ? s->min
	       : f->replicas > s->max ? s->max
				      : f->replicas;
}

static void say_scaling(const struct scaling *s, struct buf *spec)
{
	if (!s->on)
		return;
	buf_printf(spec,
		   "min_replicas = %" PRId64 "\nmax_replicas = %" PRId64
		   "\nscale_metric = invocations_per_replica\n"
		   "scale_target = %s\n",
		   s->min, s->max, s->target);
}

/* A value goes into a `key = value` line as it is, or not at all. */
static bool sayable(const char *v)
{
	size_t n = strlen(v);

	if (!n || v[0] == ' ' || v[n - 1] == ' ')
		return false;
	for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
		if (*c < 0x20 || *c == 0x7f)
			return false;
	}
	return true;
}

static int say(struct buf *spec, const char *key, const char *value, char *msg,
	       size_t len)
{
	if (!sayable(value)) {
		snprintf(msg, len,
			 "%s: the value cannot be written in a spec line "
			 "(empty, edge spaces or control characters)",
			 key);
		return -EINVAL;
	}
	buf_printf(spec, "%s = %s\n", key, value);
	return 0;
}

/* The spec that describes what was found; infrafs's own HF_MODEL_ID
 * convention reads back as model = hf://ID. */
static int spec_of(const struct found *f, const struct scaling *scaling,
		   struct buf *spec, char *msg, size_t len)
{
	json_t *container = json_object_get(f->model, "PrimaryContainer");
	json_t *env = json_object_get(container, "Environment");
	const char *data = text_of(container, "ModelDataUrl");
	const char *hf = text_of(env, "HF_MODEL_ID"), *key;
	char line[160];
	json_t *v;
	int rc = say(spec, "image", text_of(container, "Image"), msg, len);

	if (!rc && data[0])
		rc = say(spec, "model", data, msg, len);
	else if (!rc && hf[0]) {
		snprintf(line, sizeof(line), "hf://%s", hf);
		rc = say(spec, "model", line, msg, len);
	}
	if (!rc)
		rc = say(spec, "instance_type",
			 text_of(f->variant, "InstanceType"), msg, len);
	buf_printf(spec, "replicas = %" PRId64 "\n",
		   replicas_within(f, scaling));
	say_scaling(scaling, spec);
	json_object_foreach(env, key, v)
	{
		if (rc || (!data[0] && !strcmp(key, "HF_MODEL_ID")))
			continue;
		snprintf(line, sizeof(line), "env.%s", key);
		rc = say(spec, line, json_string_value(v) ?: "", msg, len);
	}
	return rc;
}

/* The spec as the store will parse it, for the fingerprint. */
static int parse_spec(const struct buf *spec, struct spec **out, char *msg,
		      size_t len)
{
	struct spec_error err;

	if (spec_parse(&kind_endpoint, spec->data, spec->len, out, &err)) {
		snprintf(msg, len, "the spec it reads as is refused: %s",
			 err.msg);
		return -EINVAL;
	}
	return 0;
}

static void keep_record(struct aws *a, const struct desired *at,
			const struct found *f, const struct scaling *scaling,
			const struct spec *s)
{
	char key[140];
	struct aws_res *r;
	struct desired want = *at;

	snprintf(key, sizeof(key), "%s/%s", at->env, at->name);
	r = aws_res_new(a, KIND_ENDPOINT_IDX, key);
	aws_res_configure(r, at);
	snprintf(r->aws_name, sizeof(r->aws_name), "%s",
		 text_of(f->endpoint, "EndpointName"));
	snprintf(r->adopted_model, sizeof(r->adopted_model), "%s",
		 text_of(f->model, "ModelName"));
	snprintf(r->adopted_config, sizeof(r->adopted_config), "%s",
		 text_of(f->config, "EndpointConfigName"));
	want.spec = s;
	endpoint_adopt_fingerprint(r, &want);
	if (scaling->on) {
		/* As want_of says it, from the spec's text of the target. */
		snprintf(r->scaling, sizeof(r->scaling),
			 "%" PRId64 ":%" PRId64 ":%g", scaling->min,
			 scaling->max, strtod(scaling->target, NULL));
		snprintf(r->adopted_policy, sizeof(r->adopted_policy), "%s",
			 scaling->policy);
	}
	r->live = json_incref(f->endpoint);
	aws_live_identity(r, r->owned_of, sizeof(r->owned_of));
	r->adopting = true;
	aws_res_save(a, r);
}

static int adopt_endpoint(struct aws *a, const struct desired *at,
			  const char *id, struct buf *spec, char *msg,
			  size_t len)
{
	struct found f = { 0 };
	struct scaling scaling = { 0 };
	struct aws_res probe = { .kind = KIND_ENDPOINT_IDX };
	struct spec *parsed = NULL;
	char name[128];
	int rc;

	aws_res_configure(&probe, at);
	rc = name_of(id, probe.settings.region, name, sizeof(name), msg, len);
	if (!rc)
		rc = read_endpoint(aws_client_of(a, &probe), name, &f, msg,
				   len);
	if (!rc)
		rc = read_scaling(aws_client_of(a, &probe), name, &scaling, msg,
				  len);
	if (!rc)
		rc = spec_of(&f, &scaling, spec, msg, len);
	if (!rc)
		rc = parse_spec(spec, &parsed, msg, len);
	if (!rc)
		keep_record(a, at, &f, &scaling, parsed);
	spec_free(parsed);
	found_free(&f);
	return rc;
}

int aws_adopt(void *state, const struct desired *at, const char *id,
	      struct buf *spec, char *msg, size_t len)
{
	struct aws *a = state;
	struct aws_res *r;

	if (at->kind != KIND_ENDPOINT_IDX) {
		snprintf(msg, len,
			 "the aws provider imports endpoints (SageMaker "
			 "endpoints), not pools");
		return -EINVAL;
	}
	r = aws_res_find(a, at->kind, at->env, at->name);
	/* An import a crash cut short before its commit: nothing declares
	 * it (the reconciler checked), so it starts again. */
	if (r && r->adopting) {
		aws_res_forget(a, r);
		r = NULL;
	}
	if (r) {
		snprintf(msg, len,
			 "endpoints/%s still has a SageMaker endpoint of its "
			 "own being removed; import it under another name",
			 at->name);
		return -EEXIST;
	}
	return adopt_endpoint(a, at, id, spec, msg, len);
}

void aws_adopted(void *state, const struct desired *at, uint64_t rev)
{
	struct aws *a = state;
	struct aws_res *r = aws_res_find(a, at->kind, at->env, at->name);

	if (!r || !r->adopting)
		return;
	if (!rev) {
		aws_res_forget(a, r);
		return;
	}
	r->adopting = false;
	r->config_rev = rev;
	aws_res_save(a, r);
}
