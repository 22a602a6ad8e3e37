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

struct buf;

/* How text_escape() differs from its default, for one kind of output. */
enum text_escape_flags {
	/* Multi-line text (events, audit, plan): '\n' ends a line. */
	TEXT_KEEP_NEWLINE = 1,
	/* One word of a space-separated line (comm= in audit lines). */
	TEXT_ESCAPE_SPACE = 2,
};

/*
 * Appends n bytes of s to out so that they cannot break a line-oriented
 * file or drive a terminal: '\n', '\r' and '\t' become \n, \r and \t,
 * every other C0 control, DEL, each byte of a C1 control (U+0080..U+009F)
 * and each byte of invalid UTF-8 become \xNN. A backslash is kept as it
 * is, so escaping twice changes nothing.
 */
void text_escape(struct buf *out, const char *s, size_t n, unsigned flags);
/* "KEY: VALUE\n" with VALUE escaped: a status line whose value came from
 * outside (a cloud's failure message) stays one line. */
void text_line(struct buf *out, const char *key, const char *value);

/*
 * A URL as messages may show it: a password in its user part or in a
 * password= parameter becomes ***. Cut to fit outlen.
 */
void url_without_password(const char *url, char *out, size_t outlen);

/* RFC 3339 UTC with milliseconds, e.g. 2026-11-27T23:55:22.123Z. */
void time_rfc3339(double t, char *out, size_t outlen);
double time_now(void);
/* An RFC 3339 time ("2026-11-28T12:00:00Z"; fractions and numeric offsets
 * allowed) as epoch seconds, or -1. */
double time_parse_rfc3339(const char *s);

#endif
