/* SPDX-License-Identifier: MIT */
/*
 * What a followed folder's Git work tree says about itself, read from
 * .git without running git: the commit HEAD names and that commit's
 * subject. Only what the audit line needs; nothing here writes.
 */
#ifndef INFRAFS_RECONCILER_GIT_H
#define INFRAFS_RECONCILER_GIT_H

#include <stddef.h>

/*
 * The commit a Git work tree's HEAD names (HEAD, loose refs, packed-refs,
 * a linked work tree's common folder): 0 with 40 hex digits in out, or
 * -ENOENT when dirfd is no Git work tree or HEAD names no commit yet.
 */
int git_head(int dirfd, char out[41]);

/*
 * The first line of the message of commit sha (a loose object, or one
 * stored whole in a pack), without its newline, cut to outlen - 1 bytes:
 * 0, or -ENOENT when it cannot be found or read (a commit stored as a
 * delta in a pack is not read: the audit then names the commit alone).
 */
int git_commit_subject(int dirfd, const char sha[41], char *out,
		       size_t outlen);

#endif
