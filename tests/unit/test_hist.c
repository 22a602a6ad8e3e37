// SPDX-License-Identifier: MIT
/* Unit tests of the latency histogram: buckets, bounds and exposition. */
#include "tests/unit/check.h"
#include "util/buf.h"
#include "util/hist.h"

static void test_buckets_are_cumulative_and_bounds_inclusive(void)
{
	struct hist h = { 0 };
	struct buf b = BUF_INIT;

	hist_observe_ns(&h, 100000); /* exactly 0.0001: in le="0.0001" */
	hist_observe_ns(&h, 100001); /* just past it */
	hist_observe_ns(&h, 3000000); /* 0.003 */
	hist_observe_ns(&h, 20000000000ull); /* 20 s: +Inf only */
	hist_render(&h, "x_seconds", "op=\"read\"", &b);
	CHECK_HAS(buf_str(&b),
		  "x_seconds_bucket{op=\"read\",le=\"0.0001\"} 1\n");
	CHECK_HAS(buf_str(&b),
		  "x_seconds_bucket{op=\"read\",le=\"0.00025\"} 2\n");
	CHECK_HAS(buf_str(&b),
		  "x_seconds_bucket{op=\"read\",le=\"0.0025\"} 2\n");
	CHECK_HAS(buf_str(&b),
		  "x_seconds_bucket{op=\"read\",le=\"0.005\"} 3\n");
	CHECK_HAS(buf_str(&b), "x_seconds_bucket{op=\"read\",le=\"10\"} 3\n");
	CHECK_HAS(buf_str(&b), "x_seconds_bucket{op=\"read\",le=\"+Inf\"} 4\n");
	CHECK_HAS(buf_str(&b), "x_seconds_count{op=\"read\"} 4\n");
	CHECK_HAS(buf_str(&b), "x_seconds_sum{op=\"read\"} 20.003200001\n");
	buf_free(&b);
}

static void test_no_labels(void)
{
	struct hist h = { 0 };
	struct buf b = BUF_INIT;

	hist_render(&h, "y_seconds", "", &b);
	CHECK_HAS(buf_str(&b), "y_seconds_bucket{le=\"+Inf\"} 0\n");
	CHECK_HAS(buf_str(&b), "y_seconds_sum 0.000000000\n");
	CHECK_HAS(buf_str(&b), "y_seconds_count 0\n");
	buf_free(&b);
}

int main(void)
{
	test_buckets_are_cumulative_and_bounds_inclusive();
	test_no_labels();
	return check_report("hist");
}
