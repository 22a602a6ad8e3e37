// SPDX-License-Identifier: MIT
/*
 * The HTTP side of the kubernetes provider, on libcurl. Certificates and
 * keys go to curl from memory (CURLOPT_*_BLOB): a kubeconfig's -data
 * fields and an exec plugin's answer never touch the disk, and a key
 * file is read once by kubeconfig.c under the daemon's own checks.
 */
#include "api.h"

#include "util/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Full jitter: retry i waits uniform(0, min(CAP, BASE * 2^i)). */
#define BACKOFF_BASE_S 0.2
#define BACKOFF_CAP_S 10.0
/* A request that must not hold the reconciler long. */
#define CONNECT_TIMEOUT_S 5L

struct kube_api {
	struct kube_target target;
	/*
	 * Guards creds: an exec plugin runs once for every thread that
	 * needs a credential at that moment, and the cache it fills is read
	 * by all of them. Held while a plugin runs (at most
	 * KUBE_EXEC_TIMEOUT_S); nothing else is done under it.
	 */
	pthread_mutex_t lock;
	struct kube_credential creds;
	_Atomic uint64_t requests;
};

int kube_api_open(const char *path, const char *context, struct kube_api **out,
		  char *err, size_t errlen)
{
	struct kube_api *api = xcalloc(1, sizeof(*api));
	int rc = path ? kube_config_load(path, context, &api->target, err,
					 errlen)
		      : kube_in_cluster(NULL, &api->target, err, errlen);

	if (rc < 0) {
		kube_target_free(&api->target);
		free(api);
		return rc;
	}
	pthread_mutex_init(&api->lock, NULL);
	*out = api;
	return 0;
}

void kube_api_close(struct kube_api *api)
{
	if (!api)
		return;
	kube_credential_free(&api->creds);
	kube_target_free(&api->target);
	pthread_mutex_destroy(&api->lock);
	free(api);
}

const char *kube_api_namespace(const struct kube_api *api)
{
	return api->target.namespace;
}

const char *kube_api_server(const struct kube_api *api)
{
	return api->target.server;
}

uint64_t kube_api_requests(const struct kube_api *api)
{
	return atomic_load(&api->requests);
}

void kube_handle_close(struct kube_handle *h)
{
	if (h->easy)
		curl_easy_cleanup(h->easy);
	h->easy = NULL;
}

void kube_reply_free(struct kube_reply *r)
{
	buf_free(&r->body);
	memset(r, 0, sizeof(*r));
}

static double wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int credential_for(struct kube_api *api, struct kube_credential *out,
			  char *err, size_t errlen)
{
	int rc;

	pthread_mutex_lock(&api->lock);
	rc = kube_credential_get(&api->target, &api->creds, wall_now(), out,
				 err, errlen);
	pthread_mutex_unlock(&api->lock);
	return rc;
}

void kube_status_text(long code, const char *body, size_t len, char *out,
		      size_t outlen)
{
	json_t *doc = body && len ? json_loadb(body, len, 0, NULL) : NULL;
	const char *reason = json_string_value(json_object_get(doc, "reason"));
	const char *message =
		json_string_value(json_object_get(doc, "message"));

	if (reason && reason[0] && message && message[0])
		snprintf(out, outlen, "Kubernetes: %s: %s", reason, message);
	else if (message && message[0])
		snprintf(out, outlen, "Kubernetes: HTTP %ld: %s", code,
			 message);
	else
		snprintf(out, outlen, "Kubernetes: HTTP %ld", code);
	json_decref(doc);
}

static size_t keep_body(char *data, size_t size, size_t n, void *ctx)
{
	buf_add(ctx, data, size * n);
	return size * n;
}

static size_t read_header(char *data, size_t size, size_t n, void *ctx)
{
	struct kube_reply *r = ctx;
	size_t len = size * n;

	if (len > 12 && !strncasecmp(data, "Retry-After:", 12))
		r->retry_after_s = strtod(data + 12, NULL);
	return len;
}

/* The handle, made once per thread and reused for keep-alive. */
static CURL *handle_of(struct kube_handle *h)
{
	if (!h->easy)
		h->easy = curl_easy_init();
	else
		curl_easy_reset(h->easy);
	return h->easy;
}

struct request_io {
	struct curl_slist *headers;
	char errbuf[CURL_ERROR_SIZE];
	struct kube_credential cred;
};

static void request_io_free(struct request_io *io)
{
	curl_slist_free_all(io->headers);
	kube_credential_free(&io->cred);
}

static void set_blob(CURL *c, CURLoption opt, const char *pem)
{
	struct curl_blob blob = { .data = (void *)pem,
				  .len = strlen(pem),
				  .flags = CURL_BLOB_COPY };

	curl_easy_setopt(c, opt, &blob);
}

/* The bearer header, whose bytes are wiped as soon as curl has its copy. */
static struct curl_slist *add_bearer(struct curl_slist *h, const char *token)
{
	size_t len = strlen("Authorization: Bearer ") + strlen(token) + 1;
	char *line = xmalloc(len);

	snprintf(line, len, "Authorization: Bearer %s", token);
	h = curl_slist_append(h, line);
	OPENSSL_cleanse(line, len);
	free(line);
	return h;
}

/* Everything of a request but what it does with the answer. */
static int prepare(struct kube_api *api, CURL *c, const char *method,
		   const char *path, const char *content_type, const char *body,
		   struct request_io *io, char *err, size_t errlen)
{
	const struct kube_target *t = &api->target;
	char url[2048];
	int rc = credential_for(api, &io->cred, err, errlen);

	if (rc < 0)
		return rc;
	if (snprintf(url, sizeof(url), "%s%s", t->server, path) >=
	    (int)sizeof(url)) {
		snprintf(err, errlen, "request path too long");
		return -ENAMETOOLONG;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, io->errbuf);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "infrafs");
	if (t->ca_pem)
		set_blob(c, CURLOPT_CAINFO_BLOB, t->ca_pem);
	if (io->cred.cert_pem && io->cred.key_pem) {
		set_blob(c, CURLOPT_SSLCERT_BLOB, io->cred.cert_pem);
		curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
		set_blob(c, CURLOPT_SSLKEY_BLOB, io->cred.key_pem);
		curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
	}
	io->headers = curl_slist_append(NULL, "Accept: application/json");
	if (io->cred.token && io->cred.token[0])
		io->headers = add_bearer(io->headers, io->cred.token);
	if (content_type) {
		char line[128];

		snprintf(line, sizeof(line), "Content-Type: %s", content_type);
		io->headers = curl_slist_append(io->headers, line);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, io->headers);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else if (!strcmp(method, "GET")) {
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	}
	atomic_fetch_add(&api->requests, 1);
	return 0;
}

/* After curl_easy_perform: the code, and the error text of a failure. */
static int finish(CURL *c, CURLcode cc, struct request_io *io,
		  struct kube_reply *r)
{
	if (cc != CURLE_OK) {
		snprintf(r->error, sizeof(r->error), "Kubernetes: %s",
			 io->errbuf[0] ? io->errbuf : curl_easy_strerror(cc));
		return cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
						      : -ECONNREFUSED;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
	if (r->code < 200 || r->code >= 300)
		kube_status_text(r->code, r->body.data, r->body.len, r->error,
				 sizeof(r->error));
	return 0;
}

int kube_request(struct kube_api *api, struct kube_handle *h,
		 const char *method, const char *path, const char *content_type,
		 const char *body, double timeout_s, struct kube_reply *r)
{
	struct request_io io = { 0 };
	CURL *c = handle_of(h);
	int rc;

	buf_truncate(&r->body, 0);
	r->code = 0;
	r->retry_after_s = 0;
	r->error[0] = '\0';
	if (!c) {
		snprintf(r->error, sizeof(r->error), "Kubernetes: no memory");
		return -ENOMEM;
	}
	rc = prepare(api, c, method, path, content_type, body, &io, r->error,
		     sizeof(r->error));
	if (rc == 0) {
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
				 (long)(timeout_s * 1000));
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_body);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, read_header);
		curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
		rc = finish(c, curl_easy_perform(c), &io, r);
	}
	request_io_free(&io);
	return rc;
}

static bool retryable(int rc, const struct kube_reply *r)
{
	if (rc == -ETIMEDOUT || rc == -ECONNREFUSED)
		return true;
	return rc == 0 && (r->code == 429 || r->code >= 500);
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double jitter(double cap)
{
	uint32_t x = 0;

	if (getrandom(&x, sizeof(x), 0) != sizeof(x))
		x = (uint32_t)rand();
	return cap * ((double)x / 4294967296.0);
}

static void sleep_s(double s)
{
	struct timespec ts = { .tv_sec = (time_t)s,
			       .tv_nsec = (long)((s - floor(s)) * 1e9) };

	nanosleep(&ts, NULL);
}

int kube_call(struct kube_api *api, struct kube_handle *h, const char *method,
	      const char *path, const char *content_type, const char *body,
	      double budget_s, struct kube_reply *r)
{
	double deadline = mono_now() + budget_s;

	for (int attempt = 0;; attempt++) {
		double left = deadline - mono_now(), wait;
		int rc = kube_request(api, h, method, path, content_type, body,
				      left > 1 ? left : 1, r);

		if (!retryable(rc, r))
			return rc;
		wait = r->retry_after_s > 0
			       ? r->retry_after_s
			       : jitter(fmin(BACKOFF_CAP_S,
					     BACKOFF_BASE_S * pow(2, attempt)));
		if (mono_now() + wait >= deadline)
			return rc;
		sleep_s(wait);
	}
}

struct stream_io {
	struct buf line;
	int (*on_line)(void *ctx, const char *line, size_t len);
	void *ctx;
	struct kube_reply *r;
	CURL *c;
	bool ok; /* the answer is a 200: lines go to on_line */
	bool stopped;
	const atomic_bool *stop;
};

/* Watch events are one JSON document per line; a line may arrive in
 * pieces, and one piece may carry several lines. */
static size_t stream_body(char *data, size_t size, size_t n, void *ctx)
{
	struct stream_io *s = ctx;
	size_t len = size * n;
	long code = 0;

	if (!s->ok) {
		curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &code);
		s->ok = code == 200;
		if (!s->ok) {
			buf_add(&s->r->body, data, len);
			return len;
		}
	}
	for (size_t i = 0; i < len; i++) {
		if (data[i] != '\n') {
			buf_addc(&s->line, data[i]);
			continue;
		}
		if (s->line.len &&
		    s->on_line(s->ctx, s->line.data, s->line.len)) {
			s->stopped = true;
			return 0;
		}
		buf_truncate(&s->line, 0);
	}
	return len;
}

static int stream_progress(void *ctx, curl_off_t dt, curl_off_t dn,
			   curl_off_t ut, curl_off_t un)
{
	struct stream_io *s = ctx;

	(void)dt, (void)dn, (void)ut, (void)un;
	if (atomic_load(s->stop)) {
		s->stopped = true;
		return 1;
	}
	return 0;
}

int kube_stream(struct kube_api *api, struct kube_handle *h, const char *path,
		int (*on_line)(void *ctx, const char *line, size_t len),
		void *ctx, const atomic_bool *stop, struct kube_reply *r)
{
	struct request_io io = { 0 };
	struct stream_io s = {
		.on_line = on_line, .ctx = ctx, .r = r, .stop = stop
	};
	CURL *c = handle_of(h);
	CURLcode cc;
	int rc;

	buf_truncate(&r->body, 0);
	r->code = 0;
	r->retry_after_s = 0;
	r->error[0] = '\0';
	if (!c)
		return -ENOMEM;
	s.c = c;
	rc = prepare(api, c, "GET", path, NULL, NULL, &io, r->error,
		     sizeof(r->error));
	if (rc == 0) {
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_body);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, read_header);
		curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_progress);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, &s);
		/* A server that stops answering mid-watch is noticed. */
		curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 600L);
		cc = curl_easy_perform(c);
		if (s.stopped)
			cc = CURLE_OK;
		rc = finish(c, cc, &io, r);
	}
	buf_free(&s.line);
	request_io_free(&io);
	return rc;
}
