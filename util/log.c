// SPDX-License-Identifier: MIT
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static bool log_foreground = true;
static bool log_debug_on;
static bool log_journal;

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

void log_setup(bool foreground, bool debug)
{
	log_foreground = foreground;
	log_debug_on = debug;
	log_journal = foreground && stderr_is_journal();
	if (!foreground)
		openlog("infrafs", LOG_PID, LOG_DAEMON);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const word[] = { "error", "warning", "info",
					    "debug" };
	va_list ap;

	if (lvl == LOG_LVL_DEBUG && !log_debug_on)
		return;
	va_start(ap, fmt);
	if (log_foreground) {
		/* One fprintf per line keeps lines whole across threads. */
		char line[2048];

		vsnprintf(line, sizeof(line), fmt, ap);
		if (log_journal)
			fprintf(stderr, "<%d>%s\n", prio[lvl], line);
		else
			fprintf(stderr, "infrafs: %s: %s\n", word[lvl], line);
	} else {
		vsyslog(prio[lvl], fmt, ap);
	}
	va_end(ap);
}
