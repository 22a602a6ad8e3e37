/* SPDX-License-Identifier: MIT */
/* Small file-system helpers shared by the store and the providers. */
#ifndef INFRAFS_UTIL_FILES_H
#define INFRAFS_UTIL_FILES_H

#include <sys/types.h>

/* Makes every missing folder above path (not path itself), mode 0700:
 * what they hold is this daemon's alone. Returns 0 or -errno. */
int mkdir_parents(const char *path);

#endif
