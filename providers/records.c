// SPDX-License-Identifier: MIT
#include "records.h"

#include "util/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Why the folder fd refers to is not ours alone, or NULL when it is. */
static const char *dir_distrust(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return strerror(errno);
	if (!S_ISDIR(st.st_mode))
		return "not a folder";
	if (st.st_uid != geteuid())
		return "owned by another user";
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return "writable by others";
	return NULL;
}

int own_dir_open(int dirfd, const char *name, char *why, size_t len)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	const char *bad;
	int fd;

	if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST) {
		int e = errno;

		snprintf(why, len, "cannot make %s: %s", name, strerror(e));
		return -e;
	}
	fd = openat(dirfd, name, flags);
	if (fd < 0) {
		int e = errno;

		snprintf(why, len, "%s: %s", name,
			 e == ELOOP || e == ENOTDIR ? "not a folder (a link?)"
						    : strerror(e));
		return -e;
	}
	bad = dir_distrust(fd);
	if (!bad)
		return fd;
	snprintf(why, len, "%s: %s", name, bad);
	close(fd);
	return -EPERM;
}

/* KIND@ENV@NAME.json: '@' is in no name. */
static void record_name(const char *kind, const char *key, char *out,
			size_t len)
{
	char flat[160];

	snprintf(flat, sizeof(flat), "%s", key);
	for (char *p = flat; *p; p++) {
		if (*p == '/')
			*p = '@';
	}
	snprintf(out, len, "%s@%s.json", kind, flat);
}

/* DIR/records, refused when it is not the daemon's own. */
static int records_dir(const char *dir)
{
	char why[PATH_MAX + 64];
	int parent, fd;

	parent = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (parent < 0) {
		int e = errno;

		log_warn("cannot open %s: %s", dir, strerror(e));
		return -e;
	}
	fd = own_dir_open(parent, "records", why, sizeof(why));
	close(parent);
	if (fd < 0)
		log_err("refusing %s/%s", dir, why);
	return fd;
}

/* The temporary is made afresh (O_EXCL) and never followed: nothing
 * planted at its name is written through. */
static int write_aside(int dirfd, const char *tmp, json_t *doc)
{
	int fd = openat(dirfd, tmp,
			O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			0600);
	int rc;

	if (fd < 0 && errno == EEXIST && unlinkat(dirfd, tmp, 0) == 0)
		fd = openat(dirfd, tmp,
			    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
				    O_CLOEXEC,
			    0600);
	if (fd < 0)
		return -errno;
	rc = json_dumpfd(doc, fd, JSON_COMPACT);
	if (close(fd) < 0 || rc < 0) {
		unlinkat(dirfd, tmp, 0);
		return -EIO;
	}
	return 0;
}

int record_save(const char *dir, const char *kind, const char *key, json_t *doc)
{
	char name[NAME_MAX + 1], tmp[NAME_MAX + 8];
	int dfd = records_dir(dir);
	int rc = dfd;

	record_name(kind, key, name, sizeof(name));
	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	if (dfd >= 0) {
		rc = write_aside(dfd, tmp, doc);
		if (rc == 0 && renameat(dfd, tmp, dfd, name) < 0)
			rc = -errno;
		close(dfd);
	}
	json_decref(doc);
	if (rc == 0)
		return 0;
	log_warn("cannot save %s/records/%s: %s", dir, name, strerror(-rc));
	return -EIO;
}

void record_forget(const char *dir, const char *kind, const char *key)
{
	char name[NAME_MAX + 1];
	int dfd = records_dir(dir);

	if (dfd < 0)
		return;
	record_name(kind, key, name, sizeof(name));
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		log_warn("cannot remove %s/records/%s", dir, name);
	close(dfd);
}

/* KIND@ENV@NAME.json back to KIND and ENV/NAME. */
static bool parse_record_name(const char *file, char *kind, size_t klen,
			      char *key, size_t keylen)
{
	const char *at = strchr(file, '@');
	const char *dot = strrchr(file, '.');

	if (!at || !dot || strcmp(dot, ".json") != 0 || at > dot)
		return false;
	snprintf(kind, klen, "%.*s", (int)(at - file), file);
	snprintf(key, keylen, "%.*s", (int)(dot - at - 1), at + 1);
	for (char *p = key; *p; p++) {
		if (*p == '@')
			*p = '/';
	}
	return true;
}

/* A record is read only when it is a plain file: not through a link. */
static json_t *record_load(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	json_t *doc = NULL;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		doc = json_loadfd(fd, 0, NULL);
	close(fd);
	return doc;
}

int records_load(const char *dir,
		 void (*fn)(void *ctx, const char *kind, const char *key,
			    json_t *doc),
		 void *ctx)
{
	struct dirent *de;
	int dfd = records_dir(dir);
	DIR *d;

	if (dfd < 0)
		return dfd;
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -errno;
	}
	while ((de = readdir(d))) {
		char kind[16], key[140];
		json_t *doc;

		if (!parse_record_name(de->d_name, kind, sizeof(kind), key,
				       sizeof(key)))
			continue;
		doc = record_load(dirfd(d), de->d_name);
		if (!doc)
			continue;
		fn(ctx, kind, key, doc);
		json_decref(doc);
	}
	closedir(d);
	return 0;
}
