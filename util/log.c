// SPDX-License-Identifier: MIT
#include "log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
/* CODE_FILE and its kin would always name this file. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>
#endif

/* Where lines go; chosen once by log_setup(). */
enum log_sink {
	SINK_STDERR, /* "infrafs: error: ..." */
	SINK_STREAM, /* stderr is the journal's stream: "<3>..." */
	SINK_JOURNAL, /* sd_journal_send, with fields */
	SINK_SYSLOG, /* syslog(3), fields in the text */
};

static enum log_sink log_sink = SINK_STDERR;
static bool log_debug_on;

/*
 * systemd sets $JOURNAL_STREAM to the device and inode of the stream it
 * connects to stdout and stderr; a "<N>" prefix there is the line's
 * priority, so journalctl -p err finds the errors.
 */
static bool stderr_is_journal(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat sb;

	return v && sscanf(v, "%llu:%llu", &dev, &ino) == 2 &&
	       fstat(STDERR_FILENO, &sb) == 0 &&
	       (unsigned long long)sb.st_dev == dev &&
	       (unsigned long long)sb.st_ino == ino;
}

/* journald's native socket: sd_journal_send's only way in. */
static bool journald_listens(void)
{
#ifdef HAVE_LIBSYSTEMD
	struct stat sb;

	return stat("/run/systemd/journal/socket", &sb) == 0 &&
	       S_ISSOCK(sb.st_mode);
#else
	return false;
#endif
}

void log_setup(bool foreground, bool debug, bool to_syslog)
{
	bool stream = foreground && !to_syslog && stderr_is_journal();

	log_debug_on = debug;
	if (stream || to_syslog || !foreground) {
		/* Fields need the native protocol; a stream or syslog(3)
		 * carries text only. */
		if (journald_listens() && (stream || to_syslog))
			log_sink = SINK_JOURNAL;
		else if (stream)
			log_sink = SINK_STREAM;
		else
			log_sink = SINK_SYSLOG;
	} else {
		log_sink = SINK_STDERR;
	}
	if (log_sink == SINK_SYSLOG || log_sink == SINK_JOURNAL)
		openlog("infrafs", LOG_PID, LOG_DAEMON);
}

struct log_fields {
	const char *env;
	const char *resource;
	uint64_t revision;
};

/* The fields as text, for the sinks that have no fields of their own:
 * "INFRAFS_ENV=dev INFRAFS_RESOURCE=pools/a INFRAFS_REVISION=3: ". */
static void fields_text(const struct log_fields *f, char *out, size_t len)
{
	int n = 0;

	out[0] = '\0';
	if (f->env)
		n += snprintf(out + n, len - (size_t)n, "INFRAFS_ENV=%s ",
			      f->env);
	if (f->resource && (size_t)n < len)
		n += snprintf(out + n, len - (size_t)n, "INFRAFS_RESOURCE=%s ",
			      f->resource);
	if (f->revision && (size_t)n < len)
		n += snprintf(out + n, len - (size_t)n,
			      "INFRAFS_REVISION=%" PRIu64 " ", f->revision);
	if (n > 0 && (size_t)n < len)
		snprintf(out + n - 1, len - (size_t)n + 1, ": ");
}

#ifdef HAVE_LIBSYSTEMD
static void field(struct iovec *iov, size_t *n, char *buf, size_t len,
		  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void field(struct iovec *iov, size_t *n, char *buf, size_t len,
		  const char *fmt, ...)
{
	va_list ap;
	int w;

	va_start(ap, fmt);
	w = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	iov[*n].iov_base = buf;
	iov[*n].iov_len = w < 0 ? 0 : (size_t)w < len ? (size_t)w : len - 1;
	(*n)++;
}

/* Absent fields are left out rather than sent empty, so that
 * `journalctl INFRAFS_ENV=dev` matches only lines about dev. */
static int journal_send(int prio, const struct log_fields *f, const char *line)
{
	char msg[2100], pr[16], env[96], res[160], rev[48];
	struct iovec iov[6];
	size_t n = 0;

	field(iov, &n, msg, sizeof(msg), "MESSAGE=%s", line);
	field(iov, &n, pr, sizeof(pr), "PRIORITY=%d", prio);
	iov[n].iov_base = (void *)"SYSLOG_IDENTIFIER=infrafs";
	iov[n++].iov_len = sizeof("SYSLOG_IDENTIFIER=infrafs") - 1;
	if (f->env)
		field(iov, &n, env, sizeof(env), "INFRAFS_ENV=%s", f->env);
	if (f->resource)
		field(iov, &n, res, sizeof(res), "INFRAFS_RESOURCE=%s",
		      f->resource);
	if (f->revision)
		field(iov, &n, rev, sizeof(rev), "INFRAFS_REVISION=%" PRIu64,
		      f->revision);
	return sd_journal_sendv(iov, (int)n);
}
#endif

static void log_line(enum log_level lvl, const struct log_fields *f,
		     const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const word[] = { "error", "warning", "info",
					    "debug" };
	/* One write per line keeps lines whole across threads. */
	char line[2048], pre[400];

	if (lvl == LOG_LVL_DEBUG && !log_debug_on)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
#ifdef HAVE_LIBSYSTEMD
	/* journald gone (stopped, restarting): the line goes to syslog. */
	if (log_sink == SINK_JOURNAL && journal_send(prio[lvl], f, line) >= 0)
		return;
#endif
	switch (log_sink) {
	case SINK_STDERR:
		fprintf(stderr, "infrafs: %s: %s\n", word[lvl], line);
		break;
	case SINK_STREAM:
		fields_text(f, pre, sizeof(pre));
		fprintf(stderr, "<%d>%s%s\n", prio[lvl], pre, line);
		break;
	default:
		fields_text(f, pre, sizeof(pre));
		syslog(prio[lvl], "%s%s", pre, line);
	}
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const struct log_fields none = { 0 };
	va_list ap;

	va_start(ap, fmt);
	log_line(lvl, &none, fmt, ap);
	va_end(ap);
}

void log_for(enum log_level lvl, const char *env, const char *resource,
	     uint64_t revision, const char *fmt, ...)
{
	const struct log_fields f = { env, resource, revision };
	va_list ap;

	va_start(ap, fmt);
	log_line(lvl, &f, fmt, ap);
	va_end(ap);
}
