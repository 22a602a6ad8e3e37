/* SPDX-License-Identifier: MIT */
#ifndef INFRAFS_FS_BUILD_INFO_H
#define INFRAFS_FS_BUILD_INFO_H

#include "util/buf.h"

/* What a bug report needs: version, commit, build and the libraries'
 * versions at run time, one "key: value" line each after the first. */
void build_info(struct buf *out);

#endif
