// SPDX-License-Identifier: MIT
/*
 * A fuzz target for the spec language (spec/): every public entry point
 * is fed the same hostile bytes, and the answers are checked against each
 * other, so that a wrong answer fails as loudly as a crash.
 *
 * An input is one selector byte, then a text, then optionally 0xFF and a
 * value:
 *     byte 0         kind = byte & 3 (pool, endpoint, config, policy),
 *                    field = (byte >> 2) % the kind's field count
 *     TEXT           a whole spec, key = value or JSON
 *     0xFF VALUE     split at the last 0xFF: a field file's value
 * One target rather than one per entry point because the entry points
 * share one reader and the most useful checks compare them on one text.
 * 0xFF is never valid UTF-8, so no valid spec loses a byte to the split.
 *
 * What must hold, beyond no crash, no leak and no undefined behaviour:
 *  - every error message is valid UTF-8 without control characters (it
 *    is shown as one line of a status file);
 *  - spec_check_lines() over the whole text, or over it in pieces as
 *    write(2) delivers them, fails exactly where spec_parse() fails;
 *  - a parsed spec, rendered as JSON and parsed again, has the same
 *    effective values; so has the text with one field rewritten to the
 *    value its field file shows;
 *  - spec_set_field() with a value leaves a text that parses, where the
 *    field reads as it does alone in a text and every other field reads
 *    as it did.
 *
 * Built with libFuzzer under clang (meson -Dfuzz=true), and with a small
 * main (replay.c) in every build, which replays the seed corpus and the
 * regressions; see tests/fuzz/README.
 */
#include "spec/lex.h"
#include "spec/spec.h"
#include "util/text.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SPLIT_BYTE 0xff

#define REQUIRE(cond)                                                  \
	do {                                                           \
		if (!(cond)) {                                         \
			fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", \
				__FILE__, __LINE__, #cond);            \
			abort();                                       \
		}                                                      \
	} while (0)

static const struct kind_def *const kinds[] = { &kind_pool, &kind_endpoint,
						&kind_config, &kind_policy };

struct input {
	const struct kind_def *k;
	const struct field_def *f;
	const char *text;
	size_t len;
	const char *value; /* NULL when the input has no 0xFF */
	size_t vlen;
};

static void input_split(const uint8_t *data, size_t size, struct input *in)
{
	const char *rest = (const char *)data + 1;
	size_t n = size - 1;
	const char *split = memrchr(rest, SPLIT_BYTE, n);

	in->k = kinds[data[0] & 3];
	in->f = &in->k->fields[(data[0] >> 2) % in->k->nfields];
	in->text = rest;
	in->len = split ? (size_t)(split - rest) : n;
	in->value = split ? split + 1 : NULL;
	in->vlen = split ? n - in->len - 1 : 0;
}

/* Text meant for one line of a status file: UTF-8, no control bytes. */
static void require_one_line(const char *s, size_t n)
{
	REQUIRE(utf8_invalid_at(s, n) < 0);
	for (size_t i = 0; i < n; i++)
		REQUIRE((unsigned char)s[i] >= 0x20 && s[i] != 0x7f);
}

static void require_error(int rc, const struct spec_error *err)
{
	REQUIRE(rc == -EINVAL);
	REQUIRE(memchr(err->msg, '\0', sizeof(err->msg)));
	REQUIRE(memchr(err->key, '\0', sizeof(err->key)));
	REQUIRE(err->msg[0]);
	require_one_line(err->msg, strlen(err->msg));
	require_one_line(err->key, strlen(err->key));
}

static int parse(const struct input *in, const char *text, size_t len,
		 struct spec **s, struct spec_error *err)
{
	int rc = spec_parse(in->k, text, len, s, err);

	if (rc)
		require_error(rc, err);
	REQUIRE(!rc == !!*s);
	return rc;
}

/* What the field file of f shows. The caller frees it. */
static char *field_text(const struct spec *s, const struct field_def *f)
{
	struct buf b = BUF_INIT;

	spec_field_text(s, f, &b);
	REQUIRE(utf8_invalid_at(b.data ? b.data : "", b.len) < 0);
	REQUIRE(!b.len || b.data[b.len - 1] == '\n');
	return buf_steal(&b);
}

static bool same_values(const struct spec *a, const struct spec *b)
{
	json_t *ja = spec_to_json(a);
	json_t *jb = spec_to_json(b);
	bool same = json_equal(ja, jb);

	json_decref(ja);
	json_decref(jb);
	return same;
}

/* The same text checked in pieces: it must fail where it fails whole. */
static void check_pieces(const struct input *in, int whole,
			 const struct spec_error *whole_err)
{
	size_t piece = 1 + (in->len ? (unsigned char)in->text[0] % 16 : 0);
	struct spec_error err = { 0 };
	int rc = 0;

	for (size_t at = 0; at < in->len && !rc; at += piece)
		rc = spec_check_lines(in->k, in->text, in->len, at, at + piece,
				      &err);
	REQUIRE(rc == whole);
	if (rc)
		REQUIRE(strcmp(err.msg, whole_err->msg) == 0);
}

/* Write(2)'s checks agree with close(2)'s parse on the same lines. */
static void check_lines(const struct input *in, int parse_rc,
			const struct spec_error *parse_err)
{
	struct spec_error err = { 0 };
	int rc = spec_check_lines(in->k, in->text, in->len, 0, in->len, &err);

	if (rc)
		require_error(rc, &err);
	if (opens_json(in->text, in->len)) {
		REQUIRE(rc == 0);
		return;
	}
	/* A line that fails alone fails the whole text with its message. */
	if (rc) {
		REQUIRE(parse_rc);
		REQUIRE(strcmp(err.msg, parse_err->msg) == 0);
	}
	check_pieces(in, rc, &err);
}

/* The effective values as JSON read back as the same values. */
static void check_json_round_trip(const struct input *in, const struct spec *s)
{
	json_t *j = spec_to_json(s);
	char *text = json_dumps(j, JSON_COMPACT);
	struct spec_error err = { 0 };
	struct spec *again = NULL;

	REQUIRE(text);
	REQUIRE(parse(in, text, strlen(text), &again, &err) == 0);
	REQUIRE(same_values(s, again));
	spec_free(again);
	free(text);
	json_decref(j);
}

/* Whether some line of text has a comment that line reading would drop. */
static bool has_comment(const char *text)
{
	for (const char *p = text; *p; p++) {
		if (*p == '#' && (p == text || strchr(" \t\n", p[-1])))
			return true;
	}
	return false;
}

/* Writing back what f's field file shows changes no effective value. */
static void check_field_round_trip(const struct input *in, const struct spec *s)
{
	char *shown = field_text(s, in->f);
	struct spec_error err = { 0 };
	struct buf out = BUF_INIT;
	struct spec *again = NULL;
	int rc = spec_set_field(in->k, in->text, in->len, in->f, shown,
				strlen(shown), &out, &err);

	if (rc)
		require_error(rc, &err);
	/* A map value with " #" reads as a comment in a map's field file:
	 * that is the field file's syntax, so it does not round-trip. */
	if (!rc && !has_comment(shown)) {
		REQUIRE(parse(in, buf_str(&out), out.len, &again, &err) == 0);
		REQUIRE(same_values(s, again));
		spec_free(again);
	}
	buf_free(&out);
	free(shown);
}

/*
 * The same edit made again changes nothing. Lines of a text that is not
 * a spec may be left to open with '{' once the field's lines are gone:
 * the next edit reads that as JSON, which is fair.
 */
static void require_idempotent(const struct input *in, const struct buf *once)
{
	struct buf twice = BUF_INIT;

	if (opens_json(buf_str(once), once->len))
		return;
	REQUIRE(spec_set_field(in->k, buf_str(once), once->len, in->f,
			       in->value, in->vlen, &twice, NULL) == 0);
	REQUIRE(twice.len == once->len &&
		memcmp(buf_str(&twice), buf_str(once), once->len) == 0);
	buf_free(&twice);
}

/*
 * Sets f to the input's value in text. Returns 1 and *s parsed from the
 * result when the edit was made and the result parses, 0 when the edit
 * was refused, -1 when the result does not parse.
 */
static int edit(const struct input *in, const char *text, size_t len,
		struct spec **s)
{
	struct spec_error err = { 0 };
	struct buf out = BUF_INIT;
	int rc = spec_set_field(in->k, text, len, in->f, in->value, in->vlen,
				&out, &err);
	int made = 0;

	*s = NULL;
	if (rc) {
		require_error(rc, &err);
	} else {
		require_idempotent(in, &out);
		made = parse(in, buf_str(&out), out.len, s, &err) ? -1 : 1;
	}
	buf_free(&out);
	return made;
}

static void require_same_field(const struct spec *a, const struct spec *b,
			       const struct field_def *f)
{
	bool set = spec_field_set(a, f->name);
	char *ta, *tb;

	REQUIRE(set == spec_field_set(b, f->name));
	if (!set)
		return;
	ta = field_text(a, f);
	tb = field_text(b, f);
	REQUIRE(strcmp(ta, tb) == 0);
	free(ta);
	free(tb);
}

/*
 * An edit of a valid spec gives a valid spec in which the field reads as
 * the value alone would, and every other field as it did. Only a JSON
 * spec may refuse it: it holds values the line form cannot.
 */
static void check_edit_of(const struct input *in, const struct spec *s,
			  const struct spec *alone)
{
	struct spec *edited;
	int rc = edit(in, in->text, in->len, &edited);

	REQUIRE(rc >= 0);
	if (!rc) {
		REQUIRE(opens_json(in->text, in->len));
		return;
	}
	for (size_t i = 0; i < in->k->nfields; i++) {
		const struct field_def *g = &in->k->fields[i];

		require_same_field(g == in->f ? alone : s, edited, g);
	}
	spec_free(edited);
}

static void check_edit(const struct input *in, const struct spec *s)
{
	struct spec_error err = { 0 };
	int checked = spec_check_value(in->f, in->value, in->vlen, &err);
	struct spec *alone;

	if (checked)
		require_error(checked, &err);
	/* A value that passes its check makes a valid spec on its own. */
	REQUIRE(edit(in, "", 0, &alone) == !checked);
	if (alone && s)
		check_edit_of(in, s, alone);
	spec_free(alone);
	/* An edit of a text that does not parse may give anything, but must
	 * not crash or leak. */
	if (!s) {
		struct spec *any;

		edit(in, in->text, in->len, &any);
		spec_free(any);
	}
}

static void check_parsed(const struct input *in, const struct spec *s)
{
	struct spec_error err = { 0 };
	int rc = spec_check_rules(s, &err);

	if (rc)
		require_error(rc, &err);
	for (size_t i = 0; i < in->k->nfields; i++)
		free(field_text(s, &in->k->fields[i]));
	check_json_round_trip(in, s);
	check_field_round_trip(in, s);
}

/* kinds/NAME does not depend on input; render each once to cover it. */
static void check_docs(void)
{
	static bool done;

	if (done)
		return;
	done = true;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		struct buf b = BUF_INIT;

		kind_render_doc(kinds[i], &b);
		REQUIRE(b.len && utf8_invalid_at(b.data, b.len) < 0);
		buf_free(&b);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spec_error err = { 0 };
	struct spec *s = NULL;
	struct input in;
	int rc;

	check_docs();
	if (!size)
		return 0;
	input_split(data, size, &in);
	rc = parse(&in, in.text, in.len, &s, &err);
	check_lines(&in, rc, &err);
	if (s)
		check_parsed(&in, s);
	if (in.value)
		check_edit(&in, s);
	spec_free(s);
	return 0;
}
