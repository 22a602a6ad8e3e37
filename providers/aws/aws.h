/* SPDX-License-Identifier: MIT */
/*
 * The aws provider's parts: request signing (sigv4.c), credentials
 * (credentials.c), the HTTP client with retries and rate limits
 * (client.c), the instance and price tables (catalog.c), SageMaker
 * endpoints (endpoints.c), HyperPod clusters (clusters.c) and the
 * provider table that ties them together (provider.c).
 *
 * Nothing here uses an AWS SDK: libcurl carries the requests, jansson the
 * awsJson1_1 bodies, OpenSSL the HMAC-SHA256 of Signature Version 4.
 */
#ifndef INFRAFS_PROVIDERS_AWS_H
#define INFRAFS_PROVIDERS_AWS_H

#include "util/buf.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- Signature Version 4 (sigv4.c) ------------------------------------- */

struct sigv4_header {
	const char *name; /* any case; signed lower-cased */
	const char *value; /* as sent; signed trimmed, inner spaces folded */
};

struct sigv4_request {
	const char *method; /* "POST" */
	const char *path; /* as sent on the request line, "/" for awsJson */
	const char *query; /* the text after '?', "" when none */
	/* Every header to sign, host and x-amz-date included (and
	 * x-amz-security-token for temporary credentials). Repeated names
	 * are joined with ',' in the order given. */
	const struct sigv4_header *headers;
	size_t nheaders;
	const void *payload;
	size_t payload_len;
	const char *region; /* "us-east-1" */
	const char *service; /* signing name: "sagemaker" */
	const char *amz_date; /* "20150830T123600Z", also in headers */
};

/*
 * Signs req with the secret key. Any of creq (canonical request), sts
 * (string to sign) and authz (the whole Authorization header value,
 * "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...")
 * may be NULL; each given one is replaced, not appended to. Returns 0, or
 * -EINVAL for a request that cannot be signed (no method, bad path).
 */
int sigv4_sign(const struct sigv4_request *req, const char *access_key_id,
	       const char *secret_access_key, struct buf *creq, struct buf *sts,
	       struct buf *authz);

/*
 * A presigned request: writes to query the request's own query (req->query,
 * already encoded) followed by the X-Amz-* parameters and the signature,
 * ready to put after '?'. Signs req->headers (host at least) and the
 * payload's hash. Returns 0 or -EINVAL, as sigv4_sign.
 */
int sigv4_presign(const struct sigv4_request *req, const char *access_key_id,
		  const char *secret_access_key, const char *session_token,
		  unsigned expires_s, struct buf *query);
/* "20150830T123600Z" for t (UTC) into out[17]. */
void sigv4_amz_date(time_t t, char out[17]);

/* ---- credentials (credentials.c) --------------------------------------- */

struct aws_creds {
	char access_key_id[128];
	char secret_access_key[128];
	char session_token[4096]; /* "" for long-term keys */
	double expires; /* epoch seconds; 0 = does not expire */
	/* Where they came from, for status and logs; never a secret:
	 * "environment", "profile ci in /home/u/.aws/credentials",
	 * "instance role build-role". */
	char source[256];
};

/*
 * One chain per profile in use, tried in the order the AWS CLI uses:
 * the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN) unless a profile was named in config, then the
 * shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
 * ~/.aws/credentials, `[name]`), then the config file (AWS_CONFIG_FILE,
 * else ~/.aws/config, `[profile name]`, `[default]`), then IMDSv2 unless
 * AWS_EC2_METADATA_DISABLED=true.
 */
struct aws_cred_chain;

/* profile: aws.profile from config, or NULL for AWS_PROFILE, else
 * "default". Never fails; a chain that finds nothing says so in get. */
struct aws_cred_chain *aws_creds_open(const char *profile);

/*
 * Current credentials. Files are read again after inotify reports a
 * change to them (editors and rotation tools rename over the file, so the
 * folder is watched); instance credentials are fetched again before
 * Expiration (5 minutes ahead). May block on IMDS (short time-outs): the
 * reconciler's thread calls it, never a FUSE request. Returns 0, or
 * -ENOKEY with msg saying what was tried (no secret in it).
 */
int aws_creds_get(struct aws_cred_chain *c, struct aws_creds *out, char *msg,
		  size_t len);

/* The profile's region from the config file (`region = ...`), or "". */
void aws_creds_profile_region(struct aws_cred_chain *c, char *out, size_t len);

void aws_creds_close(struct aws_cred_chain *c);

/* Overwrites the secret parts of creds; for buffers about to be freed. */
void aws_creds_wipe(struct aws_creds *creds);

/* ---- Kubernetes on EKS (kube.c) ---------------------------------------- */

/* Unpadded base64url of data, appended to out. */
void aws_base64url(struct buf *out, const void *data, size_t len);
/* Text from base64 (a PEM certificate), malloc'd; NULL if it is not. */
char *aws_base64_text(const char *b64);
/* "NAME" of "arn:aws:eks:REGION:ACCOUNT:cluster/NAME", or NULL. */
const char *aws_eks_cluster_name(const char *arn);
struct aws_kube_api;
/* Reads EKS DescribeCluster's answer into api: 0, or -EPROTO when it
 * lacks an https endpoint or a certificate authority. */
int aws_kube_api_set(struct aws_kube_api *api, const char *cluster,
		     json_t *described);
void aws_kube_api_clear(struct aws_kube_api *api);

/* ---- the HTTP client (client.c) ---------------------------------------- */

/* How a service's calls are framed. */
enum aws_protocol {
	AWS_JSON, /* awsJson1_1: POST / naming the operation in X-Amz-Target */
	AWS_REST_JSON, /* restJson1: the method and path are the operation */
	AWS_KUBERNETES, /* an EKS cluster's own API, with an EKS token */
};

struct aws_service {
	const char *name; /* "SageMaker", for messages */
	enum aws_protocol protocol;
	unsigned slot; /* its token bucket, < AWS_SERVICE_SLOTS */
	const char *signing_name; /* "sagemaker" */
	const char *target_prefix; /* awsJson: X-Amz-Target: PREFIX.Op */
	const char *host_prefix; /* PREFIX.REGION.amazonaws.com */
	const char *env_name; /* AWS_ENDPOINT_URL_<env_name> */
};

#define AWS_SERVICE_SLOTS 4
extern const struct aws_service aws_sagemaker;
extern const struct aws_service aws_autoscaling;
extern const struct aws_service aws_eks;
extern const struct aws_service aws_kubernetes;

/*
 * Where an EKS cluster's Kubernetes API answers and how to trust it, as
 * EKS DescribeCluster tells. Every call carries a fresh token: an STS
 * GetCallerIdentity request presigned for a minute and naming the
 * cluster, which EKS checks with STS (what `aws eks get-token` makes).
 */
struct aws_kube_api {
	char cluster[101]; /* the EKS cluster's name */
	char endpoint[256]; /* "https://ABC.gr7.us-east-1.eks.amazonaws.com" */
	char *ca_pem; /* its certificate authority, PEM (owned) */
};

/* Where and how an environment reaches AWS: one client per distinct set. */
struct aws_settings {
	char region[32];
	char endpoint_url[256]; /* "" = the service's public endpoint */
	char profile[64]; /* "" = AWS_PROFILE, else default */
	double requests_per_second; /* ceiling of each service's bucket */
	unsigned max_connections;
	double timeout_s; /* one attempt */
};

void aws_settings_defaults(struct aws_settings *s);

/*
 * aws.endpoint_url from an environment's config: "" or https://, or plain
 * http:// only to a loopback host, since signed requests and session
 * tokens must not cross a network in clear. 0, or -EINVAL with msg naming
 * the key and the rule. The daemon's own AWS_ENDPOINT_URL is not checked:
 * the administrator set it.
 */
int aws_endpoint_url_check(const char *url, char *msg, size_t len);

struct aws_client;

struct aws_client *aws_client_new(const struct aws_settings *s);
void aws_client_free(struct aws_client *c);
/* Requests this client has sent, every attempt counted. */
uint64_t aws_client_requests(const struct aws_client *c);
bool aws_client_matches(const struct aws_client *c,
			const struct aws_settings *s);

struct aws_call_io; /* the client's per-call transfer state */

struct aws_call {
	const struct aws_service *service;
	const char *op; /* "DescribeEndpoint"; REST: a name for messages */
	json_t *input; /* owned: released by aws_call_clear; NULL: no body */
	/* restJson1 and Kubernetes calls: the request line. */
	const char *method; /* "GET", "PATCH", "DELETE" */
	char path[400]; /* "/clusters/NAME", with any query */
	const struct aws_kube_api *kube; /* Kubernetes: whose API (borrowed) */
	/* Results. */
	int rc; /* 0, or -EIO (service error), -ENOKEY, -ETIMEDOUT, ... */
	long http_status; /* 0 when no answer came */
	json_t *output; /* the answer on success (owned) */
	char code[96]; /* AWS error code, "" on success */
	char message[400]; /* AWS error message or transport error */
	char request_id[64];
	unsigned attempts;
	struct aws_call_io *io;
};

/* Readies a call; takes the reference to input (NULL sends {}). */
void aws_call_init(struct aws_call *call, const struct aws_service *svc,
		   const char *op, json_t *input);
/* Readies a restJson1 or Kubernetes call; input may be NULL. */
void aws_call_init_rest(struct aws_call *call, const struct aws_service *svc,
			const char *op, const char *method, const char *path,
			json_t *input);
void aws_call_clear(struct aws_call *call);

/*
 * Runs every call to its end, concurrently through curl's multi
 * interface, within the service's rate, retrying throttling and
 * transient failures with capped exponential back-off and full jitter.
 * Each call's rc says how it ended; returns the number that failed.
 */
size_t aws_run(struct aws_client *c, struct aws_call *calls, size_t n);

/* One call, waited for: 0, or the call's rc with err saying why. */
int aws_call1(struct aws_client *c, const struct aws_service *svc,
	      const char *op, json_t *input, json_t **out, char *err,
	      size_t errlen);

/* What an error answer means, read as AWS words it. */
bool aws_error_not_found(const char *code, const char *message);
bool aws_error_exists(const char *code, const char *message);
/* "SageMaker CreateEndpoint: ValidationException: message" */
void aws_call_describe_error(const struct aws_call *call, char *out,
			     size_t len);

/* Header lists carry session tokens and signatures: wiped, then freed. */
struct curl_slist;
void aws_slist_wipe_free(struct curl_slist *list);

struct provider_call_stat;
/* Errors and throttles by service and operation: provider_ops.call_stats. */
size_t aws_call_stats(struct provider_call_stat *out, size_t max);

#endif
