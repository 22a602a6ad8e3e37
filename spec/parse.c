// SPDX-License-Identifier: MIT
/*
 * The spec language's reader. Both forms, key = value lines and a JSON
 * object, are turned into one stream of assignments (a resolved key, its
 * value text, its line), so that one set of checks serves spec_parse(),
 * spec_check_lines() and spec_check_value() alike.
 */
#include "spec.h"

#include "lex.h"

#include "util/map.h"
#include "util/text.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How much of a bad value or key an error message quotes, in bytes; each
 * byte may take four once escaped. */
#define QUOTE_MAX 64
#define QUOTE_SIZE (4 * QUOTE_MAX + 8)

static const struct span no_key;

/*
 * One assignment, from a line or from a JSON member. key is the whole key
 * as written ("labels.team"); for a map field mkey is the part after the
 * dot and dotted is set.
 */
struct assign {
	const struct field_def *f;
	struct span key;
	struct span mkey;
	bool dotted;
	struct span val;
	unsigned line;
};

typedef int (*assign_fn)(void *ctx, const struct assign *a,
			 struct spec_error *err);

static struct span span_of(const char *s)
{
	return (struct span){ s, strlen(s) };
}

static bool span_eq(struct span s, const char *word)
{
	return strlen(word) == s.n && memcmp(s.p, word, s.n) == 0;
}

/* Shortens n to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
	if (n <= max)
		return n;
	n = max;
	while (n && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

/*
 * What the user wrote, for a message: shortened when long, and escaped,
 * because messages become lines of status and events.
 */
static void shown(struct buf *out, struct span s)
{
	size_t n = utf8_cut(s.p, s.n, QUOTE_MAX);

	text_escape(out, s.p, n, 0);
	if (n < s.n)
		buf_adds(out, "...");
}

/* Quotes what the user wrote for a message, as shown() shows it. */
static const char *quote(char out[QUOTE_SIZE], struct span s)
{
	BUF_AUTO text = BUF_INIT;

	shown(&text, s);
	snprintf(out, QUOTE_SIZE, "\"%s\"", buf_str(&text));
	return out;
}

/*
 * Copies text, escaped, into a fixed field of err, cut at a whole UTF-8
 * character. A message quotes what the user wrote and ends up as one line
 * of a status file and of events: a raw newline there would let a spec
 * forge the lines after it. Escaping what shown() escaped already changes
 * nothing, so the whole message can pass here.
 */
static void copy_escaped(char *out, size_t size, const char *text, size_t len)
{
	BUF_AUTO esc = BUF_INIT;
	size_t n;

	text_escape(&esc, text, len, 0);
	n = utf8_cut(buf_str(&esc), esc.len, size - 1);
	memcpy(out, buf_str(&esc), n);
	out[n] = '\0';
}

/*
 * Fills err as "line N: KEY: what", leaving out the line when it is 0 and
 * the key when there is none. Always returns -EINVAL.
 */
static int fail(struct spec_error *err, unsigned line, struct span key,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(struct spec_error *err, unsigned line, struct span key,
		const char *fmt, ...)
{
	BUF_AUTO raw = BUF_INIT;
	va_list ap;

	if (!err)
		return -EINVAL;
	err->line = line;
	copy_escaped(err->key, sizeof(err->key), key.p ? key.p : "", key.n);
	if (line)
		buf_printf(&raw, "line %u: ", line);
	if (key.n) {
		shown(&raw, key);
		buf_adds(&raw, ": ");
	}
	va_start(ap, fmt);
	buf_vprintf(&raw, fmt, ap);
	va_end(ap);
	copy_escaped(err->msg, sizeof(err->msg), buf_str(&raw), raw.len);
	return -EINVAL;
}

/* Writes "a, b, c" or, with a last_sep of " or ", "a, b or c". */
static const char *join(char *out, size_t size, const char *const *words,
			const char *last_sep)
{
	size_t off = 0;

	out[0] = '\0';
	for (size_t i = 0; words[i] && off < size; i++) {
		const char *sep = !i ? "" : words[i + 1] ? ", " : last_sep;

		off += (size_t)snprintf(out + off, size - off, "%s%s", sep,
					words[i]);
	}
	return out;
}

static bool in_words(const char *const *words, struct span s)
{
	for (size_t i = 0; words[i]; i++) {
		if (span_eq(s, words[i]))
			return true;
	}
	return false;
}

static size_t count_lines(const char *p, size_t n)
{
	const char *end = p + n;
	size_t count = 0;

	while ((p = memchr(p, '\n', (size_t)(end - p)))) {
		count++;
		p++;
	}
	return count;
}

/* Returns the offset of a NUL byte or of bad UTF-8 and says which, or -1. */
static long bad_byte_at(const char *p, size_t n, const char **what)
{
	const char *nul = memchr(p, '\0', n);
	long bad = utf8_invalid_at(p, nul ? (size_t)(nul - p) : n);

	if (bad >= 0) {
		*what = "invalid UTF-8";
		return bad;
	}
	*what = "NUL byte";
	return nul ? nul - p : -1;
}

/*
 * A '#' starts a comment only at the start of a line or after white
 * space, so that image = repo/x#1 and URI fragments keep their '#'.
 * spec/edit.c applies the same rule.
 */

/* ---- Keys ---- */

static bool label_key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '/' ||
	       c == '-';
}

static bool label_key_ok(struct span s)
{
	for (size_t i = 0; i < s.n; i++) {
		if (!label_key_char(s.p[i]))
			return false;
	}
	return s.n > 0;
}

static bool env_name_ok(struct span s)
{
	for (size_t i = 0; i < s.n; i++) {
		char c = s.p[i];
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     c == '_';

		if (!alpha && (i == 0 || c < '0' || c > '9'))
			return false;
	}
	return s.n > 0;
}

static bool setting_key_ok(struct span s)
{
	for (size_t i = 0; i < s.n; i++) {
		char c = s.p[i];

		if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') &&
		    c != '_' && c != '.' && c != '-')
			return false;
	}
	return s.n > 0;
}

/*
 * What the keys of each map may be. The schema has no slot for this, and
 * the maps are few: labels follow cloud tag rules, env is passed to a
 * shell, and every other map (the provider settings of config) is
 * lowercase.
 */
struct map_rule {
	const char *field; /* NULL: every other map */
	bool (*ok)(struct span key);
	const char *placeholder;
	const char *what;
};

static const struct map_rule map_rules[] = {
	{ "labels", label_key_ok, "KEY",
	  "KEY of letters, digits, '.', '_', '/' and '-'" },
	{ "env", env_name_ok, "NAME", "NAME a shell variable name" },
	{ NULL, setting_key_ok, "KEY",
	  "KEY of lowercase letters, digits, '_', '.' and '-'" },
};

static const struct map_rule *map_rule_of(const struct field_def *f)
{
	const struct map_rule *r = map_rules;

	while (r->field && strcmp(r->field, f->name) != 0)
		r++;
	return r;
}

static const char env_reserved_rule[] =
	"env.* cannot set PORT, CUDA_VISIBLE_DEVICES or INFRAFS_*, which "
	"infrafs sets itself";

bool spec_env_name_reserved(const char *name, size_t n)
{
	static const char *const names[] = { "PORT", "CUDA_VISIBLE_DEVICES",
					     NULL };

	if (n >= 8 && !memcmp(name, "INFRAFS_", 8))
		return true;
	for (size_t i = 0; names[i]; i++) {
		if (strlen(names[i]) == n && !memcmp(name, names[i], n))
			return true;
	}
	return false;
}

static int map_key_check(const struct assign *a, struct spec_error *err)
{
	const struct map_rule *r = map_rule_of(a->f);
	char q[QUOTE_SIZE];

	if (a->f->max_key_len && a->mkey.n > a->f->max_key_len)
		return fail(err, a->line, a->key,
			    "%s longer than %zu bytes (the limit), got %zu",
			    r->placeholder, a->f->max_key_len, a->mkey.n);
	if (!r->ok(a->mkey))
		return fail(err, a->line, a->key,
			    "expected %s.%s with %s, got %s", a->f->name,
			    r->placeholder, r->what, quote(q, a->mkey));
	if (!strcmp(a->f->name, "env") &&
	    spec_env_name_reserved(a->mkey.p, a->mkey.n))
		return fail(err, a->line, a->key, "%s", env_reserved_rule);
	return 0;
}

static int unknown_key(const struct kind_def *k, const struct assign *a,
		       struct spec_error *err)
{
	BUF_AUTO keys = BUF_INIT;

	for (size_t i = 0; i < k->nfields; i++) {
		const struct field_def *f = &k->fields[i];

		buf_printf(&keys, "%s%s%s", i ? ", " : "", f->name,
			   f->type == FT_MAP ? ".KEY" : "");
	}
	return fail(err, a->line, a->key, "unknown key; %s keys are %s",
		    k->name, buf_str(&keys));
}

/* Finds the field a key names and checks a map key after the dot. */
static int key_resolve(const struct kind_def *k, struct assign *a,
		       struct spec_error *err)
{
	const char *dot = memchr(a->key.p, '.', a->key.n);
	size_t flen = dot ? (size_t)(dot - a->key.p) : a->key.n;

	a->f = kind_field(k, a->key.p, flen);
	if (!a->f || (dot && a->f->type != FT_MAP))
		return unknown_key(k, a, err);
	a->dotted = dot != NULL;
	if (!dot)
		return 0;
	a->mkey = (struct span){ dot + 1, a->key.n - flen - 1 };
	return map_key_check(a, err);
}

/* ---- Values ---- */

static bool int_text(struct span s, int64_t *out)
{
	char num[32];
	size_t i = 0;
	long long v;

	if (s.n && (s.p[0] == '+' || s.p[0] == '-'))
		i++;
	if (i == s.n || s.n >= sizeof(num))
		return false;
	for (; i < s.n; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return false;
	}
	memcpy(num, s.p, s.n);
	num[s.n] = '\0';
	errno = 0;
	v = strtoll(num, NULL, 10);
	if (errno == ERANGE)
		return false;
	*out = v;
	return true;
}

/* Plain decimal notation only: strtod's hex, inf and nan are not numbers. */
static bool number_text(struct span s, double *out)
{
	char num[64];
	char *end;
	bool digit = false;

	if (!s.n || s.n >= sizeof(num))
		return false;
	for (size_t i = 0; i < s.n; i++) {
		if (!s.p[i] || !strchr("0123456789+-.eE", s.p[i]))
			return false;
		digit |= s.p[i] >= '0' && s.p[i] <= '9';
	}
	memcpy(num, s.p, s.n);
	num[s.n] = '\0';
	*out = strtod(num, &end);
	return digit && *end == '\0' && isfinite(*out);
}

/* Digits before the point, at most the 17 a double can tell apart. */
static int whole_digits(double d)
{
	int n = 1;

	for (d = fabs(d); d >= 10 && n < 17; d /= 10)
		n++;
	return n;
}

/*
 * The shortest text that reads back as the same double, in plain notation
 * for whole numbers a person would write out (1000, not 1e+03).
 */
static void number_format(char out[32], double d)
{
	int prec = 1;

	for (; prec < 17; prec++) {
		snprintf(out, 32, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			break;
	}
	if (prec < whole_digits(d))
		prec = whole_digits(d);
	snprintf(out, 32, "%.*g", prec, d);
}

static int int_parse(const struct assign *a, struct spec_value *v,
		     struct spec_error *err)
{
	const struct field_def *f = a->f;
	char q[QUOTE_SIZE];
	char range[64];
	int64_t i;

	if (int_text(a->val, &i) && i >= f->min && i <= f->max) {
		if (v)
			v->i = i;
		return 0;
	}
	if (f->max == INT64_MAX)
		snprintf(range, sizeof(range), ">= %" PRId64, f->min);
	else
		snprintf(range, sizeof(range), "from %" PRId64 " to %" PRId64,
			 f->min, f->max);
	return fail(err, a->line, a->key, "expected an integer %s, got %s",
		    range, quote(q, a->val));
}

static int number_parse(const struct assign *a, struct spec_value *v,
			struct spec_error *err)
{
	const struct field_def *f = a->f;
	char q[QUOTE_SIZE];
	char min[32];
	double d;

	if (number_text(a->val, &d) &&
	    (f->nmin_exclusive ? d > f->nmin : d >= f->nmin)) {
		if (v)
			v->d = d;
		return 0;
	}
	number_format(min, f->nmin);
	return fail(err, a->line, a->key, "expected a number %s %s, got %s",
		    f->nmin_exclusive ? ">" : ">=", min, quote(q, a->val));
}

static int enum_parse(const struct assign *a, struct spec_error *err)
{
	char q[QUOTE_SIZE];
	char words[512];

	if (in_words(a->f->choices, a->val))
		return 0;
	return fail(err, a->line, a->key, "expected one of %s, got %s",
		    join(words, sizeof(words), a->f->choices, ", "),
		    quote(q, a->val));
}

static int uri_parse(const struct assign *a, struct spec_error *err)
{
	const char *const *scheme = a->f->choices;
	char q[QUOTE_SIZE];
	char words[256];

	for (; *scheme; scheme++) {
		size_t n = strlen(*scheme);
		bool blank = false;

		if (a->val.n <= n || memcmp(a->val.p, *scheme, n) != 0)
			continue;
		for (size_t i = 0; i < a->val.n; i++)
			blank |= is_space(a->val.p[i]);
		if (!blank)
			return 0;
	}
	return fail(err, a->line, a->key,
		    "expected a URI starting with %s, got %s",
		    join(words, sizeof(words), a->f->choices, " or "),
		    quote(q, a->val));
}

static int name_parse(const struct assign *a, struct spec_error *err)
{
	char name[NAME_MAX_LEN + 1];
	char q[QUOTE_SIZE];

	if (a->val.n < sizeof(name)) {
		memcpy(name, a->val.p, a->val.n);
		name[a->val.n] = '\0';
		if (name_is_valid(name))
			return 0;
	}
	return fail(err, a->line, a->key,
		    "expected a name of lowercase letters, digits and '-' "
		    "(at most %d), got %s",
		    NAME_MAX_LEN, quote(q, a->val));
}

static void items_add(struct spec_value *v, struct span item)
{
	v->items = xrealloc(v->items, (v->nitems + 1) * sizeof(*v->items));
	v->items[v->nitems++] = xstrndup(item.p, item.n);
}

static int list_parse(const struct assign *a, struct spec_value *v,
		      struct spec_error *err)
{
	size_t pos = 0;
	char q[QUOTE_SIZE];
	char words[512];

	while (pos <= a->val.n) {
		const char *p = a->val.p + pos;
		const char *comma = memchr(p, ',', a->val.n - pos);
		size_t n = comma ? (size_t)(comma - p) : a->val.n - pos;
		struct span item = trim(p, n);

		pos += n + 1;
		if (!item.n)
			continue;
		if (a->f->choices && !in_words(a->f->choices, item))
			return fail(
				err, a->line, a->key,
				"expected each item to be one of %s, "
				"got %s",
				join(words, sizeof(words), a->f->choices, ", "),
				quote(q, item));
		if (v)
			items_add(v, item);
	}
	return 0;
}

static int path_check(const struct assign *a, struct spec_error *err)
{
	char q[QUOTE_SIZE];

	if (a->val.p[0] == '/')
		return 0;
	return fail(err, a->line, a->key,
		    "expected a path starting with \"/\", got %s",
		    quote(q, a->val));
}

/* env values are literal, or secret:NAME naming one of secrets/. */
static int secret_ref_check(const struct assign *a, struct spec_error *err)
{
	static const char prefix[] = "secret:";
	const size_t plen = sizeof(prefix) - 1;
	char name[NAME_MAX_LEN + 1];
	char q[QUOTE_SIZE];
	size_t n;

	if (a->val.n < plen || memcmp(a->val.p, prefix, plen) != 0)
		return 0;
	n = a->val.n - plen;
	if (n < sizeof(name)) {
		memcpy(name, a->val.p + plen, n);
		name[n] = '\0';
		if (name_is_valid(name))
			return 0;
	}
	return fail(err, a->line, a->key,
		    "expected secret:NAME with NAME a secret's name, got %s",
		    quote(q, a->val));
}

/* Rules some fields add to their type's; the schema has no slot for them. */
static const struct {
	const char *field;
	int (*check)(const struct assign *a, struct spec_error *err);
} value_rules[] = {
	{ "health_path", path_check },
	{ "env", secret_ref_check },
};

static int value_rule_check(const struct assign *a, struct spec_error *err)
{
	for (size_t i = 0; i < sizeof(value_rules) / sizeof(value_rules[0]);
	     i++) {
		if (strcmp(value_rules[i].field, a->f->name) == 0)
			return value_rules[i].check(a, err);
	}
	return 0;
}

static int type_parse(const struct assign *a, struct spec_value *v,
		      struct spec_error *err)
{
	switch (a->f->type) {
	case FT_INT:
		return int_parse(a, v, err);
	case FT_NUMBER:
		return number_parse(a, v, err);
	case FT_ENUM:
		return enum_parse(a, err);
	case FT_URI:
		return uri_parse(a, err);
	case FT_NAME:
		return name_parse(a, err);
	case FT_LIST:
		return list_parse(a, v, err);
	case FT_STRING:
	case FT_MAP:
		break;
	}
	return 0;
}

static void value_clear(struct spec_value *v)
{
	free(v->text);
	for (size_t i = 0; i < v->nitems; i++)
		free(v->items[i]);
	free(v->items);
	for (size_t i = 0; i < v->npairs; i++) {
		free(v->pairs[i].key);
		free(v->pairs[i].value);
	}
	free(v->pairs);
	memset(v, 0, sizeof(*v));
}

/*
 * Checks a non-empty value against its field (for a map field, one
 * pair's value) and, when v is not NULL, fills v from it.
 */
static int value_parse(const struct assign *a, struct spec_value *v,
		       struct spec_error *err)
{
	int rc;

	if (a->f->max_len && a->val.n > a->f->max_len)
		return fail(err, a->line, a->key,
			    "longer than %zu bytes (the limit), got %zu",
			    a->f->max_len, a->val.n);
	if (memchr(a->val.p, '\n', a->val.n) ||
	    memchr(a->val.p, '\r', a->val.n))
		return fail(err, a->line, a->key,
			    "expected a single line of text");
	rc = type_parse(a, v, err);
	if (!rc)
		rc = value_rule_check(a, err);
	if (rc) {
		if (v)
			value_clear(v);
		return rc;
	}
	if (v) {
		v->set = true;
		v->line = a->line;
		v->text = xstrndup(a->val.p, a->val.n);
	}
	return 0;
}

static int value_check_only(void *ctx, const struct assign *a,
			    struct spec_error *err)
{
	(void)ctx;
	if (!a->val.n)
		return 0;
	return value_parse(a, NULL, err);
}

/* ---- The two forms ---- */

/*
 * Splits one line (without its '\n') into key and value. Returns 1 for
 * an assignment, 0 for a blank or comment-only line, or -EINVAL.
 */
static int line_split(const char *p, size_t n, unsigned no, struct span *key,
		      struct span *val, struct spec_error *err)
{
	struct span line;
	const char *what;
	const char *eq;
	char q[QUOTE_SIZE];

	if (bad_byte_at(p, n, &what) >= 0)
		return fail(err, no, no_key, "%s", what);
	line = trim(p, comment_at(p, n));
	if (!line.n)
		return 0;
	eq = memchr(line.p, '=', line.n);
	if (eq)
		*key = trim(line.p, (size_t)(eq - line.p));
	if (!eq || !key->n)
		return fail(err, no, no_key, "expected key = value, got %s",
			    quote(q, line));
	*val = trim(eq + 1, (size_t)(line.p + line.n - eq - 1));
	return 1;
}

static int line_assign(const struct kind_def *k, const char *p, size_t n,
		       unsigned no, assign_fn fn, void *ctx,
		       struct spec_error *err)
{
	struct assign a = { .line = no };
	int rc = line_split(p, n, no, &a.key, &a.val, err);

	if (rc <= 0)
		return rc;
	rc = key_resolve(k, &a, err);
	if (rc)
		return rc;
	if (a.f->type == FT_MAP && !a.dotted)
		return fail(err, no, a.key, "expected %s.KEY = value",
			    a.f->name);
	return fn(ctx, &a, err);
}

static int text_assign(const struct kind_def *k, const char *text, size_t len,
		       assign_fn fn, void *ctx, struct spec_error *err)
{
	unsigned no = 1;
	size_t pos = 0;

	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len;
		int rc = line_assign(k, text + pos, end - pos, no++, fn, ctx,
				     err);

		if (rc)
			return rc;
		pos = end + 1;
	}
	return 0;
}

static const char *json_kind_name(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_TRUE:
		return "true";
	case JSON_FALSE:
		return "false";
	default:
		return "null";
	}
}

/*
 * The text a JSON scalar stands for: strings as they are, numbers in
 * decimal, null as empty (unset). Booleans are refused: no field is one,
 * and guessing "true" for an enum would hide a mistake.
 */
static int json_scalar(const struct assign *a, const json_t *j, char num[32],
		       struct span *out, struct spec_error *err)
{
	switch (json_typeof(j)) {
	case JSON_STRING:
		*out = (struct span){ json_string_value(j),
				      json_string_length(j) };
		return 0;
	case JSON_INTEGER:
		snprintf(num, 32, "%" PRId64, (int64_t)json_integer_value(j));
		*out = span_of(num);
		return 0;
	case JSON_REAL:
		number_format(num, json_real_value(j));
		*out = span_of(num);
		return 0;
	case JSON_NULL:
		*out = (struct span){ "", 0 };
		return 0;
	default:
		return fail(err, 0, a->key,
			    "expected a JSON string or number, got %s",
			    json_kind_name(j));
	}
}

/* A JSON array means the list its items make, comma-separated. */
static int json_list(struct assign *a, json_t *arr, assign_fn fn, void *ctx,
		     struct spec_error *err)
{
	BUF_AUTO joined = BUF_INIT;
	size_t i;
	json_t *item;

	json_array_foreach(arr, i, item)
	{
		char num[32];
		struct span s;
		int rc = json_scalar(a, item, num, &s, err);

		if (rc)
			return rc;
		if (joined.len && s.n)
			buf_adds(&joined, ", ");
		buf_add(&joined, s.p, s.n);
	}
	a->val = (struct span){ buf_str(&joined), joined.len };
	a->val = trim(a->val.p, a->val.n);
	return fn(ctx, a, err);
}

/* A JSON object for a map field means one FIELD.KEY assignment a member. */
static int json_map(const struct kind_def *k, const struct assign *whole,
		    json_t *obj, assign_fn fn, void *ctx,
		    struct spec_error *err)
{
	const char *name;
	json_t *val;

	json_object_foreach(obj, name, val)
	{
		BUF_AUTO key = BUF_INIT;
		struct assign a = { 0 };
		char num[32];
		int rc;

		buf_printf(&key, "%s.%s", whole->f->name, name);
		a.key = (struct span){ key.data, key.len };
		rc = key_resolve(k, &a, err);
		if (!rc)
			rc = json_scalar(&a, val, num, &a.val, err);
		if (!rc) {
			a.val = trim(a.val.p, a.val.n);
			rc = fn(ctx, &a, err);
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int json_member(const struct kind_def *k, const char *name, json_t *val,
		       assign_fn fn, void *ctx, struct spec_error *err)
{
	struct assign a = { .key = span_of(name) };
	bool whole_map;
	char num[32];
	int rc = key_resolve(k, &a, err);

	if (rc)
		return rc;
	whole_map = a.f->type == FT_MAP && !a.dotted;
	if (json_is_null(val) && whole_map)
		return 0;
	if (json_is_object(val) && whole_map)
		return json_map(k, &a, val, fn, ctx, err);
	if (whole_map)
		return fail(err, 0, a.key, "expected a JSON object, got %s",
			    json_is_string(val) ? "a string"
						: json_kind_name(val));
	if (json_is_array(val) && a.f->type == FT_LIST)
		return json_list(&a, val, fn, ctx, err);
	rc = json_scalar(&a, val, num, &a.val, err);
	if (rc)
		return rc;
	a.val = trim(a.val.p, a.val.n);
	return fn(ctx, &a, err);
}

static int json_assign(const struct kind_def *k, const char *text, size_t len,
		       assign_fn fn, void *ctx, struct spec_error *err)
{
	const char *what;
	long bad = bad_byte_at(text, len, &what);
	json_error_t jerr;
	json_t *root;
	const char *name;
	json_t *val;
	int rc = 0;

	if (bad >= 0)
		return fail(err, 1 + (unsigned)count_lines(text, (size_t)bad),
			    no_key, "%s", what);
	root = json_loadb(text, len, 0, &jerr);
	if (!root)
		return fail(err, jerr.line > 0 ? (unsigned)jerr.line : 0,
			    no_key, "invalid JSON: %s", jerr.text);
	json_object_foreach(root, name, val)
	{
		rc = json_member(k, name, val, fn, ctx, err);
		if (rc)
			break;
	}
	json_decref(root);
	return rc;
}

static int any_assign(const struct kind_def *k, const char *text, size_t len,
		      assign_fn fn, void *ctx, struct spec_error *err)
{
	if (opens_json(text, len))
		return json_assign(k, text, len, fn, ctx, err);
	return text_assign(k, text, len, fn, ctx, err);
}

/* ---- spec_parse ---- */

/*
 * While parsing, each map field has an index from key to its pair, so
 * that a later assignment finds the earlier one without a scan: a 1 MiB
 * spec of labels stays linear. A pair unset by an empty value keeps its
 * slot (value NULL) until the end, so that indices stay valid.
 */
struct parse_ctx {
	struct spec *s;
	struct map *index; /* kind->nfields entries; used for maps only */
};

static void pair_add(struct spec_value *v, struct map *index,
		     const struct assign *a)
{
	struct spec_pair *p;

	/* Grows by doubling: a new array whenever the count is 2^n. */
	if ((v->npairs & (v->npairs - 1)) == 0)
		v->pairs = xrealloc(v->pairs, (v->npairs ? v->npairs * 2 : 1) *
						      sizeof(*v->pairs));
	p = &v->pairs[v->npairs++];
	p->key = xstrndup(a->mkey.p, a->mkey.n);
	p->value = xstrndup(a->val.p, a->val.n);
	p->line = a->line;
	map_put(index, p->key, a->mkey.n, (void *)(uintptr_t)v->npairs);
}

static int pair_store(struct spec_value *v, struct map *index,
		      const struct assign *a, struct spec_error *err)
{
	uintptr_t slot = (uintptr_t)map_get(index, a->mkey.p, a->mkey.n);
	struct spec_pair *p;
	int rc = a->val.n ? value_parse(a, NULL, err) : 0;

	if (rc)
		return rc;
	v->line = a->line;
	if (!slot) {
		if (a->val.n)
			pair_add(v, index, a);
		return 0;
	}
	p = &v->pairs[slot - 1];
	free(p->value);
	p->value = a->val.n ? xstrndup(a->val.p, a->val.n) : NULL;
	p->line = a->line;
	return 0;
}

static int store(void *ctx, const struct assign *a, struct spec_error *err)
{
	struct parse_ctx *c = ctx;
	size_t i = kind_field_index(c->s->kind, a->f);
	struct spec_value *v = &c->s->v[i];
	struct spec_value nv = { 0 };
	int rc;

	if (a->f->type == FT_MAP)
		return pair_store(v, &c->index[i], a, err);
	if (!a->val.n) {
		value_clear(v);
		return 0;
	}
	rc = value_parse(a, &nv, err);
	if (rc)
		return rc;
	value_clear(v);
	/* A list of only commas has no items: the same as unset. */
	if (a->f->type != FT_LIST || nv.nitems)
		*v = nv;
	else
		value_clear(&nv);
	return 0;
}

/* Drops the pairs that were unset, keeping the others in order. */
static void pairs_compact(struct spec_value *v)
{
	size_t kept = 0;

	for (size_t i = 0; i < v->npairs; i++) {
		if (v->pairs[i].value) {
			v->pairs[kept++] = v->pairs[i];
			continue;
		}
		free(v->pairs[i].key);
	}
	v->npairs = kept;
	v->set = kept > 0;
	if (!kept) {
		free(v->pairs);
		v->pairs = NULL;
		v->line = 0;
	}
}

static void parse_finish(struct parse_ctx *c)
{
	const struct kind_def *k = c->s->kind;

	for (size_t i = 0; i < k->nfields; i++) {
		if (k->fields[i].type == FT_MAP)
			pairs_compact(&c->s->v[i]);
		map_free(&c->index[i]);
	}
	free(c->index);
}

int spec_parse(const struct kind_def *k, const char *text, size_t len,
	       struct spec **out, struct spec_error *err)
{
	struct parse_ctx c;
	int rc;

	*out = NULL;
	if (len > SPEC_MAX_BYTES)
		return fail(err, 0, no_key,
			    "the text is %zu bytes, more than the %d allowed",
			    len, SPEC_MAX_BYTES);
	c.s = xcalloc(1, sizeof(*c.s));
	c.s->kind = k;
	c.s->v = xcalloc(k->nfields, sizeof(*c.s->v));
	c.index = xcalloc(k->nfields, sizeof(*c.index));
	rc = any_assign(k, text, len, store, &c, err);
	parse_finish(&c);
	if (rc) {
		spec_free(c.s);
		return rc;
	}
	*out = c.s;
	return 0;
}

void spec_free(struct spec *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->kind->nfields; i++)
		value_clear(&s->v[i]);
	free(s->v);
	free(s);
}

/* ---- spec_check_lines, spec_check_value ---- */

int spec_check_lines(const struct kind_def *k, const char *text, size_t len,
		     size_t start, size_t end, struct spec_error *err)
{
	size_t pos = start;
	unsigned no;

	if (len > SPEC_MAX_BYTES)
		return fail(err, 0, no_key,
			    "the text is %zu bytes, more than the %d allowed",
			    len, SPEC_MAX_BYTES);
	if (end > len)
		end = len;
	if (start >= end || opens_json(text, len))
		return 0;
	while (pos > 0 && text[pos - 1] != '\n')
		pos--;
	no = 1 + (unsigned)count_lines(text, pos);
	while (pos < end) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t eol;
		int rc;

		/* The last line is checked once its '\n' arrives. */
		if (!nl)
			break;
		eol = (size_t)(nl - text);
		rc = line_assign(k, text + pos, eol - pos, no++,
				 value_check_only, NULL, err);
		if (rc)
			return rc;
		pos = eol + 1;
	}
	return 0;
}

/* A field file's value becomes a spec line, where this would start a
 * comment and the value would be lost. */
static int comment_free(const struct assign *a, struct spec_error *err)
{
	char q[QUOTE_SIZE];

	if (comment_at(a->val.p, a->val.n) == a->val.n)
		return 0;
	return fail(err, a->line, a->key,
		    "a '#' at the start or after a space would start a "
		    "comment, got %s",
		    quote(q, a->val));
}

static int map_line_check(const struct field_def *f, const char *p, size_t n,
			  unsigned no, struct spec_error *err)
{
	BUF_AUTO key = BUF_INIT;
	struct assign a = { .f = f, .dotted = true, .line = no };
	int rc = line_split(p, n, no, &a.mkey, &a.val, err);

	if (rc <= 0)
		return rc;
	buf_printf(&key, "%s.%.*s", f->name, (int)a.mkey.n, a.mkey.p);
	a.key = (struct span){ key.data, key.len };
	rc = map_key_check(&a, err);
	if (!rc && a.val.n)
		rc = comment_free(&a, err);
	if (!rc && a.val.n)
		rc = value_parse(&a, NULL, err);
	return rc;
}

/* A field file of a map holds KEY = VALUE lines, comments allowed. */
static int map_value_check(const struct field_def *f, const char *value,
			   size_t len, struct spec_error *err)
{
	unsigned no = 1;
	size_t pos = 0;

	while (pos < len) {
		const char *nl = memchr(value + pos, '\n', len - pos);
		size_t eol = nl ? (size_t)(nl - value) : len;
		int rc = map_line_check(f, value + pos, eol - pos, no++, err);

		if (rc)
			return rc;
		pos = eol + 1;
	}
	return 0;
}

int spec_check_value(const struct field_def *f, const char *value, size_t len,
		     struct spec_error *err)
{
	struct assign a = { .f = f, .key = span_of(f->name) };
	const char *what;
	int rc;

	if (f->type == FT_MAP)
		return map_value_check(f, value, len, err);
	if (bad_byte_at(value, len, &what) >= 0)
		return fail(err, 0, a.key, "%s", what);
	a.val = trim(value, len);
	if (!a.val.n)
		return 0;
	rc = comment_free(&a, err);
	return rc ? rc : value_parse(&a, NULL, err);
}

/* ---- Effective values ---- */

/*
 * The value a field has once defaults apply: its own, else its default
 * parsed into *tmp, else that of the field it defaults from. NULL when
 * there is none. The caller clears *tmp.
 */
static const struct spec_value *effective(const struct spec *s,
					  const struct field_def *f,
					  struct spec_value *tmp)
{
	const struct kind_def *k = s->kind;

	/* Look the field up by name: a field_def of another kind is no
	 * index into s->v. The hop limit guards against a def_from cycle. */
	f = kind_field(k, f->name, strlen(f->name));
	for (int hops = 0; f && hops < 4; hops++) {
		const struct spec_value *v = &s->v[kind_field_index(k, f)];
		struct assign a = { .f = f, .key = span_of(f->name) };

		if (v->set)
			return v;
		if (f->def) {
			a.val = span_of(f->def);
			return value_parse(&a, tmp, NULL) ? NULL : tmp;
		}
		f = f->def_from
			    ? kind_field(k, f->def_from, strlen(f->def_from))
			    : NULL;
	}
	return NULL;
}

static bool effective_int(const struct spec *s, const char *name, int64_t *i,
			  unsigned *line)
{
	const struct field_def *f = kind_field(s->kind, name, strlen(name));
	struct spec_value tmp = { 0 };
	const struct spec_value *v;

	if (!f || f->type != FT_INT)
		return false;
	v = effective(s, f, &tmp);
	if (v) {
		*i = v->i;
		*line = v == &tmp ? 0 : v->line;
	}
	value_clear(&tmp);
	return v != NULL;
}

const struct spec_value *spec_field(const struct spec *s, const char *name)
{
	const struct field_def *f = kind_field(s->kind, name, strlen(name));

	return f ? &s->v[kind_field_index(s->kind, f)] : NULL;
}

bool spec_field_set(const struct spec *s, const char *name)
{
	const struct spec_value *v = spec_field(s, name);

	return v && v->set;
}

const char *spec_str(const struct spec *s, const char *name, const char *dflt)
{
	const struct spec_value *v = s ? spec_field(s, name) : NULL;

	return v && v->set && v->text ? v->text : dflt;
}

/* ---- spec_check_rules ---- */

/* A bound that must hold against the field it defaults from. */
static const struct {
	const char *field, *other;
	bool below; /* field <= other, else field >= other */
} bound_rules[] = {
	{ "min_nodes", "nodes", true },
	{ "max_nodes", "nodes", false },
	{ "min_replicas", "replicas", true },
	{ "max_replicas", "replicas", false },
};

/* Fields that mean nothing one without the other. */
static const struct {
	const char *a, *b;
} pair_rules[] = {
	{ "scale_metric", "scale_target" },
};

static int bound_check(const struct spec *s, size_t r, struct spec_error *err)
{
	const char *name = bound_rules[r].field;
	const char *other = bound_rules[r].other;
	bool below = bound_rules[r].below;
	int64_t v, o;
	unsigned line, oline;

	if (!effective_int(s, name, &v, &line) ||
	    !effective_int(s, other, &o, &oline))
		return 0;
	if (below ? v <= o : v >= o)
		return 0;
	return fail(err, line, span_of(name),
		    "must be %s %s (%" PRId64 " %s %" PRId64 ")",
		    below ? "<=" : ">=", other, v, below ? ">" : "<", o);
}

static int pair_check(const struct spec *s, const char *a, const char *b,
		      struct spec_error *err)
{
	if (spec_field_set(s, a) && !spec_field_set(s, b) &&
	    kind_field(s->kind, b, strlen(b)))
		return fail(err, 0, span_of(b), "required when %s is set", a);
	return 0;
}

int spec_check_rules(const struct spec *s, struct spec_error *err)
{
	int rc;

	for (size_t r = 0; r < sizeof(bound_rules) / sizeof(bound_rules[0]);
	     r++) {
		rc = bound_check(s, r, err);
		if (rc)
			return rc;
	}
	for (size_t r = 0; r < sizeof(pair_rules) / sizeof(pair_rules[0]);
	     r++) {
		rc = pair_check(s, pair_rules[r].a, pair_rules[r].b, err);
		if (!rc)
			rc = pair_check(s, pair_rules[r].b, pair_rules[r].a,
					err);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- Rendering ---- */

static void value_text(const struct field_def *f, const struct spec_value *v,
		       struct buf *out)
{
	char num[32];

	switch (f->type) {
	case FT_MAP:
		for (size_t i = 0; i < v->npairs; i++)
			buf_printf(out, "%s = %s\n", v->pairs[i].key,
				   v->pairs[i].value);
		return;
	case FT_INT:
		buf_printf(out, "%" PRId64 "\n", v->i);
		return;
	case FT_NUMBER:
		number_format(num, v->d);
		buf_printf(out, "%s\n", num);
		return;
	case FT_LIST:
		for (size_t i = 0; i < v->nitems; i++)
			buf_printf(out, "%s%s", i ? ", " : "", v->items[i]);
		buf_addc(out, '\n');
		return;
	default:
		buf_printf(out, "%s\n", v->text);
		return;
	}
}

void spec_field_text(const struct spec *s, const struct field_def *f,
		     struct buf *out)
{
	struct spec_value tmp = { 0 };
	const struct spec_value *v = effective(s, f, &tmp);

	if (v)
		value_text(f, v, out);
	value_clear(&tmp);
}

static json_t *value_json(const struct field_def *f, const struct spec_value *v)
{
	json_t *j;

	switch (f->type) {
	case FT_MAP:
		j = json_object();
		for (size_t i = 0; i < v->npairs; i++)
			json_object_set_new(j, v->pairs[i].key,
					    json_string(v->pairs[i].value));
		return j;
	case FT_INT:
		return json_integer((json_int_t)v->i);
	case FT_NUMBER:
		return json_real(v->d);
	case FT_LIST:
		j = json_array();
		for (size_t i = 0; i < v->nitems; i++)
			json_array_append_new(j, json_string(v->items[i]));
		return j;
	default:
		return json_string(v->text);
	}
}

json_t *spec_to_json(const struct spec *s)
{
	json_t *obj = json_object();

	for (size_t i = 0; i < s->kind->nfields; i++) {
		const struct field_def *f = &s->kind->fields[i];
		struct spec_value tmp = { 0 };
		const struct spec_value *v = effective(s, f, &tmp);

		if (v)
			json_object_set_new(obj, f->name, value_json(f, v));
		value_clear(&tmp);
	}
	return obj;
}
