/* SPDX-License-Identifier: MIT */
/* Unified diffs of spec texts, for history/REV/diff. */
#ifndef INFRAFS_STORE_DIFF_H
#define INFRAFS_STORE_DIFF_H

#include "util/buf.h"

/*
 * Appends to out a unified diff (as `diff -u` prints it, with 3 lines of
 * context, `--- a_label` / `+++ b_label` headers and `@@ -l,n +l,n @@` hunk
 * headers) that turns a into b. Appends nothing when the texts are equal.
 * A text not ending in a newline gets `\ No newline at end of file`.
 * Large texts stay cheap: common head and tail lines are set aside first,
 * and the middle falls back to "all removed, all added" past a size bound.
 */
void diff_unified(const char *a, size_t alen, const char *b, size_t blen,
		  const char *a_label, const char *b_label, struct buf *out);

#endif
