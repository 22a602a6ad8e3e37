// SPDX-License-Identifier: MIT
/*
 * kinds/NAME: a kind's schema as a page a person reads, laid out like the
 * OPTIONS section of a man page and wrapped to fit a terminal.
 */
#include "spec.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define PAGE_WIDTH 78
#define NAME_INDENT 4
#define TEXT_INDENT 8

static void indent(struct buf *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf_addc(out, ' ');
}

/* Fills lines of at most width columns with the words of text. */
static void wrap(struct buf *out, const char *text, size_t margin, size_t width)
{
	size_t col = 0;
	const char *p = text;

	for (;;) {
		size_t n;

		p += strspn(p, " ");
		if (!*p)
			break;
		n = strcspn(p, " ");
		if (col && col + 1 + n > width) {
			buf_addc(out, '\n');
			col = 0;
		}
		if (col) {
			buf_addc(out, ' ');
			col++;
		} else {
			indent(out, margin);
			col = margin;
		}
		buf_add(out, p, n);
		col += n;
		p += n;
	}
	if (col)
		buf_addc(out, '\n');
}

static void add_words(struct buf *out, const char *const *words)
{
	for (size_t i = 0; words[i]; i++)
		buf_printf(out, "%s%s", i ? ", " : "", words[i]);
}

static void int_type(const struct field_def *f, struct buf *out)
{
	if (f->max == INT64_MAX)
		buf_printf(out, "integer >= %" PRId64, f->min);
	else
		buf_printf(out, "integer %" PRId64 "..%" PRId64, f->min,
			   f->max);
}

static void type_text(const struct field_def *f, struct buf *out)
{
	switch (f->type) {
	case FT_INT:
		int_type(f, out);
		return;
	case FT_NUMBER:
		buf_printf(out, "number %s %g",
			   f->nmin_exclusive ? ">" : ">=", f->nmin);
		return;
	case FT_ENUM:
		buf_adds(out, "one of: ");
		add_words(out, f->choices);
		return;
	case FT_STRING:
		buf_adds(out, "text");
		return;
	case FT_URI:
		buf_adds(out, "URI (");
		add_words(out, f->choices);
		buf_adds(out, ")");
		return;
	case FT_NAME:
		buf_adds(out, "name: lowercase letters, digits and '-', at "
			      "most 63");
		return;
	case FT_LIST:
		buf_adds(out,
			 f->choices ? "list of: " : "list, comma-separated");
		if (f->choices)
			add_words(out, f->choices);
		return;
	case FT_MAP:
		buf_printf(out, "map: %s.KEY = value", f->name);
		return;
	}
}

/* The length limits of text fields, after their type. */
static void limit_text(const struct field_def *f, struct buf *out)
{
	if (f->max_key_len)
		buf_printf(out, "; KEY at most %zu bytes", f->max_key_len);
	if (f->max_len)
		buf_printf(out, "%s at most %zu bytes",
			   f->type == FT_MAP ? ", value" : ",", f->max_len);
}

static void default_text(const struct field_def *f, struct buf *out)
{
	if (f->def)
		buf_printf(out, "default: %s", f->def);
	else if (f->def_from)
		buf_printf(out, "default: = %s", f->def_from);
	else if (f->def_doc)
		buf_printf(out, "default: %s", f->def_doc);
}

static void field_doc(const struct field_def *f, struct buf *out)
{
	BUF_AUTO line = BUF_INIT;

	indent(out, NAME_INDENT);
	buf_printf(out, "%s\n", f->name);
	type_text(f, &line);
	limit_text(f, &line);
	wrap(out, buf_str(&line), TEXT_INDENT, PAGE_WIDTH);
	buf_truncate(&line, 0);
	default_text(f, &line);
	wrap(out, buf_str(&line), TEXT_INDENT, PAGE_WIDTH);
	wrap(out, f->help, TEXT_INDENT, PAGE_WIDTH);
}

static bool has_type(const struct kind_def *k, enum field_type t)
{
	for (size_t i = 0; i < k->nfields; i++) {
		if (k->fields[i].type == t)
			return true;
	}
	return false;
}

/* How to write the kind: a resource has a folder with a file per field,
 * config and policy are one file each. */
static void usage_text(const struct kind_def *k, struct buf *out)
{
	if (k->dir)
		buf_printf(out,
			   "Write ENV/%s/NAME/spec as one key = value per "
			   "line, or as one JSON object with the same keys; "
			   "or write one value to the field file "
			   "ENV/%s/NAME/FIELD.",
			   k->dir, k->dir);
	else
		buf_printf(out,
			   "Write ENV/%s as one key = value per line, or as "
			   "one JSON object with the same keys.",
			   k->name);
	buf_adds(out, " A '#' at the start of a line or after a space starts "
		      "a comment.");
	if (has_type(k, FT_LIST))
		buf_adds(out, " Lists are comma-separated.");
	if (has_type(k, FT_MAP))
		buf_adds(out,
			 " A map takes one FIELD.KEY = value line per key.");
	if (has_type(k, FT_MAP) && k->dir)
		buf_adds(out, " The field file of a map holds KEY = value "
			      "lines.");
	buf_adds(out, " A later assignment wins; a field left out takes its "
		      "default, and an empty value (key =) is the same as "
		      "leaving the field out.");
}

void kind_render_doc(const struct kind_def *k, struct buf *out)
{
	BUF_AUTO usage = BUF_INIT;

	buf_printf(out, "%s - %s\n\n", k->name, k->summary);
	usage_text(k, &usage);
	wrap(out, buf_str(&usage), 0, PAGE_WIDTH);
	buf_adds(out, "\nFIELDS\n");
	for (size_t i = 0; i < k->nfields; i++) {
		buf_addc(out, '\n');
		field_doc(&k->fields[i], out);
	}
}
