/* SPDX-License-Identifier: MIT */
/*
 * Daemon logging, the one place lines are written: to stderr in the
 * foreground; to the journal with structured fields when systemd runs us
 * (stderr is $JOURNAL_STREAM) or with --syslog where journald listens;
 * to syslog(3) otherwise in the background or with --syslog.
 * Never pass a secret or credential to these; the spec parser already
 * replaces secret values with their references before anything is logged.
 */
#ifndef INFRAFS_UTIL_LOG_H
#define INFRAFS_UTIL_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* to_syslog: --syslog, the system's log even in the foreground. */
void log_setup(bool foreground, bool debug, bool to_syslog);
__attribute__((format(printf, 2, 3))) void log_msg(enum log_level lvl,
						   const char *fmt, ...);
/*
 * A line about one environment, resource ("pools/train") or revision;
 * env and resource may be NULL, revision 0 for none. The journal gets
 * them as INFRAFS_ENV, INFRAFS_RESOURCE and INFRAFS_REVISION.
 */
__attribute__((format(printf, 5, 6))) void
log_for(enum log_level lvl, const char *env, const char *resource,
	uint64_t revision, const char *fmt, ...);

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
