// SPDX-License-Identifier: MIT
#include "records.h"

#include "util/log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void record_path(const char *dir, const char *kind, const char *key,
			char *out, size_t len)
{
	char flat[160];

	snprintf(flat, sizeof(flat), "%s", key);
	for (char *p = flat; *p; p++) {
		if (*p == '/')
			*p = '@';
	}
	snprintf(out, len, "%s/records/%s@%s.json", dir, kind, flat);
}

void records_open(const char *dir)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/records", dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		log_warn("cannot make %s: %s", path, strerror(errno));
}

int record_save(const char *dir, const char *kind, const char *key, json_t *doc)
{
	char path[PATH_MAX + 200], tmp[PATH_MAX + 220];
	int rc;

	record_path(dir, kind, key, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	rc = json_dump_file(doc, tmp, JSON_COMPACT);
	json_decref(doc);
	if (rc == 0 && rename(tmp, path) == 0)
		return 0;
	log_warn("cannot save %s", path);
	return -EIO;
}

void record_forget(const char *dir, const char *kind, const char *key)
{
	char path[PATH_MAX + 200];

	record_path(dir, kind, key, path, sizeof(path));
	if (unlink(path) < 0 && errno != ENOENT)
		log_warn("cannot remove %s", path);
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

void records_load(const char *dir,
		  void (*fn)(void *ctx, const char *kind, const char *key,
			     json_t *doc),
		  void *ctx)
{
	char path[PATH_MAX + 16];
	struct dirent *de;
	DIR *d;

	records_open(dir);
	snprintf(path, sizeof(path), "%s/records", dir);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char kind[16], key[140], file[PATH_MAX + 300];
		json_t *doc;

		if (!parse_record_name(de->d_name, kind, sizeof(kind), key,
				       sizeof(key)))
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
		doc = json_load_file(file, 0, NULL);
		if (!doc)
			continue;
		fn(ctx, kind, key, doc);
		json_decref(doc);
	}
	closedir(d);
}
