// SPDX-License-Identifier: MIT
/*
 * diff_unified() against the real `diff -u`: every case writes both texts
 * to files, runs diff(1) on them and wants the same bytes back.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp, popen */
#endif
#include "store/diff.h"
#include "tests/unit/check.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/test_diff.XXXXXX";

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(2);
	}
}

static char *path_in_tmp(const char *name)
{
	struct buf p = BUF_INIT;

	buf_printf(&p, "%s/%s", tmpdir, name);
	return buf_steal(&p);
}

/* What `diff -u --label A --label B` prints for the two texts. */
static void gnu_diff(const char *a, size_t alen, const char *b, size_t blen,
		     struct buf *out)
{
	AUTOFREE char *pa = path_in_tmp("a");
	AUTOFREE char *pb = path_in_tmp("b");
	struct buf cmd = BUF_INIT;
	char chunk[65536];
	size_t n;
	FILE *p;

	write_file(pa, a, alen);
	write_file(pb, b, blen);
	buf_printf(&cmd, "diff -u --label A --label B %s %s", pa, pb);
	p = popen(buf_str(&cmd), "r");
	if (!p) {
		perror("popen");
		exit(2);
	}
	while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
		buf_add(out, chunk, n);
	pclose(p);
	buf_free(&cmd);
}

static void show(const char *what, const struct buf *b)
{
	fprintf(stderr, "--- %s (%zu bytes) ---\n%.*s", what, b->len,
		b->len > 4000 ? 4000 : (int)b->len, buf_str(b));
}

/* Returns whether ours matched diff(1); shows both when not. */
static int same_as_gnu_n(const char *a, size_t alen, const char *b, size_t blen)
{
	BUF_AUTO want = BUF_INIT;
	BUF_AUTO got = BUF_INIT;
	int same;

	gnu_diff(a, alen, b, blen, &want);
	diff_unified(a, alen, b, blen, "A", "B", &got);
	same = want.len == got.len &&
	       (want.len == 0 || memcmp(want.data, got.data, want.len) == 0);
	if (!same) {
		BUF_AUTO in = BUF_INIT;

		buf_adds(&in, "old:\n");
		buf_add(&in, a, alen);
		buf_adds(&in, "\nnew:\n");
		buf_add(&in, b, blen);
		buf_adds(&in, "\n");
		show("input", &in);
		show("diff -u", &want);
		show("diff_unified", &got);
	}
	return same;
}

static int same_as_gnu(const char *a, const char *b)
{
	return same_as_gnu_n(a, strlen(a), b, strlen(b));
}

static void test_edges(void)
{
	static const char *const cases[][2] = {
		{ "", "" },
		{ "a\n", "a\n" },
		{ "", "a\nb\n" },
		{ "a\nb\n", "" },
		{ "", "a" },
		{ "a", "" },
		{ "a", "a\n" },
		{ "a\n", "a" },
		{ "a", "b" },
		{ "a\nb", "a\nc" },
		{ "a\nb\nc", "a\nb\nc\nd" },
		{ "x\ny\n", "z\nx\ny\n" },
		{ "x\ny\n", "x\ny\nz\n" },
		{ "x\nx\nx\n", "x\nx\nx\nx\n" },
		{ "1\n2\n3\n4\n5\n6\n7\n8\n9\n",
		  "1\n2\n3\n4\nX\n6\n7\n8\n9\n" },
		{ "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\n",
		  "1\nX\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\nY\n15\n" },
		{ "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n",
		  "X\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\nY\n" },
		{ "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n",
		  "X\n2\n3\n4\n5\n6\n7\n8\n9\n10\nY\n12\n" },
		{ "a\nb\nc\nd\ne\n", "a\nc\nd\nb\ne\n" },
		{ "a\n\nb\n\nc\n", "a\n\nb\n\n\nc\n" },
		{ "name = web\nport = 80\n", "name = web\nport = 8080\n" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK(same_as_gnu(cases[i][0], cases[i][1]));
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

static void random_text(struct buf *t, unsigned int lines,
			unsigned int alphabet)
{
	static const char *const words[] = { "a", "b", "c", "",	 "d",
					     "e", "f", "g", "h", "i" };

	for (unsigned int i = 0; i < lines; i++)
		buf_printf(t, "%s\n", words[rnd(alphabet)]);
	if (t->len && rnd(4) == 0)
		buf_truncate(t, t->len - 1);
}

/* Small texts over a few distinct lines: many ties between scripts. */
static void test_random_small(void)
{
	int bad = 0;

	for (int i = 0; i < 600 && bad < 5; i++) {
		BUF_AUTO a = BUF_INIT;
		BUF_AUTO b = BUF_INIT;

		random_text(&a, rnd(12), 2 + rnd(5));
		random_text(&b, rnd(12), 2 + rnd(5));
		if (!same_as_gnu_n(buf_str(&a), a.len, buf_str(&b), b.len))
			bad++;
	}
	CHECK_INT(bad, 0);
}

/* Applies a few random edits to a text, line by line. */
static void mutate(const struct buf *from, struct buf *to,
		   unsigned int alphabet)
{
	const char *p = buf_str(from), *end = p + from->len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
		uint32_t r = rnd(20);

		if (r == 0)
			random_text(to, 1 + rnd(3), alphabet);
		if (r != 1)
			buf_add(to, p, len);
		if (r == 2 && nl)
			buf_printf(to, "line %u\n", rnd(1000));
		p += len;
	}
}

/* Longer texts: repeated lines, discarded lines, merged hunks. */
static void test_random_large(void)
{
	int bad = 0;

	for (int i = 0; i < 150 && bad < 5; i++) {
		BUF_AUTO a = BUF_INIT;
		BUF_AUTO b = BUF_INIT;
		unsigned int alphabet = 2 + rnd(9);

		random_text(&a, 20 + rnd(400), alphabet);
		mutate(&a, &b, alphabet);
		if (!same_as_gnu_n(buf_str(&a), a.len, buf_str(&b), b.len))
			bad++;
	}
	CHECK_INT(bad, 0);
}

/* Frequent lines among lines found in one file only: diff's discarding. */
static void mixed_text(struct buf *t, unsigned int lines, const char *tag)
{
	for (unsigned int i = 0; i < lines; i++) {
		if (rnd(3) == 0)
			buf_printf(t, "%c\n", 'a' + rnd(3));
		else if (rnd(2) == 0)
			buf_printf(t, "%s%u\n", tag, rnd(1000000));
		else
			buf_printf(t, "shared%u\n", rnd(40));
	}
}

static void test_random_discards(void)
{
	int bad = 0;

	for (int i = 0; i < 150 && bad < 5; i++) {
		BUF_AUTO a = BUF_INIT;
		BUF_AUTO b = BUF_INIT;
		unsigned int n = 10 + rnd(600);

		mixed_text(&a, n, "old");
		mixed_text(&b, n, "new");
		if (!same_as_gnu_n(buf_str(&a), a.len, buf_str(&b), b.len))
			bad++;
	}
	CHECK_INT(bad, 0);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void numbered_text(struct buf *t, size_t bytes, const char *tag)
{
	for (unsigned int i = 0; t->len < bytes; i++)
		buf_printf(t, "%s line %u of a long spec text\n", tag, i);
}

/* A megabyte with one changed line is found through the common ends. */
static void test_big_one_change(void)
{
	BUF_AUTO a = BUF_INIT;
	BUF_AUTO b = BUF_INIT;
	BUF_AUTO out = BUF_INIT;
	char *mid;
	double t0;

	numbered_text(&a, 1 << 20, "same");
	buf_add(&b, a.data, a.len);
	mid = strstr(b.data + b.len / 2, "same");
	memcpy(mid, "SAME", 4);
	t0 = now();
	diff_unified(a.data, a.len, b.data, b.len, "A", "B", &out);
	CHECK(now() - t0 < 0.5);
	CHECK(same_as_gnu_n(a.data, a.len, b.data, b.len));
}

/* Copies lines of text from *off on, until *line reaches upto. */
static void copy_lines(struct buf *to, const char *text, size_t len,
		       size_t *off, long *line, long upto)
{
	while (*line < upto && *off < len) {
		const char *nl = memchr(text + *off, '\n', len - *off);
		size_t end = nl ? (size_t)(nl - text) + 1 : len;

		buf_add(to, text + *off, end - *off);
		*off = end;
		(*line)++;
	}
}

/*
 * Applies a unified diff to old: what patch(1) would make of it, enough
 * to check that a diff we cannot compare with diff(1) is still right.
 */
static void apply_diff(const char *old, size_t oldlen, const char *diff,
		       struct buf *to)
{
	size_t off = 0;
	long line = 0, start, count;
	char last = 0;
	const char *p = strchr(strchr(diff, '\n') + 1, '\n') + 1;

	while (*p) {
		const char *eol = strchr(p, '\n');

		if (*p == '@') {
			count = 1;
			if (sscanf(p, "@@ -%ld,%ld", &start, &count) < 1)
				break;
			copy_lines(to, old, oldlen, &off, &line,
				   count ? start - 1 : start);
		} else if (*p == ' ') {
			copy_lines(to, old, oldlen, &off, &line, line + 1);
		} else if (*p == '-') {
			struct buf skipped = BUF_INIT;

			copy_lines(&skipped, old, oldlen, &off, &line,
				   line + 1);
			buf_free(&skipped);
		} else if (*p == '+') {
			buf_add(to, p + 1, (size_t)(eol - p));
		} else if (*p == '\\' && last == '+') {
			/* that added line had no newline after all */
			buf_truncate(to, to->len - 1);
		}
		last = *p;
		p = eol + 1;
	}
	copy_lines(to, old, oldlen, &off, &line, LONG_MAX);
}

/* Rewrites too big to search still give a correct diff, quickly. */
static void test_big_rewrite(void)
{
	BUF_AUTO a = BUF_INIT;
	BUF_AUTO b = BUF_INIT;
	BUF_AUTO out = BUF_INIT;
	BUF_AUTO patched = BUF_INIT;
	double t0;

	for (unsigned int i = 0; i < 60000; i++) {
		buf_printf(&a, "k%u\n", rnd(3000));
		buf_printf(&b, "k%u\n", rnd(3000));
	}
	t0 = now();
	diff_unified(a.data, a.len, b.data, b.len, "A", "B", &out);
	CHECK(now() - t0 < 20.0);
	apply_diff(a.data, a.len, out.data, &patched);
	CHECK(patched.len == b.len && memcmp(patched.data, b.data, b.len) == 0);
}

/* The applier itself, on cases diff(1) has vouched for above. */
static void test_apply_small(void)
{
	int bad = 0;

	for (int i = 0; i < 300; i++) {
		BUF_AUTO a = BUF_INIT;
		BUF_AUTO b = BUF_INIT;
		BUF_AUTO out = BUF_INIT;
		BUF_AUTO patched = BUF_INIT;

		random_text(&a, rnd(30), 2 + rnd(5));
		random_text(&b, rnd(30), 2 + rnd(5));
		diff_unified(buf_str(&a), a.len, buf_str(&b), b.len, "A", "B",
			     &out);
		if (!out.len)
			continue;
		apply_diff(buf_str(&a), a.len, out.data, &patched);
		bad += patched.len != b.len ||
		       memcmp(buf_str(&patched), buf_str(&b), b.len) != 0;
	}
	CHECK_INT(bad, 0);
}

static void test_labels(void)
{
	BUF_AUTO out = BUF_INIT;

	diff_unified("a\n", 2, "b\n", 2, "spec@1", "spec@2", &out);
	CHECK_STR(buf_str(&out),
		  "--- spec@1\n+++ spec@2\n@@ -1 +1 @@\n-a\n+b\n");
	buf_truncate(&out, 0);
	diff_unified("same\n", 5, "same\n", 5, "x", "y", &out);
	CHECK_INT(out.len, 0);
}

static void remove_tmpdir(void)
{
	static const char *const names[] = { "a", "b" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		AUTOFREE char *p = path_in_tmp(names[i]);

		unlink(p);
	}
	rmdir(tmpdir);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	test_labels();
	test_edges();
	test_random_small();
	test_random_large();
	test_random_discards();
	test_big_one_change();
	test_apply_small();
	test_big_rewrite();
	remove_tmpdir();
	return check_report("diff");
}
