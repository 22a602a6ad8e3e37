/* SPDX-License-Identifier: MIT */
/*
 * infrafs-plan --against: what a folder with the mount's layout would
 * change in an environment, read from what the mount shows the user who
 * runs it (ENV/config, ENV/policy, ENV/KIND/NAME/spec), never from the
 * state store. See infrafs-plan(1).
 */
#ifndef INFRAFS_TOOLS_PLAN_AGAINST_H
#define INFRAFS_TOOLS_PLAN_AGAINST_H

#include "util/buf.h"

#include <stddef.h>

enum plan_exit {
	EXIT_NO_CHANGES = 0,
	EXIT_ERROR = 1,
	EXIT_CHANGES = 2,
	EXIT_USAGE = 64, /* EX_USAGE of sysexits.h; 1 and 2 are taken */
};

enum plan_format { FORMAT_TEXT, FORMAT_JSON, FORMAT_MARKDOWN };

/*
 * Reads all of path, at most max bytes, into out (appended); 0, -EFBIG
 * past max, or -errno. read() to the end rather than trusting st_size,
 * which FUSE files may report as 0.
 */
int plan_read_file(const char *path, size_t max, struct buf *out);

/* "infrafs-plan: MESSAGE" on standard error; returns EXIT_ERROR. */
__attribute__((format(printf, 1, 2))) int plan_error(const char *fmt, ...);

/* A markdown code block of text, fenced so nothing in it can close it. */
void plan_md_code(struct buf *out, const char *lang, const char *text);

/* Prints the plan of folder against env_dir; returns the exit status. */
int plan_against(const char *env_dir, const char *folder,
		 enum plan_format format);

#endif
