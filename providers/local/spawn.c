// SPDX-License-Identifier: MIT
/*
 * Starting a replica as the environment's owner. Whoever may write an
 * endpoint's spec chooses its command, so the command runs with the
 * owner's authority and no more: the owner's uid, primary group and
 * supplementary groups (as login's initgroups sets them), no capabilities
 * and no way to gain any (no_new_privs: setuid programs and file
 * capabilities do nothing), no descriptor of the daemon, and only the
 * environment the spec declares. An environment owned by root runs as
 * root, because its owner is root.
 *
 * Everything that allocates or takes a lock (the user database, the
 * environment, the argv) is done before fork: the daemon is
 * multithreaded, and the child may only make async-signal-safe calls
 * until it execs.
 */
#include "spawn.h"

#include "util/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The user database entry of uid: name, home, primary group. */
static int passwd_of(uid_t uid, struct identity *who, char *err, size_t len)
{
	size_t size = 16384;

	for (;;) {
		char *mem = xmalloc(size);
		struct passwd pw, *found = NULL;
		int rc = getpwuid_r(uid, &pw, mem, size, &found);

		if (rc == ERANGE && size < (1u << 20)) {
			free(mem);
			size *= 2;
			continue;
		}
		if (!found) {
			free(mem);
			snprintf(err, len,
				 "uid %u has no entry in the user database%s%s",
				 (unsigned)uid, rc ? ": " : "",
				 rc ? strerror(rc) : "");
			return -ENOENT;
		}
		who->name = xstrdup(pw.pw_name);
		who->home = xstrdup(pw.pw_dir);
		who->gid = pw.pw_gid;
		free(mem);
		return 0;
	}
}

/* The supplementary groups initgroups(3) would give the user. */
static void groups_of(struct identity *who)
{
	int n = 32;

	for (;;) {
		int want = n;

		who->groups = xrealloc(who->groups, (size_t)n * sizeof(gid_t));
		if (getgrouplist(who->name, who->gid, who->groups, &n) >= 0) {
			who->ngroups = n;
			return;
		}
		if (n <= want)
			n = want * 2;
	}
}

int identity_of(uid_t uid, struct identity *who, char *err, size_t len)
{
	int rc;

	memset(who, 0, sizeof(*who));
	who->uid = uid;
	rc = passwd_of(uid, who, err, len);
	if (rc < 0)
		return rc;
	groups_of(who);
	return 0;
}

void identity_free(struct identity *who)
{
	free(who->name);
	free(who->home);
	free(who->groups);
	memset(who, 0, sizeof(*who));
}

int identity_allowed(uid_t owner, const char *env, char *err, size_t len)
{
	uid_t self = geteuid();

	if (self == 0 || owner == self)
		return 0;
	snprintf(err, len,
		 "the daemon runs as uid %u and cannot run replicas as the "
		 "owner uid %u of %s",
		 (unsigned)self, (unsigned)owner, env);
	return -EPERM;
}

/* Which step of the child failed, with its errno, for the parent. */
struct child_failure {
	int step;
	int err;
};

enum child_step {
	STEP_SESSION,
	STEP_FDS,
	STEP_CWD,
	STEP_PRIVS,
	STEP_GROUPS,
	STEP_GID,
	STEP_UID,
	STEP_EXEC,
};

static const char *const step_words[] = {
	[STEP_SESSION] = "setsid",   [STEP_FDS] = "descriptors",
	[STEP_CWD] = "chdir /",	     [STEP_PRIVS] = "no_new_privs",
	[STEP_GROUPS] = "setgroups", [STEP_GID] = "setgid",
	[STEP_UID] = "setuid",	     [STEP_EXEC] = "exec /bin/sh",
};

static void __attribute__((noreturn))
fail_child(int report, enum child_step step)
{
	struct child_failure f = { .step = step, .err = errno };

	(void)!write(report, &f, sizeof(f));
	_exit(127);
}

/* Only the daemon as root changes identity; as another user it runs
 * replicas only of environments it owns (identity_allowed). */
static void become(const struct identity *who, int report)
{
	if (geteuid() != 0)
		return;
	if (setgroups((size_t)who->ngroups, who->groups) < 0)
		fail_child(report, STEP_GROUPS);
	if (setgid(who->gid) < 0)
		fail_child(report, STEP_GID);
	/* From root to another uid the kernel clears the permitted,
	 * effective and ambient capabilities. */
	if (setuid(who->uid) < 0)
		fail_child(report, STEP_UID);
}

void child_signals_default(void)
{
	struct sigaction dfl;
	sigset_t none;

	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		sigaction(s, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* The child between fork and exec: async-signal-safe calls only. */
/* ---- the log keeper ------------------------------------------------------ */

/*
 * Why a keeper: a replica is any program, writing to the descriptor it
 * was given, and it outlives the daemon. Copy-truncate loses what is
 * written between the copy and the truncate; renaming the file does
 * nothing to a descriptor the replica already holds, and no signal makes
 * an arbitrary program reopen its stdout. So the replica writes to a
 * pipe, and this process, forked into the replica's session before it
 * drops to the owner, copies the pipe into the log and rotates it by
 * rename and reopen: a line is never lost (the pipe holds what comes
 * while the files move), and it lives as long as the replica does, since
 * it ends at end-of-file, when the replica and everything that holds the
 * pipe have exited. A cut falls after the line that crosses the cap: a
 * file is at most log_max_bytes plus one line.
 *
 * Async-signal-safe calls only: it runs after a fork of the threaded
 * daemon and never execs. 0 is the pipe, 1 the log, 2 its folder.
 */
static void keep_write(const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(1, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* a full disk: drop, never block the pipe */
		p += w;
		n -= (size_t)w;
	}
}

static void keep_rotate(const struct launch *x)
{
	int fd;

	for (unsigned i = x->log_keep; i > 1; i--)
		renameat(2, x->log_names[i - 1], 2, x->log_names[i]);
	if (x->log_keep)
		renameat(2, x->log_names[0], 2, x->log_names[1]);
	else
		unlinkat(2, x->log_names[0], 0);
	fd = openat(2, x->log_names[0],
		    O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_NOFOLLOW |
			    O_NOCTTY | O_CLOEXEC,
		    0600);
	/* Not reopened: the lines go on into the renamed file. */
	if (fd >= 0) {
		dup2(fd, 1);
		close(fd);
	}
}

/* How much of p[0..n) goes into a file of size bytes: through the line
 * that reaches max (*cut then set), or all of it when none ends there. */
static size_t before_cut(const char *p, size_t n, long long size, long long max,
			 bool *cut)
{
	size_t skip = 0;
	const char *nl;

	*cut = false;
	if (size + (long long)n < max)
		return n;
	if (size < max)
		skip = (size_t)(max - size) - 1;
	nl = memchr(p + skip, '\n', n - skip);
	if (!nl)
		return n;
	*cut = true;
	return (size_t)(nl - p) + 1;
}

static void __attribute__((noreturn)) keeper(const struct launch *x)
{
	static char buf[65536];
	struct sigaction ign = { .sa_handler = SIG_IGN };
	struct stat st;
	long long size = fstat(1, &st) == 0 ? (long long)st.st_size : 0;

	/* Not "infrafs" in ps(1): a pkill of the daemon must spare it. */
	prctl(PR_SET_NAME, "infrafs-log", 0, 0, 0);
	/* Stopping the replica's group must not stop the copy before the
	 * replica's last lines are in. */
	sigaction(SIGTERM, &ign, NULL);
	sigaction(SIGINT, &ign, NULL);
	sigaction(SIGHUP, &ign, NULL);
	sigaction(SIGPIPE, &ign, NULL);
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf));
		size_t at = 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0);
		while (at < (size_t)n) {
			bool cut;
			size_t take = before_cut(buf + at, (size_t)n - at, size,
						 x->log_max_bytes, &cut);

			keep_write(buf + at, take);
			at += take;
			size += (long long)take;
			if (cut) {
				keep_rotate(x);
				size = 0;
			}
		}
	}
}

/* In the child, in the replica's session: forks the keeper and returns
 * the pipe's write end, or -1. */
static int start_keeper(const struct launch *x)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	/* Forked twice, so that init, not the replica (which never waits
	 * for a child it did not start), reaps it. */
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid > 0) {
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(p[0]);
		return p[1];
	}
	if (fork() != 0)
		_exit(0);
	/* Sources are 3 and up: 0 to 2 are the daemon's own. */
	if (dup2(p[0], 0) < 0 || dup2(x->log_fd, 1) < 0 ||
	    dup2(x->log_dir_fd, 2) < 0)
		_exit(1);
	/* None of the daemon's descriptors (FUSE's, the store's
	 * lock) may live on in it. */
	if (close_range(3, ~0u, 0) < 0) {
		for (int fd = 3; fd < 65536; fd++)
			close(fd);
	}
	keeper(x);
}

static void __attribute__((noreturn))
child(const struct launch *x, int devnull, int report, int max_fd)
{
	int out = x->log_fd;

	child_signals_default();
	/* Its own session: it outlives the daemon, and a signal to -pid
	 * reaches everything it started. */
	if (setsid() < 0)
		fail_child(report, STEP_SESSION);
	if (x->log_max_bytes > 0 && (out = start_keeper(x)) < 0)
		fail_child(report, STEP_FDS);
	if (dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
		fail_child(report, STEP_FDS);
	/* No descriptor of the daemon (FUSE's, the store's) reaches the
	 * replica; `report` is O_CLOEXEC and must stay open until exec. */
	if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
		/* Kernels before 5.11: one at a time. */
		for (int fd = 3; fd < max_fd; fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	/* The daemon's working folder is no way into its files either. */
	if (chdir("/") < 0)
		fail_child(report, STEP_CWD);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail_child(report, STEP_PRIVS);
	/* Kernels without ambient capabilities have none to clear. */
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	become(x->who, report);
	execve("/bin/sh", x->argv, x->envp);
	fail_child(report, STEP_EXEC);
}

/* What the child reported before its exec, if anything: an exec that
 * succeeded closes the O_CLOEXEC pipe with nothing written. */
static int child_result(pid_t pid, int report, char *err, size_t len)
{
	struct child_failure f;
	ssize_t n;

	do
		n = read(report, &f, sizeof(f));
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(f))
		return 0;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	snprintf(err, len, "%s: %s", step_words[f.step], strerror(f.err));
	return f.err ? -f.err : -EIO;
}

int launch(const struct launch *x, pid_t *pid, char *err, size_t len)
{
	int rep[2], devnull, rc;
	long max_fd = sysconf(_SC_OPEN_MAX);
	sigset_t all, old;

	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		rc = -errno;
		snprintf(err, len, "/dev/null: %s", strerror(-rc));
		return rc;
	}
	/* O_CLOEXEC: a child another thread forks meanwhile must not hold
	 * the write end, or the read below waits for that child too. */
	if (pipe2(rep, O_CLOEXEC) < 0) {
		rc = -errno;
		snprintf(err, len, "pipe: %s", strerror(-rc));
		close(devnull);
		return rc;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	*pid = fork();
	if (*pid == 0)
		child(x, devnull, rep[1],
		      max_fd > 0 && max_fd < 65536 ? (int)max_fd : 65536);
	rc = *pid < 0 ? -errno : 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(rep[1]);
	close(devnull);
	if (rc < 0)
		snprintf(err, len, "fork: %s", strerror(-rc));
	else
		rc = child_result(*pid, rep[0], err, len);
	close(rep[0]);
	return rc;
}
