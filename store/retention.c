// SPDX-License-Identifier: MIT
#include "retention.h"

#include "policy.h"

#include <stdlib.h>
#include <string.h>

struct retention retention_of(const struct spec *config)
{
	struct retention r = { 0, 0 };

	if (config) {
		r.keep = spec_int(config, "history_keep", 0);
		r.keep_days = spec_int(config, "history_keep_days", 0);
	}
	return r;
}

uint64_t retention_keep_from(const struct retention *r, uint64_t rev,
			     uint64_t applied_rev, uint64_t since_rev)
{
	uint64_t by_count = 1, by_age = 1, from;

	if (!r->keep && !r->keep_days)
		return 1;
	if (r->keep && rev > (uint64_t)r->keep)
		by_count = rev - (uint64_t)r->keep + 1;
	if (r->keep_days)
		by_age = since_rev;
	/* Both rules set: a revision either keeps stays. */
	if (r->keep && r->keep_days)
		from = by_count < by_age ? by_count : by_age;
	else
		from = r->keep ? by_count : by_age;
	if (from > rev)
		from = rev;
	/* Nothing carried yet: `discard` and the reconciler may need any of
	 * them. */
	if (!applied_rev)
		return 1;
	return from < applied_rev ? from : applied_rev;
}

bool retention_due(uint64_t first_rev, uint64_t keep_from, uint64_t rev)
{
	uint64_t kept = rev - keep_from + 1;

	if (keep_from <= first_rev)
		return false;
	return keep_from - first_rev >= (kept / 16 ? kept / 16 : 1);
}

/* Audit lines read "TIME rev=N ..." for a revision, "TIME rev=- ..." for
 * anything else. */
bool retention_keeps_audit_line(const char *line, uint64_t keep_from)
{
	const char *p = strchr(line, ' ');
	char *end;
	unsigned long long rev;

	if (!p || strncmp(p + 1, "rev=", 4) || p[5] < '0' || p[5] > '9')
		return false;
	rev = strtoull(p + 5, &end, 10);
	return *end == ' ' && rev >= keep_from;
}
