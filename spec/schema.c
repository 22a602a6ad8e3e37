// SPDX-License-Identifier: MIT
#include "schema.h"

#include <string.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *const accelerator_names[] = {
	"cpu",
	"nvidia-t4",
	"nvidia-l4",
	"nvidia-a10g",
	"nvidia-a100-40gb",
	"nvidia-a100-80gb",
	"nvidia-h100-80gb",
	"nvidia-h200-141gb",
	"nvidia-b200",
	NULL,
};

static const char *const capacity_names[] = { "on-demand", "spot", NULL };
static const char *const uri_schemes[] = { "s3://", "gs://", "file://", "hf://",
					   NULL };
static const char *const scale_metrics[] = { "concurrency", "rps",
					     "invocations_per_replica",
					     "gpu_utilization", NULL };
static const char *const provider_names[] = { "local", "aws", "kubernetes",
					      "gcp", NULL };
static const char *const approval_modes[] = { "auto", "manual", NULL };
static const char *const drift_modes[] = { "heal", "report", NULL };
static const char *const protect_modes[] = { "none", "destroy", NULL };
static const char *const secrets_users[] = { "owner", "group", NULL };

/*
 * Counts that have no natural ceiling are bounded only by int64; a policy
 * (max_nodes_per_pool, max_accelerators) is where an environment caps them.
 */
#define UNBOUNDED INT64_MAX

/*
 * How long text fields may be, in bytes. Generous for what each holds,
 * small enough that every consumer can take the whole value.
 *
 * A command is one argument of `sh -c`: Linux takes at most 128 KiB in one
 * argument (MAX_ARG_STRLEN), and a replica's environment shares the space.
 */
#define LEN_COMMAND (64 * 1024)
/* One environment variable's value, another string of the same space. */
#define LEN_ENV_VALUE (32 * 1024)
/* URIs, image references, HTTP paths and provider URLs: S3 and GCS object
 * keys are at most 1024 bytes, and URLs past 2 KiB are refused widely. */
#define LEN_URL 2048
/* Provider words: instance types, regions, profiles (tens of bytes). */
#define LEN_WORD 128
/* Comma-separated lists: a few dozen zones or label keys. */
#define LEN_LIST 4096
/* Labels become cloud tags: AWS takes 128-byte keys, 256-byte values. */
#define LEN_LABEL_KEY 128
#define LEN_LABEL_VALUE 256
/* Variable and setting names. */
#define LEN_MAP_KEY 256

static const struct field_def pool_fields[] = {
	{
		.name = "accelerator",
		.type = FT_ENUM,
		.choices = accelerator_names,
		.def = "cpu",
		.help = "The device model on every node of the pool; cpu "
			"means nodes without accelerators.",
	},
	{
		.name = "accelerators_per_node",
		.type = FT_INT,
		.min = 1,
		.max = 16,
		.def = "1",
		.help = "How many accelerators each node carries.",
	},
	{
		.name = "nodes",
		.type = FT_INT,
		.min = 0,
		.max = UNBOUNDED,
		.def = "1",
		.help = "How many nodes the pool should have. 0 keeps the "
			"pool declared but releases every node.",
	},
	{
		.name = "min_nodes",
		.type = FT_INT,
		.min = 0,
		.max = UNBOUNDED,
		.def_from = "nodes",
		.help = "The lower autoscaling bound; must be <= nodes.",
	},
	{
		.name = "max_nodes",
		.type = FT_INT,
		.min = 0,
		.max = UNBOUNDED,
		.def_from = "nodes",
		.help = "The upper autoscaling bound; must be >= nodes.",
	},
	{
		.name = "capacity",
		.type = FT_ENUM,
		.choices = capacity_names,
		.def = "on-demand",
		.help = "on-demand nodes stay until released; spot nodes "
			"cost less but the provider may reclaim them at any "
			"time.",
	},
	{
		.name = "zones",
		.type = FT_LIST,
		.def_doc = "provider default",
		.help = "The provider's zones the nodes may be placed in, "
			"comma-separated (us-east-1a, us-east-1b).",
		.max_len = LEN_LIST,
	},
	{
		.name = "instance_type",
		.type = FT_STRING,
		.def_doc = "derived from accelerator",
		.help = "A provider-specific machine type that overrides the "
			"one infrafs picks for the accelerator "
			"(p4d.24xlarge, a2-highgpu-1g).",
		.max_len = LEN_WORD,
	},
	{
		.name = "labels",
		.type = FT_MAP,
		.help = "Free-form labels put on the pool's cloud resources, "
			"one per line: labels.team = nlp. KEY is made of "
			"letters, digits, '.', '_', '/' and '-'.",
		.max_len = LEN_LABEL_VALUE,
		.max_key_len = LEN_LABEL_KEY,
	},
};

static const struct field_def endpoint_fields[] = {
	{
		.name = "model",
		.type = FT_URI,
		.choices = uri_schemes,
		.help = "Where the model artifacts are: "
			"s3://bucket/path, gs://bucket/path, file:///path or "
			"hf://org/model.",
		.max_len = LEN_URL,
	},
	{
		.name = "image",
		.type = FT_STRING,
		.help = "The container image that serves the model "
			"(cloud and Kubernetes providers).",
		.max_len = LEN_URL,
	},
	{
		.name = "command",
		.type = FT_STRING,
		.help = "The command line that serves the model (local "
			"provider). $PORT is set to the port it must listen "
			"on.",
		.max_len = LEN_COMMAND,
	},
	{
		.name = "pool",
		.type = FT_NAME,
		.help = "The pool, in the same environment, whose nodes run "
			"the replicas (local and Kubernetes providers).",
	},
	{
		.name = "accelerator",
		.type = FT_ENUM,
		.choices = accelerator_names,
		.def_doc = "the pool's, else cpu",
		.help = "The device model each replica runs on.",
	},
	{
		.name = "accelerators",
		.type = FT_INT,
		.min = 0,
		.max = 16,
		.def = "0",
		.help = "How many accelerators each replica gets.",
	},
	{
		.name = "instance_type",
		.type = FT_STRING,
		.def_doc = "derived from accelerator and accelerators",
		.help = "A provider-specific machine type that overrides the "
			"one infrafs picks (ml.g5.xlarge).",
		.max_len = LEN_WORD,
	},
	{
		.name = "replicas",
		.type = FT_INT,
		.min = 0,
		.max = UNBOUNDED,
		.def = "1",
		.help = "How many replicas should serve. 0 keeps the "
			"endpoint declared but stops every replica.",
	},
	{
		.name = "min_replicas",
		.type = FT_INT,
		.min = 0,
		.max = UNBOUNDED,
		.def_from = "replicas",
		.help = "The lower autoscaling bound; must be <= replicas.",
	},
	{
		.name = "max_replicas",
		.type = FT_INT,
		.min = 0,
		.max = UNBOUNDED,
		.def_from = "replicas",
		.help = "The upper autoscaling bound; must be >= replicas.",
	},
	{
		.name = "scale_metric",
		.type = FT_ENUM,
		.choices = scale_metrics,
		.help = "The signal autoscaling follows; set together with "
			"scale_target. Unset means no autoscaling.",
	},
	{
		.name = "scale_target",
		.type = FT_NUMBER,
		.nmin = 0,
		.nmin_exclusive = true,
		.help = "The value of scale_metric per replica that "
			"autoscaling aims for; set together with "
			"scale_metric.",
	},
	{
		.name = "port",
		.type = FT_INT,
		.min = 1,
		.max = 65535,
		.def = "8080",
		.help = "The port the server listens on inside a replica.",
	},
	{
		.name = "health_path",
		.type = FT_STRING,
		.def = "/health",
		.help = "The HTTP path that answers 200 when a replica is "
			"ready; it starts with '/'.",
		.max_len = LEN_URL,
	},
	{
		.name = "env",
		.type = FT_MAP,
		.help = "Environment variables of the server, one per line: "
			"env.LOG_LEVEL = debug. NAME is a shell variable name. "
			"A value secret:NAME is replaced by the secret NAME "
			"of the environment's secrets/.",
		.max_len = LEN_ENV_VALUE,
		.max_key_len = LEN_MAP_KEY,
	},
};

/* Keys that pick the daemon's credentials or where they are sent. */
static const char *const aws_privileged[] = { "profile", "endpoint_url",
					      "eks_cluster_arn", NULL };
static const char *const kubernetes_privileged[] = { "kubeconfig", "context",
						     NULL };

static const struct field_def config_fields[] = {
	{
		.name = "provider",
		.type = FT_ENUM,
		.choices = provider_names,
		.def = "local",
		.help = "Where the environment's resources live.",
	},
	{
		.name = "region",
		.type = FT_STRING,
		.def_doc = "provider default",
		.help = "The provider's region (us-east-1, europe-west4).",
		.max_len = LEN_WORD,
	},
	{
		.name = "approval",
		.type = FT_ENUM,
		.choices = approval_modes,
		.def = "auto",
		.help = "auto applies accepted changes after settle_ms; "
			"manual keeps them in plan until "
			"`echo approve > ctl`.",
	},
	{
		.name = "settle_ms",
		.type = FT_INT,
		.min = 0,
		.max = 3600000,
		.def = "500",
		.help = "How long changes are gathered, in milliseconds, "
			"before they are applied together.",
	},
	{
		.name = "refresh_s",
		.type = FT_INT,
		.min = 1,
		.max = 86400,
		.def = "30",
		.help = "How often live state is read back from the "
			"provider, in seconds.",
	},
	{
		.name = "drift",
		.type = FT_ENUM,
		.choices = drift_modes,
		.def = "heal",
		.help = "What to do when a resource was changed outside "
			"infrafs: heal puts it back as declared, report only "
			"shows it in status and events.",
	},
	{
		.name = "history_keep",
		.type = FT_INT,
		.min = 1,
		.max = UNBOUNDED,
		.def_doc = "all",
		.help = "How many of the newest revisions history/ keeps; "
			"older ones are pruned, and the audit chain goes on "
			"from a checkpoint. Revisions not yet applied always "
			"stay.",
	},
	{
		.name = "history_keep_days",
		.type = FT_INT,
		.min = 1,
		.max = 36500,
		.def_doc = "all",
		.help = "How many days of revisions history/ keeps; with "
			"history_keep too, a revision goes only when both let "
			"it go.",
	},
	{
		.name = "source",
		.type = FT_STRING,
		.def_doc = "none",
		.help = "An absolute path to a folder laid out like the "
			"environment (pools/NAME/spec, endpoints/NAME/spec, "
			"policy), usually a Git work tree: the environment "
			"follows it, and its specs are changed only there.",
		.max_len = LEN_URL,
	},
	{
		.name = "aws",
		.type = FT_MAP,
		.help = "Settings of the aws provider (aws.profile, "
			"aws.endpoint_url, ...); providers/aws lists them.",
		.max_len = LEN_URL,
		.max_key_len = LEN_MAP_KEY,
		.privileged = aws_privileged,
	},
	{
		.name = "kubernetes",
		.type = FT_MAP,
		.help = "Settings of the kubernetes provider "
			"(kubernetes.context, kubernetes.namespace, ...); "
			"providers/kubernetes lists them.",
		.max_len = LEN_URL,
		.max_key_len = LEN_MAP_KEY,
		.privileged = kubernetes_privileged,
	},
	{
		.name = "gcp",
		.type = FT_MAP,
		.help = "Settings of the gcp provider (gcp.project, ...); "
			"providers/gcp lists them.",
		.max_len = LEN_URL,
		.max_key_len = LEN_MAP_KEY,
	},
	{
		.name = "local",
		.type = FT_MAP,
		.help = "Settings of the local provider; providers/local "
			"lists them.",
		.max_len = LEN_URL,
		.max_key_len = LEN_MAP_KEY,
	},
};

static const struct field_def policy_fields[] = {
	{
		.name = "max_accelerators",
		.type = FT_INT,
		.min = 0,
		.max = UNBOUNDED,
		.def_doc = "unlimited",
		.help = "The most accelerators the whole environment may "
			"ask for, pools and endpoints together.",
	},
	{
		.name = "max_nodes_per_pool",
		.type = FT_INT,
		.min = 0,
		.max = UNBOUNDED,
		.def_doc = "unlimited",
		.help = "The most nodes (and max_nodes) any one pool may "
			"ask for.",
	},
	{
		.name = "allowed_accelerators",
		.type = FT_LIST,
		.choices = accelerator_names,
		.def_doc = "all",
		.help = "The accelerator models pools and endpoints may "
			"use.",
		.max_len = LEN_LIST,
	},
	{
		.name = "allowed_capacity",
		.type = FT_LIST,
		.choices = capacity_names,
		.def_doc = "all",
		.help = "The capacity types pools may use.",
		.max_len = LEN_LIST,
	},
	{
		.name = "max_hourly_cost_usd",
		.type = FT_NUMBER,
		.nmin = 0,
		.def_doc = "unlimited",
		.help = "The most the environment may cost per hour, in US "
			"dollars, as the providers estimate it.",
	},
	{
		.name = "protect",
		.type = FT_ENUM,
		.choices = protect_modes,
		.def = "none",
		.help = "destroy makes every rmdir of a resource wait for "
			"`echo approve > ctl`.",
	},
	{
		.name = "require_labels",
		.type = FT_LIST,
		.def_doc = "none",
		.help = "Label keys every pool must set.",
		.max_len = LEN_LIST,
	},
	{
		.name = "secrets_use",
		.type = FT_ENUM,
		.choices = secrets_users,
		.def = "owner",
		.help = "Who may write secrets/ and use secrets: commit a spec "
			"that passes secret:NAME to its replicas, or change "
			"command, image or env of one that does. owner: the "
			"environment's owner and root; group: its group too.",
	},
};

const struct kind_def kind_pool = {
	.name = "pool",
	.dir = "pools",
	.summary = "a group of machines with the same accelerator",
	.fields = pool_fields,
	.nfields = COUNT(pool_fields),
};

const struct kind_def kind_endpoint = {
	.name = "endpoint",
	.dir = "endpoints",
	.summary = "replicas of a model server behind one address",
	.fields = endpoint_fields,
	.nfields = COUNT(endpoint_fields),
};

const struct kind_def kind_config = {
	.name = "config",
	.dir = NULL,
	.summary = "how an environment reaches its provider and applies "
		   "changes",
	.fields = config_fields,
	.nfields = COUNT(config_fields),
};

const struct kind_def kind_policy = {
	.name = "policy",
	.dir = NULL,
	.summary = "guardrails every change to an environment must pass",
	.fields = policy_fields,
	.nfields = COUNT(policy_fields),
};

const struct kind_def *const resource_kinds[] = { &kind_pool, &kind_endpoint,
						  NULL };

static const struct kind_def *const all_kinds[] = { &kind_pool, &kind_endpoint,
						    &kind_config, &kind_policy,
						    NULL };

const struct kind_def *kind_by_name(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; all_kinds[i]; i++) {
		if (strcmp(all_kinds[i]->name, name) == 0)
			return all_kinds[i];
	}
	return NULL;
}

const struct kind_def *kind_by_dir(const char *dir)
{
	if (!dir)
		return NULL;
	for (size_t i = 0; resource_kinds[i]; i++) {
		if (strcmp(resource_kinds[i]->dir, dir) == 0)
			return resource_kinds[i];
	}
	return NULL;
}

const struct field_def *kind_field(const struct kind_def *k, const char *name,
				   size_t len)
{
	for (size_t i = 0; i < k->nfields; i++) {
		const char *f = k->fields[i].name;

		if (strlen(f) == len && memcmp(f, name, len) == 0)
			return &k->fields[i];
	}
	return NULL;
}

bool kind_key_privileged(const struct kind_def *k, const char *dotted,
			 size_t len)
{
	const char *dot = memchr(dotted, '.', len);
	const struct field_def *f;

	if (!dot)
		return false;
	f = kind_field(k, dotted, (size_t)(dot - dotted));
	for (size_t i = 0; f && f->privileged && f->privileged[i]; i++) {
		const char *key = f->privileged[i];
		size_t n = len - (size_t)(dot + 1 - dotted);

		if (strlen(key) == n && memcmp(key, dot + 1, n) == 0)
			return true;
	}
	return false;
}
