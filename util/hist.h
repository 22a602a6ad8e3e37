/* SPDX-License-Identifier: MIT */
/*
 * A latency histogram cheap enough for every request: fixed bucket
 * bounds, relaxed atomic counters, no lock. Readers may see a count a
 * moment ahead of its sum; a scrape tolerates that.
 */
#ifndef INFRAFS_UTIL_HIST_H
#define INFRAFS_UTIL_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#include "buf.h"

/* Upper bounds in seconds, 100 microseconds to 10 seconds. */
#define HIST_BUCKETS 16

struct hist {
	atomic_uint_least64_t bucket[HIST_BUCKETS + 1]; /* last: +Inf */
	atomic_uint_least64_t count;
	atomic_uint_least64_t sum_ns;
};

/* A monotonic clock reading in nanoseconds, for hist_since(). */
uint64_t hist_clock(void);
void hist_observe_ns(struct hist *h, uint64_t ns);
/* Observes the time since start (a hist_clock() reading). */
void hist_since(struct hist *h, uint64_t start);
/* The sample lines of one histogram: name_bucket{labels,le=...},
 * name_sum, name_count. labels is "" or `key="value",...` (no braces). */
void hist_render(const struct hist *h, const char *name, const char *labels,
		 struct buf *out);

#endif
