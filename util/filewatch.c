// SPDX-License-Identifier: MIT
#include "filewatch.h"

#include "buf.h"
#include "log.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define WATCH_MASK                                              \
	(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | \
	 IN_MOVED_FROM | IN_MOVE_SELF | IN_DELETE_SELF | IN_ONLYDIR)

static void file_id_take(const char *path, struct file_id *id)
{
	struct stat st;

	memset(id, 0, sizeof(*id));
	if (stat(path, &st) < 0)
		return;
	id->exists = true;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	id->size = st.st_size;
	id->mtime = st.st_mtim;
}

static bool file_id_same(const struct file_id *a, const struct file_id *b)
{
	if (a->exists != b->exists)
		return false;
	return !a->exists ||
	       (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
		a->mtime.tv_sec == b->mtime.tv_sec &&
		a->mtime.tv_nsec == b->mtime.tv_nsec);
}

static void watch_folder(struct file_watch *w)
{
	if (w->ifd < 0 || w->wd >= 0)
		return;
	/* Fails while the folder does not exist; the stat covers that time
	 * and this is tried again at each look. */
	w->wd = inotify_add_watch(w->ifd, w->dir, WATCH_MASK);
	/* Whatever happened before the watch went unseen. */
	if (w->wd >= 0)
		w->stale = true;
}

void file_watch_init(struct file_watch *w, const char *path)
{
	char *copy;

	memset(w, 0, sizeof(*w));
	w->ifd = w->wd = -1;
	if (!path)
		return;
	w->path = xstrdup(path);
	copy = xstrdup(path);
	w->dir = xstrdup(dirname(copy));
	free(copy);
	w->name = strrchr(w->path, '/') ? strrchr(w->path, '/') + 1 : w->path;
	w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->ifd < 0)
		log_warn("inotify: %s; %s is checked with stat only",
			 strerror(errno), path);
	watch_folder(w);
	file_id_take(w->path, &w->id);
	w->stale = false;
}

void file_watch_free(struct file_watch *w)
{
	if (w->ifd >= 0)
		close(w->ifd);
	free(w->path);
	free(w->dir);
	memset(w, 0, sizeof(*w));
	w->ifd = w->wd = -1;
}

static void on_event(struct file_watch *w, const struct inotify_event *ev)
{
	if (ev->mask & IN_Q_OVERFLOW) {
		w->stale = true; /* events were lost */
		return;
	}
	/* A folder moved away would go on reporting from its new place:
	 * drop the watch (IN_IGNORED follows) and watch the path again. */
	if (ev->mask & IN_MOVE_SELF)
		inotify_rm_watch(w->ifd, ev->wd);
	if (ev->wd != w->wd)
		return;
	if (ev->mask & (IN_IGNORED | IN_MOVE_SELF)) {
		w->wd = -1;
		w->stale = true;
	} else if (ev->len && strcmp(ev->name, w->name) == 0) {
		w->stale = true;
	}
}

/* Reads every queued event without blocking (the fd is non-blocking). */
static void drain_events(struct file_watch *w)
{
	char buf[4096]
		__attribute__((aligned(__alignof__(struct inotify_event))));

	while (w->ifd >= 0) {
		ssize_t n = read(w->ifd, buf, sizeof(buf));
		const char *p = buf;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		while (p < buf + n) {
			const struct inotify_event *ev = (const void *)p;

			on_event(w, ev);
			p += sizeof(*ev) + ev->len;
		}
	}
}

bool file_watch_changed(struct file_watch *w)
{
	struct file_id now;
	bool changed;

	if (!w->path)
		return false;
	drain_events(w);
	watch_folder(w);
	file_id_take(w->path, &now);
	changed = w->stale || !file_id_same(&now, &w->id);
	w->id = now;
	w->stale = false;
	return changed;
}
