// SPDX-License-Identifier: MIT
/*
 * The folder watcher: see source.h. Everything here runs on one thread,
 * which owns every field of struct source_watch but stop_fd; no lock.
 * It reads the model under the model's read lock only to learn which
 * environments follow which folder, and changes it only through
 * store_apply().
 */
#include "source.h"

#include "git.h"
#include "spec/folder.h"
#include "store/policy.h"
#include "util/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/fsuid.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_GROUPS 256

/* One environment following one folder. */
struct followed {
	uint64_t env_id;
	char env[NAME_MAX_LEN + 1];
	char path[PATH_MAX];
	uid_t uid; /* the environment's owner, whose authority reads it */
	gid_t gid;
	bool listed; /* still a source at the latest look at the model */
	/* A burst of changes not read yet: when it began and when the
	 * latest change came; 0 when there is none. */
	double dirty_since, last_change;
};

/* Which environment an inotify watch serves. */
struct watch {
	int wd;
	uint64_t env_id;
};

struct source_watch {
	struct store *st;
	int ino;
	int stop_fd; /* an eventfd: written once to stop the thread */
	pthread_t thread;
	struct followed *f;
	size_t nf, capf;
	struct watch *w;
	size_t nw, capw;
	gid_t own_groups[MAX_GROUPS];
	int own_ngroups;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- authority ------------------------------------------------------ */

/*
 * The file system credentials of this thread only: glibc's setgroups()
 * changes every thread of the process, the raw system calls only the
 * caller, and setfsuid()/setfsgid() are per thread already.
 */
static int take_authority(struct source_watch *sw, const struct followed *f)
{
	gid_t groups[MAX_GROUPS];
	int n = MAX_GROUPS;
	struct passwd pw, *found = NULL;
	char buf[4096];

	if (geteuid() != 0)
		return f->uid == geteuid() ? 0 : -EPERM;
	(void)sw;
	if (getpwuid_r(f->uid, &pw, buf, sizeof(buf), &found) != 0 || !found ||
	    getgrouplist(found->pw_name, f->gid, groups, &n) < 0) {
		groups[0] = f->gid;
		n = 1;
	}
	if (syscall(SYS_setgroups, (size_t)n, groups) != 0)
		return -errno;
	setfsgid(f->gid);
	setfsuid(f->uid);
	return 0;
}

static void drop_authority(struct source_watch *sw)
{
	if (geteuid() != 0)
		return;
	setfsuid(0);
	setfsgid(0);
	if (syscall(SYS_setgroups, (size_t)sw->own_ngroups, sw->own_groups))
		log_err("source: cannot restore the daemon's groups");
}

/* ---- watches -------------------------------------------------------- */

#define WATCH_MASK                                                            \
	(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | \
	 IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

static void watch_note(struct source_watch *sw, int wd, uint64_t env_id)
{
	for (size_t i = 0; i < sw->nw; i++) {
		if (sw->w[i].wd == wd && sw->w[i].env_id == env_id)
			return;
	}
	if (sw->nw == sw->capw) {
		sw->capw = sw->capw ? sw->capw * 2 : 64;
		sw->w = xrealloc(sw->w, sw->capw * sizeof(*sw->w));
	}
	sw->w[sw->nw++] = (struct watch){ wd, env_id };
}

/* /proc/self/fd/N: the folder as opened, not a path a rename moved. */
static void watch_at(struct source_watch *sw, int fd, uint64_t env_id)
{
	char path[64];
	int wd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	wd = inotify_add_watch(sw->ino, path, WATCH_MASK);
	if (wd >= 0)
		watch_note(sw, wd, env_id);
}

/* The folder, its kind folders and each resource folder in them; new
 * ones are added at every read, which a change in their parent causes. */
static void watch_tree(struct source_watch *sw, int root, uint64_t env_id)
{
	static const char *const kinds[] = { "pools", "endpoints" };

	watch_at(sw, root, env_id);
	for (size_t k = 0; k < 2; k++) {
		int kfd =
			openat(root, kinds[k],
			       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		DIR *d;
		struct dirent *de;

		if (kfd < 0)
			continue;
		watch_at(sw, kfd, env_id);
		d = fdopendir(kfd);
		if (!d) {
			close(kfd);
			continue;
		}
		while ((de = readdir(d))) {
			int rfd;

			if (de->d_name[0] == '.')
				continue;
			rfd = openat(dirfd(d), de->d_name,
				     O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
					     O_CLOEXEC);
			if (rfd >= 0) {
				watch_at(sw, rfd, env_id);
				close(rfd);
			}
		}
		closedir(d);
	}
}

static void watch_forget(struct source_watch *sw, uint64_t env_id)
{
	for (size_t i = sw->nw; i-- > 0;) {
		bool shared = false;

		if (sw->w[i].env_id != env_id)
			continue;
		for (size_t j = 0; j < sw->nw; j++)
			shared |= j != i && sw->w[j].wd == sw->w[i].wd;
		if (!shared)
			inotify_rm_watch(sw->ino, sw->w[i].wd);
		sw->w[i] = sw->w[--sw->nw];
	}
}

/* A commit subject longer than the revision keeps is cut here. */
#define SUBJECT_MAX 256

/* ---- syncing -------------------------------------------------------- */

static void sync_apply(struct source_watch *sw, const struct followed *f,
		       const struct folder *folder, const char *commit,
		       const char *subject, const char *problem)
{
	struct change ch = {
		.op = CH_SYNC,
		.env = f->env,
		.text = f->path,
		.len = strlen(f->path),
		.name = commit,
		.subject = subject,
		.field = problem,
		.folder = folder,
		.path = f->path,
	};
	struct change_result res;

	ch.who.uid = f->uid;
	ch.who.gid = f->gid;
	ch.who.pid = getpid();
	snprintf(ch.who.comm, sizeof(ch.who.comm), "infrafs-source");
	if (store_apply(sw->st, &ch, &res) < 0)
		log_info("%s: %s", f->env, res.msg);
}

/* Reads the folder as its owner would and hands it to the store. */
static void sync_one(struct source_watch *sw, struct followed *f)
{
	struct folder folder = { 0 };
	struct folder_error err = { 0 };
	char commit[41] = "", subject[SUBJECT_MAX] = "", problem[700] = "";
	int rootfd, rc = take_authority(sw, f);

	if (rc) {
		snprintf(problem, sizeof(problem),
			 "the daemon cannot read it as uid %u",
			 (unsigned)f->uid);
		sync_apply(sw, f, NULL, "", NULL, problem);
		return;
	}
	rootfd = open(f->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0) {
		rc = -errno;
	} else {
		watch_tree(sw, rootfd, f->env_id);
		rc = folder_read_at(rootfd, &folder, &err);
		if (git_head(rootfd, commit) == 0)
			git_commit_subject(rootfd, commit, subject,
					   sizeof(subject));
		close(rootfd);
	}
	drop_authority(sw);
	if (rootfd < 0)
		snprintf(problem, sizeof(problem),
			 "cannot open it as uid %u: %s; the environment stays "
			 "as it is",
			 (unsigned)f->uid, strerror(-rc));
	else if (rc)
		snprintf(problem, sizeof(problem), "%s", err.msg);
	sync_apply(sw, f, rc ? NULL : &folder, commit, subject,
		   rc ? problem : NULL);
	folder_free(&folder);
}

/* ---- which environments follow what ---------------------------------- */

static struct followed *followed_of(struct source_watch *sw, uint64_t env_id)
{
	for (size_t i = 0; i < sw->nf; i++) {
		if (sw->f[i].env_id == env_id)
			return &sw->f[i];
	}
	return NULL;
}

static void follow(struct source_watch *sw, const struct env *e,
		   const char *path, double now)
{
	struct followed *f = followed_of(sw, e->id);

	if (!f) {
		if (sw->nf == sw->capf) {
			sw->capf = sw->capf ? sw->capf * 2 : 8;
			sw->f = xrealloc(sw->f, sw->capf * sizeof(*sw->f));
		}
		f = &sw->f[sw->nf++];
		memset(f, 0, sizeof(*f));
		f->env_id = e->id;
	}
	/* A new source, or the owner changed: read it again now. */
	if (strcmp(f->path, path) || f->uid != e->uid || f->gid != e->gid) {
		watch_forget(sw, e->id);
		snprintf(f->path, sizeof(f->path), "%s", path);
		f->dirty_since = f->last_change = now - SOURCE_SETTLE_CAP_MS;
	}
	memcpy(f->env, e->name, sizeof(f->env));
	f->uid = e->uid;
	f->gid = e->gid;
	f->listed = true;
}

/* Unsetting source stops the following and changes nothing. */
static void look_at_model(struct source_watch *sw, double now)
{
	struct model *m = store_model(sw->st);
	char path[PATH_MAX];

	for (size_t i = 0; i < sw->nf; i++)
		sw->f[i].listed = false;
	model_rdlock(m);
	for (size_t i = 0; i < m->envs.n; i++) {
		env_source(m->envs.v[i], path, sizeof(path));
		if (path[0] == '/')
			follow(sw, m->envs.v[i], path, now);
	}
	model_unlock(m);
	for (size_t i = sw->nf; i-- > 0;) {
		if (sw->f[i].listed)
			continue;
		watch_forget(sw, sw->f[i].env_id);
		sw->f[i] = sw->f[--sw->nf];
	}
}

static void mark_dirty(struct followed *f, double now)
{
	if (!f->dirty_since)
		f->dirty_since = now;
	f->last_change = now;
}

/* Names starting with '.' are skipped by the reader: .git, swap files. */
static void take_events(struct source_watch *sw, double now)
{
	char buf[16384]
		__attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(sw->ino, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const void *)p;

			p += sizeof(*ev) + ev->len;
			if (ev->len && ev->name[0] == '.')
				continue;
			for (size_t i = 0; i < sw->nf; i++) {
				bool hit = ev->mask & IN_Q_OVERFLOW;

				for (size_t j = 0; !hit && j < sw->nw; j++)
					hit = sw->w[j].wd == ev->wd &&
					      sw->w[j].env_id ==
						      sw->f[i].env_id;
				if (hit)
					mark_dirty(&sw->f[i], now);
			}
		}
	}
}

static bool settled(const struct followed *f, double now)
{
	return f->dirty_since &&
	       (now - f->last_change >= SOURCE_SETTLE_MS / 1000.0 ||
		now - f->dirty_since >= SOURCE_SETTLE_CAP_MS / 1000.0);
}

static void *watch_loop(void *arg)
{
	struct source_watch *sw = arg;
	struct pollfd pfd[2] = { { .fd = sw->ino, .events = POLLIN },
				 { .fd = sw->stop_fd, .events = POLLIN } };

	sw->own_ngroups =
		(int)syscall(SYS_getgroups, MAX_GROUPS, sw->own_groups);
	if (sw->own_ngroups < 0)
		sw->own_ngroups = 0;
	for (;;) {
		double now = now_s();

		look_at_model(sw, now);
		for (size_t i = 0; i < sw->nf; i++) {
			if (!settled(&sw->f[i], now))
				continue;
			sw->f[i].dirty_since = sw->f[i].last_change = 0;
			sync_one(sw, &sw->f[i]);
		}
		/* Often enough to see a new source soon, and a settle. */
		if (poll(pfd, 2, 100) > 0 && (pfd[1].revents & POLLIN))
			break;
		if (pfd[0].revents & POLLIN)
			take_events(sw, now_s());
	}
	return NULL;
}

int source_start(struct store *st, struct source_watch **out)
{
	struct source_watch *sw = xcalloc(1, sizeof(*sw));

	sw->st = st;
	sw->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	sw->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (sw->ino < 0 || sw->stop_fd < 0 ||
	    pthread_create(&sw->thread, NULL, watch_loop, sw) != 0) {
		int rc = errno ? -errno : -EAGAIN;

		if (sw->ino >= 0)
			close(sw->ino);
		if (sw->stop_fd >= 0)
			close(sw->stop_fd);
		free(sw);
		return rc;
	}
	*out = sw;
	return 0;
}

void source_stop(struct source_watch *sw)
{
	uint64_t one = 1;

	if (!sw)
		return;
	if (write(sw->stop_fd, &one, sizeof(one)) != sizeof(one))
		log_err("source: cannot stop the watcher");
	pthread_join(sw->thread, NULL);
	close(sw->ino);
	close(sw->stop_fd);
	free(sw->f);
	free(sw->w);
	free(sw);
}
