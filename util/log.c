// SPDX-License-Identifier: MIT
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

static bool log_foreground = true;
static bool log_debug_on;

void log_setup(bool foreground, bool debug)
{
	log_foreground = foreground;
	log_debug_on = debug;
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
		fprintf(stderr, "infrafs: %s: %s\n", word[lvl], line);
	} else {
		vsyslog(prio[lvl], fmt, ap);
	}
	va_end(ap);
}
