/* SPDX-License-Identifier: MIT */
/*
 * Which revisions an environment keeps. By default every one; config's
 * history_keep (the newest N revisions) and history_keep_days (those of
 * the last D days) let an owner bound a history that would otherwise
 * grow for ever. Set together, a revision goes only when both rules let
 * it go. Whatever the rules say, the newest revision and every revision
 * not yet carried to the provider stay: `discard` and the reconciler
 * read them.
 */
#ifndef INFRAFS_STORE_RETENTION_H
#define INFRAFS_STORE_RETENTION_H

#include "spec/spec.h"

#include <stdbool.h>
#include <stdint.h>

struct retention {
	int64_t keep; /* newest revisions kept; 0: no count rule */
	int64_t keep_days; /* days of revisions kept; 0: no age rule */
};

/* The rules config sets (NULL config: none). */
struct retention retention_of(const struct spec *config);

/* The oldest revision to keep, given the newest, the newest carried to
 * the provider, and for the age rule the oldest revision of the last
 * keep_days days (rev + 1 when there is none). */
uint64_t retention_keep_from(const struct retention *r, uint64_t rev,
			     uint64_t applied_rev, uint64_t since_rev);

/* Whether pruning up to keep_from is worth a transaction and an audit
 * line now: it is done in steps of at least a sixteenth of what stays. */
bool retention_due(uint64_t first_rev, uint64_t keep_from, uint64_t rev);

/* Whether an audit line belongs to a kept revision: the first line
 * naming revision keep_from or later is the oldest one kept. */
bool retention_keeps_audit_line(const char *line, uint64_t keep_from);

#endif
