/* SPDX-License-Identifier: MIT */
#ifndef INFRAFS_FS_BUILD_INFO_H
#define INFRAFS_FS_BUILD_INFO_H

#include "util/buf.h"

/* What a bug report needs: version, commit, build and the libraries'
 * versions at run time, one "key: value" line each after the first. */
void build_info(struct buf *out);

/* The facts fixed at build time, for those who show them another way
 * (the metrics file's infrafs_build_info). Static strings. */
struct build_facts {
	const char *version;
	const char *commit;
	const char *buildtype;
	const char *sanitize;
	const char *compiler;
};

struct build_facts build_facts(void);

#endif
