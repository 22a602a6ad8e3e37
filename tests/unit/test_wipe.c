// SPDX-License-Identifier: MIT
/*
 * Wiping buffers (util/wipe.h): a block they let go of holds no byte of
 * what it held. Linked with -Wl,--wrap=free, so every free() of the code
 * under test comes through __wrap_free(), which looks at the block while
 * it is still allocated. A growth by realloc() never calls free() at all,
 * and a missing wipe leaves the bytes there: both fail here.
 */
#include "check.h"
#include "util/wipe.h"

#include <stdbool.h>
#include <stdint.h>

void __real_free(void *p);
void __wrap_free(void *p);

static const char *watched; /* the block whose release we wait for */
static size_t watched_len;
static bool watched_freed, watched_wiped;

void __wrap_free(void *p)
{
	if (p && p == watched) {
		watched_freed = true;
		watched_wiped = true;
		for (size_t i = 0; i < watched_len; i++) {
			if (watched[i])
				watched_wiped = false;
		}
		watched = NULL;
	}
	__real_free(p);
}

static void watch(const struct buf *b)
{
	watched = b->data;
	watched_len = b->cap;
	watched_freed = watched_wiped = false;
}

static void test_growth_wipes_the_old_block(void)
{
	struct buf b = BUF_INIT;
	char big[300];

	memset(big, 'y', sizeof(big));
	wipebuf_add(&b, "hunter2-secret", 14);
	watch(&b);
	wipebuf_write_at(&b, 10, big, sizeof(big));
	CHECK(watched_freed);
	CHECK(watched_wiped);
	CHECK_INT(b.len, 310);
	CHECK(!memcmp(b.data, "hunter2-se", 10));
	CHECK(b.data[10] == 'y' && b.data[309] == 'y' && b.data[310] == '\0');
	wipebuf_free(&b);
}

static void test_add_grows_the_same_way(void)
{
	struct buf b = BUF_INIT;
	char big[100];

	memset(big, 's', sizeof(big));
	wipebuf_add(&b, big, 40);
	watch(&b);
	wipebuf_add(&b, big, sizeof(big));
	CHECK(watched_freed);
	CHECK(watched_wiped);
	CHECK_INT(b.len, 140);
	wipebuf_free(&b);
}

static void test_free_wipes_the_whole_capacity(void)
{
	struct buf b = BUF_INIT;

	wipebuf_add(&b, "hunter2-secret", 14);
	/* Cut short first: the bytes past the end must go too. */
	wipebuf_truncate(&b, 3);
	CHECK_STR(b.data, "hun");
	CHECK(b.data[5] == '\0');
	watch(&b);
	wipebuf_free(&b);
	CHECK(watched_freed);
	CHECK(watched_wiped);
	CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
}

static void test_truncate_grows_with_zeros(void)
{
	struct buf b = BUF_INIT;

	wipebuf_add(&b, "abc", 3);
	watch(&b);
	wipebuf_truncate(&b, 200);
	CHECK(watched_freed);
	CHECK(watched_wiped);
	CHECK_INT(b.len, 200);
	CHECK(!memcmp(b.data, "abc", 3) && b.data[3] == '\0' &&
	      b.data[199] == '\0');
	wipebuf_free(&b);
}

/* Doubling past half of SIZE_MAX wrapped to 0 and never ended. */
static void test_growth_near_the_top_ends(void)
{
	size_t huge = SIZE_MAX / 2 + 1;

	CHECK(buf_grown_cap(64, 0, huge) == huge + 1);
	CHECK(buf_grown_cap(0, 0, 10) == 64);
	CHECK(buf_grown_cap(128, 100, 27) == 128);
	CHECK(buf_grown_cap(128, 100, 28) == 256);
}

int main(void)
{
	test_growth_near_the_top_ends();
	test_growth_wipes_the_old_block();
	test_add_grows_the_same_way();
	test_free_wipes_the_whole_capacity();
	test_truncate_grows_with_zeros();
	return check_report("wipe");
}
