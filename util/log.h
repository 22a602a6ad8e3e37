/* SPDX-License-Identifier: MIT */
/*
 * Daemon logging: to stderr in the foreground (with syslog priorities
 * when stderr is systemd's journal), to syslog in the background.
 * Never pass a secret or credential to these; the spec parser already
 * replaces secret values with their references before anything is logged.
 */
#ifndef INFRAFS_UTIL_LOG_H
#define INFRAFS_UTIL_LOG_H

#include <stdbool.h>

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_setup(bool foreground, bool debug);
__attribute__((format(printf, 2, 3))) void log_msg(enum log_level lvl,
						   const char *fmt, ...);

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
