/* SPDX-License-Identifier: MIT */
/*
 * What a provider must remember across restarts, one small JSON file per
 * resource in its state folder, named KIND@ENV@NAME.json ('@' is in no
 * name). Each is written aside and renamed over, so a crash leaves the old
 * record or the new one, never half of one, and a change rewrites only
 * its own file, never one that grows with the number of resources.
 */
#ifndef INFRAFS_PROVIDERS_RECORDS_H
#define INFRAFS_PROVIDERS_RECORDS_H

#include <jansson.h>
#include <stddef.h>

/*
 * The daemon writes only into folders that are its own: a folder of
 * another user, one others may write to, or a link in its place would let
 * someone else choose what it writes to (a planted link to any file).
 * Opens folder name below dirfd (AT_FDCWD or a folder's descriptor),
 * made 0700 when missing; returns its O_DIRECTORY descriptor, or a
 * negative errno with why naming the folder and the reason.
 */
int own_dir_open(int dirfd, const char *name, char *why, size_t len);

/* Saves doc (the reference is taken) as KIND's record of key ENV/NAME. */
int record_save(const char *dir, const char *kind, const char *key,
		json_t *doc);

void record_forget(const char *dir, const char *kind, const char *key);

/* Calls fn for each record found, with its kind and ENV/NAME key; a
 * negative errno (logged) when the records folder is not the daemon's
 * own. */
int records_load(const char *dir,
		 void (*fn)(void *ctx, const char *kind, const char *key,
			    json_t *doc),
		 void *ctx);

#endif
