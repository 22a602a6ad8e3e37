// SPDX-License-Identifier: MIT
/*
 * Endpoint replicas are processes in sessions of their own, so they
 * outlive the daemon. Each carries a marker in its environment
 * (INFRAFS_OWNER, INFRAFS_REPLICA, INFRAFS_REV): a restarted daemon finds
 * and adopts them by scanning /proc instead of trusting a record that a
 * crash may have left behind, so a replica is never started twice.
 */
#include "local.h"

#include "store/secretbox.h"
#include "util/files.h"
#include "util/log.h"
#include "util/text.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* How long a replica gets between SIGTERM and SIGKILL. */
#define STOP_GRACE_SECONDS 5.0

struct slot *slot_of(struct local *l, const char *env, const char *name,
		     unsigned idx)
{
	char key[160];
	struct slot *s;

	snprintf(key, sizeof(key), "%s/%s/%u", env, name, idx);
	s = map_get(&l->slots, key, strlen(key));
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		snprintf(s->key, sizeof(s->key), "%s", key);
		s->last_exit = -1;
		map_put(&l->slots, s->key, strlen(s->key), s);
	}
	return s;
}

void replica_log_path(const struct local *l, const char *env, const char *name,
		      unsigned idx, char *out, size_t len)
{
	snprintf(out, len, "%s/logs/%s/%s/replica-%u.log", l->dir, env, name,
		 idx);
}

/* ---- finding our processes --------------------------------------------- */

static const char *env_value(const char *environ_blob, size_t len,
			     const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < len;) {
		const char *entry = environ_blob + i;
		size_t elen = strnlen(entry, len - i);

		if (elen > n && !memcmp(entry, name, n) && entry[n] == '=')
			return entry + n + 1;
		i += elen + 1;
	}
	return NULL;
}

/* Fields 3 (state), 6 (session) and 22 (start time) of /proc/PID/stat. */
bool proc_stat(pid_t pid, char *state, pid_t *session,
	       unsigned long long *start)
{
	char path[64], buf[1024];
	const char *p;
	int fd, field;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: skip past the
	 * last ')'. */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return false;
	*state = p[2];
	for (field = 2; *p && field < 22; p++) {
		if (*p != ' ')
			continue;
		field++;
		if (field == 6)
			*session = (pid_t)strtol(p + 1, NULL, 10);
		if (field == 22)
			*start = strtoull(p + 1, NULL, 10);
	}
	return field == 22;
}

static void add_running(struct local *l, const struct replica *r)
{
	struct replica_set *s = &l->running;

	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n++] = *r;
}

static void consider(struct local *l, pid_t pid)
{
	char path[64], blob[65536];
	const char *owner, *marker, *rev, *port, *tmpl;
	struct replica r = { .pid = pid };
	pid_t session = 0;
	char state;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, blob, sizeof(blob) - 1);
	close(fd);
	if (n <= 0)
		return;
	blob[n] = '\0';
	owner = env_value(blob, (size_t)n, "INFRAFS_OWNER");
	if (!owner || strcmp(owner, l->owner) != 0)
		return;
	marker = env_value(blob, (size_t)n, "INFRAFS_REPLICA");
	rev = env_value(blob, (size_t)n, "INFRAFS_REV");
	tmpl = env_value(blob, (size_t)n, "INFRAFS_TEMPLATE");
	port = env_value(blob, (size_t)n, "PORT");
	if (!marker || !rev || !port)
		return;
	/* Children of the replica inherit the marker; only the session
	 * leader infrafs started is the replica. */
	if (!proc_stat(pid, &state, &session, &r.start_time) || session != pid)
		return;
	if (sscanf(marker, "%63[^/]/%63[^/]/%u", r.env, r.name, &r.idx) != 3)
		return;
	r.rev = strtoull(rev, NULL, 10);
	r.template = tmpl ? strtoull(tmpl, NULL, 16) : 0;
	r.port = atoi(port);
	add_running(l, &r);
}

void replicas_scan(struct local *l)
{
	DIR *d = opendir("/proc");
	struct dirent *de;

	l->running.n = 0;
	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);

		if (*end || pid <= 0)
			continue;
		consider(l, (pid_t)pid);
	}
	closedir(d);
}

/* Our own children must be reaped; their exit status is the last_exit
 * status shows. Adopted replicas are not our children: for them it is
 * unknown. */
void replicas_reap(struct local *l)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		int *code = xmalloc(sizeof(int) + sizeof(pid_t));
		int value = WIFEXITED(status) ? WEXITSTATUS(status)
					      : 128 + WTERMSIG(status);

		code[0] = value;
		memcpy(code + 1, &pid, sizeof(pid));
		free(map_put(&l->exits, code + 1, sizeof(pid_t), code));
	}
}

/* ---- health ------------------------------------------------------------- */

static size_t discard_body(char *p, size_t size, size_t n, void *ctx)
{
	(void)p;
	(void)ctx;
	return size * n;
}

/* As Kubernetes' httpGet probe: 200 to 399 is healthy. */
void replicas_probe(struct local *l, const char *health_path, struct replica *r)
{
	CURL *c = l->curl;
	char url[512];
	long code = 0;

	r->healthy = false;
	if (!c)
		return;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", r->port,
		 health_path && health_path[0] ? health_path : "/health");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 300L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 200L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	if (curl_easy_perform(c) == CURLE_OK &&
	    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK)
		r->healthy = code >= 200 && code < 400;
}

/* ---- starting and stopping ---------------------------------------------- */

/* A port nobody listens on now; the replica binds it. */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int port = -1;

	if (fd < 0)
		return -1;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

struct envp {
	char **v;
	size_t n, cap;
};

static void envp_add(struct envp *e, const char *name, const char *value)
{
	struct buf b = BUF_INIT;

	if (e->n + 2 > e->cap) {
		e->cap = e->cap ? e->cap * 2 : 32;
		e->v = xrealloc(e->v, e->cap * sizeof(*e->v));
	}
	buf_printf(&b, "%s=%s", name, value);
	e->v[e->n++] = buf_steal(&b);
	e->v[e->n] = NULL;
}

/* Secret values passed through here: wipe every string, not only them. */
static void envp_free(struct envp *e)
{
	for (size_t i = 0; i < e->n; i++) {
		explicit_bzero(e->v[i], strlen(e->v[i]));
		free(e->v[i]);
	}
	free(e->v);
}

static int add_secret(struct local *l, const struct desired *want,
		      const char *key, const char *name, struct envp *e,
		      char *err, size_t errlen)
{
	char *value = NULL;
	size_t len = 0;
	int rc = l->host.secret ? l->host.secret(l->host.ctx, want->env, name,
						 &value, &len)
				: -ENOSYS;

	if (rc < 0) {
		snprintf(err, errlen, "env.%s: secret %s cannot be read (%s)",
			 key, name, strerror(-rc));
		return rc;
	}
	envp_add(e, key, value);
	secret_wipe_free(value, len);
	return 0;
}

uint64_t replica_template(const struct local *l, const struct desired *want,
			  const char *devices)
{
	const struct spec_value *pairs = spec_field(want->spec, "env");
	static const char *const fields[] = {
		"command",	"env",	 "pool", "accelerator",
		"accelerators", "model", NULL
	};
	BUF_AUTO b = BUF_INIT;

	for (size_t i = 0; fields[i]; i++) {
		const struct field_def *f = kind_field(
			want->spec->kind, fields[i], strlen(fields[i]));

		if (f)
			spec_field_text(want->spec, f, &b);
		buf_addc(&b, '\0');
	}
	buf_adds(&b, devices ? devices : "");
	/* A secret's new version rolls the replicas that use it. */
	for (size_t i = 0; pairs && i < pairs->npairs; i++) {
		const char *v = pairs->pairs[i].value;

		if (!strncmp(v, "secret:", 7) && l->host.secret_version)
			buf_printf(&b, "\n%s=%" PRIu64, v + 7,
				   l->host.secret_version(l->host.ctx,
							  want->env, v + 7));
	}
	return map_hash(buf_str(&b), b.len);
}

/* The replica's environment: the daemon's PATH and locale, the spec's
 * env.* with secret:NAME values opened, and the markers. */
static int build_env(struct local *l, const struct desired *want, unsigned idx,
		     int port, const char *devices, struct envp *e, char *err,
		     size_t errlen)
{
	static const char *const keep[] = { "PATH", "LANG", "LC_ALL",
					    "HOME", "TZ",   NULL };
	const struct spec_value *env = spec_field(want->spec, "env");
	char num[32], marker[160];

	for (size_t i = 0; keep[i]; i++) {
		const char *v = getenv(keep[i]);

		if (v)
			envp_add(e, keep[i], v);
	}
	for (size_t i = 0; env && i < env->npairs; i++) {
		const char *val = env->pairs[i].value;

		if (strncmp(val, "secret:", 7) != 0)
			envp_add(e, env->pairs[i].key, val);
		else if (add_secret(l, want, env->pairs[i].key, val + 7, e, err,
				    errlen) < 0)
			return -EIO;
	}
	if (devices && devices[0])
		envp_add(e, "CUDA_VISIBLE_DEVICES", devices);
	snprintf(num, sizeof(num), "%d", port);
	envp_add(e, "PORT", num);
	envp_add(e, "INFRAFS_OWNER", l->owner);
	snprintf(marker, sizeof(marker), "%s/%s/%u", want->env, want->name,
		 idx);
	envp_add(e, "INFRAFS_REPLICA", marker);
	snprintf(num, sizeof(num), "%" PRIu64, want->rev);
	envp_add(e, "INFRAFS_REV", num);
	snprintf(num, sizeof(num), "%016" PRIx64,
		 replica_template(l, want, devices));
	envp_add(e, "INFRAFS_TEMPLATE", num);
	return 0;
}

int replica_start(struct local *l, const struct desired *want, unsigned idx,
		  const char *visible_devices, char *err, size_t errlen)
{
	char command[4096], log[PATH_MAX];
	char *argv[] = { "sh", "-c", command, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	struct envp env = { 0 };
	int port = free_port();
	pid_t pid;
	int rc;

	spec_text(want->spec, "command", command, sizeof(command));
	if (!command[0]) {
		snprintf(err, errlen,
			 "command: the local provider runs `command`; none is "
			 "set");
		return -EINVAL;
	}
	if (port < 0) {
		snprintf(err, errlen, "no free port for replica %u", idx);
		return -EADDRINUSE;
	}
	replica_log_path(l, want->env, want->name, idx, log, sizeof(log));
	mkdir_parents(log);
	if (build_env(l, want, idx, port, visible_devices, &env, err, errlen)) {
		envp_free(&env);
		return -EIO;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, log,
					 O_WRONLY | O_CREAT | O_APPEND, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	posix_spawnattr_init(&attr);
	/* Its own session: it outlives us, and a signal to -pid reaches
	 * everything it started. */
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID |
						POSIX_SPAWN_SETSIGMASK |
						POSIX_SPAWN_SETSIGDEF);
	{
		sigset_t none, all;

		sigemptyset(&none);
		sigfillset(&all);
		posix_spawnattr_setsigmask(&attr, &none);
		posix_spawnattr_setsigdefault(&attr, &all);
	}
	rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, env.v);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	envp_free(&env);
	if (rc) {
		snprintf(err, errlen, "starting replica %u: %s", idx,
			 strerror(rc));
		return -rc;
	}
	{
		struct slot *s = slot_of(l, want->env, want->name, idx);
		struct replica r = {
			.idx = idx,
			.pid = pid,
			.port = port,
			.rev = want->rev,
			.template = replica_template(l, want, visible_devices),
		};

		s->pid = pid;
		s->rev = want->rev;
		s->starts++;
		s->term_sent = 0;
		snprintf(r.env, sizeof(r.env), "%s", want->env);
		snprintf(r.name, sizeof(r.name), "%s", want->name);
		add_running(l, &r);
	}
	log_info("%s/%s: replica %u started, pid %d, port %d", want->env,
		 want->name, idx, (int)pid, port);
	return 0;
}

bool replica_stop(struct local *l, struct replica *r)
{
	struct slot *s = slot_of(l, r->env, r->name, r->idx);
	double now = time_now();

	if (kill(r->pid, 0) < 0 && errno == ESRCH)
		return true;
	if (!s->term_sent || s->pid != r->pid) {
		s->pid = r->pid;
		s->term_sent = now;
		kill(-r->pid, SIGTERM);
		return false;
	}
	if (now - s->term_sent >= STOP_GRACE_SECONDS)
		kill(-r->pid, SIGKILL);
	return false;
}
