// SPDX-License-Identifier: MIT
/*
 * The HTTP side of the aws provider: awsJson1_1 calls, signed, sent many
 * at a time through one curl multi handle, paced by a token bucket per
 * service and retried the way AWS asks clients to retry.
 *
 * Being a good citizen of a shared API matters more than speed: every
 * account's calls share the same limits, and a client that retries
 * throttling at once makes the storm worse for every other tool. So a
 * throttled answer halves the bucket's rate (recovering slowly after),
 * and each retry waits a random time below a doubling cap (full jitter).
 */
#include "aws.h"

#include "providers/provider.h"
#include "util/log.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

/* Attempts per call before the failure is the step's to report. */
#define MAX_ATTEMPTS 6
/*
 * A call that timed out is tried once more, not five times: the calls run
 * on the reconciler's thread, and a service that hangs would hold every
 * environment's pass for minutes. The reconciler's own back-off retries
 * the step later.
 */
#define MAX_TIMEOUT_ATTEMPTS 2
/* Full jitter: attempt i waits uniform(0, min(CAP, BASE * 2^i)). */
#define BACKOFF_BASE_S 0.1
#define BACKOFF_CAP_S 20.0
/* After a throttled answer the rate halves, never below this. */
#define MIN_RATE 1.0

const struct aws_service aws_sagemaker = {
	.name = "SageMaker",
	.protocol = AWS_JSON,
	.slot = 0,
	.signing_name = "sagemaker",
	.target_prefix = "SageMaker",
	.host_prefix = "api.sagemaker",
	.env_name = "SAGEMAKER",
};

const struct aws_service aws_autoscaling = {
	.name = "Application Auto Scaling",
	.protocol = AWS_JSON,
	.slot = 1,
	.signing_name = "application-autoscaling",
	.target_prefix = "AnyScaleFrontendService",
	.host_prefix = "application-autoscaling",
	.env_name = "APPLICATION_AUTO_SCALING",
};

const struct aws_service aws_eks = {
	.name = "EKS",
	.protocol = AWS_REST_JSON,
	.slot = 2,
	.signing_name = "eks",
	.host_prefix = "eks",
	.env_name = "EKS",
};

/* Never called: the URL its tokens presign (endpoint_url picks it). */
static const struct aws_service aws_sts = {
	.name = "STS",
	.protocol = AWS_JSON,
	.signing_name = "sts",
	.host_prefix = "sts",
	.env_name = "STS",
};

const struct aws_service aws_kubernetes = {
	.name = "Kubernetes",
	.protocol = AWS_KUBERNETES,
	.slot = 3,
};

/* How long an EKS token may be used; `aws eks get-token` gives 60 s too. */
#define KUBE_TOKEN_LIFETIME_S 60

/* Pacing for one service in one region. */
struct bucket {
	double tokens;
	double rate; /* now, after throttling */
	double ceiling; /* configured */
	double at; /* last refill */
};

struct aws_client {
	struct aws_settings settings;
	CURLM *multi;
	struct aws_cred_chain *creds;
	struct bucket buckets[AWS_SERVICE_SLOTS];
	uint64_t requests; /* sent, for metrics; the reconciler's thread */
};

struct aws_call_io {
	CURL *easy;
	struct curl_slist *headers;
	char *body; /* the request body, kept while curl sends it */
	struct buf answer;
	double due; /* monotonic time the next attempt may start */
	bool in_flight, done;
	char url[700];
	char error[CURL_ERROR_SIZE];
	char error_type[96]; /* restJson1's x-amzn-ErrorType header */
};

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double random_unit(void)
{
	uint32_t r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)rand();
	return (double)r / 4294967296.0;
}

void aws_settings_defaults(struct aws_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->requests_per_second = 100;
	s->max_connections = 64;
	s->timeout_s = 15;
}

/* ---- calls ---------------------------------------------------------- */

static void call_reset(struct aws_call *call, const struct aws_service *svc,
		       const char *op, json_t *input)
{
	memset(call, 0, sizeof(*call));
	call->service = svc;
	call->op = op;
	call->input = input;
}

void aws_call_init(struct aws_call *call, const struct aws_service *svc,
		   const char *op, json_t *input)
{
	call_reset(call, svc, op, input ? input : json_object());
}

void aws_call_init_rest(struct aws_call *call, const struct aws_service *svc,
			const char *op, const char *method, const char *path,
			json_t *input)
{
	call_reset(call, svc, op, input);
	call->method = method;
	snprintf(call->path, sizeof(call->path), "%s", path);
}

void aws_slist_wipe_free(struct curl_slist *list)
{
	for (struct curl_slist *h = list; h; h = h->next)
		OPENSSL_cleanse(h->data, strlen(h->data));
	curl_slist_free_all(list);
}

static void io_release(struct aws_call_io *io)
{
	if (!io)
		return;
	if (io->easy)
		curl_easy_cleanup(io->easy);
	aws_slist_wipe_free(io->headers);
	free(io->body);
	buf_free(&io->answer);
	free(io);
}

void aws_call_clear(struct aws_call *call)
{
	json_decref(call->input);
	json_decref(call->output);
	io_release(call->io);
	call->input = call->output = NULL;
	call->io = NULL;
}

/* ---- what answers mean ------------------------------------------------ */

static const char *const throttling_codes[] = {
	"Throttling",
	"ThrottlingException",
	"ThrottledException",
	"RequestThrottledException",
	"TooManyRequestsException",
	"ProvisionedThroughputExceededException",
	"TransactionInProgressException",
	"RequestLimitExceeded",
	"BandwidthLimitExceeded",
	"LimitExceededException",
	"RequestThrottled",
	"SlowDown",
	"PriorRequestNotComplete",
	NULL,
};

static bool in_list(const char *const *list, const char *word)
{
	for (size_t i = 0; list[i]; i++) {
		if (!strcmp(list[i], word))
			return true;
	}
	return false;
}

static bool is_throttling(const struct aws_call *call)
{
	return call->http_status == 429 ||
	       in_list(throttling_codes, call->code);
}

static bool is_transient(const struct aws_call *call)
{
	switch (call->http_status) {
	case 0: /* no answer: refused, dropped, timed out; not refused TLS */
		return call->rc != -EPROTO;
	case 500:
	case 502:
	case 503:
	case 504:
		return true;
	default:
		return !strcmp(call->code, "RequestTimeout") ||
		       !strcmp(call->code, "RequestTimeoutException");
	}
}

bool aws_error_not_found(const char *code, const char *message)
{
	return !strcmp(code, "ResourceNotFound") ||
	       !strcmp(code, "ResourceNotFoundException") ||
	       !strcmp(code, "NotFound") || /* a Kubernetes Status reason */
	       !strcmp(code, "ObjectNotFoundException") ||
	       (!strcmp(code, "ValidationException") &&
		!strncmp(message, "Could not find", 14));
}

bool aws_error_exists(const char *code, const char *message)
{
	return (!strcmp(code, "ValidationException") &&
		(!strncmp(message, "Cannot create already existing", 30) ||
		 strstr(message, "already exists"))) ||
	       (!strcmp(code, "ResourceInUse") &&
		strstr(message, "already exists"));
}

void aws_call_describe_error(const struct aws_call *call, char *out, size_t len)
{
	const char *svc = call->service->name;

	if (call->code[0])
		snprintf(out, len, "%s %s: %s: %s", svc, call->op, call->code,
			 call->message);
	else if (call->http_status)
		snprintf(out, len, "%s %s: HTTP %ld%s%s", svc, call->op,
			 call->http_status, call->message[0] ? ": " : "",
			 call->message);
	else
		snprintf(out, len, "%s %s: %s", svc, call->op,
			 call->message[0] ? call->message : "no answer");
}

/* The code is the text after any '#' and before any ':'. */
static void error_code_from(const char *type, char *out, size_t len)
{
	const char *hash = strrchr(type, '#');
	const char *start = hash ? hash + 1 : type;
	size_t n = strcspn(start, ":");

	snprintf(out, len, "%.*s", (int)n, start);
}

static void read_answer(struct aws_call *call)
{
	struct aws_call_io *io = call->io;
	json_t *doc = io->answer.len ? json_loadb(io->answer.data,
						  io->answer.len, 0, NULL)
				     : json_object();
	const char *type, *msg;

	if (call->http_status >= 200 && call->http_status < 300) {
		if (doc) {
			call->output = doc;
			return;
		}
		call->rc = -EPROTO;
		snprintf(call->message, sizeof(call->message),
			 "answer is not JSON");
		return;
	}
	/* awsJson names the error in __type, restJson1 in a header and a
	 * Kubernetes Status in reason. */
	type = json_string_value(json_object_get(doc, "__type"));
	if (!type && io->error_type[0])
		type = io->error_type;
	if (!type && call->service->protocol == AWS_KUBERNETES)
		type = json_string_value(json_object_get(doc, "reason"));
	msg = json_string_value(json_object_get(doc, "message"))
		      ?: json_string_value(json_object_get(doc, "Message"));
	if (type)
		error_code_from(type, call->code, sizeof(call->code));
	snprintf(call->message, sizeof(call->message), "%s", msg ? msg : "");
	call->rc = -EIO;
	json_decref(doc);
}

/* ---- the token bucket ------------------------------------------------- */

/*
 * Bursts are at most half a second's worth: calls arrive bunched up by
 * the network, and a full second's burst at our rate can exceed the
 * server's limit at the same rate.
 */
static double bucket_cap(const struct bucket *b)
{
	return b->rate / 2 > 1 ? b->rate / 2 : 1;
}

static void bucket_init(struct bucket *b, double rate)
{
	b->rate = b->ceiling = rate > 0 ? rate : 100;
	b->tokens = bucket_cap(b);
	b->at = mono_now();
}

static void bucket_refill(struct bucket *b, double now)
{
	double cap = bucket_cap(b);

	b->tokens += (now - b->at) * b->rate;
	if (b->tokens > cap)
		b->tokens = cap;
	b->at = now;
}

/* 0 when a request may start now, else how long until it may. */
static double bucket_take(struct bucket *b, double now)
{
	bucket_refill(b, now);
	if (b->tokens >= 1) {
		b->tokens -= 1;
		return 0;
	}
	return (1 - b->tokens) / b->rate;
}

static void bucket_throttled(struct bucket *b)
{
	b->rate = b->rate / 2 > MIN_RATE ? b->rate / 2 : MIN_RATE;
	if (b->tokens > 0)
		b->tokens = 0;
}

/* Additive recovery: one request per second more for each success
 * second, back to the ceiling. */
static void bucket_succeeded(struct bucket *b)
{
	if (b->rate < b->ceiling) {
		b->rate += 1 / b->rate;
		if (b->rate > b->ceiling)
			b->rate = b->ceiling;
	}
}

static struct bucket *bucket_of(struct aws_client *c,
				const struct aws_service *svc)
{
	return &c->buckets[svc->slot];
}

/* ---- building a request ----------------------------------------------- */

static void endpoint_url(const struct aws_client *c,
			 const struct aws_service *svc, char *out, size_t len)
{
	char name[96];
	const char *env;

	if (c->settings.endpoint_url[0]) {
		snprintf(out, len, "%s", c->settings.endpoint_url);
		return;
	}
	snprintf(name, sizeof(name), "AWS_ENDPOINT_URL_%s", svc->env_name);
	env = getenv(name);
	if (!env || !env[0])
		env = getenv("AWS_ENDPOINT_URL");
	if (env && env[0])
		snprintf(out, len, "%s", env);
	else
		snprintf(out, len, "https://%s.%s.amazonaws.com",
			 svc->host_prefix, c->settings.region);
}

static bool loopback_host(const char *host)
{
	struct in_addr v4;

	if (!strcasecmp(host, "localhost") || !strcmp(host, "[::1]"))
		return true;
	return inet_pton(AF_INET, host, &v4) == 1 &&
	       (ntohl(v4.s_addr) >> 24) == 127;
}

int aws_endpoint_url_check(const char *url, char *msg, size_t len)
{
	CURLU *u;
	char *scheme = NULL, *host = NULL;
	int rc = -EINVAL;

	if (!url || !url[0])
		return 0;
	u = curl_url();
	if (u && !curl_url_set(u, CURLUPART_URL, url, 0) &&
	    !curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) &&
	    !curl_url_get(u, CURLUPART_HOST, &host, 0))
		rc = !strcasecmp(scheme, "https") ||
				     (!strcasecmp(scheme, "http") &&
				      loopback_host(host))
			     ? 0
			     : -EINVAL;
	if (rc)
		snprintf(msg, len,
			 "aws.endpoint_url: must be https://, or http:// only "
			 "on loopback (127.0.0.0/8, ::1, localhost): signed "
			 "requests and session tokens are not sent in clear");
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return rc;
}

/* The service's URL without a query or a trailing slash, ready for a path. */
static void base_url(const struct aws_client *c, const struct aws_service *svc,
		     char *out, size_t len)
{
	size_t n;

	endpoint_url(c, svc, out, len);
	out[strcspn(out, "?")] = '\0';
	n = strlen(out);
	if (n && out[n - 1] == '/')
		out[n - 1] = '\0';
}

/*
 * The Host header curl will send, which is what gets signed: the port is
 * part of it only when it is not the scheme's default.
 */
static int host_of(const char *url, char *host, size_t len)
{
	CURLU *u = curl_url();
	char *h = NULL, *port = NULL;
	int rc = -EINVAL;

	if (u && !curl_url_set(u, CURLUPART_URL, url, 0) &&
	    !curl_url_get(u, CURLUPART_HOST, &h, 0)) {
		if (!curl_url_get(u, CURLUPART_PORT, &port, 0))
			snprintf(host, len, "%s:%s", h, port);
		else
			snprintf(host, len, "%s", h);
		rc = 0;
	}
	curl_free(h);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	buf_add(arg, data, size * n);
	return size * n;
}

static void copy_header_value(const char *data, size_t len, size_t skip,
			      char *out, size_t outlen)
{
	const char *v = data + skip;
	size_t vlen = len - skip;

	while (vlen && (*v == ' ' || *v == '\t'))
		v++, vlen--;
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'))
		vlen--;
	snprintf(out, outlen, "%.*s", (int)vlen, v);
}

static bool header_is(const char *data, size_t len, const char *name)
{
	size_t n = strlen(name);

	return len > n && !strncasecmp(data, name, n);
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	struct aws_call *call = arg;
	size_t len = size * n;
	static const char request_id[] = "x-amzn-requestid:";
	static const char error_type[] = "x-amzn-errortype:";

	if (header_is(data, len, request_id))
		copy_header_value(data, len, sizeof(request_id) - 1,
				  call->request_id, sizeof(call->request_id));
	else if (header_is(data, len, error_type))
		copy_header_value(data, len, sizeof(error_type) - 1,
				  call->io->error_type,
				  sizeof(call->io->error_type));
	return len;
}

static struct curl_slist *add_header(struct curl_slist *list, const char *name,
				     const char *value)
{
	char line[4400];
	struct curl_slist *out;

	snprintf(line, sizeof(line), "%s: %s", name, value);
	out = curl_slist_append(list, line);
	OPENSSL_cleanse(line, sizeof(line));
	return out;
}

/* The request line's method: awsJson always posts. */
static const char *method_of(const struct aws_call *call)
{
	return call->service->protocol == AWS_JSON ? "POST" : call->method;
}

/*
 * Signs the call with the current time and credentials: every header
 * sent but Authorization, so a proxy cannot change one unnoticed.
 */
static int sign_headers(struct aws_client *c, struct aws_call *call,
			const struct aws_creds *creds, const char *host,
			const char *path, const char *query)
{
	struct aws_call_io *io = call->io;
	bool json = call->service->protocol == AWS_JSON;
	char amz_date[17], target[128];
	struct sigv4_header h[5];
	size_t n = 0;
	struct sigv4_request req = {
		.method = method_of(call),
		.path = path,
		.query = query,
		.headers = h,
		.payload = io->body,
		.payload_len = strlen(io->body),
		.region = c->settings.region,
		.service = call->service->signing_name,
		.amz_date = amz_date,
	};
	BUF_AUTO authz = BUF_INIT;
	int rc;

	sigv4_amz_date(time(NULL), amz_date);
	if (json)
		h[n++] = (struct sigv4_header){ "Content-Type",
						"application/x-amz-json-1.1" };
	else if (io->body[0])
		h[n++] = (struct sigv4_header){ "Content-Type",
						"application/json" };
	h[n++] = (struct sigv4_header){ "host", host };
	h[n++] = (struct sigv4_header){ "X-Amz-Date", amz_date };
	/* Only awsJson names the operation in a header; restJson1 services
	 * have no target prefix at all. */
	if (json) {
		snprintf(target, sizeof(target), "%s.%s",
			 call->service->target_prefix, call->op);
		h[n++] = (struct sigv4_header){ "X-Amz-Target", target };
	}
	if (creds->session_token[0])
		h[n++] = (struct sigv4_header){ "X-Amz-Security-Token",
						creds->session_token };
	req.nheaders = n;
	rc = sigv4_sign(&req, creds->access_key_id, creds->secret_access_key,
			NULL, NULL, &authz);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(h[i].name, "host"))
			io->headers =
				add_header(io->headers, h[i].name, h[i].value);
	}
	io->headers = add_header(io->headers, "Authorization", buf_str(&authz));
	return 0;
}

/*
 * "k8s-aws-v1." and the presigned URL in unpadded base64url, as
 * aws-iam-authenticator reads it. The URL is for the STS endpoint this
 * client would use, so an endpoint override reaches a fake's STS too.
 */
static int kube_token(struct aws_client *c, const struct aws_call *call,
		      const struct aws_creds *creds, struct buf *token)
{
	char sts[300], host[280], amz_date[17];
	const struct sigv4_header h[] = {
		{ "host", host },
		{ "x-k8s-aws-id", call->kube->cluster },
	};
	struct sigv4_request req = {
		.method = "GET",
		.path = "/",
		.query = "Action=GetCallerIdentity&Version=2011-06-15",
		.headers = h,
		.nheaders = 2,
		.region = c->settings.region,
		.service = aws_sts.signing_name,
		.amz_date = amz_date,
	};
	BUF_AUTO url = BUF_INIT;
	BUF_AUTO query = BUF_INIT;
	int rc;

	base_url(c, &aws_sts, sts, sizeof(sts));
	rc = host_of(sts, host, sizeof(host));
	if (rc < 0)
		return rc;
	sigv4_amz_date(time(NULL), amz_date);
	rc = sigv4_presign(&req, creds->access_key_id, creds->secret_access_key,
			   creds->session_token, KUBE_TOKEN_LIFETIME_S, &query);
	if (rc < 0)
		return rc;
	buf_printf(&url, "%s/?%s", sts, buf_str(&query));
	buf_adds(token, "k8s-aws-v1.");
	aws_base64url(token, url.data, url.len);
	OPENSSL_cleanse(url.data, url.len);
	OPENSSL_cleanse(query.data, query.len);
	return 0;
}

static int kube_headers(struct aws_client *c, struct aws_call *call,
			const struct aws_creds *creds)
{
	struct aws_call_io *io = call->io;
	BUF_AUTO bearer = BUF_INIT;
	int rc;

	buf_adds(&bearer, "Bearer ");
	rc = kube_token(c, call, creds, &bearer);
	if (rc < 0)
		return rc;
	io->headers =
		add_header(io->headers, "Authorization", buf_str(&bearer));
	OPENSSL_cleanse(bearer.data, bearer.len);
	io->headers = add_header(io->headers, "Accept", "application/json");
	/* Server-side apply: the server merges, and a second apply of the
	 * same object changes nothing. */
	if (!strcmp(call->method, "PATCH"))
		io->headers = add_header(io->headers, "Content-Type",
					 "application/apply-patch+yaml");
	return 0;
}

static void easy_setup(struct aws_client *c, struct aws_call *call)
{
	struct aws_call_io *io = call->io;
	const char *method = method_of(call);
	CURL *e = io->easy;

	curl_easy_setopt(e, CURLOPT_URL, io->url);
	if (!strcmp(method, "GET")) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, io->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE,
				 (long)strlen(io->body));
		if (strcmp(method, "POST"))
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	}
	/* A 100-continue round trip would double every call's latency. */
	io->headers = curl_slist_append(io->headers, "Expect:");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, io->headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &io->answer);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
	curl_easy_setopt(e, CURLOPT_PRIVATE, call);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, io->error);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_USERAGENT, "infrafs/" INFRAFS_VERSION);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
			 (long)(c->settings.timeout_s * 1000));
	/* TLS verification is curl's default and stays on; an EKS cluster's
	 * API is trusted through its own CA, and only that CA. */
	if (call->kube && call->kube->ca_pem) {
		struct curl_blob ca = {
			.data = call->kube->ca_pem,
			.len = strlen(call->kube->ca_pem),
			.flags = CURL_BLOB_COPY,
		};

		curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &ca);
	}
}

/* The URL, and the headers that authenticate the call. */
static int address_and_sign(struct aws_client *c, struct aws_call *call,
			    const struct aws_creds *creds)
{
	struct aws_call_io *io = call->io;
	const char *path =
		call->service->protocol == AWS_JSON ? "/" : call->path;
	char base[300], host[280], just_path[400];
	const char *query = strchr(path, '?');

	if (call->service->protocol == AWS_KUBERNETES) {
		if (!call->kube)
			return -EINVAL;
		snprintf(io->url, sizeof(io->url), "%s%s", call->kube->endpoint,
			 path);
		return kube_headers(c, call, creds);
	}
	base_url(c, call->service, base, sizeof(base));
	snprintf(io->url, sizeof(io->url), "%s%s", base, path);
	if (host_of(io->url, host, sizeof(host)) < 0) {
		snprintf(call->message, sizeof(call->message),
			 "bad endpoint URL %.300s", base);
		return -EINVAL;
	}
	snprintf(just_path, sizeof(just_path), "%.*s",
		 (int)(query ? (size_t)(query - path) : strlen(path)), path);
	return sign_headers(c, call, creds, host, just_path,
			    query ? query + 1 : "");
}

/* Makes the next attempt's transfer; the body is kept across attempts. */
static int prepare_attempt(struct aws_client *c, struct aws_call *call,
			   const struct aws_creds *creds)
{
	struct aws_call_io *io = call->io;
	int rc;

	if (io->easy)
		curl_easy_cleanup(io->easy);
	aws_slist_wipe_free(io->headers);
	io->headers = NULL;
	buf_truncate(&io->answer, 0);
	io->error[0] = '\0';
	io->error_type[0] = '\0';
	io->easy = curl_easy_init();
	if (!io->easy)
		return -ENOMEM;
	rc = address_and_sign(c, call, creds);
	if (rc < 0)
		return rc;
	easy_setup(c, call);
	return 0;
}

/* ---- outcomes, for metrics -------------------------------------------- */

/*
 * Errors and throttles by service and operation, for every client of the
 * process together (a scrape wants the sum anyway). Services and
 * operations are names in this code, a few dozen at most: the table is
 * bounded, and its last row takes whatever does not fit.
 */
#define CALL_STATS_MAX 64

static struct call_stat_row {
	char service[32];
	char operation[48];
	atomic_uint_least64_t errors, throttles;
} call_stats[CALL_STATS_MAX];
/* Rows below it are filled in for good; readers take it with acquire. */
static atomic_size_t call_stats_n;
static pthread_mutex_t call_stats_lock = PTHREAD_MUTEX_INITIALIZER;

static bool row_is(const struct call_stat_row *r, const char *svc,
		   const char *op)
{
	return !strcmp(r->service, svc) && !strcmp(r->operation, op);
}

static struct call_stat_row *call_stat_row(const struct aws_call *call)
{
	const char *svc = call->service->name;
	const char *op = call->op ? call->op : "";
	size_t n = atomic_load_explicit(&call_stats_n, memory_order_acquire);
	struct call_stat_row *r;

	for (size_t i = 0; i < n; i++)
		if (row_is(&call_stats[i], svc, op))
			return &call_stats[i];
	pthread_mutex_lock(&call_stats_lock);
	n = atomic_load_explicit(&call_stats_n, memory_order_relaxed);
	for (size_t i = 0; i < n; i++) {
		if (row_is(&call_stats[i], svc, op)) {
			pthread_mutex_unlock(&call_stats_lock);
			return &call_stats[i];
		}
	}
	if (n == CALL_STATS_MAX) {
		pthread_mutex_unlock(&call_stats_lock);
		return &call_stats[CALL_STATS_MAX - 1];
	}
	r = &call_stats[n];
	if (n == CALL_STATS_MAX - 1) {
		svc = "other";
		op = "other";
	}
	snprintf(r->service, sizeof(r->service), "%s", svc);
	snprintf(r->operation, sizeof(r->operation), "%s", op);
	atomic_store_explicit(&call_stats_n, n + 1, memory_order_release);
	pthread_mutex_unlock(&call_stats_lock);
	return r;
}

size_t aws_call_stats(struct provider_call_stat *out, size_t max)
{
	size_t n = atomic_load_explicit(&call_stats_n, memory_order_acquire);

	if (n > max)
		n = max;
	for (size_t i = 0; i < n; i++) {
		const struct call_stat_row *r = &call_stats[i];

		_Static_assert(sizeof(out[i].service) == sizeof(r->service) &&
				       sizeof(out[i].operation) ==
					       sizeof(r->operation),
			       "call_stat_row and provider_call_stat agree");
		memcpy(out[i].service, r->service, sizeof(r->service));
		memcpy(out[i].operation, r->operation, sizeof(r->operation));
		out[i].errors =
			atomic_load_explicit(&r->errors, memory_order_relaxed);
		out[i].throttles = atomic_load_explicit(&r->throttles,
							memory_order_relaxed);
	}
	return n;
}

/* ---- running calls ---------------------------------------------------- */

static void finish(struct aws_call *call, int rc)
{
	if (rc)
		call->rc = rc;
	call->io->done = true;
}

/*
 * A certificate nobody trusts or a URL curl cannot use will not get better
 * by asking again (-EPROTO); the network failing on the way will.
 */
static int transport_error(CURLcode result)
{
	switch (result) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -EPROTO;
	default:
		return -ECONNRESET;
	}
}

static bool out_of_attempts(const struct aws_call *call)
{
	return call->attempts >= MAX_ATTEMPTS ||
	       (call->rc == -ETIMEDOUT &&
		call->attempts >= MAX_TIMEOUT_ATTEMPTS);
}

/* Reads one finished transfer; schedules a retry or ends the call. */
static void completed(struct aws_client *c, struct aws_call *call,
		      CURLcode result)
{
	struct aws_call_io *io = call->io;
	struct bucket *b = bucket_of(c, call->service);
	double wait, cap;
	bool throttled;

	io->in_flight = false;
	call->code[0] = '\0';
	call->message[0] = '\0';
	call->rc = 0;
	call->http_status = 0;
	if (result == CURLE_OK) {
		curl_easy_getinfo(io->easy, CURLINFO_RESPONSE_CODE,
				  &call->http_status);
		read_answer(call);
	} else {
		call->rc = transport_error(result);
		snprintf(call->message, sizeof(call->message), "%s",
			 io->error[0] ? io->error : curl_easy_strerror(result));
	}
	if (call->rc == 0) {
		bucket_succeeded(b);
		finish(call, 0);
		return;
	}
	throttled = is_throttling(call);
	if (throttled) {
		bucket_throttled(b);
		atomic_fetch_add_explicit(&call_stat_row(call)->throttles, 1,
					  memory_order_relaxed);
	}
	if ((!throttled && !is_transient(call)) || out_of_attempts(call)) {
		atomic_fetch_add_explicit(&call_stat_row(call)->errors, 1,
					  memory_order_relaxed);
		finish(call, call->rc);
		return;
	}
	cap = BACKOFF_BASE_S * pow(2, call->attempts);
	wait = random_unit() * (cap < BACKOFF_CAP_S ? cap : BACKOFF_CAP_S);
	io->due = mono_now() + wait;
}

/* Starts what may start now; returns how long until the next may. */
static double start_due(struct aws_client *c, struct aws_call *calls, size_t n,
			const struct aws_creds *creds, unsigned *in_flight)
{
	double now = mono_now(), next = 1.0;

	for (size_t i = 0; i < n; i++) {
		struct aws_call *call = &calls[i];
		struct aws_call_io *io = call->io;
		double wait;

		if (io->done || io->in_flight)
			continue;
		if (io->due > now) {
			next = fmin(next, io->due - now);
			continue;
		}
		if (*in_flight >= c->settings.max_connections)
			return 0.005;
		wait = bucket_take(bucket_of(c, call->service), now);
		if (wait > 0) {
			next = fmin(next, wait);
			continue;
		}
		if (prepare_attempt(c, call, creds) < 0) {
			finish(call, -EINVAL);
			continue;
		}
		call->attempts++;
		c->requests++;
		io->in_flight = true;
		(*in_flight)++;
		curl_multi_add_handle(c->multi, io->easy);
	}
	return next;
}

static void collect(struct aws_client *c, unsigned *in_flight)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left))) {
		struct aws_call *call = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &call);
		curl_multi_remove_handle(c->multi, msg->easy_handle);
		(*in_flight)--;
		completed(c, call, msg->data.result);
	}
}

static bool all_done(const struct aws_call *calls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!calls[i].io->done)
			return false;
	}
	return true;
}

static size_t fail_all(struct aws_call *calls, size_t n, int rc,
		       const char *why)
{
	for (size_t i = 0; i < n; i++) {
		calls[i].rc = rc;
		snprintf(calls[i].message, sizeof(calls[i].message), "%s", why);
	}
	return n;
}

static size_t count_failed(const struct aws_call *calls, size_t n)
{
	size_t failed = 0;

	for (size_t i = 0; i < n; i++)
		failed += calls[i].rc != 0;
	return failed;
}

static void open_calls(struct aws_call *calls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct aws_call_io *io = xcalloc(1, sizeof(*io));

		io_release(calls[i].io);
		io->body = calls[i].input
				   ? json_dumps(calls[i].input, JSON_COMPACT)
				   : xstrdup("");
		calls[i].io = io;
		calls[i].attempts = 0;
		calls[i].rc = 0;
		calls[i].code[0] = '\0';
		calls[i].message[0] = '\0';
		json_decref(calls[i].output);
		calls[i].output = NULL;
	}
}

size_t aws_run(struct aws_client *c, struct aws_call *calls, size_t n)
{
	struct aws_creds creds;
	char why[400];
	unsigned in_flight = 0;

	if (!n)
		return 0;
	/* A config written before the rule was checked at commit. */
	if (aws_endpoint_url_check(c->settings.endpoint_url, why, sizeof(why)) <
	    0)
		return fail_all(calls, n, -EACCES, why);
	if (aws_creds_get(c->creds, &creds, why, sizeof(why)) < 0) {
		aws_creds_wipe(&creds);
		return fail_all(calls, n, -ENOKEY, why);
	}
	if (!c->settings.region[0]) {
		aws_creds_wipe(&creds);
		return fail_all(calls, n, -EINVAL,
				"no region: set region in the environment's "
				"config (or AWS_REGION)");
	}
	open_calls(calls, n);
	while (!all_done(calls, n)) {
		double next = start_due(c, calls, n, &creds, &in_flight);
		int running = 0;

		curl_multi_perform(c->multi, &running);
		collect(c, &in_flight);
		if (all_done(calls, n))
			break;
		curl_multi_poll(c->multi, NULL, 0,
				(int)fmax(1, fmin(next, 1.0) * 1000), NULL);
		curl_multi_perform(c->multi, &running);
		collect(c, &in_flight);
	}
	aws_creds_wipe(&creds);
	for (size_t i = 0; i < n; i++) {
		free(calls[i].io->body);
		calls[i].io->body = NULL;
	}
	return count_failed(calls, n);
}

int aws_call1(struct aws_client *c, const struct aws_service *svc,
	      const char *op, json_t *input, json_t **out, char *err,
	      size_t errlen)
{
	struct aws_call call;
	int rc;

	aws_call_init(&call, svc, op, input);
	aws_run(c, &call, 1);
	rc = call.rc;
	if (rc && err)
		aws_call_describe_error(&call, err, errlen);
	if (out) {
		*out = call.output;
		call.output = NULL;
	}
	aws_call_clear(&call);
	return rc;
}

/* ---- the client --------------------------------------------------------- */

static void resolve_region(struct aws_client *c)
{
	const char *env;

	if (c->settings.region[0])
		return;
	env = getenv("AWS_REGION");
	if (!env || !env[0])
		env = getenv("AWS_DEFAULT_REGION");
	if (env && env[0])
		snprintf(c->settings.region, sizeof(c->settings.region), "%s",
			 env);
	else
		aws_creds_profile_region(c->creds, c->settings.region,
					 sizeof(c->settings.region));
}

struct aws_client *aws_client_new(const struct aws_settings *s)
{
	struct aws_client *c = xcalloc(1, sizeof(*c));
	long conns;

	c->settings = *s;
	if (!c->settings.max_connections)
		c->settings.max_connections = 64;
	if (c->settings.timeout_s <= 0)
		c->settings.timeout_s = 15;
	conns = (long)c->settings.max_connections;
	c->multi = curl_multi_init();
	curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, conns);
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, conns);
	c->creds = aws_creds_open(s->profile[0] ? s->profile : NULL);
	resolve_region(c);
	for (size_t i = 0; i < AWS_SERVICE_SLOTS; i++)
		bucket_init(&c->buckets[i], s->requests_per_second);
	return c;
}

bool aws_client_matches(const struct aws_client *c,
			const struct aws_settings *s)
{
	const struct aws_settings *m = &c->settings;

	return (!s->region[0] || !strcmp(m->region, s->region)) &&
	       !strcmp(m->endpoint_url, s->endpoint_url) &&
	       !strcmp(m->profile, s->profile) &&
	       m->requests_per_second == s->requests_per_second &&
	       m->max_connections == s->max_connections &&
	       m->timeout_s == s->timeout_s;
}

uint64_t aws_client_requests(const struct aws_client *c)
{
	return c->requests;
}

void aws_client_free(struct aws_client *c)
{
	if (!c)
		return;
	curl_multi_cleanup(c->multi);
	aws_creds_close(c->creds);
	free(c);
}
