/* SPDX-License-Identifier: MIT */
/*
 * A minimal unit-test harness: each CHECK that fails prints where and what,
 * and the test program exits non-zero when any failed. Used by the C unit
 * tests under tests/unit/; the file-system tests drive the real mount.
 */
#ifndef INFRAFS_TESTS_CHECK_H
#define INFRAFS_TESTS_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                            \
	do {                                                                   \
		check_count++;                                                 \
		if (!(cond)) {                                                 \
			check_failures++;                                      \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
		}                                                              \
	} while (0)

#define CHECK_STR(got, want)                                                   \
	do {                                                                   \
		const char *g_ = (got), *w_ = (want);                          \
		check_count++;                                                 \
		if (!g_ || strcmp(g_, w_) != 0) {                              \
			check_failures++;                                      \
			fprintf(stderr, "%s:%d: got \"%s\"\n%*swant \"%s\"\n", \
				__FILE__, __LINE__, g_ ? g_ : "(null)",        \
				(int)strlen(__FILE__) + 2, "", w_);            \
		}                                                              \
	} while (0)

#define CHECK_INT(got, want)                                             \
	do {                                                             \
		long long g_ = (long long)(got), w_ = (long long)(want); \
		check_count++;                                           \
		if (g_ != w_) {                                          \
			check_failures++;                                \
			fprintf(stderr, "%s:%d: %s = %lld, want %lld\n", \
				__FILE__, __LINE__, #got, g_, w_);       \
		}                                                        \
	} while (0)

/* Text checks: what a message must say, and what it must never say. */
#define CHECK_HAS(hay, needle)                                               \
	do {                                                                 \
		const char *h_ = (hay), *n_ = (needle);                      \
		check_count++;                                               \
		if (!strstr(h_, n_)) {                                       \
			check_failures++;                                    \
			fprintf(stderr, "%s:%d: \"%s\"\n    lacks \"%s\"\n", \
				__FILE__, __LINE__, h_, n_);                 \
		}                                                            \
	} while (0)

#define CHECK_LACKS(hay, needle)                                           \
	do {                                                               \
		const char *h_ = (hay), *n_ = (needle);                    \
		check_count++;                                             \
		if (strstr(h_, n_)) {                                      \
			check_failures++;                                  \
			fprintf(stderr, "%s:%d: \"%s\"\n    has \"%s\"\n", \
				__FILE__, __LINE__, h_, n_);               \
		}                                                          \
	} while (0)

static inline int check_report(const char *name)
{
	printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
	return check_failures ? 1 : 0;
}

#endif
