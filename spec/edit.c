// SPDX-License-Identifier: MIT
/*
 * Rewriting one field of a spec text the way a person would with an
 * editor: the rest of the text, comments and line ends included, stays as
 * it was, so that `echo 4 > nodes` leaves a commented spec readable.
 */
#include "spec.h"

#include "lex.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>


/* One line of the text, split as spec/parse.c reads it. */
struct line {
	const char *start;
	size_t len; /* without the line end */
	bool crlf;
	struct span key; /* n is 0 when the line assigns nothing */
	struct span val;
	bool comment;
	size_t tail; /* offset of the blanks and comment after the value */
};



/* The comment rule of spec/parse.c: '#' at the start or after a blank. */

static int fail(struct spec_error *err, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct spec_error *err, const char *key, const char *fmt, ...)
{
	va_list ap;
	int off;

	if (!err)
		return -EINVAL;
	err->line = 0;
	snprintf(err->key, sizeof(err->key), "%s", key);
	off = snprintf(err->msg, sizeof(err->msg), "%.64s: ", key);
	va_start(ap, fmt);
	vsnprintf(err->msg + off, sizeof(err->msg) - (size_t)off, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Reads the line at text[pos]; returns where the next one starts. */
static size_t line_read(const char *text, size_t len, size_t pos,
			struct line *l)
{
	const char *nl = memchr(text + pos, '\n', len - pos);
	size_t end = nl ? (size_t)(nl - text) : len;
	const char *eq;
	size_t c;

	memset(l, 0, sizeof(*l));
	l->start = text + pos;
	l->len = end - pos;
	if (l->len && l->start[l->len - 1] == '\r') {
		l->crlf = true;
		l->len--;
	}
	c = comment_at(l->start, l->len);
	l->comment = c < l->len;
	eq = memchr(l->start, '=', c);
	if (eq) {
		l->key = trim(l->start, (size_t)(eq - l->start));
		l->val = trim(eq + 1, (size_t)(l->start + c - eq - 1));
		/* The blanks of an empty value stay with the comment after
		 * it: without them the comment would join the new value. */
		l->tail = l->val.n ? (size_t)(l->val.p + l->val.n - l->start)
				   : (size_t)(eq + 1 - l->start);
	}
	return nl ? end + 1 : len;
}

/* Whether a line assigns f: `nodes = 4`, or for a map any `labels.x = y`. */
static bool line_assigns(const struct line *l, const struct field_def *f)
{
	size_t n = strlen(f->name);

	if (l->key.n < n || memcmp(l->key.p, f->name, n) != 0)
		return false;
	if (l->key.n == n)
		return true;
	return f->type == FT_MAP && l->key.p[n] == '.';
}

/*
 * The assignment lines that give f its new value, each ending in '\n'.
 * A map's value is KEY = VALUE lines; an empty VALUE unsets KEY, which
 * in a whole new map is the same as leaving it out.
 */
static void new_lines(const struct field_def *f, const char *value, size_t vlen,
		      struct buf *out)
{
	struct span v = trim(value, vlen);
	size_t pos = 0;

	if (f->type != FT_MAP) {
		if (v.n)
			buf_printf(out, "%s = %.*s\n", f->name, (int)v.n, v.p);
		return;
	}
	while (pos < vlen) {
		struct line l;

		pos = line_read(value, vlen, pos, &l);
		if (l.key.n && l.val.n)
			buf_printf(out, "%s.%.*s = %.*s\n", f->name,
				   (int)l.key.n, l.key.p, (int)l.val.n,
				   l.val.p);
	}
}

/*
 * Puts the new lines where the old assignment was. Its line end carries
 * over, and so does its comment when one line replaces one line.
 */
static void replace_line(const struct line *l, const struct buf *repl,
			 struct buf *out)
{
	bool one = repl->len && !memchr(repl->data, '\n', repl->len - 1);
	size_t pos = 0;

	while (pos < repl->len) {
		const char *nl =
			memchr(repl->data + pos, '\n', repl->len - pos);
		size_t n = (size_t)(nl - repl->data) - pos;

		buf_add(out, repl->data + pos, n);
		if (one && l->comment)
			buf_add(out, l->start + l->tail, l->len - l->tail);
		buf_adds(out, l->crlf ? "\r\n" : "\n");
		pos += n + 1;
	}
}

static void end_line(struct buf *out, size_t start)
{
	if (out->len > start && out->data[out->len - 1] != '\n')
		buf_addc(out, '\n');
}

static void rewrite(const char *text, size_t len, const struct field_def *f,
		    const struct buf *repl, struct buf *out)
{
	size_t start = out->len;
	bool placed = false;
	size_t pos = 0;

	while (pos < len) {
		struct line l;
		size_t next = line_read(text, len, pos, &l);
		bool assigns = line_assigns(&l, f);

		if (!assigns)
			buf_add(out, text + pos, next - pos);
		else if (!placed)
			replace_line(&l, repl, out);
		placed |= assigns;
		pos = next;
	}
	if (!placed) {
		end_line(out, start);
		buf_add(out, repl->data, repl->len);
	}
	end_line(out, start);
}

/* A value that cannot be written after `key = ` without turning into a
 * comment: JSON can hold it, the line form cannot. */
static int line_safe(const char *key, const char *value, struct spec_error *err)
{
	size_t n = strlen(value);

	if (comment_at(value, n) == n)
		return 0;
	return fail(err, key,
		    "the value has a '#' at its start or after a space, which "
		    "a key = value line would read as a comment");
}

static int pairs_to_lines(const struct field_def *f, const struct spec_value *v,
			  struct buf *out, struct spec_error *err)
{
	for (size_t i = 0; i < v->npairs; i++) {
		const struct spec_pair *p = &v->pairs[i];
		int rc = line_safe(f->name, p->value, err);

		if (rc)
			return rc;
		buf_printf(out, "%s.%s = %s\n", f->name, p->key, p->value);
	}
	return 0;
}

/*
 * JSON text as key = value lines, in schema order. The field about to be
 * replaced is left out, so that a value of it the line form cannot hold
 * does not stand in the way of replacing it.
 */
static int json_to_lines(const struct kind_def *k, const char *text, size_t len,
			 const struct field_def *skip, struct buf *out,
			 struct spec_error *err)
{
	SPEC_AUTO *s = NULL;
	int rc = spec_parse(k, text, len, &s, err);

	for (size_t i = 0; !rc && i < k->nfields; i++) {
		const struct field_def *f = &k->fields[i];
		const struct spec_value *v = &s->v[i];

		if (!v->set || strcmp(f->name, skip->name) == 0)
			continue;
		if (f->type == FT_MAP) {
			rc = pairs_to_lines(f, v, out, err);
			continue;
		}
		rc = line_safe(f->name, v->text, err);
		if (!rc)
			buf_printf(out, "%s = %s\n", f->name, v->text);
	}
	return rc;
}

int spec_set_field(const struct kind_def *k, const char *text, size_t len,
		   const struct field_def *f, const char *value, size_t vlen,
		   struct buf *out, struct spec_error *err)
{
	BUF_AUTO lines = BUF_INIT;
	BUF_AUTO repl = BUF_INIT;
	int rc = spec_check_value(f, value, vlen, err);

	if (rc)
		return rc;
	if (opens_json(text, len)) {
		rc = json_to_lines(k, text, len, f, &lines, err);
		if (rc)
			return rc;
		text = buf_str(&lines);
		len = lines.len;
	}
	new_lines(f, value, vlen, &repl);
	rewrite(text, len, f, &repl, out);
	return 0;
}
