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

/* Makes DIR/records if needed. */
void records_open(const char *dir);

/* Saves doc (the reference is taken) as KIND's record of key ENV/NAME. */
int record_save(const char *dir, const char *kind, const char *key,
		json_t *doc);

void record_forget(const char *dir, const char *kind, const char *key);

/* Calls fn for each record found, with its kind and ENV/NAME key. */
void records_load(const char *dir,
		  void (*fn)(void *ctx, const char *kind, const char *key,
			     json_t *doc),
		  void *ctx);

#endif
