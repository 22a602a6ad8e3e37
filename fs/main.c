// SPDX-License-Identifier: MIT
/*
 * infrafs: mount ML infrastructure as a file system. This file only reads
 * options, opens the state store, mounts and runs the request loop; the
 * file system is in fs/, the store in store/.
 */
#include "build_info.h"
#include "fs.h"
#include "service.h"
#include "spec/schema.h"

#include "util/files.h"
#include "util/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef INFRAFS_VERSION
#define INFRAFS_VERSION "0.0.0"
#endif

/* Enough for every status of ten thousand resources; past it, renders
 * are dropped and made again when next read. */
#define RENDER_CACHE_BYTES (16u << 20)

struct options {
	char state[PATH_MAX + 16];
	char key_file[PATH_MAX];
	/* Where providers keep their files: beside a sqlite: store, else
	 * --local-dir or the local state folder. */
	char local_dir[PATH_MAX];
	bool local_dir_set;
	char mountpoint[PATH_MAX];
	bool foreground;
	bool debug;
	bool syslog; /* --syslog: the journal or syslog, even with -f */
	bool check; /* --check: verify the store, mount nothing */
	char fuse_opts[1024];
	/* ",aws.profile,aws.endpoint_url,": see store_options */
	char allow_config_keys[1024];
	char metrics_listen[128]; /* --metrics-listen, "" for none */
};

static void usage(FILE *to)
{
	fprintf(to,
		"usage: infrafs [OPTIONS] MOUNTPOINT\n"
		"       infrafs --check [--state URL] [--key-file PATH]\n"
		"\n"
		"Mounts ML infrastructure as a directory tree: environments as\n"
		"folders, GPU pools and endpoints declared by writing spec files.\n"
		"\n"
		"  --state URL       state store: sqlite:PATH or\n"
		"                    postgresql://USER@HOST:PORT/DATABASE\n"
		"                    (default sqlite:$XDG_STATE_HOME/infrafs/"
		"state.db;\n"
		"                    root: sqlite:/var/lib/infrafs/state.db)\n"
		"  --local-dir DIR   providers' files on this machine (default:\n"
		"                    the folder of a sqlite: store, else\n"
		"                    $XDG_STATE_HOME/infrafs; root:\n"
		"                    /var/lib/infrafs)\n"
		"  --key-file PATH   key for secrets at rest, made when missing\n"
		"                    (default $XDG_CONFIG_HOME/infrafs/"
		"secret.key;\n"
		"                    root: /etc/infrafs/secret.key)\n"
		"  -f                stay in the foreground, log to stderr\n"
		"  -d                debug log\n"
		"  --syslog          log to the journal (with INFRAFS_ENV,\n"
		"                    INFRAFS_RESOURCE, INFRAFS_REVISION) or,\n"
		"                    without journald, to syslog; even with -f\n"
		"  -o OPT[,OPT]      FUSE mount options (allow_other, ...)\n"
		"  --allow-config-key KEY\n"
		"                    let environment owners set KEY, a config\n"
		"                    key that picks the daemon's credentials\n"
		"                    (aws.profile, aws.endpoint_url, ...);\n"
		"                    repeatable\n"
		"  --metrics-listen ADDR:PORT\n"
		"                    serve the metrics file over HTTP at\n"
		"                    /metrics; PORT alone listens on loopback\n"
		"  --check           verify the store (schema, integrity, key\n"
		"                    fingerprint) without mounting or writing;\n"
		"                    exits 1 with the reason\n"
		"  --version         print the version\n"
		"  --help            print this help\n"
		"\n"
		"Unmount with: fusermount3 -u MOUNTPOINT\n"
		"See infrafs(1) and infrafs-spec(5).\n");
}

static void print_version(void)
{
	BUF_AUTO info = BUF_INIT;

	build_info(&info);
	fputs(buf_str(&info), stdout);
}

/* $XDG_x_HOME, else $HOME/fallback, for a user's own files. */
static void user_dir(const char *xdg, const char *fallback, char *out,
		     size_t len)
{
	const char *v = getenv(xdg);
	const char *home = getenv("HOME");

	if (v && v[0] == '/')
		snprintf(out, len, "%s", v);
	else
		snprintf(out, len, "%s/%s", home ? home : "/tmp", fallback);
}

static void default_paths(struct options *o)
{
	char dir[PATH_MAX - 64];

	if (geteuid() == 0) {
		snprintf(o->state, sizeof(o->state),
			 "sqlite:/var/lib/infrafs/state.db");
		snprintf(o->local_dir, sizeof(o->local_dir),
			 "/var/lib/infrafs");
		snprintf(o->key_file, sizeof(o->key_file),
			 "/etc/infrafs/secret.key");
		return;
	}
	user_dir("XDG_STATE_HOME", ".local/state", dir, sizeof(dir));
	snprintf(o->state, sizeof(o->state), "sqlite:%s/infrafs/state.db", dir);
	snprintf(o->local_dir, sizeof(o->local_dir), "%s/infrafs", dir);
	user_dir("XDG_CONFIG_HOME", ".config", dir, sizeof(dir));
	snprintf(o->key_file, sizeof(o->key_file), "%s/infrafs/secret.key",
		 dir);
}

/* The daemon leaves its working folder; relative paths must not care. */
static void absolute(char *path, size_t len)
{
	char cwd[PATH_MAX], tmp[PATH_MAX * 2];
	size_t n;

	if (path[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		return;
	snprintf(tmp, sizeof(tmp), "%s/%s", cwd, path);
	n = strlen(tmp);
	if (n < len)
		memcpy(path, tmp, n + 1);
}

/* A store kept in a file on this machine is named by its absolute path,
 * and providers keep theirs beside it unless told otherwise. */
static void absolute_store(struct options *o)
{
	const char *file = store_url_file(o->state);
	char path[PATH_MAX];
	size_t scheme;

	absolute(o->local_dir, sizeof(o->local_dir));
	if (!file)
		return;
	scheme = (size_t)(file - o->state);
	snprintf(path, sizeof(path), "%s", file);
	absolute(path, sizeof(path));
	snprintf(o->state + scheme, sizeof(o->state) - scheme, "%s", path);
	if (!o->local_dir_set) {
		snprintf(o->local_dir, sizeof(o->local_dir), "%s", path);
		*strrchr(o->local_dir, '/') = '\0';
	}
}

/* Only keys that are privileged can be allowed: a typo must not pass. */
static int allow_config_key(struct options *o, const char *key)
{
	size_t used = strlen(o->allow_config_keys);

	if (!kind_key_privileged(&kind_config, key, strlen(key))) {
		fprintf(stderr,
			"infrafs: --allow-config-key %s: not a config key "
			"that only root may set\n",
			key);
		return -EINVAL;
	}
	if (used + strlen(key) + 3 > sizeof(o->allow_config_keys)) {
		fprintf(stderr, "infrafs: too many --allow-config-key\n");
		return -EINVAL;
	}
	snprintf(o->allow_config_keys + used,
		 sizeof(o->allow_config_keys) - used, "%s%s,", used ? "" : ",",
		 key);
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "local-dir", required_argument, NULL, 'L' },
		{ "allow-config-key", required_argument, NULL, 'a' },
		{ "check", no_argument, NULL, 'c' },
		{ "metrics-listen", required_argument, NULL, 'M' },
		{ "syslog", no_argument, NULL, 'S' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	default_paths(o);
	while ((c = getopt_long(argc, argv, "fdo:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			snprintf(o->state, sizeof(o->state), "%s", optarg);
			break;
		case 'k':
			snprintf(o->key_file, sizeof(o->key_file), "%s",
				 optarg);
			break;
		case 'L':
			snprintf(o->local_dir, sizeof(o->local_dir), "%s",
				 optarg);
			o->local_dir_set = true;
			break;
		case 'a':
			if (allow_config_key(o, optarg) < 0)
				return -EINVAL;
			break;
		case 'c':
			o->check = true;
			break;
		case 'S':
			o->syslog = true;
			break;
		case 'M':
			snprintf(o->metrics_listen, sizeof(o->metrics_listen),
				 "%s", optarg);
			break;
		case 'f':
			o->foreground = true;
			break;
		case 'd':
			o->debug = true;
			break;
		case 'o':
			snprintf(o->fuse_opts + strlen(o->fuse_opts),
				 sizeof(o->fuse_opts) - strlen(o->fuse_opts),
				 ",%s", optarg);
			break;
		case 'V':
			print_version();
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (o->check && optind == argc) {
		absolute_store(o);
		absolute(o->key_file, sizeof(o->key_file));
		return 0;
	}
	if (o->check) {
		fprintf(stderr, "infrafs: --check takes no MOUNTPOINT\n");
		return -EINVAL;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "infrafs: expected one MOUNTPOINT\n");
		usage(stderr);
		return -EINVAL;
	}
	snprintf(o->mountpoint, sizeof(o->mountpoint), "%s", argv[optind]);
	absolute(o->mountpoint, sizeof(o->mountpoint));
	absolute_store(o);
	absolute(o->key_file, sizeof(o->key_file));
	return 0;
}

/*
 * Goes to the background before anything starts a thread, keeping a pipe
 * to the parent, which exits only once the child reports whether the store
 * opened and the mount took: errors reach the terminal that asked.
 */
static int detach(int *report_fd)
{
	int fds[2];
	pid_t pid;
	char status = 1;

	if (pipe(fds) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(fds[1]);
		if (read(fds[0], &status, 1) != 1)
			status = 1;
		_exit(status ? 1 : 0);
	}
	close(fds[0]);
	setsid();
	*report_fd = fds[1];
	return 0;
}

static void report_ready(int fd, bool ok)
{
	char status = ok ? 0 : 1;

	if (fd < 0)
		return;
	if (write(fd, &status, 1) != 1)
		log_warn("could not report start-up to the parent");
	close(fd);
}

static void quiet_stdio(void)
{
	int null = open("/dev/null", O_RDWR);

	if (null < 0)
		return;
	dup2(null, STDIN_FILENO);
	dup2(null, STDOUT_FILENO);
	dup2(null, STDERR_FILENO);
	if (null > STDERR_FILENO)
		close(null);
}

static struct fuse_session *make_session(struct fs *fs, const struct options *o)
{
	char opts[1200];
	char *argv[] = { "infrafs", "-o", opts, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	struct fuse_session *se;

	/* default_permissions: the kernel checks every access against the
	 * owner, group and mode the tree reports. */
	snprintf(opts, sizeof(opts),
		 "default_permissions,fsname=infrafs,subtype=infrafs%s",
		 o->fuse_opts);
	se = fuse_session_new(&args, &infrafs_ops, sizeof(infrafs_ops), fs);
	fuse_opt_free_args(&args);
	return se;
}

static void on_observed(void *ctx, uint64_t env_id, uint64_t res_id)
{
	notify_changed(ctx, env_id, res_id);
}

/* Providers keep their files in the local folder absolute_store chose. */
static int start_reconciler(struct fs *fs, const struct options *o)
{
	struct reconciler_options ro = {
		.store = fs->store,
		.observed = &fs->observed,
		.changed = on_observed,
		.ctx = fs,
	};
	struct reconciler *rec = NULL;
	char dir[PATH_MAX + 2];
	int rc;

	/* The trailing slash has mkdir_parents make the folder itself. */
	snprintf(dir, sizeof(dir), "%s/", o->local_dir);
	rc = mkdir_parents(dir);
	if (rc < 0)
		log_warn("cannot make %s: %s", dir, strerror(-rc));
	dir[strlen(dir) - 1] = '\0';
	ro.state_dir = dir;
	rc = reconciler_start(&ro, &rec);
	fs->rec = rec; /* published whole, for the committer's hook */
	if (rc == 0)
		rc = source_start(fs->store, &fs->source);
	return rc;
}

/*
 * libfuse's handler for these only sets a flag, which the request loop
 * reads when its wait or a worker's read is interrupted: one landing in
 * a thread of ours would leave the loop running. Our threads start with
 * them blocked; only main, and the workers it starts, take them. Children
 * set their own masks (providers/local).
 */
static void stop_signals(int how)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(how, &set, NULL);
}

static int serve(struct fs *fs)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int rc;

	/* Writers wait in close(2) for the group commit; enough threads
	 * keep readers served meanwhile. */
	fuse_loop_cfg_set_max_threads(cfg, 64);
	fuse_loop_cfg_set_idle_threads(cfg, 16);
	rc = fuse_session_loop_mt(fs->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	/* A stop by signal (the loop returns its number) is a clean stop. */
	if (rc == SIGTERM || rc == SIGINT || rc == SIGHUP)
		rc = 0;
	return rc;
}

/* --check: what a start would refuse, said before it is tried. */
static int check_store(const struct options *o)
{
	struct store_options so = { .url = o->state, .key_file = o->key_file };
	BUF_AUTO report = BUF_INIT;
	char shown[sizeof(o->state)];
	char err[1024] = "";
	int rc = store_check(&so, &report, err, sizeof(err));

	fputs(buf_str(&report), stdout);
	if (rc < 0) {
		fprintf(stderr, "infrafs: check failed: %s\n", err);
		return 1;
	}
	url_without_password(o->state, shown, sizeof(shown));
	printf("ok: %s\n", shown);
	return 0;
}

int main(int argc, char **argv)
{
	struct store_options so = { 0 };
	struct options o;
	struct fs fs = { 0 };
	struct service svc = { 0 };
	char err[1024] = "";
	int report_fd = -1;
	int rc;

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	if (o.check)
		return check_store(&o);
	/* The store and key hold every spec and secret: ours alone. */
	umask(077);
	/* Before any thread: curl's global set-up is not thread-safe. */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	log_setup(true, o.debug, o.syslog);
	if (!o.foreground && detach(&report_fd) < 0) {
		fprintf(stderr, "infrafs: cannot go to the background: %s\n",
			strerror(errno));
		return 1;
	}
	so.url = o.state;
	so.key_file = o.key_file;
	so.allow_config_keys = o.allow_config_keys;
	stop_signals(SIG_BLOCK);
	rc = store_open(&so, &fs.store, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "infrafs: %s\n", err);
		report_ready(report_fd, false);
		return 1;
	}
	fs.model = store_model(fs.store);
	fs.owner = getuid();
	fs.group = getgid();
	fs.started = time_now();
	node_table_init(&fs.nodes);
	render_cache_init(&fs.renders, RENDER_CACHE_BYTES);
	observed_init(&fs.observed);
	scratch_init(&fs.scratch);
	sink_init(&fs.sinks);
	pthread_mutex_init(&fs.pending_lock, NULL);
	pthread_mutex_init(&fs.handles_lock, NULL);
	pthread_mutex_init(&fs.dirs_lock, NULL);
	file_init(&fs);
	tree_init(&fs);
	fs.se = make_session(&fs, &o);
	if (!fs.se || fuse_set_signal_handlers(fs.se) != 0 ||
	    fuse_session_mount(fs.se, o.mountpoint) != 0) {
		fprintf(stderr, "infrafs: cannot mount on %s\n", o.mountpoint);
		report_ready(report_fd, false);
		rc = 1;
		goto out;
	}
	if (notify_start(&fs) < 0) {
		fprintf(stderr, "infrafs: cannot start the notifier\n");
		report_ready(report_fd, false);
		rc = 1;
		goto unmount;
	}
	if (start_reconciler(&fs, &o) < 0) {
		fprintf(stderr, "infrafs: cannot start the reconciler\n");
		report_ready(report_fd, false);
		rc = 1;
		goto stop;
	}
	if (o.metrics_listen[0] &&
	    metrics_http_start(&fs, o.metrics_listen, err, sizeof(err)) < 0) {
		fprintf(stderr, "infrafs: %s\n", err);
		report_ready(report_fd, false);
		rc = 1;
		goto stop;
	}
	if (!o.foreground) {
		report_ready(report_fd, true);
		if (chdir("/") < 0)
			log_warn("cannot leave the working folder");
		quiet_stdio();
		log_setup(false, o.debug, o.syslog);
	}
	log_info("mounted %s on %s", store_url(fs.store), o.mountpoint);
	/* Started with the stop signals blocked, like every thread of ours. */
	if (service_start(&svc, o.mountpoint) < 0)
		log_warn("cannot start the service manager's notifier");
	stop_signals(SIG_UNBLOCK);
	rc = serve(&fs) ? 1 : 0;
	service_stopping(&svc);
stop:
	/* The order in fs.h: every thread that writes to the session ends
	 * before its descriptor is closed and its memory freed. */
	metrics_http_stop(&fs);
	notify_detach(&fs);
	source_stop(fs.source);
	fs.source = NULL;
	reconciler_stop(fs.rec);
	fs.rec = NULL;
	if (notify_stop(&fs) < 0) {
		log_warn("the notifier waits on the kernel; unmounting first");
		fuse_session_unmount(fs.se);
		notify_reap(&fs);
	}
unmount:
	fuse_session_unmount(fs.se);
	/* Its probe of the mount, if one was under way, failed with it. */
	service_join(&svc);
	fuse_remove_signal_handlers(fs.se);
	log_info("unmounted %s", o.mountpoint);
out:
	if (fs.se)
		fuse_session_destroy(fs.se);
	file_release_all(&fs);
	ops_release_dirs(&fs);
	store_close(fs.store);
	scratch_destroy(&fs.scratch);
	sink_destroy(&fs.sinks);
	pending_secrets_destroy(&fs);
	file_destroy(&fs);
	tree_destroy(&fs);
	render_cache_destroy(&fs.renders);
	observed_destroy(&fs.observed);
	node_table_destroy(&fs.nodes);
	return rc;
}
