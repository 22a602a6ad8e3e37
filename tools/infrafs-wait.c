// SPDX-License-Identifier: MIT
/*
 * infrafs-wait: wait until a resource folder's `state` file reads one of
 * the states asked for, so that scripts can do
 *
 *	echo 'nodes = 3' > dev/pools/train/spec
 *	infrafs-wait dev/pools/train ready
 *
 * The daemon changes `state` from inside, and FUSE raises no inotify
 * event for changes that did not come through the mount; instead the
 * mount wakes poll(2) for POLLPRI when the file changes, as sysfs does.
 * So the tool reads, then sleeps in poll(2) on the open file until it
 * changes or the interval passes (the interval is what makes it work on
 * any other folder, where nothing raises POLLPRI).
 *
 * With --refresh it first writes `refresh` to the environment's ctl and
 * then trusts only a state the provider observed after that, so that a
 * script never acts on what a cache said before the cloud changed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
	EXIT_REACHED = 0,
	EXIT_FAILED = 1,
	EXIT_TIMEOUT = 2,
	EXIT_GONE = 3,
	EXIT_USAGE = 64, /* EX_USAGE of sysexits.h */
};

/* The seven words of the interface; anything else is a usage error. */
enum state {
	ST_PENDING,
	ST_CREATING,
	ST_READY,
	ST_UPDATING,
	ST_DEGRADED,
	ST_FAILED,
	ST_DELETING,
	N_STATES,
};

static const char *const state_words[N_STATES] = {
	[ST_PENDING] = "pending",   [ST_CREATING] = "creating",
	[ST_READY] = "ready",	    [ST_UPDATING] = "updating",
	[ST_DEGRADED] = "degraded", [ST_FAILED] = "failed",
	[ST_DELETING] = "deleting",
};

#define DEFAULT_TIMEOUT_S 300.0
#define DEFAULT_INTERVAL_MS 1000L
/* Past any sane wait; keeps the deadline arithmetic far from overflow. */
#define MAX_TIMEOUT_S 1e9
#define MAX_INTERVAL_MS 3600000L

struct options {
	const char *dir;
	const char *want_text; /* as typed, for messages */
	bool want[N_STATES];
	char name[NAME_MAX + 1];
	double timeout_s; /* 0: wait forever */
	long interval_ms;
	bool quiet;
	bool refresh;
	double asked_at; /* --refresh: wall clock when it was asked */
};

static void usage(FILE *to)
{
	fprintf(to,
		"usage: infrafs-wait RESOURCE_DIR STATE[,STATE...] "
		"[--timeout SECONDS] [--interval MS] [--refresh] [--quiet]\n"
		"\n"
		"Waits until RESOURCE_DIR/state reads one of the STATEs:\n"
		"pending, creating, ready, updating, degraded, failed, "
		"deleting.\n"
		"\n"
		"  -t, --timeout SECONDS  give up after SECONDS "
		"(default 300; 0: never)\n"
		"  -i, --interval MS      read again after MS milliseconds "
		"at most\n"
		"                         (default 1000; a change on the "
		"mount wakes it at once)\n"
		"  -r, --refresh          ask for a fresh look first (refresh "
		"to the\n"
		"                         environment's ctl) and trust only a "
		"state\n"
		"                         observed after it\n"
		"  -q, --quiet            do not print state changes\n"
		"  -h, --help             print this help\n"
		"\n"
		"Exit status: 0 reached, 1 the resource failed, 2 timed out,\n"
		"3 the resource folder vanished or is unreadable, 64 usage.\n"
		"See infrafs-wait(1).\n");
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt,
							     ...)
{
	va_list ap;

	fputs("infrafs-wait: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'infrafs-wait --help'.\n", stderr);
	return EXIT_USAGE;
}

/* Index in state_words of the LEN bytes at WORD, or -1. */
static int state_index(const char *word, size_t len)
{
	for (int i = 0; i < N_STATES; i++)
		if (strlen(state_words[i]) == len &&
		    memcmp(state_words[i], word, len) == 0)
			return i;
	return -1;
}

/*
 * "ready,degraded": every word must be a state; no empty ones, which
 * are more likely a typo than a wish. 0 or EXIT_USAGE.
 */
static int parse_states(const char *text, struct options *o)
{
	const char *p = text;

	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		int i = state_index(p, len);

		if (len == 0)
			return usage_error("empty state in '%s'", text);
		if (i < 0)
			return usage_error(
				"unknown state '%.*s' in '%s' "
				"(expected pending, creating, ready, "
				"updating, degraded, failed or "
				"deleting)",
				(int)len, p, text);
		o->want[i] = true;
		if (!comma)
			return 0;
		p = comma + 1;
	}
}

static int parse_timeout(const char *arg, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (end == arg || *end || errno || !isfinite(v) || v < 0 ||
	    v > MAX_TIMEOUT_S)
		return -1;
	*out = v;
	return 0;
}

static int parse_interval(const char *arg, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (end == arg || *end || errno || v < 1 || v > MAX_INTERVAL_MS)
		return -1;
	*out = v;
	return 0;
}

/*
 * The name to print: the folder's last component as typed ("chat" for
 * "dev/endpoints/chat/"); "." and ".." say nothing, so resolve those.
 */
static void resource_name(const char *dir, char *out, size_t len)
{
	char buf[PATH_MAX];
	const char *base;
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	base = memrchr(dir, '/', n);
	base = base && n > 1 ? base + 1 : dir;
	n -= (size_t)(base - dir);
	if ((n == 1 && base[0] == '.') ||
	    (n == 2 && base[0] == '.' && base[1] == '.')) {
		if (realpath(dir, buf) && strcmp(buf, "/") != 0) {
			base = strrchr(buf, '/') + 1;
			n = strlen(base);
		}
	}
	snprintf(out, len, "%.*s", (int)n, base);
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "interval", required_argument, NULL, 'i' },
		{ "refresh", no_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	o->timeout_s = DEFAULT_TIMEOUT_S;
	o->interval_ms = DEFAULT_INTERVAL_MS;
	while ((c = getopt_long(argc, argv, "t:i:qrh", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (parse_timeout(optarg, &o->timeout_s))
				return usage_error("bad --timeout '%s': "
						   "want seconds >= 0",
						   optarg);
			break;
		case 'i':
			if (parse_interval(optarg, &o->interval_ms))
				return usage_error("bad --interval '%s': "
						   "want milliseconds "
						   "1..3600000",
						   optarg);
			break;
		case 'r':
			o->refresh = true;
			break;
		case 'q':
			o->quiet = true;
			break;
		case 'h':
			usage(stdout);
			exit(EXIT_REACHED);
		default:
			/* getopt has said what was wrong. */
			fputs("Try 'infrafs-wait --help'.\n", stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind < 2)
		return usage_error("want RESOURCE_DIR and STATE");
	if (argc - optind > 2)
		return usage_error("too many arguments: '%s'",
				   argv[optind + 2]);
	o->dir = argv[optind];
	/* "" + "/state" would be /state, some other file entirely. */
	if (!o->dir[0])
		return usage_error("empty RESOURCE_DIR");
	o->want_text = argv[optind + 1];
	if (parse_states(o->want_text, o))
		return EXIT_USAGE;
	resource_name(o->dir, o->name, sizeof(o->name));
	return 0;
}

/* White space and newlines around the word are not part of it. */
static void trim(char *s)
{
	size_t start = strspn(s, " \t\r\n");
	size_t n = strlen(s + start);

	while (n && strchr(" \t\r\n", s[start + n - 1]))
		n--;
	memmove(s, s + start, n);
	s[n] = '\0';
}

/*
 * Reads PATH into OUT, trimmed; 0 or -errno. read() to the end rather
 * than trusting st_size, which FUSE files may report as 0. The file
 * stays open in *keep (whatever was there is closed), to be polled for
 * the next change.
 */
static int read_word(const char *path, char *out, size_t len, int *keep)
{
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (got < len - 1) {
		ssize_t n = read(fd, out + got, len - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;

			close(fd);
			return -err;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (*keep >= 0)
		close(*keep);
	*keep = fd;
	out[got] = '\0';
	trim(out);
	return 0;
}

/* The value of status's "last_error:" line, or "" if none. */
static int read_last_error(const char *dir, char *out, size_t len)
{
	static const char key[] = "last_error:";
	char path[PATH_MAX + 16];
	char *line = NULL;
	size_t cap = 0;
	FILE *f;

	out[0] = '\0';
	snprintf(path, sizeof(path), "%s/status", dir);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) >= 0) {
		if (strncmp(line, key, sizeof(key) - 1) == 0) {
			snprintf(out, len, "%s", line + sizeof(key) - 1);
			trim(out);
			break;
		}
	}
	free(line);
	fclose(f);
	return 0;
}

static int report_failed(const struct options *o)
{
	char msg[4096];
	int err = read_last_error(o->dir, msg, sizeof(msg));

	if (err)
		fprintf(stderr, "%s failed: (cannot read %s/status: %s)\n",
			o->name, o->dir, strerror(-err));
	else if (!msg[0])
		fprintf(stderr, "%s failed: (no last_error in %s/status)\n",
			o->name, o->dir);
	else
		fprintf(stderr, "%s failed: %s\n", o->name, msg);
	return EXIT_FAILED;
}

/* The state file could not be read: say whether the folder went away. */
static int report_gone(const struct options *o, int err, const char *last)
{
	struct stat st;

	if (last[0] && err == -ENOENT && stat(o->dir, &st) != 0 &&
	    errno == ENOENT) {
		fprintf(stderr,
			"infrafs-wait: %s vanished while waiting for %s "
			"(last state: %s)\n",
			o->dir, o->want_text, last);
		return EXIT_GONE;
	}
	fprintf(stderr, "infrafs-wait: cannot read %s/state: %s\n", o->dir,
		strerror(-err));
	return EXIT_GONE;
}

static int report_timeout(const struct options *o, const char *last)
{
	fprintf(stderr,
		"infrafs-wait: %s: timed out after %g s waiting for %s; "
		"state is %s\n",
		o->name, o->timeout_s, o->want_text,
		last[0] ? last : "(empty)");
	return EXIT_TIMEOUT;
}

static double seconds(const struct timespec *t)
{
	return (double)t->tv_sec + (double)t->tv_nsec / 1e9;
}

static double elapsed_s(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return seconds(&now) - seconds(start);
}

/*
 * Sleeps up to S seconds in poll(2) on the state file just read: the
 * mount raises POLLPRI when it changes (and POLLIN always, which is not
 * asked for). Signals do not cut the wait short.
 */
static void wait_change(int fd, double s)
{
	struct pollfd p = { .fd = fd, .events = POLLPRI };
	struct timespec start;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		double left = s - elapsed_s(&start);

		if (left <= 0)
			return;
		if (poll(&p, 1, (int)(left * 1000.0 + 0.999)) >= 0 ||
		    errno != EINTR)
			return;
	}
}

static double wall_now(void)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return seconds(&now);
}

/* "2026-11-28T01:31:40.370Z" as seconds since the epoch; 0 if not one. */
static double parse_time(const char *text)
{
	struct tm tm = { 0 };
	const char *rest = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
	double frac = 0;

	if (!rest)
		return 0;
	if (*rest == '.')
		frac = strtod(rest, NULL);
	return (double)timegm(&tm) + frac;
}

/* status's observed_at, seconds since the epoch; 0: never or unreadable. */
static double observed_at(const char *dir)
{
	static const char key[] = "observed_at:";
	char path[PATH_MAX + 16];
	char *line = NULL;
	size_t cap = 0;
	double at = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/status", dir);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (getline(&line, &cap, f) >= 0) {
		if (!strncmp(line, key, sizeof(key) - 1)) {
			at = parse_time(line + sizeof(key) - 1 +
					strspn(line + sizeof(key) - 1, " "));
			break;
		}
	}
	free(line);
	fclose(f);
	return at;
}

/* Writes `refresh` to DIR/../../ctl, the environment's. 0 or -errno. */
static int ask_refresh(struct options *o)
{
	static const char cmd[] = "refresh\n";
	char path[PATH_MAX + 16];
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s/../../ctl", o->dir);
	/* Times in status have millisecond precision: a look in the same
	 * millisecond as the request counts. */
	o->asked_at = wall_now() - 0.001;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, cmd, sizeof(cmd) - 1) != (ssize_t)(sizeof(cmd) - 1))
		err = -errno;
	if (close(fd) < 0 && !err)
		err = -errno;
	return err;
}

/* With --refresh, a state observed before the request is not yet the
 * answer. */
static bool observed_since_asked(const struct options *o)
{
	return !o->refresh || observed_at(o->dir) >= o->asked_at;
}

/* Each read leaves the file open in *fd, polled until the next one. */
static int wait_loop(const struct options *o, const char *path, int *fd)
{
	char state[64], last[64] = "";
	struct timespec start;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		int err = read_word(path, state, sizeof(state), fd);
		int i;
		double left;

		if (err)
			return report_gone(o, err, last);
		/* Empty: caught between truncate and write; look again. */
		if (state[0] && strcmp(state, last) != 0) {
			if (!o->quiet)
				fprintf(stderr, "%s: %s\n", o->name, state);
			snprintf(last, sizeof(last), "%s", state);
		}
		i = state_index(state, strlen(state));
		if (i >= 0 && (o->want[i] || i == ST_FAILED) &&
		    !observed_since_asked(o))
			i = -1; /* as of before the refresh: look again */
		if (i >= 0 && o->want[i])
			return EXIT_REACHED;
		if (i == ST_FAILED)
			return report_failed(o);
		left = o->timeout_s - elapsed_s(&start);
		if (o->timeout_s > 0 && left <= 0)
			return report_timeout(o, last);
		if (o->timeout_s == 0 || left > o->interval_ms / 1000.0)
			left = o->interval_ms / 1000.0;
		wait_change(*fd, left);
	}
}

static int wait_for_state(const struct options *o)
{
	char path[PATH_MAX + 16];
	int fd = -1, rc;

	snprintf(path, sizeof(path), "%s/state", o->dir);
	rc = wait_loop(o, path, &fd);
	if (fd >= 0)
		close(fd);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	int rc = parse_options(argc, argv, &o);

	if (rc)
		return rc;
	if (o.refresh) {
		rc = ask_refresh(&o);
		if (rc) {
			fprintf(stderr,
				"infrafs-wait: cannot ask for a refresh in "
				"%s/../../ctl: %s\n",
				o.dir, strerror(-rc));
			return EXIT_GONE;
		}
	}
	return wait_for_state(&o);
}
