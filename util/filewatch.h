/* SPDX-License-Identifier: MIT */
/*
 * Whether a file changed since it was last read: an inotify watch on its
 * folder (editors and rotation tools write a new file and rename it over
 * the old one, and a watch on the file itself would stay on the old
 * inode), backed by a stat of the file (inode, size, mtime) where
 * inotify sees nothing: network file systems, a folder that did not
 * exist yet, a symbolic link into another folder.
 *
 * A watch belongs to one thread; nothing here locks.
 */
#ifndef INFRAFS_UTIL_FILEWATCH_H
#define INFRAFS_UTIL_FILEWATCH_H

#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

struct file_id {
	bool exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct file_watch {
	char *path, *dir;
	const char *name; /* the last part of path, as inotify names it */
	int ifd; /* inotify, or -1 where none could be had */
	int wd; /* the folder's watch, or -1 */
	bool stale; /* inotify named the file since it was taken */
	struct file_id id; /* of what was taken */
};

/* Starts watching path (NULL: nothing, never changes). */
void file_watch_init(struct file_watch *w, const char *path);
void file_watch_free(struct file_watch *w);
/* Whether the file differs from what was last taken; takes it now. */
bool file_watch_changed(struct file_watch *w);

#endif
