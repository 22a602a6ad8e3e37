/* SPDX-License-Identifier: MIT */
/* Small text helpers shared by the parser, the store and the renderers. */
#ifndef INFRAFS_UTIL_TEXT_H
#define INFRAFS_UTIL_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define NAME_MAX_LEN 63

/*
 * Environment and resource names become cloud resource names:
 * [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?
 */
bool name_is_valid(const char *name);
/* Returns the byte offset of the first invalid UTF-8 sequence, or -1. */
long utf8_invalid_at(const char *s, size_t len);
/* RFC 3339 UTC with milliseconds, e.g. 2026-11-27T23:55:22.123Z. */
void time_rfc3339(double t, char *out, size_t outlen);
double time_now(void);

#endif
