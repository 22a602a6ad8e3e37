// SPDX-License-Identifier: MIT
/*
 * Endpoint replicas are processes in sessions of their own, so they
 * outlive the daemon. Each carries a marker in its environment
 * (INFRAFS_OWNER, INFRAFS_REPLICA, INFRAFS_REV): a restarted daemon finds
 * and adopts them by scanning /proc instead of trusting a record that a
 * crash may have left behind, so a replica is never started twice. Any
 * user can put a marker in an environment, so a marked process counts
 * only when it runs as the user its replicas run as (replica_trusted).
 */
#include "local.h"

#include "providers/records.h"
#include "spawn.h"
#include "store/secretbox.h"
#include "util/log.h"
#include "util/text.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Replica logs rotate past this size, keeping this many old ones. */
#define LOG_MAX_BYTES_DEFAULT (10ll << 20)
#define LOG_KEEP_DEFAULT 3

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

/* /proc/PID/WHAT into buf, NUL-terminated: its length, or -1. */
static ssize_t read_proc(pid_t pid, const char *what, char *buf, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return n;
}

/* Fields 3 (state), 6 (session) and 22 (start time) of /proc/PID/stat. */
bool proc_stat(pid_t pid, char *state, pid_t *session,
	       unsigned long long *start)
{
	char buf[1024];
	const char *p;
	int field;

	if (read_proc(pid, "stat", buf, sizeof(buf)) < 0)
		return false;
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

/* The user a process runs as: real, effective, saved and filesystem uid
 * all the same, as for a replica after its setuid. */
static bool proc_uid(pid_t pid, uid_t *uid)
{
	char buf[4096];
	unsigned long ids[4];
	const char *line;

	if (read_proc(pid, "status", buf, sizeof(buf)) < 0)
		return false;
	line = strstr(buf, "\nUid:");
	if (!line || sscanf(line + 5, "%lu %lu %lu %lu", &ids[0], &ids[1],
			    &ids[2], &ids[3]) != 4)
		return false;
	if (ids[1] != ids[0] || ids[2] != ids[0] || ids[3] != ids[0])
		return false;
	*uid = (uid_t)ids[0];
	return true;
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
	char blob[65536];
	const char *owner, *marker, *rev, *port, *tmpl;
	struct replica r = { .pid = pid };
	pid_t session = 0;
	char state;
	ssize_t n = read_proc(pid, "environ", blob, sizeof(blob));

	if (n < 0)
		return;
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
	if (!proc_uid(pid, &r.uid))
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

static void note_exit(struct local *l, pid_t pid, int status)
{
	int *code = xmalloc(sizeof(int) + sizeof(pid_t));

	code[0] = WIFEXITED(status) ? WEXITSTATUS(status)
				    : 128 + WTERMSIG(status);
	memcpy(code + 1, &pid, sizeof(pid));
	free(map_put(&l->exits, code + 1, sizeof(pid_t), code));
}

/* Our own children must be reaped; their exit status is the last_exit
 * status shows. Adopted replicas are not our children: for them it is
 * unknown. Only the pids started here are waited for: waitpid(-1) would
 * take the status of another part of the daemon's children. */
void replicas_reap(struct local *l)
{
	struct pid_set *c = &l->children;
	size_t kept = 0;

	for (size_t i = 0; i < c->n; i++) {
		int status;
		pid_t w = waitpid(c->v[i], &status, WNOHANG);

		if (w == c->v[i])
			note_exit(l, w, status);
		else if (w == 0 || errno == EINTR)
			c->v[kept++] = c->v[i];
	}
	c->n = kept;
}

static void add_child(struct local *l, pid_t pid)
{
	struct pid_set *c = &l->children;

	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->v = xrealloc(c->v, c->cap * sizeof(*c->v));
	}
	c->v[c->n++] = pid;
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
	/* A new owner (chown of the environment) rolls the replicas, which
	 * run as the owner. */
	buf_printf(&b, "\nowner=%u:%u", (unsigned)want->owner_uid,
		   (unsigned)want->owner_gid);
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

static bool declares(const struct spec_value *env, const char *name)
{
	for (size_t i = 0; env && i < env->npairs; i++) {
		if (!strcmp(env->pairs[i].key, name))
			return true;
	}
	return false;
}

/* A login's basics, unless env.* declares its own. Nothing comes from
 * the daemon's environment: its variables are not the owner's business. */
static void add_login(const struct spec_value *env, const struct identity *who,
		      struct envp *e)
{
	const char *const login[][2] = {
		{ "PATH", "/usr/local/bin:/usr/bin:/bin" },
		{ "HOME", who->home },
		{ "USER", who->name },
		{ "LOGNAME", who->name },
	};

	for (size_t i = 0; i < sizeof(login) / sizeof(login[0]); i++) {
		if (!declares(env, login[i][0]))
			envp_add(e, login[i][0], login[i][1]);
	}
}

/* The markers and what the provider sets itself, first: the /proc scan
 * reads the first 64 KiB of an environment, which env.* may outgrow. */
static void add_markers(struct local *l, const struct desired *want,
			unsigned idx, int port, const char *devices,
			struct envp *e)
{
	char num[32], marker[160];

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
}

/* The replica's whole environment: a login's basics, the spec's env.*
 * with secret:NAME values opened, and the markers. */
static int build_env(struct local *l, const struct desired *want, unsigned idx,
		     int port, const char *devices, const struct identity *who,
		     struct envp *e, char *err, size_t errlen)
{
	const struct spec_value *env = spec_field(want->spec, "env");

	add_markers(l, want, idx, port, devices, e);
	add_login(env, who, e);
	for (size_t i = 0; env && i < env->npairs; i++) {
		const char *key = env->pairs[i].key;
		const char *val = env->pairs[i].value;

		/* Refused at write(2) since; a spec stored before must not
		 * forge a marker either. */
		if (spec_env_name_reserved(key, strlen(key)))
			continue;
		if (strncmp(val, "secret:", 7) != 0)
			envp_add(e, key, val);
		else if (add_secret(l, want, key, val + 7, e, err, errlen) < 0)
			return -EIO;
	}
	return 0;
}

/* Opens NAME below dirfd as one of our own folders; closes dirfd. */
static int own_subdir(int dirfd, const char *name, char *err, size_t errlen)
{
	int fd = own_dir_open(dirfd, name, err, errlen);

	close(dirfd);
	return fd;
}

/* A new, empty file in place of whatever was at name. */
static int replace_file(int dirfd, const char *name)
{
	int fd;

	if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	log_warn("replica log %s was not a plain file; made anew", name);
	fd = openat(dirfd, name,
		    O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW |
			    O_NOCTTY | O_CLOEXEC,
		    0600);
	return fd < 0 ? -errno : fd;
}

/*
 * The replica's log, opened here by the daemon, before the child drops to
 * the owner, and handed to it as stdout and stderr. The folders below
 * the provider's are checked to be the daemon's own and the file is
 * opened without following a link (O_NONBLOCK: nor hanging on a fifo),
 * so nothing planted there makes the daemon write elsewhere; and the
 * replica gets this one descriptor, not a path, so it cannot write any
 * other file of the daemon's. Opened by the child after the drop, the
 * log would need folders the owner may write, where the owner could
 * swap it for a link to another replica's.
 */
static int replica_log_open(struct local *l, const struct desired *want,
			    unsigned idx, int *dir_out, char *err,
			    size_t errlen)
{
	const int flags = O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW |
			  O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	char why[256], file[64];
	struct stat st;
	int dir, fd;

	dir = dup(l->dir_fd);
	if (dir >= 0)
		dir = own_subdir(dir, "logs", why, sizeof(why));
	if (dir >= 0)
		dir = own_subdir(dir, want->env, why, sizeof(why));
	if (dir >= 0)
		dir = own_subdir(dir, want->name, why, sizeof(why));
	if (dir < 0) {
		snprintf(err, errlen, "replica %u log folder %s", idx, why);
		return dir;
	}
	snprintf(file, sizeof(file), "replica-%u.log", idx);
	fd = openat(dir, file, flags, 0600);
	if (fd >= 0 &&
	    (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1)) {
		close(fd);
		fd = -ELOOP;
	} else if (fd < 0) {
		fd = -errno;
	}
	if (fd == -ELOOP)
		fd = replace_file(dir, file);
	if (fd >= 0)
		*dir_out = dir;
	else
		close(dir);
	if (fd < 0)
		snprintf(err, errlen, "replica %u log: %s", idx, strerror(-fd));
	else
		fcntl(fd, F_SETFL, O_WRONLY | O_APPEND);
	return fd;
}

/*
 * local.log_max_bytes (default 10 MiB; 0: no rotation, the replica
 * writes its log itself) and local.log_keep (default 3) from the
 * environment's config. A value that does not parse is the default.
 */
static long long config_number(const struct desired *want, const char *key,
			       long long def, long long max)
{
	const char *v = spec_map_get(want->config, "local", key);
	char *end;
	long long n;

	if (!v)
		return def;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno || end == v || *end || n < 0)
		return def;
	return n < max ? n : max;
}

static void log_rotation(const struct desired *want, unsigned idx,
			 struct launch *x)
{
	x->log_max_bytes = config_number(want, "log_max_bytes",
					 LOG_MAX_BYTES_DEFAULT, LLONG_MAX);
	x->log_keep = (unsigned)config_number(want, "log_keep",
					      LOG_KEEP_DEFAULT, LOG_KEEP_MAX);
	snprintf(x->log_names[0], sizeof(x->log_names[0]), "replica-%u.log",
		 idx);
	for (unsigned i = 1; i <= x->log_keep; i++)
		snprintf(x->log_names[i], sizeof(x->log_names[i]),
			 "replica-%u.log.%u", idx, i);
}

static void note_started(struct local *l, const struct desired *want,
			 unsigned idx, pid_t pid, int port, const char *devices)
{
	struct slot *s = slot_of(l, want->env, want->name, idx);
	struct replica r = {
		.idx = idx,
		.pid = pid,
		.port = port,
		.rev = want->rev,
		.template = replica_template(l, want, devices),
		.uid = want->owner_uid,
	};

	add_child(l, pid);
	s->pid = pid;
	s->rev = want->rev;
	s->starts++;
	s->term_sent = 0;
	snprintf(r.env, sizeof(r.env), "%s", want->env);
	snprintf(r.name, sizeof(r.name), "%s", want->name);
	add_running(l, &r);
}

/* Who it runs as, and its environment, before fork. */
static int prepare(struct local *l, const struct desired *want, unsigned idx,
		   int port, const char *devices, struct identity *who,
		   struct envp *env, char *err, size_t errlen)
{
	int rc = identity_allowed(want->owner_uid, want->env, err, errlen);

	if (rc < 0)
		return rc;
	rc = identity_of(want->owner_uid, who, err, errlen);
	if (rc < 0)
		return rc;
	return build_env(l, want, idx, port, devices, who, env, err, errlen);
}

int replica_start(struct local *l, const struct desired *want, unsigned idx,
		  const char *visible_devices, char *err, size_t errlen)
{
	/* The command's whole text: never cut to a buffer's size, which
	 * would run something else. */
	const struct spec_value *cmd = spec_field(want->spec, "command");
	char *argv[] = { "sh", "-c", cmd ? cmd->text : NULL, NULL };
	struct identity who = { 0 };
	struct envp env = { 0 };
	struct launch x = {
		.who = &who, .argv = argv, .log_fd = -1, .log_dir_fd = -1
	};
	char why[256] = "";
	int port = free_port();
	pid_t pid;
	int rc;

	if (!argv[2] || !argv[2][0]) {
		snprintf(err, errlen,
			 "command: the local provider runs `command`; none is "
			 "set");
		return -EINVAL;
	}
	if (port < 0) {
		snprintf(err, errlen, "no free port for replica %u", idx);
		return -EADDRINUSE;
	}
	rc = prepare(l, want, idx, port, visible_devices, &who, &env, err,
		     errlen);
	if (rc == 0) {
		x.envp = env.v;
		log_rotation(want, idx, &x);
		x.log_fd = replica_log_open(l, want, idx, &x.log_dir_fd, err,
					    errlen);
		rc = x.log_fd < 0 ? x.log_fd
				  : launch(&x, &pid, why, sizeof(why));
	}
	if (x.log_fd >= 0)
		close(x.log_fd);
	if (x.log_dir_fd >= 0)
		close(x.log_dir_fd);
	envp_free(&env);
	identity_free(&who);
	if (why[0])
		snprintf(err, errlen, "starting replica %u: %s", idx, why);
	if (rc < 0)
		return rc;
	note_started(l, want, idx, pid, port, visible_devices);
	snprintf(why, sizeof(why), "%s/%s", resource_kinds[want->kind]->dir,
		 want->name);
	log_for(LOG_LVL_INFO, want->env, why, want->rev,
		"%s/%s: replica %u started, pid %d, port %d, uid %u", want->env,
		want->name, idx, (int)pid, port, (unsigned)want->owner_uid);
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
