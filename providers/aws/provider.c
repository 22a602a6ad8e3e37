// SPDX-License-Identifier: MIT
/*
 * The aws provider: endpoints become SageMaker real-time endpoints, pools
 * HyperPod clusters. This file holds what both share: the records kept in
 * STATE_DIR/aws/records/, one client per way of reaching AWS, the
 * observation cache that keeps the reconciler's frequent looks from
 * becoming API calls, and the provider table.
 *
 * The reconciler looks at unfinished resources every half second; AWS's
 * own waiters poll every 30 s. So a look here is a Describe only when the
 * last one is older than aws.poll_s (a change under way) or the
 * environment's refresh_s (a settled resource), or a step just changed
 * the resource; every other look answers from the last Describe. The
 * Describes a pass needs go out together through the client's multi
 * handle, within the service's rate.
 */
#include "res.h"

#include "catalog.h"
#include "providers/records.h"
#include "store/policy.h"
#include "util/log.h"
#include "util/text.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_POLL_S 5.0
#define DEFAULT_REFRESH_S 30.0

static const char *const aws_kinds[] = { "pool", "endpoint", NULL };

static const char *const aws_unsupported[] = {
	"pool.capacity = spot",
	"HyperPod clusters run on-demand or reserved capacity only",
	"pool.min_nodes other than 0 when autoscaled",
	"HyperPod's Karpenter scales an idle pool to zero and keeps no floor",
	"an autoscaled pool without an nvidia accelerator",
	"its Karpenter NodePool is bounded by GPUs",
	"pool.zones",
	"placement follows aws.subnets",
	"endpoint.command",
	"SageMaker runs the image's own serving command",
	"endpoint.pool",
	"SageMaker endpoints run on their own instances, not on a pool",
	"endpoint.port/health_path",
	"SageMaker containers answer /ping and /invocations on 8080",
	"endpoint.env.NAME = secret:...",
	"a model's environment is readable by DescribeModel; use AWS "
	"Secrets Manager from the container",
	"endpoint.scale_metric other than invocations_per_replica",
	"SageMaker's target tracking metric is invocations per instance",
	"endpoint replicas or min_replicas = 0",
	"a real-time endpoint keeps at least one instance",
	NULL,
};

static const struct provider_info aws_info = {
	.name = "aws",
	.summary =
		"Amazon SageMaker: endpoints are real-time endpoints (a model "
		"and an endpoint config per revision, Application Auto Scaling "
		"for min_replicas < max_replicas), pools are HyperPod "
		"clusters with one instance group (autoscaled by HyperPod's "
		"Karpenter on an EKS-orchestrated cluster when min_nodes < "
		"max_nodes). Config keys: "
		"aws.execution_role (required), aws.lifecycle_s3_uri (pools), "
		"aws.lifecycle_on_create, aws.subnets, aws.security_groups, "
		"aws.eks_cluster_arn and aws.cluster_role (autoscaled pools), "
		"aws.profile, aws.endpoint_url, aws.requests_per_second, "
		"aws.max_connections, aws.timeout_s, aws.poll_s, "
		"aws.price.TYPE; region from `region`. See infrafs-aws(7).",
	.kinds = aws_kinds,
	.unsupported = aws_unsupported,
	.render_more = aws_catalog_render,
};

/* ---- names and config ---------------------------------------------------- */

const char *aws_config(const struct spec *config, const char *key,
		       const char *dflt)
{
	const char *v = spec_map_get(config, "aws", key);

	return v && v[0] ? v : dflt;
}

static double config_number(const struct spec *config, const char *key,
			    double dflt)
{
	const char *v = aws_config(config, key, NULL);
	char *end;
	double d;

	if (!v)
		return dflt;
	d = strtod(v, &end);
	return *end || d <= 0 ? dflt : d;
}

static const char *kind_word(int kind);

/* "infrafs-ENV-NAME" with '/' as '-'. */
static void flat_name(const char *key, char *out, size_t len)
{
	snprintf(out, len, "infrafs-%s", key);
	for (char *p = out; *p; p++) {
		if (*p == '/')
			*p = '-';
	}
}

/*
 * The names of records written before names carried a hash: the start
 * of "infrafs-ENV-NAME", with a hash of the key only when it was cut.
 */
static void legacy_name(const char *key, const char *suffix, char *out,
			size_t len)
{
	char flat[160];
	size_t max = len - 1 < 63 ? len - 1 : 63;
	size_t slen = strlen(suffix);

	flat_name(key, flat, sizeof(flat));
	if (strlen(flat) + slen <= max) {
		snprintf(out, len, "%s%s", flat, suffix);
		return;
	}
	snprintf(out, len, "%.*s-%08" PRIx32 "%s", (int)(max - slen - 9), flat,
		 (uint32_t)map_hash(key, strlen(key)), suffix);
}

/*
 * Eight hex digits of SHA-256 over ENV, kind and NAME, NUL-separated:
 * "ml" + "prod-chat" and "ml-prod" + "chat" flatten alike and hash apart.
 * It keeps names apart by accident; ownership is the tags' job.
 */
static void name_hash(const struct aws_res *r, char out[9])
{
	const char *slash = strchr(r->key, '/');
	unsigned char md[SHA256_DIGEST_LENGTH];
	char text[200];
	int n = snprintf(text, sizeof(text), "%.*s%c%s%c%s",
			 (int)(slash - r->key), r->key, 0, kind_word(r->kind),
			 0, slash + 1);

	SHA256((const unsigned char *)text, (size_t)n, md);
	snprintf(out, 9, "%02x%02x%02x%02x", md[0], md[1], md[2], md[3]);
}

/*
 * Names are [a-z0-9-] already (util/text.h), so the result is a valid
 * SageMaker and Kubernetes name; a long ENV-NAME is cut, never the hash
 * or the suffix.
 */
void aws_resource_name(const struct aws_res *r, const char *suffix, char *out,
		       size_t len)
{
	char flat[160], hash[9];
	size_t max = len - 1 < 63 ? len - 1 : 63;

	if (r->legacy_names) {
		legacy_name(r->key, suffix, out, len);
		return;
	}
	flat_name(r->key, flat, sizeof(flat));
	name_hash(r, hash);
	snprintf(out, len, "%.*s-%s%s", (int)(max - strlen(suffix) - 9), flat,
		 hash, suffix);
}

double aws_price(const struct spec *config, const char *type, bool hyperpod)
{
	const struct aws_instance *it = aws_instance_by_type(type);
	char key[96];
	const char *own;

	snprintf(key, sizeof(key), "price.%s", type);
	own = aws_config(config, key, NULL);
	if (own)
		return strtod(own, NULL);
	if (!it)
		return 0;
	return hyperpod ? it->hyperpod_usd : it->endpoint_usd;
}

const char *aws_instance_type(const struct spec *s, const char *count_field,
			      bool hyperpod, char *out, size_t len)
{
	char acc[64];
	const struct aws_instance *it;
	int64_t n = spec_int(s, count_field, 1);
	const char *set = spec_str(s, "instance_type", "");

	/* A type cut to fit would name another type: aws_check refuses it. */
	if (set[0] && strlen(set) >= len)
		return NULL;
	if (set[0])
		return memcpy(out, set, strlen(set) + 1);
	spec_text(s, "accelerator", acc, sizeof(acc));
	if (!acc[0])
		snprintf(acc, sizeof(acc), "cpu");
	it = aws_instance_for(acc, n < 1 ? 1 : (int)n, hyperpod);
	if (!it)
		return NULL;
	snprintf(out, len, "%s", it->type);
	return out;
}

json_t *aws_tags(const struct aws *a, const struct aws_res *r, uint64_t rev)
{
	const char *slash = strchr(r->key, '/');
	char env[NAME_MAX_LEN + 1], rev_text[24];

	snprintf(env, sizeof(env), "%.*s", (int)(slash - r->key), r->key);
	snprintf(rev_text, sizeof(rev_text), "%" PRIu64, rev);
	return json_pack("[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}, {s:s, s:s},"
			 " {s:s, s:s}]",
			 "Key", "infrafs:owner", "Value", a->owner, "Key",
			 "infrafs:environment", "Value", env, "Key",
			 "infrafs:kind", "Value", kind_word(r->kind), "Key",
			 "infrafs:resource", "Value", slash + 1, "Key",
			 "infrafs:revision", "Value", rev_text);
}

static const char *tag_value(json_t *tags, const char *key)
{
	size_t i;
	json_t *t;

	json_array_foreach(tags, i, t)
	{
		const char *k = json_string_value(json_object_get(t, "Key"));

		if (k && !strcmp(k, key))
			return json_string_value(json_object_get(t, "Value"));
	}
	return NULL;
}

/*
 * Ours: made by this daemon (infrafs:owner) for this very environment,
 * kind and name. An object a legacy record made carries no owner or kind
 * tag; its environment and name tags are enough.
 */
bool aws_tags_ours(const struct aws *a, const struct aws_res *r, json_t *tags,
		   char *why, size_t len)
{
	const char *slash = strchr(r->key, '/');
	const char *owner = tag_value(tags, "infrafs:owner");
	const char *env = tag_value(tags, "infrafs:environment");
	const char *kind = tag_value(tags, "infrafs:kind");
	const char *name = tag_value(tags, "infrafs:resource");

	if (!env || !name) {
		snprintf(why, len, "it carries no infrafs tags");
		return false;
	}
	if (strncmp(env, r->key, (size_t)(slash - r->key)) ||
	    env[slash - r->key] || strcmp(name, slash + 1) ||
	    (kind && strcmp(kind, kind_word(r->kind)))) {
		snprintf(why, len, "its tags name %.64s %.64s/%.64s",
			 kind ? kind : "resource", env, name);
		return false;
	}
	if (owner && strcmp(owner, a->owner)) {
		snprintf(why, len,
			 "another infrafs made it (infrafs:owner %.40s)",
			 owner);
		return false;
	}
	if (!owner && !r->legacy_names) {
		snprintf(why, len, "it carries no infrafs:owner tag");
		return false;
	}
	return true;
}

static void settings_from(const struct spec *config, struct aws_settings *s)
{
	aws_settings_defaults(s);
	if (config)
		spec_text(config, "region", s->region, sizeof(s->region));
	snprintf(s->endpoint_url, sizeof(s->endpoint_url), "%s",
		 aws_config(config, "endpoint_url", ""));
	snprintf(s->profile, sizeof(s->profile), "%s",
		 aws_config(config, "profile", ""));
	s->requests_per_second = config_number(config, "requests_per_second",
					       s->requests_per_second);
	s->max_connections = (unsigned)config_number(config, "max_connections",
						     s->max_connections);
	s->timeout_s = config_number(config, "timeout_s", s->timeout_s);
}

struct aws_client *aws_client_of(struct aws *a, const struct aws_res *r)
{
	for (size_t i = 0; i < a->nclients; i++) {
		if (aws_client_matches(a->clients[i], &r->settings))
			return a->clients[i];
	}
	a->clients =
		xrealloc(a->clients, (a->nclients + 1) * sizeof(*a->clients));
	a->clients[a->nclients] = aws_client_new(&r->settings);
	return a->clients[a->nclients++];
}

/* ---- records ------------------------------------------------------------- */

static const char *kind_word(int kind)
{
	return kind == KIND_POOL_IDX ? "pool" : "endpoint";
}

int aws_res_save(struct aws *a, struct aws_res *r)
{
	const struct aws_settings *s = &r->settings;
	json_t *doc = json_pack(
		"{s:s, s:I, s:I, s:s, s:s, s:s, s:O, s:f, s:f,"
		" s:{s:s, s:s, s:s, s:f, s:i, s:f}, s:i, s:s}",
		"name", r->aws_name, "last_rev", (json_int_t)r->last_rev,
		"config_rev", (json_int_t)r->config_rev, "config_fp",
		r->config_fp, "scaling", r->scaling, "eks", r->eks, "made",
		r->made, "poll_s", r->poll_s, "refresh_s", r->refresh_s,
		"settings", "region", s->region, "endpoint_url",
		s->endpoint_url, "profile", s->profile, "requests_per_second",
		s->requests_per_second, "max_connections",
		(int)s->max_connections, "timeout_s", s->timeout_s, "names",
		r->legacy_names ? 1 : 2, "owned_of", r->owned_of);

	/* The last Describe, so that a restart trusts what ListEndpoints
	 * shows unchanged instead of describing everything again. */
	if (r->live)
		json_object_set(doc, "live", r->live);
	if (r->adopted_config[0])
		json_object_set_new(doc, "adopted",
				    json_pack("{s:s, s:s, s:s}", "model",
					      r->adopted_model, "config",
					      r->adopted_config, "policy",
					      r->adopted_policy));
	if (r->adopting)
		json_object_set_new(doc, "adopting", json_true());
	return record_save(a->dir, kind_word(r->kind), r->key, doc);
}

bool aws_res_has_made(const struct aws_res *r, const char *what)
{
	size_t i;
	json_t *v;

	json_array_foreach(r->made, i, v)
	{
		if (!strcmp(json_string_value(v), what))
			return true;
	}
	return false;
}

int aws_res_made(struct aws *a, struct aws_res *r, const char *what)
{
	if (aws_res_has_made(r, what))
		return 0;
	json_array_append_new(r->made, json_string(what));
	return aws_res_save(a, r);
}

void aws_res_unmade(struct aws *a, struct aws_res *r, const char *what)
{
	size_t i;
	json_t *v;

	json_array_foreach(r->made, i, v)
	{
		if (!strcmp(json_string_value(v), what)) {
			json_array_remove(r->made, i);
			aws_res_save(a, r);
			return;
		}
	}
}

struct aws_res *aws_res_new(struct aws *a, int kind, const char *key)
{
	struct aws_res *r = xcalloc(1, sizeof(*r));

	r->kind = kind;
	snprintf(r->key, sizeof(r->key), "%s", key);
	snprintf(r->id, sizeof(r->id), "%s:%s", kind_word(kind), key);
	aws_resource_name(r, "", r->aws_name, sizeof(r->aws_name));
	r->made = json_array();
	aws_settings_defaults(&r->settings);
	r->poll_s = DEFAULT_POLL_S;
	r->refresh_s = DEFAULT_REFRESH_S;
	map_put(&a->res, r->id, strlen(r->id), r);
	return r;
}

static void res_free(struct aws_res *r)
{
	json_decref(r->made);
	json_decref(r->live);
	aws_kube_api_clear(&r->kube);
	free(r);
}

void aws_res_forget(struct aws *a, struct aws_res *r)
{
	record_forget(a->dir, kind_word(r->kind), r->key);
	map_del(&a->res, r->id, strlen(r->id));
	res_free(r);
}

static void load_settings(json_t *doc, struct aws_settings *s)
{
	json_t *j = json_object_get(doc, "settings");

	snprintf(s->region, sizeof(s->region), "%s",
		 json_string_value(json_object_get(j, "region")) ?: "");
	snprintf(s->endpoint_url, sizeof(s->endpoint_url), "%s",
		 json_string_value(json_object_get(j, "endpoint_url")) ?: "");
	snprintf(s->profile, sizeof(s->profile), "%s",
		 json_string_value(json_object_get(j, "profile")) ?: "");
	s->requests_per_second =
		json_number_value(json_object_get(j, "requests_per_second"));
	s->max_connections = (unsigned)json_integer_value(
		json_object_get(j, "max_connections"));
	s->timeout_s = json_number_value(json_object_get(j, "timeout_s"));
}

static void load_adopted(json_t *adopted, struct aws_res *r)
{
	snprintf(r->adopted_model, sizeof(r->adopted_model), "%s",
		 json_string_value(json_object_get(adopted, "model")) ?: "");
	snprintf(r->adopted_config, sizeof(r->adopted_config), "%s",
		 json_string_value(json_object_get(adopted, "config")) ?: "");
	snprintf(r->adopted_policy, sizeof(r->adopted_policy), "%s",
		 json_string_value(json_object_get(adopted, "policy")) ?: "");
}

static void load_record(void *ctx, const char *kind, const char *key,
			json_t *doc)
{
	struct aws *a = ctx;
	int k = !strcmp(kind, "pool")	    ? KIND_POOL_IDX
		: !strcmp(kind, "endpoint") ? KIND_ENDPOINT_IDX
					    : -1;
	struct aws_res *r;
	json_t *made = json_object_get(doc, "made");

	if (k < 0)
		return;
	r = aws_res_new(a, k, key);
	snprintf(r->aws_name, sizeof(r->aws_name), "%s",
		 json_string_value(json_object_get(doc, "name")) ?: "");
	/* Records without "names" came from a daemon that named without the
	 * hash: their resources keep those names until they are removed. */
	r->legacy_names = json_integer_value(json_object_get(doc, "names")) < 2;
	snprintf(r->owned_of, sizeof(r->owned_of), "%s",
		 json_string_value(json_object_get(doc, "owned_of")) ?: "");
	r->last_rev =
		(uint64_t)json_integer_value(json_object_get(doc, "last_rev"));
	r->config_rev = (uint64_t)json_integer_value(
		json_object_get(doc, "config_rev"));
	snprintf(r->config_fp, sizeof(r->config_fp), "%s",
		 json_string_value(json_object_get(doc, "config_fp")) ?: "");
	load_adopted(json_object_get(doc, "adopted"), r);
	r->adopting = json_is_true(json_object_get(doc, "adopting"));
	snprintf(r->scaling, sizeof(r->scaling), "%s",
		 json_string_value(json_object_get(doc, "scaling")) ?: "");
	snprintf(r->eks, sizeof(r->eks), "%s",
		 json_string_value(json_object_get(doc, "eks")) ?: "");
	if (json_is_array(made))
		json_array_extend(r->made, made);
	r->poll_s = json_number_value(json_object_get(doc, "poll_s"))
			    ?: DEFAULT_POLL_S;
	r->refresh_s = json_number_value(json_object_get(doc, "refresh_s"))
			       ?: DEFAULT_REFRESH_S;
	load_settings(doc, &r->settings);
	r->live = json_incref(json_object_get(doc, "live"));
}

/* ---- calls --------------------------------------------------------------- */

struct planned *plan_call(struct plan *p, const struct aws_service *svc,
			  const char *op, json_t *input, unsigned ok)
{
	struct planned *c;

	if (p->n == PLAN_MAX) {
		json_decref(input);
		return NULL;
	}
	c = &p->calls[p->n++];
	*c = (struct planned){ .svc = svc, .op = op, .input = input, .ok = ok };
	return c;
}

struct planned *plan_rest(struct plan *p, const struct aws_service *svc,
			  const char *op, const char *method, const char *path,
			  json_t *input, unsigned ok)
{
	struct planned *c = plan_call(p, svc, op, input, ok);

	if (c) {
		c->method = method;
		snprintf(c->path, sizeof(c->path), "%s", path);
	}
	return c;
}

/* What infrafs makes per revision, and how to ask SageMaker about it. */
static const struct made_kind {
	const char *prefix, *describe, *name_field, *arn_field, *delete_op;
} made_kinds[] = {
	{ "model/", "DescribeModel", "ModelName", "ModelArn", "DeleteModel" },
	{ "endpoint-config/", "DescribeEndpointConfig", "EndpointConfigName",
	  "EndpointConfigArn", "DeleteEndpointConfig" },
};

static const struct made_kind *made_kind_of(const char *what)
{
	for (size_t i = 0; i < sizeof(made_kinds) / sizeof(made_kinds[0]);
	     i++) {
		if (!strncmp(what, made_kinds[i].prefix,
			     strlen(made_kinds[i].prefix)))
			return &made_kinds[i];
	}
	return NULL;
}

static void planned_set(struct planned *c, const char *op, json_t *input,
			unsigned ok, enum post_action post, const char *what)
{
	*c = (struct planned){ .svc = &aws_sagemaker,
			       .op = op,
			       .input = input,
			       .ok = ok,
			       .post = post };
	snprintf(c->arg, sizeof(c->arg), "%s", what);
}

/* The Describe that finds what's ARN, then ListTags on that ARN. */
static void plan_tag_check(struct planned *two, const char *what, unsigned ok)
{
	const struct made_kind *k = made_kind_of(what);
	const char *name = strchr(what, '/') + 1;

	planned_set(&two[0], k->describe,
		    json_pack("{s:s}", k->name_field, name), ok, POST_ARN_NEXT,
		    what);
	planned_set(&two[1], "ListTags", json_pack("{s:i}", "MaxResults", 50),
		    0, POST_OWNED, what);
}

void plan_owned_delete(struct plan *p, const char *what)
{
	const struct made_kind *k = made_kind_of(what);
	struct planned *c;

	if (!k || p->n + 3 > PLAN_MAX)
		return;
	c = &p->calls[p->n];
	plan_tag_check(c, what, AWS_OK_MISSING);
	c[0].skip_if_missing = 2;
	planned_set(&c[2], k->delete_op,
		    json_pack("{s:s}", k->name_field, strchr(what, '/') + 1),
		    AWS_OK_MISSING, POST_UNMADE, what);
	p->n += 3;
}

/* A create met a model or config of that name: its tags are read before
 * it counts as made (the calls go right after the create). */
static int plan_verify_existing(struct plan *p, const char *what)
{
	size_t after = p->at + 1;

	if (!made_kind_of(what) || p->n + 2 > PLAN_MAX)
		return -EAGAIN;
	memmove(&p->calls[after + 2], &p->calls[after],
		(p->n - after) * sizeof(p->calls[0]));
	p->n += 2;
	plan_tag_check(&p->calls[after], what, 0);
	return 0;
}

static void plan_clear(struct plan *p)
{
	for (size_t i = 0; i < p->n; i++)
		json_decref(p->calls[i].input);
	memset(p, 0, sizeof(*p));
}

/*
 * Where the pool's EKS cluster answers. None found: the cluster is gone,
 * and the Karpenter objects infrafs put there went with it.
 */
static int take_kube_api(struct aws *a, struct aws_res *r, json_t *answer,
			 char *err, size_t errlen)
{
	if (answer && aws_kube_api_set(&r->kube, r->eks, answer) == 0)
		return 0;
	if (answer) {
		/* EKS shows neither while the cluster is being made. */
		snprintf(err, errlen,
			 "EKS DescribeCluster: %s has no https endpoint or "
			 "certificate authority yet (status %s)",
			 r->eks,
			 json_string_value(json_object_get(
				 json_object_get(answer, "cluster"), "status"))
				 ?: "unknown");
		return -EAGAIN;
	}
	cluster_forget_karpenter(a, r);
	return 0;
}

/* 0, or why the answer cannot be used (err says). */
static int post_action(struct aws *a, struct aws_res *r,
		       const struct planned *c, json_t *answer, char *err,
		       size_t errlen)
{
	switch (c->post) {
	case POST_KUBE_API:
		return take_kube_api(a, r, answer, err, errlen);
	case POST_UNMADE:
		aws_res_unmade(a, r, c->arg);
		break;
	case POST_SET_SCALING:
		snprintf(r->scaling, sizeof(r->scaling), "%s", c->arg);
		aws_res_save(a, r);
		break;
	case POST_CLEAR_SCALING:
		r->scaling[0] = '\0';
		aws_res_save(a, r);
		break;
	case POST_NONE:
	case POST_ARN_NEXT: /* post_ownership's */
	case POST_OWNED:
	case POST_KUBE_OWNED: /* kube_ownership's */
		break;
	}
	return 0;
}

/*
 * The ownership part of a step: an ARN for the next call's ListTags, or
 * the Tags that must say the object is r's. 0 goes on; -EEXIST stops the
 * step, what was found is off the record and stays as it is.
 */
static int post_ownership(struct aws *a, struct aws_res *r, struct plan *p,
			  json_t *answer, char *err, size_t errlen)
{
	const struct planned *c = &p->calls[p->at];
	const char *what = c->arg, *arn;
	char why[200];

	if (c->post == POST_ARN_NEXT) {
		arn = json_string_value(
			json_object_get(answer, made_kind_of(what)->arn_field));
		if (!arn || p->at + 1 >= p->n) {
			snprintf(err, errlen, "SageMaker %s: no ARN for %s",
				 c->op, what);
			return -EPROTO;
		}
		json_object_set_new(p->calls[p->at + 1].input, "ResourceArn",
				    json_string(arn));
		return 0;
	}
	if (aws_tags_ours(a, r, json_object_get(answer, "Tags"), why,
			  sizeof(why)))
		return 0;
	snprintf(r->not_ours, sizeof(r->not_ours),
		 "SageMaker %s exists and is not this resource's: %s; "
		 "infrafs neither adopts nor deletes it",
		 what, why);
	snprintf(err, errlen, "%s", r->not_ours);
	log_warn("aws %s: %s", r->id, err);
	aws_res_unmade(a, r, what);
	return -EEXIST;
}

/* A Karpenter object under the pool's name (NULL: none) must be its. */
static int kube_ownership(struct aws *a, struct aws_res *r,
			  const struct planned *c, json_t *object, char *err,
			  size_t errlen)
{
	char why[160];

	if (!object || cluster_kube_ours(a, r, object, why, sizeof(why)))
		return 0;
	snprintf(r->not_ours, sizeof(r->not_ours),
		 "Kubernetes %s in EKS cluster %.100s exists and is not "
		 "this pool's: %s; infrafs neither adopts nor deletes it",
		 c->arg, r->eks, why);
	snprintf(err, errlen, "%s", r->not_ours);
	log_warn("aws %s: %s", r->id, err);
	aws_res_unmade(a, r, c->arg);
	return -EEXIST;
}

/* One call's answer for its step: on, done, or stopped with why. */
static void take_answer(struct aws *a, struct aws_res *r, struct target *t,
			struct plan *p, struct aws_call *call)
{
	const struct planned *c = &p->calls[p->at];
	bool missing = call->rc && (c->ok & AWS_OK_MISSING) &&
		       aws_error_not_found(call->code, call->message);
	bool existed = call->rc && (c->ok & AWS_OK_EXISTS) &&
		       aws_error_exists(call->code, call->message);

	r->dirty = true;
	if (call->rc && !missing && !existed) {
		p->rc = call->rc;
		aws_call_describe_error(call, t->obs.error,
					sizeof(t->obs.error));
		/* A moved endpoint or a new CA: ask EKS again next time. */
		if (call->service == &aws_kubernetes)
			aws_kube_api_clear(&r->kube);
		return;
	}
	if (missing && c->skip_if_missing) {
		aws_res_unmade(a, r, c->arg);
		p->at += 1 + c->skip_if_missing;
		if (p->at > p->n) /* what it skips did not fit the plan */
			p->at = p->n;
		return;
	}
	if (existed && c->verify_existing) {
		p->rc = plan_verify_existing(p, c->arg);
		if (p->rc)
			snprintf(t->obs.error, sizeof(t->obs.error),
				 "SageMaker %s exists; its tags are read next "
				 "time",
				 c->arg);
	} else if (c->post == POST_KUBE_OWNED) {
		p->rc = kube_ownership(a, r, c, call->rc ? NULL : call->output,
				       t->obs.error, sizeof(t->obs.error));
	} else if (c->post == POST_ARN_NEXT || c->post == POST_OWNED) {
		p->rc = post_ownership(a, r, p, call->output, t->obs.error,
				       sizeof(t->obs.error));
	} else {
		p->rc = post_action(a, r, c, call->rc ? NULL : call->output,
				    t->obs.error, sizeof(t->obs.error));
	}
	if (!p->rc)
		p->at++;
}

/*
 * Runs the plans of many resources: each round sends the next call of
 * every plan still going, all of one client together through aws_run.
 */
static void run_plans(struct aws *a, struct aws_res **rs, struct target **ts,
		      struct plan *plans, size_t n)
{
	struct aws_call *calls = xcalloc(n ? n : 1, sizeof(*calls));
	size_t *of = xcalloc(n ? n : 1, sizeof(*of));

	for (;;) {
		struct aws_client *c = NULL;
		size_t k = 0;

		for (size_t i = 0; i < n; i++) {
			struct plan *p = &plans[i];
			struct planned *next = &p->calls[p->at];

			if (p->rc || p->at >= p->n ||
			    (c && aws_client_of(a, rs[i]) != c))
				continue;
			c = aws_client_of(a, rs[i]);
			if (next->method) {
				aws_call_init_rest(&calls[k], next->svc,
						   next->op, next->method,
						   next->path, next->input);
				calls[k].kube = next->kube;
			} else {
				aws_call_init(&calls[k], next->svc, next->op,
					      next->input);
			}
			next->input = NULL;
			of[k++] = i;
		}
		if (!k)
			break;
		aws_run(c, calls, k);
		for (size_t j = 0; j < k; j++) {
			size_t i = of[j];

			take_answer(a, rs[i], ts[i], &plans[i], &calls[j]);
			aws_call_clear(&calls[j]);
		}
	}
	free(of);
	free(calls);
}

bool aws_status_in_progress(const char *status)
{
	static const char *const settled[] = { "InService", "Failed",
					       "OutOfService",
					       "UpdateRollbackFailed", NULL };

	if (!status)
		return false;
	for (size_t i = 0; settled[i]; i++) {
		if (!strcmp(status, settled[i]))
			return false;
	}
	return true;
}

/* ---- observing ----------------------------------------------------------- */

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *live_status(const struct aws_res *r)
{
	const char *field =
		r->kind == KIND_POOL_IDX ? "ClusterStatus" : "EndpointStatus";

	return json_string_value(json_object_get(r->live, field));
}

/* The pace a resource is looked at: poll_s while a change is under way
 * or the last look failed (credentials refused, AWS down), refresh_s
 * once it rests. */
static double look_interval(const struct aws_res *r)
{
	if (r->look_error[0] || aws_status_in_progress(live_status(r)))
		return r->poll_s;
	return r->refresh_s;
}

/* Up to a tenth either way, so that what was made together does not
 * poll together for ever. */
static double jittered(double interval)
{
	uint32_t x = 0;

	if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != sizeof(x))
		x = (uint32_t)rand();
	return interval * (0.9 + 0.2 * ((double)x / 4294967296.0));
}

/* A look just happened (a Describe, or the list showing it unchanged). */
static void looked_now(struct aws_res *r)
{
	r->looked = true;
	r->dirty = false;
	r->fresh = false;
	r->looked_at = mono_now();
	r->looked_wall = time_now();
	r->next_look = r->looked_at + jittered(look_interval(r));
}

/* Seconds until the next look is due, at least a little. */
static double next_look_in(const struct aws_res *r)
{
	double in = r->next_look - mono_now();

	return in > 0.1 ? in : 0.1;
}

static bool needs_look(const struct aws_res *r, double now)
{
	if (!r->looked || r->dirty || r->fresh)
		return true;
	/* A poll_s or refresh_s that changed since the last look counts
	 * from that look. */
	return now >= r->next_look ||
	       now - r->looked_at >= 1.1 * look_interval(r);
}

/* What the environment's config says about reaching AWS and polling. */
void aws_res_configure(struct aws_res *r, const struct desired *want)
{
	if (!want)
		return;
	settings_from(want->config, &r->settings);
	r->poll_s = config_number(want->config, "poll_s", DEFAULT_POLL_S);
	r->refresh_s = want->config
			       ? (double)spec_int(want->config, "refresh_s", 30)
			       : DEFAULT_REFRESH_S;
}

struct aws_res *aws_res_find(struct aws *a, int kind, const char *env,
			     const char *name)
{
	char id[150];

	snprintf(id, sizeof(id), "%s:%s/%s", kind_word(kind), env, name);
	return map_get(&a->res, id, strlen(id));
}

static struct aws_res *res_of(struct aws *a, const struct target *t)
{
	struct aws_res *r = aws_res_find(a, t->kind, t->env, t->name);

	if (r && r->adopting && t->want) {
		/* Its spec is committed: a crash came before aws_adopted. */
		r->adopting = false;
		aws_res_save(a, r);
	}
	if (!r && t->want) {
		char key[140];

		snprintf(key, sizeof(key), "%s/%s", t->env, t->name);
		r = aws_res_new(a, t->kind, key);
	}
	if (r)
		aws_res_configure(r, t->want);
	return r;
}

static json_t *describe_input(const struct aws_res *r)
{
	return r->kind == KIND_POOL_IDX ? cluster_describe_input(r)
					: endpoint_describe_input(r);
}

static bool same_version(json_t *a, json_t *b)
{
	const char *status = "EndpointStatus";

	if (!a || !b)
		return a == b;
	if (json_object_get(a, "ClusterStatus"))
		status = "ClusterStatus";
	return json_equal(json_object_get(a, "LastModifiedTime"),
			  json_object_get(b, "LastModifiedTime")) &&
	       json_equal(json_object_get(a, status),
			  json_object_get(b, status));
}

static void take_look(struct aws *a, struct aws_res *r, struct aws_call *call)
{
	json_t *was = r->live;

	r->live = NULL;
	r->look_error[0] = '\0';
	if (call->rc == 0) {
		r->live = call->output;
		call->output = NULL;
	} else if (!aws_error_not_found(call->code, call->message)) {
		aws_call_describe_error(call, r->look_error,
					sizeof(r->look_error));
		r->live = json_incref(was); /* unknown is not gone */
	}
	if (!r->look_error[0]) {
		r->foreign[0] = '\0';
		r->owner_unknown = false;
	}
	looked_now(r);
	if (!same_version(was, r->live) && json_array_size(r->made))
		aws_res_save(a, r);
	json_decref(was);
}

static const char *live_arn(const struct aws_res *r)
{
	return json_string_value(json_object_get(
		       r->live,
		       r->kind == KIND_POOL_IDX ? "ClusterArn" : "EndpointArn"))
		       ?: "";
}

/* The live object's identity: a new object under the name differs. */
void aws_live_identity(const struct aws_res *r, char *out, size_t len)
{
	snprintf(out, len, "%s@%.3f", live_arn(r),
		 json_number_value(json_object_get(r->live, "CreationTime")));
}

static bool owner_known(const struct aws_res *r)
{
	char id[sizeof(r->owned_of)];

	if (!r->live)
		return true;
	aws_live_identity(r, id, sizeof(id));
	return !strcmp(id, r->owned_of);
}

/* What is not r's is dropped from live: no step then acts on it. */
static void take_owner(struct aws *a, struct aws_res *r, struct aws_call *call)
{
	if (!call->rc &&
	    aws_tags_ours(a, r, json_object_get(call->output, "Tags"),
			  r->foreign, sizeof(r->foreign))) {
		r->foreign[0] = '\0';
		aws_live_identity(r, r->owned_of, sizeof(r->owned_of));
		aws_res_save(a, r);
		return;
	}
	if (call->rc) {
		aws_call_describe_error(call, r->look_error,
					sizeof(r->look_error));
		snprintf(r->foreign, sizeof(r->foreign),
			 "its tags could not be read: %.200s", r->look_error);
		r->owner_unknown = true;
	}
	json_decref(r->live);
	r->live = NULL;
}

/*
 * An endpoint or cluster found under r's name is r's only when its tags
 * say so (ListTags, once per object); see aws_tags_ours.
 */
static void check_owners(struct aws *a, struct aws_res **rs, size_t n)
{
	struct aws_call *calls = xcalloc(n, sizeof(*calls));
	struct aws_res **of = xcalloc(n, sizeof(*of));
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		if (owner_known(rs[i]))
			continue;
		aws_call_init(&calls[k], &aws_sagemaker, "ListTags",
			      json_pack("{s:s, s:i}", "ResourceArn",
					live_arn(rs[i]), "MaxResults", 50));
		of[k++] = rs[i];
	}
	if (k)
		aws_run(aws_client_of(a, of[0]), calls, k);
	for (size_t j = 0; j < k; j++) {
		take_owner(a, of[j], &calls[j]);
		aws_call_clear(&calls[j]);
	}
	free(of);
	free(calls);
}

/* Describes every resource given, all at once, through one client. */
static void look(struct aws *a, struct aws_res **rs, size_t n)
{
	struct aws_call *calls;

	if (!n)
		return;
	calls = xcalloc(n, sizeof(*calls));
	for (size_t i = 0; i < n; i++)
		aws_call_init(&calls[i], &aws_sagemaker,
			      rs[i]->kind == KIND_POOL_IDX ? "DescribeCluster"
							   : "DescribeEndpoint",
			      describe_input(rs[i]));
	aws_run(aws_client_of(a, rs[0]), calls, n);
	for (size_t i = 0; i < n; i++) {
		take_look(a, rs[i], &calls[i]);
		aws_call_clear(&calls[i]);
	}
	free(calls);
	check_owners(a, rs, n);
}

/*
 * Many endpoints due at once (an environment's refresh) are read from
 * ListEndpoints, a hundred a page: one whose status and LastModifiedTime
 * are what the last Describe said has not changed, and keeps that answer.
 * Only the rest are described. SageMaker's Describe limits are low (its
 * own SDK polls every 30 s to stay under them); a refresh of a thousand
 * endpoints is ten calls, not a thousand.
 */
#define LIST_FROM 16

/* A failed list is no loss: every endpoint is then described instead. */
struct summary_page {
	json_t *all; /* EndpointName -> EndpointSummary */
	int rc;
};

static void list_endpoints(struct aws_client *c, struct summary_page *out)
{
	json_t *token = NULL;

	out->all = json_object();
	out->rc = 0;
	do {
		json_t *in = json_pack("{s:s, s:i}", "NameContains", "infrafs-",
				       "MaxResults", 100);
		json_t *page = NULL, *e;
		size_t i;

		if (token)
			json_object_set_new(in, "NextToken", token);
		out->rc = aws_call1(c, &aws_sagemaker, "ListEndpoints", in,
				    &page, NULL, 0);
		if (out->rc)
			return;
		json_array_foreach(json_object_get(page, "Endpoints"), i, e)
		{
			const char *name = json_string_value(
				json_object_get(e, "EndpointName"));

			if (name)
				json_object_set(out->all, name, e);
		}
		token = json_incref(json_object_get(page, "NextToken"));
		json_decref(page);
	} while (token && json_string_length(token));
	json_decref(token);
}

static bool unchanged_since(const struct aws_res *r, json_t *summary)
{
	json_t *was = json_object_get(r->live, "LastModifiedTime");
	json_t *now = json_object_get(summary, "LastModifiedTime");

	return r->live && was && now &&
	       json_number_value(was) == json_number_value(now) &&
	       json_equal(json_object_get(r->live, "EndpointStatus"),
			  json_object_get(summary, "EndpointStatus"));
}

/*
 * The list of this pass: every environment's observe in one reconciler
 * pass shares it (it names every infrafs endpoint of the account and
 * region), so a thousand endpoints in ten environments are still ten
 * pages, not a hundred.
 */
#define LIST_SHARED_S 1.0

static json_t *listed(struct aws *a, struct aws_client *c)
{
	struct summary_page page;

	if (a->list_all && a->list_client == c &&
	    mono_now() - a->list_at < LIST_SHARED_S)
		return a->list_all;
	list_endpoints(c, &page);
	json_decref(a->list_all);
	a->list_all = NULL;
	if (page.rc) {
		json_decref(page.all);
		return NULL;
	}
	a->list_all = page.all;
	a->list_client = c;
	a->list_at = mono_now();
	return a->list_all;
}

/* Settles from the list what it can; returns how many still need a
 * Describe, moved to the front of rs. */
static size_t settle_from_list(struct aws *a, struct aws_res **rs, size_t n)
{
	json_t *all = listed(a, aws_client_of(a, rs[0]));
	size_t left = 0;

	for (size_t i = 0; i < n; i++) {
		struct aws_res *r = rs[i];
		json_t *s = json_object_get(all, r->aws_name);

		if (!all || r->kind != KIND_ENDPOINT_IDX || r->dirty ||
		    !owner_known(r) || (s && !unchanged_since(r, s))) {
			rs[left++] = r;
			continue;
		}
		if (!s) {
			json_decref(r->live);
			r->live = NULL;
			r->foreign[0] = '\0';
		}
		r->look_error[0] = '\0';
		looked_now(r);
	}
	return left;
}

static bool can_list(const struct aws_res *r)
{
	return r->kind == KIND_ENDPOINT_IDX && !r->dirty;
}

/* Endpoints the list can answer for: not those a step just changed. */
static size_t listable(struct aws_res **rs, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		k += can_list(rs[i]);
	return k;
}

/* The pages a list of c's endpoints takes: everything this daemon knows
 * there, a hundred a page. */
static size_t list_pages(struct aws *a, struct aws_client *c)
{
	size_t k = 0;
	void *v;

	for (size_t pos = 0; map_next(&a->res, &pos, &v);) {
		const struct aws_res *r = v;

		k += r->kind == KIND_ENDPOINT_IDX && r->live &&
		     aws_client_of(a, r) == c;
	}
	return k / 100 + 1;
}

/*
 * A list pays for itself when it is fewer calls than the Describes it
 * saves: from LIST_FROM endpoints on, and from two when `refresh` asked
 * for all of them at once.
 */
static bool list_pays(struct aws *a, struct aws_client *c, struct aws_res **rs,
		      size_t n)
{
	size_t need, pages;
	bool fresh = false;

	for (size_t i = 0; i < n; i++)
		fresh |= rs[i]->fresh;
	need = fresh ? 2 : LIST_FROM;
	if (listable(rs, n) < need)
		return false;
	pages = list_pages(a, c);
	return listable(rs, n) > pages;
}

/* Due within the jitter's width: it would come in the next passes and
 * make a Describe of its own; counted towards a list. */
static bool nearly_due(const struct aws_res *r, double now)
{
	return r->looked && can_list(r) &&
	       now >= r->next_look - 0.2 * look_interval(r);
}

/*
 * The resources of rs on client c that are due (moved into due, marked
 * taken). A list pays when enough are due or nearly; then every endpoint
 * of the batch joins it, whatever its age: the list names them all for
 * the same pages, and their next looks line up into one list a round
 * instead of scattering into a Describe each. Returns how many are in
 * due; *list says whether to list.
 */
static size_t gather(struct aws *a, struct aws_res **rs, size_t n,
		     struct aws_client *c, double now, struct aws_res **due,
		     bool *taken, bool *list)
{
	size_t nd = 0, nj = 0;

	for (size_t j = 0; j < n; j++) {
		if (rs[j] && !taken[j] && aws_client_of(a, rs[j]) == c &&
		    needs_look(rs[j], now)) {
			taken[j] = true;
			due[nd++] = rs[j];
		}
	}
	/* Those nearly due go after the due ones, untaken yet. */
	for (size_t j = 0; j < n; j++) {
		if (rs[j] && !taken[j] && aws_client_of(a, rs[j]) == c &&
		    nearly_due(rs[j], now))
			due[nd + nj++] = rs[j];
	}
	*list = list_pays(a, c, due, nd + nj);
	if (!*list)
		return nd;
	nj = 0;
	for (size_t j = 0; j < n; j++) {
		if (rs[j] && !taken[j] && aws_client_of(a, rs[j]) == c &&
		    rs[j]->looked && can_list(rs[j])) {
			taken[j] = true;
			due[nd + nj++] = rs[j];
		}
	}
	return nd + nj;
}

/* Looks at what is due, one batch per client. */
static void look_due(struct aws *a, struct aws_res **rs, size_t n)
{
	double now = mono_now();
	struct aws_res **due = xcalloc(n ? n : 1, sizeof(*due));
	bool *taken = xcalloc(n ? n : 1, sizeof(*taken));

	for (size_t i = 0; i < n; i++) {
		size_t nd;
		bool list;

		if (!rs[i] || taken[i] || !needs_look(rs[i], now))
			continue;
		nd = gather(a, rs, n, aws_client_of(a, rs[i]), now, due, taken,
			    &list);
		if (list)
			nd = settle_from_list(a, due, nd);
		look(a, due, nd);
	}
	free(taken);
	free(due);
}

static void foreign_error(const struct aws_res *r, struct target *t)
{
	snprintf(t->obs.error, sizeof(t->obs.error),
		 "%s %s exists and is not this resource's: %.250s; infrafs "
		 "neither adopts nor deletes it (remove or rename it in AWS)",
		 r->kind == KIND_POOL_IDX ? "HyperPod cluster"
					  : "SageMaker endpoint",
		 r->aws_name, r->foreign);
}

/*
 * Nothing is done under a name whose object is not r's; a destroy goes
 * on (what r made itself is removed, the object stays), unless its tags
 * could not even be read.
 */
static int refuse_foreign(const struct aws_res *r, struct target *t)
{
	if (!r->foreign[0] || (!t->want && !r->owner_unknown))
		return 0;
	foreign_error(r, t);
	return r->owner_unknown ? -EAGAIN : -EEXIST;
}

static void fill(struct aws *a, struct aws_res *r, struct target *t)
{
	observation_clear(&t->obs);
	if (!r)
		return;
	if (r->kind == KIND_POOL_IDX)
		cluster_fill(a, r, t);
	else
		endpoint_fill(a, r, t);
	t->obs.observed_at = r->looked_wall;
	if (r->foreign[0] && !t->obs.error[0])
		foreign_error(r, t);
	if (r->not_ours[0] && !t->obs.error[0])
		snprintf(t->obs.error, sizeof(t->obs.error), "%s", r->not_ours);
	if (r->look_error[0] && !t->obs.error[0])
		snprintf(t->obs.error, sizeof(t->obs.error), "%s",
			 r->look_error);
}

static void aws_observe(void *state, struct target *t, size_t n)
{
	struct aws *a = state;
	struct aws_res **rs = xcalloc(n ? n : 1, sizeof(*rs));

	for (size_t i = 0; i < n; i++)
		rs[i] = res_of(a, &t[i]);
	look_due(a, rs, n);
	for (size_t i = 0; i < n; i++)
		fill(a, rs[i], &t[i]);
	free(rs);
}

/* A resource declared no more, with nothing left on AWS, is forgotten. */
static bool finished(const struct aws_res *r, const struct target *t, int rc)
{
	return !t->want && !r->live && !json_array_size(r->made) && rc == 0;
}

/*
 * Steps of many resources, planned one by one and run together; then one
 * fresh look at all of them, so what each reports is what AWS says.
 */
static void aws_step_many(void *state, struct target **ts, int *rcs, size_t n)
{
	struct aws *a = state;
	struct aws_res **rs = xcalloc(n ? n : 1, sizeof(*rs));
	struct aws_res **changed = xcalloc(n ? n : 1, sizeof(*changed));
	struct plan *plans = xcalloc(n ? n : 1, sizeof(*plans));
	bool *idle = xcalloc(n ? n : 1, sizeof(*idle));
	size_t nchanged = 0;

	for (size_t i = 0; i < n; i++) {
		struct target *t = ts[i];

		rs[i] = res_of(a, t);
		t->obs.error[0] = '\0';
		if (!rs[i])
			continue;
		rs[i]->not_ours[0] = '\0';
		plans[i].rc = refuse_foreign(rs[i], t);
		if (plans[i].rc)
			continue;
		plans[i].rc = rs[i]->kind == KIND_POOL_IDX
				      ? cluster_step(a, rs[i], t, &plans[i])
				      : endpoint_step(a, rs[i], t, &plans[i]);
	}
	run_plans(a, rs, ts, plans, n);
	for (size_t i = 0; i < n; i++) {
		rcs[i] = plans[i].rc;
		idle[i] = !plans[i].n;
		plan_clear(&plans[i]);
		if (rs[i] && finished(rs[i], ts[i], rcs[i])) {
			aws_res_forget(a, rs[i]);
			rs[i] = NULL;
			fill(a, NULL, ts[i]);
		} else if (rs[i] && rs[i]->dirty) {
			/* Only a step that called AWS (take_answer) made the
			 * last look stale; one that found the resource busy
			 * waits for the next look at the polling pace (the
			 * pass's observe has just looked at what was due). */
			changed[nchanged++] = rs[i];
		}
	}
	look_due(a, changed, nchanged);
	for (size_t i = 0; i < n; i++) {
		char err[sizeof(ts[i]->obs.error)];

		if (!rs[i])
			continue;
		snprintf(err, sizeof(err), "%s", ts[i]->obs.error);
		fill(a, rs[i], ts[i]);
		if (rcs[i] && err[0])
			snprintf(ts[i]->obs.error, sizeof(ts[i]->obs.error),
				 "%s", err);
		if (!rcs[i] && idle[i])
			ts[i]->obs.retry_in_s = next_look_in(rs[i]);
	}
	free(idle);
	free(plans);
	free(changed);
	free(rs);
}

static int aws_step(void *state, struct target *t)
{
	int rc = 0;

	aws_step_many(state, &t, &rc, 1);
	return rc;
}

/* `refresh`: every resource of env is looked at in the next observe. */
static void aws_refresh(void *state, const char *env)
{
	struct aws *a = state;
	size_t n = strlen(env);
	void *v;

	for (size_t pos = 0; map_next(&a->res, &pos, &v);) {
		struct aws_res *r = v;

		if (!strncmp(r->key, env, n) && r->key[n] == '/')
			r->fresh = true;
	}
}

static uint64_t aws_calls(void *state)
{
	const struct aws *a = state;
	uint64_t n = 0;

	for (size_t i = 0; i < a->nclients; i++)
		n += aws_client_requests(a->clients[i]);
	return n;
}

static void aws_list(void *state, const char *env, struct buf *out)
{
	struct aws *a = state;
	size_t n = strlen(env);
	void *v;

	for (size_t pos = 0; map_next(&a->res, &pos, &v);) {
		const struct aws_res *r = v;

		/* Only what exists on AWS or was begun there; an import
		 * whose spec is not committed yet is nobody's to remove. */
		if ((!r->live && !json_array_size(r->made)) || r->adopting)
			continue;
		if (!strncmp(r->key, env, n) && r->key[n] == '/')
			buf_printf(out, "%ss/%s\n", kind_word(r->kind),
				   r->key + n + 1);
	}
}

/* ---- commit-time checks and cost ----------------------------------------- */

/* Settings are kept in fixed fields: what does not fit is refused, never
 * cut into another region, URL or profile. */
static int check_fits(const char *key, const char *value, size_t room,
		      char *msg, size_t len)
{
	if (strlen(value) < room)
		return 0;
	snprintf(msg, len,
		 "%s: longer than %zu bytes, the most the aws "
		 "provider keeps (got %zu)",
		 key, room - 1, strlen(value));
	return -EINVAL;
}

static int aws_check_config(const struct spec *config, char *msg, size_t len)
{
	struct aws_settings s;

	if (check_fits("region", spec_str(config, "region", ""),
		       sizeof(s.region), msg, len) ||
	    check_fits("aws.endpoint_url",
		       aws_config(config, "endpoint_url", ""),
		       sizeof(s.endpoint_url), msg, len) ||
	    check_fits("aws.profile", aws_config(config, "profile", ""),
		       sizeof(s.profile), msg, len))
		return -EINVAL;
	return aws_endpoint_url_check(aws_config(config, "endpoint_url", ""),
				      msg, len);
}

static int aws_check(const struct desired *want, char *msg, size_t len)
{
	if (aws_check_config(want->config, msg, len) < 0 ||
	    check_fits("instance_type",
		       spec_str(want->spec, "instance_type", ""), AWS_TYPE_LEN,
		       msg, len) < 0)
		return -EINVAL;
	if (!aws_config(want->config, "execution_role", NULL)) {
		snprintf(msg, len,
			 "config: aws.execution_role is required by the aws "
			 "provider (the IAM role ARN SageMaker runs %s with)",
			 want->kind == KIND_POOL_IDX ? "cluster nodes"
						     : "models");
		return -EINVAL;
	}
	return want->kind == KIND_POOL_IDX ? cluster_check(want, msg, len)
					   : endpoint_check(want, msg, len);
}

static double aws_hourly_cost(const struct desired *want)
{
	return want->kind == KIND_POOL_IDX ? cluster_cost(want)
					   : endpoint_cost(want);
}

/* ---- life ------------------------------------------------------------------ */

/*
 * This daemon's owner id, made once: 128 random bits in hex. Kept with
 * the records, since both say what this daemon made.
 */
static int load_owner(struct aws *a)
{
	char path[PATH_MAX + 8];
	unsigned char raw[16];
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "%s/owner", a->dir);
	f = fopen(path, "re");
	if (f) {
		bool ok = fscanf(f, "%32[0-9a-f]", a->owner) == 1 &&
			  strlen(a->owner) == 32;

		fclose(f);
		if (ok)
			return 0;
	}
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		log_err("aws provider: no random bytes for the owner id");
		return -EIO;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(a->owner + 2 * i, 3, "%02x", raw[i]);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, a->owner, 32) != 32 || fsync(fd) < 0)
		log_warn("aws provider: cannot keep the owner id in %s: %s",
			 path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return 0;
}

static int aws_start(const struct provider_host *host, void **state)
{
	struct aws *a = xcalloc(1, sizeof(*a));

	a->host = *host;
	snprintf(a->dir, sizeof(a->dir), "%s/aws", host->state_dir);
	if (mkdir(a->dir, 0700) < 0 && errno != EEXIST)
		log_warn("aws provider: cannot make %s: %s", a->dir,
			 strerror(errno));
	if (load_owner(a) < 0) {
		free(a);
		return -EIO;
	}
	if (records_load(a->dir, load_record, a) < 0) {
		free(a);
		return -EPERM;
	}
	*state = a;
	return 0;
}

/* What runs on AWS keeps running; the records find it again. */
static void aws_stop(void *state)
{
	struct aws *a = state;
	void *v;

	for (size_t pos = 0; map_next(&a->res, &pos, &v);)
		res_free(v);
	map_free(&a->res);
	json_decref(a->list_all);
	for (size_t i = 0; i < a->nclients; i++)
		aws_client_free(a->clients[i]);
	free(a->clients);
	free(a);
}

const struct provider_ops aws_provider = {
	.info = &aws_info,
	.start = aws_start,
	.stop = aws_stop,
	.observe = aws_observe,
	.step = aws_step,
	.step_many = aws_step_many,
	.list = aws_list,
	.refresh = aws_refresh,
	.calls = aws_calls,
	.call_stats = aws_call_stats,
	.check = aws_check,
	.check_config = aws_check_config,
	.hourly_cost = aws_hourly_cost,
	.export_terraform = aws_export_terraform,
	.adopt = aws_adopt,
	.adopted = aws_adopted,
};
