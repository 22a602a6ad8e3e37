/* SPDX-License-Identifier: MIT */
/*
 * What the aws provider knows of each resource it runs, and the parts
 * that turn one kind of resource into AWS calls: endpoints.c (SageMaker
 * real-time endpoints with their models, configs and autoscaling) and
 * clusters.c (HyperPod clusters for pools).
 */
#ifndef INFRAFS_PROVIDERS_AWS_RES_H
#define INFRAFS_PROVIDERS_AWS_RES_H

#include "aws.h"
#include "providers/provider.h"
#include "util/map.h"

#include <limits.h>

/*
 * One resource. The saved part is what a crash must not lose: the names
 * of everything made for it (written before each create call, so a crash
 * right after the call still finds what it made), how its environment
 * reaches AWS (a destroy has no config to read), and which revision the
 * live resource last matched.
 */
struct aws_res {
	char id[150]; /* "pool:ENV/NAME", the map's key */
	char key[140]; /* ENV/NAME */
	int kind; /* KIND_POOL_IDX, KIND_ENDPOINT_IDX */
	char aws_name[64]; /* the endpoint's or cluster's name */
	/* Named and tagged by a daemon before names carried a hash: its
	 * names stay, and its objects need no infrafs:owner tag. */
	bool legacy_names;
	/* "ARN@CreationTime" of the live object once its tags said it is
	 * this resource's; a new object under the name is asked again. */
	char owned_of[320];
	/* Why the object under our name is not ours ("" when it is, or
	 * when there is none); it is then neither adopted nor deleted. */
	char foreign[300];
	bool owner_unknown; /* its tags could not be read: wait */
	/* The last step met a model or config under its name that is not
	 * r's: said in status until a step gets past it. */
	char not_ours[480];
	struct aws_settings settings;
	double poll_s; /* how often an unfinished change is looked at */
	double refresh_s; /* how often a finished one is */
	uint64_t last_rev; /* revision the live resource last matched */
	uint64_t config_rev; /* endpoint: revision naming the wanted config */
	char config_fp[17]; /* endpoint: hash of what that config holds */
	/* endpoint, imported: the model and config it ran on when adopted,
	 * used while config_fp is what was adopted; never deleted, as
	 * infrafs did not make them. */
	char adopted_model[64], adopted_config[64];
	/* endpoint, imported autoscaled: the target tracking policy it had,
	 * which infrafs then puts and deletes in place of its own. */
	char adopted_policy[256];
	/* Adopted, its spec not yet committed: neither listed nor acted on
	 * until the spec's first observe, forgotten if the commit fails. */
	bool adopting;
	/* endpoint: "min:max:target" registered; pool: the Karpenter limits
	 * applied ("nvidia.com/gpu=16"); "" none. */
	char scaling[96];
	char eks[101]; /* pool: the EKS cluster holding its Karpenter objects */
	struct aws_kube_api kube; /* that cluster's API, once EKS told it */
	json_t *made; /* ["model/NAME", "endpoint-config/NAME", ...] */
	/* The last look: a Describe answer (NULL: none found). */
	json_t *live;
	bool looked;
	bool dirty; /* a step changed it: look again before trusting live */
	bool fresh; /* `refresh`: look now, whatever the last look's age */
	double looked_at; /* monotonic */
	double looked_wall; /* the same moment, wall clock, for status */
	/* When the next look is due, jittered around poll_s or refresh_s so
	 * that resources made together do not poll together. */
	double next_look;
	char look_error[400];
};

struct aws {
	struct provider_host host;
	char dir[PATH_MAX];
	struct map res; /* "KIND:ENV/NAME" -> struct aws_res */
	/* This daemon's identity on what it makes (infrafs:owner), kept in
	 * STATE_DIR/aws/owner: the records and the tags go together. */
	char owner[33];
	struct aws_client **clients;
	size_t nclients;
	/* The last ListEndpoints, shared by the observes of one pass. */
	json_t *list_all; /* EndpointName -> EndpointSummary */
	struct aws_client *list_client;
	double list_at; /* monotonic */
};

/* provider.c */
struct aws_client *aws_client_of(struct aws *a, const struct aws_res *r);
/* A new record of kind at key ("ENV/NAME"), held in a's map. */
struct aws_res *aws_res_new(struct aws *a, int kind, const char *key);
/* The record of kind at env/name, or NULL. */
struct aws_res *aws_res_find(struct aws *a, int kind, const char *env,
			     const char *name);
/* Off the map and the disk. */
void aws_res_forget(struct aws *a, struct aws_res *r);
/* How want's environment reaches AWS (region, URL, profile, pace). */
void aws_res_configure(struct aws_res *r, const struct desired *want);
/* "ARN@CreationTime" of r->live: who r->owned_of says r owns. */
void aws_live_identity(const struct aws_res *r, char *out, size_t len);
int aws_res_save(struct aws *a, struct aws_res *r);
/* Adds what is about to be made to the record, saved before the call. */
int aws_res_made(struct aws *a, struct aws_res *r, const char *what);
void aws_res_unmade(struct aws *a, struct aws_res *r, const char *what);
bool aws_res_has_made(const struct aws_res *r, const char *what);
/* A config key of the aws provider (`aws.KEY`), or dflt. */
const char *aws_config(const struct spec *config, const char *key,
		       const char *dflt);
/* "infrafs-ENV-NAME-HASH" plus suffix, within SageMaker's 63 characters
 * (HASH: of environment, kind and name); legacy records keep the names
 * they were made with. */
void aws_resource_name(const struct aws_res *r, const char *suffix, char *out,
		       size_t len);
double aws_price(const struct spec *config, const char *type, bool hyperpod);
/* instance_type, else the catalog's type for accelerator and the count
 * in count_field (at least one device for a GPU); NULL when none fits. */
/* Room for an instance type name ("ml.p5e.48xlarge"); longer ones are
 * refused at commit. */
#define AWS_TYPE_LEN 64

const char *aws_instance_type(const struct spec *s, const char *count_field,
			      bool hyperpod, char *out, size_t len);
/* Tags that say who made a resource: infrafs:owner, infrafs:environment,
 * infrafs:kind and infrafs:resource make it ours; infrafs:revision is for
 * people reading the console. */
json_t *aws_tags(const struct aws *a, const struct aws_res *r, uint64_t rev);
/* Whether ListTags' Tags say the object is r's; why not into why. */
bool aws_tags_ours(const struct aws *a, const struct aws_res *r, json_t *tags,
		   char *why, size_t len);
/* What a step may read as done rather than failed. */
enum {
	AWS_OK_MISSING = 1, /* a delete of what is gone already */
	AWS_OK_EXISTS = 2, /* a create of what an earlier attempt made */
};

/* What the record learns when a planned call succeeds. */
enum post_action {
	POST_NONE,
	POST_UNMADE, /* arg was deleted: off the record */
	POST_SET_SCALING, /* arg ("min:max:target") is registered */
	POST_CLEAR_SCALING, /* autoscaling is gone */
	POST_KUBE_API, /* the answer says where r->eks's API is */
	POST_ARN_NEXT, /* the answer's ARN is the next call's ResourceArn */
	POST_OWNED, /* the answer's Tags must say arg is r's */
	POST_KUBE_OWNED, /* the Kubernetes object arg, if any, must be r's */
};

struct planned {
	const struct aws_service *svc;
	const char *op;
	json_t *input; /* owned until the call takes it */
	const char *method; /* restJson1 and Kubernetes: the request line */
	char path[200];
	const struct aws_kube_api *kube;
	unsigned ok; /* AWS_OK_* */
	enum post_action post;
	char arg[96];
	unsigned skip_if_missing; /* AWS_OK_MISSING: calls after it to skip */
	/* AWS_OK_EXISTS on a model or config: check arg's tags before
	 * taking what exists as made. */
	bool verify_existing;
};

/*
 * One step of one resource: the calls it needs, in order, each sent only
 * when the one before succeeded. Steps of many resources run together,
 * one call of each per round (provider.c), so the calls of a round share
 * the client's connections and rate.
 */
#define PLAN_MAX 16

struct plan {
	struct planned calls[PLAN_MAX];
	size_t n, at;
	int rc; /* 0, or why the step stopped (t->obs.error says) */
};

/* Adds a call (taking input); NULL when the plan is full, the rest then
 * being the next step's. */
struct planned *plan_call(struct plan *p, const struct aws_service *svc,
			  const char *op, json_t *input, unsigned ok);

/* The same for a restJson1 or Kubernetes call; input may be NULL. */
struct planned *plan_rest(struct plan *p, const struct aws_service *svc,
			  const char *op, const char *method, const char *path,
			  json_t *input, unsigned ok);

/* Plans the ownership check of what (model/NAME, endpoint-config/NAME)
 * and, when it is r's, its delete; a missing one is off the record. */
void plan_owned_delete(struct plan *p, const char *what);

/* endpoints.c */
json_t *endpoint_describe_input(const struct aws_res *r);
void endpoint_fill(struct aws *a, struct aws_res *r, struct target *t);
/* Plans the next step; 0, or a negative errno with t->obs.error set. */
int endpoint_step(struct aws *a, struct aws_res *r, struct target *t,
		  struct plan *p);
int endpoint_check(const struct desired *want, char *msg, size_t len);
double endpoint_cost(const struct desired *want);
const char *endpoint_instance_type(const struct spec *s, char *out, size_t len);
/* want's model, endpoint config, endpoint and autoscaling as Terraform
 * resources named local, into resource (type -> local -> body); the
 * variables a secret:NAME needs into variables. */
void endpoint_terraform(const struct aws *a, const struct aws_res *r,
			const struct desired *want, const char *local,
			json_t *resource, json_t *variables);

/* Fills w-less parts of an adopted endpoint's record: the fingerprint of
 * want, so that want_of names the adopted model and config. */
void endpoint_adopt_fingerprint(struct aws_res *r, const struct desired *want);

/* adopt.c */
int aws_adopt(void *state, const struct desired *at, const char *id,
	      struct buf *spec, char *msg, size_t len);
void aws_adopted(void *state, const struct desired *at, uint64_t rev);

/* terraform.c */
void aws_export_terraform(void *state, const char *env,
			  const struct spec *config, const struct desired *want,
			  size_t n, struct buf *out);

/* clusters.c */
json_t *cluster_describe_input(const struct aws_res *r);
void cluster_fill(struct aws *a, struct aws_res *r, struct target *t);
int cluster_step(struct aws *a, struct aws_res *r, struct target *t,
		 struct plan *p);
int cluster_check(const struct desired *want, char *msg, size_t len);
double cluster_cost(const struct desired *want);
/* Whether a Karpenter object (a GET's answer) carries r's owner label
 * and resource annotation; why not into why. */
bool cluster_kube_ours(const struct aws *a, const struct aws_res *r,
		       json_t *object, char *why, size_t len);
/* The pool's EKS cluster is gone, and its Karpenter objects with it. */
void cluster_forget_karpenter(struct aws *a, struct aws_res *r);

/* Status words of SageMaker to the contract's. */
bool aws_status_in_progress(const char *status);

#endif
