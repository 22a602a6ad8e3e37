/* SPDX-License-Identifier: MIT */
/* Starting a replica process as the environment's owner. */
#ifndef INFRAFS_PROVIDERS_LOCAL_SPAWN_H
#define INFRAFS_PROVIDERS_LOCAL_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

/* Who a replica runs as, looked up before fork. */
struct identity {
	uid_t uid;
	gid_t gid; /* the primary group of the user database */
	gid_t *groups; /* supplementary, as initgroups(3) sets them */
	int ngroups;
	char *name;
	char *home;
};

/* Looks uid up; -ENOENT with err when the user database has no entry. */
int identity_of(uid_t uid, struct identity *who, char *err, size_t len);
void identity_free(struct identity *who);

/* Whether this daemon can run a replica as owner: as root always, as
 * another user only as itself. -EPERM with err saying why otherwise. */
int identity_allowed(uid_t owner, const char *env, char *err, size_t len);

/* In a child between fork and exec (async-signal-safe): no handler of
 * the daemon may run there, and the mask the forking thread had must not
 * outlive it. */
void child_signals_default(void);

/* local.log_keep's ceiling: rotated files kept beside the current one. */
#define LOG_KEEP_MAX 20

struct launch {
	const struct identity *who;
	char *const *argv; /* for /bin/sh */
	char *const *envp; /* the whole environment, nothing inherited */
	int log_fd; /* stdout and stderr */
	/* Rotation, when log_max_bytes > 0: see keeper() in spawn.c. */
	long long log_max_bytes;
	unsigned log_keep; /* <= LOG_KEEP_MAX */
	int log_dir_fd; /* the folder of log_names */
	/* [0] the log's name, [i] its i-th rotated copy ("NAME.i"). */
	char log_names[LOG_KEEP_MAX + 1][64];
};

/* Starts it in a session of its own. Returns 0 once it has exec'd, or a
 * negative errno with err naming the step that failed. */
int launch(const struct launch *x, pid_t *pid, char *err, size_t len);

#endif
