/* SPDX-License-Identifier: MIT */
/*
 * Requests to one Kubernetes API server, as one environment's kubeconfig
 * context reaches it. A connection is shared by the reconciler's thread
 * (steps) and the watch threads (observations); each thread brings its
 * own curl handle (struct kube_handle), so a watch that streams for
 * minutes never holds up a step.
 */
#ifndef INFRAFS_PROVIDERS_KUBERNETES_API_H
#define INFRAFS_PROVIDERS_KUBERNETES_API_H

#include "kubeconfig.h"
#include "util/buf.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct kube_api;

/* A thread's own connection to the server (keep-alive), lazily made. */
struct kube_handle {
	void *easy; /* CURL * */
};

/* What the server answered. error is "Kubernetes: Reason: message" for
 * an answer that is not 2xx (the Status the server sent), or what kept
 * any answer from arriving. */
struct kube_reply {
	long code; /* HTTP status; 0: no answer arrived */
	struct buf body;
	double retry_after_s; /* Retry-After of a 429 or 503, 0 none */
	char error[512];
};

/*
 * Loads the context (NULL: the current one) of the kubeconfig at path,
 * or the pod's service account when path is NULL. No request is made.
 * -errno with err saying why (the file, the key).
 */
int kube_api_open(const char *path, const char *context, struct kube_api **out,
		  char *err, size_t errlen);
void kube_api_close(struct kube_api *api);
/* The context's namespace, NULL when it names none. */
const char *kube_api_namespace(const struct kube_api *api);
const char *kube_api_server(const struct kube_api *api);
/* Requests sent so far, retries included (metrics, the benchmark). */
uint64_t kube_api_requests(const struct kube_api *api);

void kube_handle_close(struct kube_handle *h);
void kube_reply_free(struct kube_reply *r);

/*
 * One request: method on path (with its query), body of content_type or
 * NULL. 0 when an answer arrived (any status, r->code), a negative errno
 * when none did (r->error says why). At most timeout_s seconds.
 */
int kube_request(struct kube_api *api, struct kube_handle *h,
		 const char *method, const char *path, const char *content_type,
		 const char *body, double timeout_s, struct kube_reply *r);

/*
 * kube_request, tried again on what a client should retry: no answer,
 * 429 (after Retry-After) and 5xx (full-jitter back-off), within
 * budget_s seconds in all. Any other answer is final.
 */
int kube_call(struct kube_api *api, struct kube_handle *h, const char *method,
	      const char *path, const char *content_type, const char *body,
	      double budget_s, struct kube_reply *r);

/*
 * A watch: GET path and hand each line of the answer to on_line as it
 * arrives, until the server ends it, on_line returns non-zero, or *stop
 * is set (seen within a second). Returns as kube_request; r->body holds
 * the answer only when it was not 200.
 */
int kube_stream(struct kube_api *api, struct kube_handle *h, const char *path,
		int (*on_line)(void *ctx, const char *line, size_t len),
		void *ctx, const atomic_bool *stop, struct kube_reply *r);

/* "Kubernetes: Reason: message" from a Status body, else the HTTP code. */
void kube_status_text(long code, const char *body, size_t len, char *out,
		      size_t outlen);

#endif
