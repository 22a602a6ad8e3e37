// SPDX-License-Identifier: MIT
/* The render cache: generations, sharing, and its size cap. */
#include "cache/blob.h"
#include "check.h"

#include <stdio.h>

static void test_generation_decides(void)
{
	struct render_cache c;
	struct blob *b = blob_new("hello", 5, 7);
	struct blob *got;
	int key = 1;

	render_cache_init(&c, 1 << 20);
	render_cache_put(&c, &key, sizeof(key), b);
	got = render_cache_get(&c, &key, sizeof(key), 7);
	CHECK(got == b);
	blob_unref(got);
	CHECK(render_cache_get(&c, &key, sizeof(key), 8) == NULL);
	blob_unref(b);
	render_cache_destroy(&c);
}

static void test_cap_is_kept(void)
{
	struct render_cache c;
	char data[1000] = { 0 };
	int last = 0;

	render_cache_init(&c, 64 * 1024);
	for (int i = 0; i < 1000; i++) {
		struct blob *b = blob_new(data, sizeof(data), 1);

		render_cache_put(&c, &i, sizeof(i), b);
		blob_unref(b);
		CHECK(c.bytes <= 64 * 1024 + sizeof(data) + 64);
		last = i;
	}
	/* The newest entry is never the one evicted to make room. */
	{
		struct blob *b = render_cache_get(&c, &last, sizeof(last), 1);

		CHECK(b != NULL);
		blob_unref(b);
	}
	CHECK(c.entries.count < 100);
	render_cache_destroy(&c);
}

static void test_blob_outlives_eviction(void)
{
	struct render_cache c;
	struct blob *b = blob_new("snapshot", 8, 1);
	struct blob *held;
	int key = 1, other = 2;

	render_cache_init(&c, 0);
	render_cache_put(&c, &key, sizeof(key), b);
	held = render_cache_get(&c, &key, sizeof(key), 1);
	render_cache_put(&c, &other, sizeof(other), b);
	/* An open file's snapshot stays valid whatever the cache drops. */
	CHECK(held && held->len == 8 && memcmp(held->data, "snapshot", 8) == 0);
	blob_unref(held);
	blob_unref(b);
	render_cache_destroy(&c);
}

int main(void)
{
	test_generation_decides();
	test_cap_is_kept();
	test_blob_outlives_eviction();
	return check_report("blob");
}
