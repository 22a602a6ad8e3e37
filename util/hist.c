// SPDX-License-Identifier: MIT
#include "hist.h"

#include <inttypes.h>
#include <time.h>

static const uint64_t bound_ns[HIST_BUCKETS] = {
	100000ull,     250000ull,     500000ull,     1000000ull,
	2500000ull,    5000000ull,    10000000ull,   25000000ull,
	50000000ull,   100000000ull,  250000000ull,  500000000ull,
	1000000000ull, 2500000000ull, 5000000000ull, 10000000000ull,
};

static const char *const bound_text[HIST_BUCKETS] = {
	"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
	"0.01",	  "0.025",   "0.05",   "0.1",	"0.25",	  "0.5",
	"1",	  "2.5",     "5",      "10",
};

uint64_t hist_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void hist_observe_ns(struct hist *h, uint64_t ns)
{
	size_t i = 0;

	while (i < HIST_BUCKETS && ns > bound_ns[i])
		i++;
	atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void hist_since(struct hist *h, uint64_t start)
{
	uint64_t now = hist_clock();

	hist_observe_ns(h, now > start ? now - start : 0);
}

void hist_render(const struct hist *h, const char *name, const char *labels,
		 struct buf *out)
{
	const char *sep = labels[0] ? "," : "";
	uint64_t cum = 0;

	for (size_t i = 0; i <= HIST_BUCKETS; i++) {
		cum += atomic_load_explicit(&h->bucket[i],
					    memory_order_relaxed);
		buf_printf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name,
			   labels, sep,
			   i < HIST_BUCKETS ? bound_text[i] : "+Inf", cum);
	}
	buf_printf(
		out, "%s_sum%s%s%s %.9f\n", name, labels[0] ? "{" : "", labels,
		labels[0] ? "}" : "",
		(double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) /
			1e9);
	/* The count is the +Inf bucket, so the two always agree. */
	buf_printf(out, "%s_count%s%s%s %" PRIu64 "\n", name,
		   labels[0] ? "{" : "", labels, labels[0] ? "}" : "", cum);
}
