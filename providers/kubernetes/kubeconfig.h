/* SPDX-License-Identifier: MIT */
/*
 * Reaching a Kubernetes API server as kubectl does: one context of a
 * kubeconfig file (or the pod's service account, in a cluster), and the
 * credentials for each request: a client certificate, a bearer token
 * (kept or re-read from its file), or an exec credential plugin
 * (client.authentication.k8s.io ExecCredential, kept until it expires).
 * TLS is verified always: a kubeconfig that says otherwise is refused.
 */
#ifndef INFRAFS_PROVIDERS_KUBERNETES_KUBECONFIG_H
#define INFRAFS_PROVIDERS_KUBERNETES_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct kube_exec {
	char *command;
	char **args; /* NULL-terminated */
	char **env; /* NAME=VALUE, NULL-terminated; added to the daemon's */
	char api_version[96];
};

/* What one context names. Strings are owned; NULL when not set. */
struct kube_target {
	char *context;
	char *server; /* https://HOST[:PORT] */
	char *ca_pem; /* the CA bundle to verify the server with */
	char *cert_pem, *key_pem; /* a client certificate and its key */
	char *token; /* a bearer token given in the file */
	char *token_file; /* one read again at each use (rotation) */
	bool has_exec;
	struct kube_exec exec;
	char *namespace; /* the context's namespace */
};

/*
 * Loads context (NULL: the file's current-context) of the kubeconfig at
 * path. Files it names are read now, relative to the kubeconfig's
 * folder. -ENOENT (no such file), -EACCES, -EINVAL (malformed, an
 * unknown context, a refused setting) with a one-line reason in err
 * naming the file and, where there is one, the key.
 */
int kube_config_load(const char *path, const char *context,
		     struct kube_target *out, char *err, size_t errlen);

/*
 * The pod's own service account: KUBERNETES_SERVICE_HOST and _PORT, and
 * the token, CA and namespace under root (NULL:
 * /var/run/secrets/kubernetes.io/serviceaccount). -ENOENT when not in a
 * cluster.
 */
int kube_in_cluster(const char *root, struct kube_target *out, char *err,
		    size_t errlen);

void kube_target_free(struct kube_target *t);

/* The credentials of one request; strings owned, NULL when not used. */
struct kube_credential {
	char *token;
	char *cert_pem, *key_pem;
	double expires; /* when an exec credential runs out; 0: never */
};

/*
 * Credentials for a request at time now. An exec credential in cache is
 * used until a minute before it expires, then the plugin runs again
 * (with KUBERNETES_EXEC_INFO, stdin from /dev/null, at most
 * KUBE_EXEC_TIMEOUT_S); a token file is read at each call. On failure err
 * says why: the plugin's exit status and first line of stderr, an
 * ExecCredential that does not parse, one already expired.
 */
#define KUBE_EXEC_TIMEOUT_S 30
int kube_credential_get(const struct kube_target *t,
			struct kube_credential *cache, double now,
			struct kube_credential *out, char *err, size_t errlen);
void kube_credential_free(struct kube_credential *c);

#endif
