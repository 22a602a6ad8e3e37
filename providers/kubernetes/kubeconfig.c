// SPDX-License-Identifier: MIT
/*
 * Kubeconfig files are YAML (kubectl writes them so, users edit them so);
 * libyaml parses them into a node tree, walked here for the few keys
 * kubectl itself reads for one context. Every file the kubeconfig names
 * is read at load, so a missing certificate is said at once, with the
 * key that named it.
 */
#include "kubeconfig.h"

#include "util/buf.h"
#include "util/text.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

/* A kubeconfig, a certificate or a token is small; more is not one. */
#define FILE_MAX (1 << 20)
/* What a plugin may print: an ExecCredential is a few kilobytes. */
#define PLUGIN_OUTPUT_MAX (1 << 20)
/* An exec credential is run again this long before it expires. */
#define EXPIRY_MARGIN_S 60

extern char **environ;

/* ---- files -------------------------------------------------------------- */

static int read_small_file(const char *path, char **out, char *err,
			   size_t errlen, const char *what)
{
	struct buf b = BUF_INIT;
	char chunk[8192];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	*out = NULL;
	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
		return -e;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		if (b.len + (size_t)n > FILE_MAX) {
			snprintf(err, errlen, "%s %s: larger than 1 MiB", what,
				 path);
			close(fd);
			buf_free(&b);
			return -EFBIG;
		}
		buf_add(&b, chunk, (size_t)n);
	}
	close(fd);
	if (n < 0) {
		int e = errno;

		snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
		buf_free(&b);
		return -e;
	}
	*out = xstrdup(buf_str(&b));
	buf_free(&b);
	return 0;
}

/* A path of the kubeconfig, relative to the folder holding it. */
static void resolve(const char *config, const char *path, char *out, size_t len)
{
	const char *slash = strrchr(config, '/');

	if (path[0] == '/' || !slash)
		snprintf(out, len, "%s", path);
	else
		snprintf(out, len, "%.*s/%s", (int)(slash - config), config,
			 path);
}

static char *base64_text(const char *b64)
{
	size_t len = strlen(b64);
	unsigned char *out = xcalloc(len / 4 * 3 + 4, 1);
	EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
	int n = 0, tail = 0;

	if (ctx) {
		EVP_DecodeInit(ctx);
		if (EVP_DecodeUpdate(ctx, out, &n, (const unsigned char *)b64,
				     (int)len) < 0 ||
		    EVP_DecodeFinal(ctx, out + n, &tail) < 0)
			n = -1;
		EVP_ENCODE_CTX_free(ctx);
	}
	if (!ctx || n < 0) {
		free(out);
		return NULL;
	}
	out[n + tail] = '\0';
	return (char *)out;
}

/* ---- the YAML tree ------------------------------------------------------ */

struct tree {
	yaml_document_t doc;
	const char *path;
	char *err;
	size_t errlen;
};

static yaml_node_t *get(struct tree *t, yaml_node_t *map, const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
	     p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(&t->doc, p->key);

		if (k && k->type == YAML_SCALAR_NODE &&
		    strlen(key) == k->data.scalar.length &&
		    !memcmp(k->data.scalar.value, key, k->data.scalar.length))
			return yaml_document_get_node(&t->doc, p->value);
	}
	return NULL;
}

/* A scalar's text (owned), NULL when absent; -EINVAL when not a
 * scalar. */
static int text(struct tree *t, yaml_node_t *map, const char *key,
		const char *where, char **out)
{
	yaml_node_t *n = get(t, map, key);

	*out = NULL;
	if (!n)
		return 0;
	if (n->type != YAML_SCALAR_NODE) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: %s.%s is not a "
			 "single value",
			 t->path, where, key);
		return -EINVAL;
	}
	*out = xstrndup((const char *)n->data.scalar.value,
			n->data.scalar.length);
	return 0;
}

static bool is_true(struct tree *t, yaml_node_t *map, const char *key)
{
	yaml_node_t *n = get(t, map, key);

	return n && n->type == YAML_SCALAR_NODE && n->data.scalar.length == 4 &&
	       !memcmp(n->data.scalar.value, "true", 4);
}

/* The entry of list (clusters, contexts, users) whose name is name: its
 * inner mapping (cluster:, context:, user:). */
static yaml_node_t *named(struct tree *t, const char *list, const char *inner,
			  const char *name)
{
	yaml_node_t *root = yaml_document_get_root_node(&t->doc);
	yaml_node_t *seq = get(t, root, list);

	if (!seq || seq->type != YAML_SEQUENCE_NODE)
		return NULL;
	for (yaml_node_item_t *i = seq->data.sequence.items.start;
	     i < seq->data.sequence.items.top; i++) {
		yaml_node_t *entry = yaml_document_get_node(&t->doc, *i);
		yaml_node_t *n = get(t, entry, "name");

		if (n && n->type == YAML_SCALAR_NODE &&
		    n->data.scalar.length == strlen(name) &&
		    !memcmp(n->data.scalar.value, name, strlen(name)))
			return get(t, entry, inner);
	}
	return NULL;
}

/*
 * A key given as a file (KEY) or inline (KEY-data, base64): the bytes.
 * Both set: the inline one wins, as with kubectl.
 */
static int file_or_data(struct tree *t, yaml_node_t *map, const char *key,
			const char *where, char **out)
{
	char data_key[96], *value = NULL, full[PATH_MAX];
	int rc;

	*out = NULL;
	snprintf(data_key, sizeof(data_key), "%s-data", key);
	rc = text(t, map, data_key, where, &value);
	if (!rc && value) {
		*out = base64_text(value);
		free(value);
		if (!*out) {
			snprintf(t->err, t->errlen,
				 "kubeconfig %s: %s.%s is not base64", t->path,
				 where, data_key);
			return -EINVAL;
		}
		return 0;
	}
	rc = rc ? rc : text(t, map, key, where, &value);
	if (rc || !value)
		return rc;
	resolve(t->path, value, full, sizeof(full));
	free(value);
	return read_small_file(full, out, t->err, t->errlen, key);
}

/* ---- one context -------------------------------------------------------- */

static char **string_list(struct tree *t, yaml_node_t *seq, bool env)
{
	size_t n = seq && seq->type == YAML_SEQUENCE_NODE
			   ? (size_t)(seq->data.sequence.items.top -
				      seq->data.sequence.items.start)
			   : 0;
	char **out = xcalloc(n + 1, sizeof(*out));
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = yaml_document_get_node(
			&t->doc, seq->data.sequence.items.start[i]);
		char *name = NULL, *value = NULL;

		if (!env && item && item->type == YAML_SCALAR_NODE) {
			out[k++] =
				xstrndup((const char *)item->data.scalar.value,
					 item->data.scalar.length);
			continue;
		}
		if (!env || text(t, item, "name", "exec.env", &name) ||
		    text(t, item, "value", "exec.env", &value) || !name) {
			free(name);
			free(value);
			continue;
		}
		size_t len = strlen(name) + strlen(value ? value : "") + 2;

		out[k] = xcalloc(len, 1);
		snprintf(out[k++], len, "%s=%s", name, value ? value : "");
		free(name);
		free(value);
	}
	return out;
}

static int load_exec(struct tree *t, yaml_node_t *exec, struct kube_target *o)
{
	char *api = NULL;
	int rc = text(t, exec, "command", "user.exec", &o->exec.command);

	if (!rc)
		rc = text(t, exec, "apiVersion", "user.exec", &api);
	if (rc)
		goto out;
	if (!o->exec.command || !o->exec.command[0]) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: user.exec has no command", t->path);
		rc = -EINVAL;
		goto out;
	}
	if (!api || strncmp(api, "client.authentication.k8s.io/", 29)) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: user.exec.apiVersion must be "
			 "client.authentication.k8s.io/v1 or v1beta1",
			 t->path);
		rc = -EINVAL;
		goto out;
	}
	snprintf(o->exec.api_version, sizeof(o->exec.api_version), "%s", api);
	o->exec.args = string_list(t, get(t, exec, "args"), false);
	o->exec.env = string_list(t, get(t, exec, "env"), true);
	o->has_exec = true;
out:
	free(api);
	return rc;
}

static int load_user(struct tree *t, yaml_node_t *user, struct kube_target *o)
{
	char *file = NULL, full[PATH_MAX];
	int rc = 0;

	if (get(t, user, "auth-provider")) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: user.auth-provider is not supported "
			 "(kubectl dropped it too); use an exec plugin such as "
			 "gke-gcloud-auth-plugin",
			 t->path);
		return -EINVAL;
	}
	rc = file_or_data(t, user, "client-certificate", "user", &o->cert_pem);
	if (!rc)
		rc = file_or_data(t, user, "client-key", "user", &o->key_pem);
	if (!rc && !o->cert_pem != !o->key_pem) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: user has a client %s without its %s",
			 t->path, o->cert_pem ? "certificate" : "key",
			 o->cert_pem ? "key" : "certificate");
		rc = -EINVAL;
	}
	if (!rc)
		rc = text(t, user, "token", "user", &o->token);
	if (!rc)
		rc = text(t, user, "tokenFile", "user", &file);
	if (!rc && file) {
		resolve(t->path, file, full, sizeof(full));
		o->token_file = xstrdup(full);
	}
	free(file);
	if (!rc && get(t, user, "exec"))
		rc = load_exec(t, get(t, user, "exec"), o);
	return rc;
}

static int load_cluster(struct tree *t, yaml_node_t *cluster,
			struct kube_target *o)
{
	int rc = text(t, cluster, "server", "cluster", &o->server);

	if (rc)
		return rc;
	if (!o->server || strncmp(o->server, "https://", 8)) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: cluster.server must be an https:// "
			 "address",
			 t->path);
		return -EINVAL;
	}
	if (is_true(t, cluster, "insecure-skip-tls-verify")) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: cluster.insecure-skip-tls-verify is "
			 "refused: infrafs always verifies the API server",
			 t->path);
		return -EINVAL;
	}
	return file_or_data(t, cluster, "certificate-authority", "cluster",
			    &o->ca_pem);
}

static int load_context(struct tree *t, const char *context,
			struct kube_target *o)
{
	yaml_node_t *root = yaml_document_get_root_node(&t->doc);
	char *current = NULL, *cluster = NULL, *user = NULL;
	yaml_node_t *ctx, *c, *u;
	int rc = 0;

	if (!root || root->type != YAML_MAPPING_NODE) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: not a kubeconfig (no mapping at the "
			 "top)",
			 t->path);
		return -EINVAL;
	}
	if (!context) {
		rc = text(t, root, "current-context", "", &current);
		if (!rc && (!current || !current[0])) {
			snprintf(t->err, t->errlen,
				 "kubeconfig %s: no current-context; set "
				 "kubernetes.context",
				 t->path);
			rc = -EINVAL;
		}
		if (rc) {
			free(current);
			return rc;
		}
		context = current;
	}
	o->context = xstrdup(context);
	free(current);
	ctx = named(t, "contexts", "context", o->context);
	if (!ctx) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: no context named %s", t->path,
			 o->context);
		return -EINVAL;
	}
	rc = text(t, ctx, "cluster", "context", &cluster);
	if (!rc)
		rc = text(t, ctx, "user", "context", &user);
	if (!rc)
		rc = text(t, ctx, "namespace", "context", &o->namespace);
	c = !rc && cluster ? named(t, "clusters", "cluster", cluster) : NULL;
	u = !rc && user ? named(t, "users", "user", user) : NULL;
	if (!rc && !c) {
		snprintf(t->err, t->errlen,
			 "kubeconfig %s: context %s names no known cluster "
			 "(%s)",
			 t->path, o->context, cluster ? cluster : "none");
		rc = -EINVAL;
	}
	if (!rc)
		rc = load_cluster(t, c, o);
	if (!rc && u)
		rc = load_user(t, u, o);
	free(cluster);
	free(user);
	return rc;
}

int kube_config_load(const char *path, const char *context,
		     struct kube_target *out, char *err, size_t errlen)
{
	struct tree t = { .path = path, .err = err, .errlen = errlen };
	yaml_parser_t parser;
	char *text_of = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = read_small_file(path, &text_of, err, errlen, "kubeconfig");
	if (rc)
		return rc;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text_of,
				     strlen(text_of));
	if (!yaml_parser_load(&parser, &t.doc)) {
		snprintf(err, errlen, "kubeconfig %s: line %zu: %s", path,
			 parser.problem_mark.line + 1,
			 parser.problem ? parser.problem : "does not parse");
		yaml_parser_delete(&parser);
		free(text_of);
		return -EINVAL;
	}
	yaml_parser_delete(&parser);
	free(text_of);
	rc = load_context(&t, context, out);
	yaml_document_delete(&t.doc);
	if (rc)
		kube_target_free(out);
	return rc;
}

/* ---- in a cluster ------------------------------------------------------- */

int kube_in_cluster(const char *root, struct kube_target *out, char *err,
		    size_t errlen)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	char path[PATH_MAX], server[300];
	int rc;

	memset(out, 0, sizeof(*out));
	if (!root)
		root = "/var/run/secrets/kubernetes.io/serviceaccount";
	if (!host || !host[0]) {
		snprintf(err, errlen,
			 "not in a Kubernetes cluster "
			 "(KUBERNETES_SERVICE_HOST is not set)");
		return -ENOENT;
	}
	/* An IPv6 address goes in brackets, as client-go writes it. */
	snprintf(server, sizeof(server),
		 strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host,
		 port && port[0] ? port : "443");
	out->server = xstrdup(server);
	out->context = xstrdup("in-cluster");
	snprintf(path, sizeof(path), "%s/token", root);
	out->token_file = xstrdup(path);
	snprintf(path, sizeof(path), "%s/ca.crt", root);
	rc = read_small_file(path, &out->ca_pem, err, errlen,
			     "service account CA");
	snprintf(path, sizeof(path), "%s/namespace", root);
	if (!rc && read_small_file(path, &out->namespace, err, errlen,
				   "namespace") == 0) {
		out->namespace[strcspn(out->namespace, "\r\n")] = '\0';
	}
	if (rc)
		kube_target_free(out);
	return rc;
}

static void free_list(char **l)
{
	for (size_t i = 0; l && l[i]; i++)
		free(l[i]);
	free(l);
}

void kube_target_free(struct kube_target *t)
{
	free(t->context);
	free(t->server);
	free(t->ca_pem);
	free(t->cert_pem);
	if (t->key_pem)
		OPENSSL_cleanse(t->key_pem, strlen(t->key_pem));
	free(t->key_pem);
	if (t->token)
		OPENSSL_cleanse(t->token, strlen(t->token));
	free(t->token);
	free(t->token_file);
	free(t->exec.command);
	free_list(t->exec.args);
	free_list(t->exec.env);
	free(t->namespace);
	memset(t, 0, sizeof(*t));
}

/* ---- credentials -------------------------------------------------------- */

void kube_credential_free(struct kube_credential *c)
{
	if (c->token)
		OPENSSL_cleanse(c->token, strlen(c->token));
	if (c->key_pem)
		OPENSSL_cleanse(c->key_pem, strlen(c->key_pem));
	free(c->token);
	free(c->cert_pem);
	free(c->key_pem);
	memset(c, 0, sizeof(*c));
}

static void copy_credential(struct kube_credential *to,
			    const struct kube_credential *from)
{
	to->token = from->token ? xstrdup(from->token) : NULL;
	to->cert_pem = from->cert_pem ? xstrdup(from->cert_pem) : NULL;
	to->key_pem = from->key_pem ? xstrdup(from->key_pem) : NULL;
	to->expires = from->expires;
}

/* The plugin's environment: the daemon's, the kubeconfig's additions,
 * and KUBERNETES_EXEC_INFO. */
static char **plugin_env(const struct kube_target *t, const char *info)
{
	size_t n = 0, k = 0, extra = 0;
	char **env;

	while (environ[n])
		n++;
	while (t->exec.env && t->exec.env[extra])
		extra++;
	env = xcalloc(n + extra + 2, sizeof(*env));
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "KUBERNETES_EXEC_INFO=", 21))
			env[k++] = environ[i];
	for (size_t i = 0; i < extra; i++)
		env[k++] = t->exec.env[i];
	env[k] = (char *)info;
	return env;
}

/* Reads the plugin's stdout and stderr until both end or the deadline. */
static bool collect(int out_fd, int err_fd, struct buf *out, struct buf *errs,
		    double deadline)
{
	struct pollfd p[2] = { { out_fd, POLLIN, 0 }, { err_fd, POLLIN, 0 } };
	char chunk[8192];

	while (p[0].fd >= 0 || p[1].fd >= 0) {
		double left = deadline - time_now();

		if (left <= 0 || poll(p, 2, (int)(left * 1000) + 1) < 0)
			return false;
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (p[i].fd < 0 || !p[i].revents)
				continue;
			n = read(p[i].fd, chunk, sizeof(chunk));
			if (n <= 0) {
				p[i].fd = -1;
				continue;
			}
			if (i == 0 && out->len + (size_t)n <= PLUGIN_OUTPUT_MAX)
				buf_add(out, chunk, (size_t)n);
			else if (i == 1 && errs->len < 4096)
				buf_add(errs, chunk, (size_t)n);
		}
	}
	return true;
}

/*
 * Runs the plugin with posix_spawn (the daemon is threaded: no fork with
 * its locks held), every other descriptor closed, stdin from /dev/null.
 */
static int run_plugin(const struct kube_target *t, struct buf *out, char *err,
		      size_t errlen)
{
	char info[256];
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, status = 0, rc = 0;
	posix_spawn_file_actions_t fa;
	struct buf errs = BUF_INIT;
	char **argv, **env;
	size_t nargs = 0;
	pid_t pid;

	snprintf(info, sizeof(info),
		 "KUBERNETES_EXEC_INFO={\"apiVersion\":\"%s\",\"kind\":"
		 "\"ExecCredential\",\"spec\":{\"interactive\":false}}",
		 t->exec.api_version);
	while (t->exec.args && t->exec.args[nargs])
		nargs++;
	argv = xcalloc(nargs + 2, sizeof(*argv));
	argv[0] = t->exec.command;
	for (size_t i = 0; i < nargs; i++)
		argv[i + 1] = t->exec.args[i];
	env = plugin_env(t, info);
	if (pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) {
		snprintf(err, errlen, "exec plugin %s: %s", t->exec.command,
			 strerror(errno));
		rc = -errno;
		goto out;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
	posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	rc = posix_spawnp(&pid, t->exec.command, &fa, NULL, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	close(outp[1]);
	close(errp[1]);
	outp[1] = errp[1] = -1;
	if (rc) {
		snprintf(err, errlen, "exec plugin %s: cannot run it: %s",
			 t->exec.command, strerror(rc));
		rc = -rc;
		goto out;
	}
	if (!collect(outp[0], errp[0], out, &errs,
		     time_now() + KUBE_EXEC_TIMEOUT_S)) {
		kill(pid, SIGKILL);
		snprintf(err, errlen,
			 "exec plugin %s: no answer within %d s; stopped",
			 t->exec.command, KUBE_EXEC_TIMEOUT_S);
		rc = -ETIMEDOUT;
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!rc && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		const char *why = buf_str(&errs);

		snprintf(err, errlen, "exec plugin %s %s %d: %.*s",
			 t->exec.command,
			 WIFEXITED(status) ? "exited with" : "killed by signal",
			 WIFEXITED(status) ? WEXITSTATUS(status)
					   : WTERMSIG(status),
			 (int)strcspn(why, "\n"), why);
		rc = -EIO;
	}
out:
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			close(outp[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	buf_free(&errs);
	free(argv);
	free(env);
	return rc;
}

/* An ExecCredential's status, as client-go reads it. */
static int parse_exec_credential(const struct kube_target *t, const char *text,
				 double now, struct kube_credential *c,
				 char *err, size_t errlen)
{
	json_t *doc = json_loads(text, 0, NULL);
	json_t *status = json_object_get(doc, "status");
	const char *kind = json_string_value(json_object_get(doc, "kind"));
	const char *token = json_string_value(json_object_get(status, "token"));
	const char *cert = json_string_value(
		json_object_get(status, "clientCertificateData"));
	const char *key =
		json_string_value(json_object_get(status, "clientKeyData"));
	const char *exp = json_string_value(
		json_object_get(status, "expirationTimestamp"));
	int rc = 0;

	memset(c, 0, sizeof(*c));
	if (!json_is_object(doc) || !kind || strcmp(kind, "ExecCredential") ||
	    !json_is_object(status)) {
		snprintf(err, errlen,
			 "exec plugin %s: its output is not an ExecCredential "
			 "with a status",
			 t->exec.command);
		rc = -EINVAL;
	} else if (!token && !(cert && key)) {
		snprintf(err, errlen,
			 "exec plugin %s: its ExecCredential holds neither a "
			 "token nor a client certificate and key",
			 t->exec.command);
		rc = -EINVAL;
	} else if (exp && time_parse_rfc3339(exp) < 0) {
		snprintf(err, errlen,
			 "exec plugin %s: expirationTimestamp %s is not an "
			 "RFC 3339 time",
			 t->exec.command, exp);
		rc = -EINVAL;
	} else if (exp && time_parse_rfc3339(exp) <= now) {
		snprintf(err, errlen,
			 "exec plugin %s: the credential it gave expired at %s",
			 t->exec.command, exp);
		rc = -EKEYEXPIRED;
	} else {
		c->token = token ? xstrdup(token) : NULL;
		c->cert_pem = cert ? xstrdup(cert) : NULL;
		c->key_pem = key ? xstrdup(key) : NULL;
		c->expires = exp ? time_parse_rfc3339(exp) : 0;
	}
	json_decref(doc);
	return rc;
}

static int exec_credential(const struct kube_target *t,
			   struct kube_credential *cache, double now, char *err,
			   size_t errlen)
{
	struct buf out = BUF_INIT;
	struct kube_credential fresh;
	int rc;

	if ((cache->token || cache->cert_pem) &&
	    (!cache->expires || cache->expires - EXPIRY_MARGIN_S > now))
		return 0;
	rc = run_plugin(t, &out, err, errlen);
	if (!rc)
		rc = parse_exec_credential(t, buf_str(&out), now, &fresh, err,
					   errlen);
	if (out.data)
		OPENSSL_cleanse(out.data, out.len);
	buf_free(&out);
	if (rc)
		return rc;
	kube_credential_free(cache);
	*cache = fresh;
	return 0;
}

int kube_credential_get(const struct kube_target *t,
			struct kube_credential *cache, double now,
			struct kube_credential *out, char *err, size_t errlen)
{
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (t->has_exec) {
		rc = exec_credential(t, cache, now, err, errlen);
		if (!rc)
			copy_credential(out, cache);
		return rc;
	}
	if (t->token_file) {
		rc = read_small_file(t->token_file, &out->token, err, errlen,
				     "token file");
		if (!rc)
			out->token[strcspn(out->token, "\r\n")] = '\0';
	} else if (t->token) {
		out->token = xstrdup(t->token);
	}
	if (!rc && t->cert_pem) {
		out->cert_pem = xstrdup(t->cert_pem);
		out->key_pem = xstrdup(t->key_pem);
	}
	return rc;
}
