/* SPDX-License-Identifier: MIT */
/*
 * The spec language: UTF-8 text, one `key = value` per line, `#` comments,
 * dotted keys for maps, comma-separated lists, a later assignment winning;
 * or a JSON object meaning the same keys. See docs/infrafs-spec.5.
 *
 * Errors name the line, the key and the rule, in one message a user reads
 * in `status` as last_error:
 *     line 3: nodes: expected an integer >= 0, got "four"
 * All functions here are pure: no I/O, no global state, safe from any
 * thread. Checks that need the rest of the environment (does the pool an
 * endpoint names exist, does the policy allow it) live in the store.
 */
#ifndef INFRAFS_SPEC_SPEC_H
#define INFRAFS_SPEC_SPEC_H

#include "schema.h"
#include "util/buf.h"

#include <jansson.h>

/* The largest spec, config or policy accepted, in bytes. */
#define SPEC_MAX_BYTES (1024 * 1024)

struct spec_pair {
	char *key;
	char *value;
	unsigned line;
};

struct spec_value {
	bool set;
	unsigned line; /* line of the assignment that won; 0 for JSON */
	char *text; /* value as written, trimmed; lists and scalars */
	int64_t i; /* FT_INT */
	double d; /* FT_NUMBER */
	char **items; /* FT_LIST, trimmed, empty items dropped */
	size_t nitems;
	struct spec_pair *pairs; /* FT_MAP, one per key, later wins */
	size_t npairs;
};

struct spec {
	const struct kind_def *kind;
	struct spec_value *v; /* kind->nfields entries, indexed like fields */
};

struct spec_error {
	unsigned line; /* 0 when the error is not tied to one line */
	char key[64]; /* the key at fault, "" when none */
	char msg[512]; /* the whole message, line and key included */
};

/*
 * Parses and checks a whole text: encoding, syntax, keys, types and ranges.
 * Cross-field rules are spec_check_rules()'s job. An empty text (or only
 * comments) is valid and means all defaults. Returns 0 with *out set, or
 * -EINVAL with err filled and *out NULL.
 */
int spec_parse(const struct kind_def *k, const char *text, size_t len,
	       struct spec **out, struct spec_error *err);

/*
 * Checks the complete lines (ending in '\n') of text that overlap the byte
 * range [start, end): what write(2) does as each line arrives. Line numbers
 * count from the start of text. Text that opens with '{' is JSON and is
 * only checked whole, so this accepts it. Returns 0 or -EINVAL.
 */
int spec_check_lines(const struct kind_def *k, const char *text, size_t len,
		     size_t start, size_t end, struct spec_error *err);

/* Names a replica's environment gets from infrafs itself (PORT, the
 * devices, the INFRAFS_* markers): env.NAME may not set them. */
bool spec_env_name_reserved(const char *name, size_t n);

/* Checks one value for one field, as written to a field file. */
int spec_check_value(const struct field_def *f, const char *value, size_t len,
		     struct spec_error *err);

/* The value of a field by name (set or not), NULL when the kind has no
 * such field. */
const struct spec_value *spec_field(const struct spec *s, const char *name);
/* Whether a field was written (not just defaulted). */
bool spec_field_set(const struct spec *s, const char *name);
/* The text of a field as written, or dflt when it was not: the spec's own
 * bytes, never a copy that a buffer could cut. */
const char *spec_str(const struct spec *s, const char *name, const char *dflt);

/* Cross-field rules: min_nodes <= nodes <= max_nodes and the like. */
int spec_check_rules(const struct spec *s, struct spec_error *err);

void spec_free(struct spec *s);
static inline void spec_cleanup(struct spec **s)
{
	if (*s)
		spec_free(*s);
}
#define SPEC_AUTO __attribute__((cleanup(spec_cleanup))) struct spec

/*
 * The effective value of a field with its default applied, as a field file
 * shows it, ending in '\n' ("" when unset with no default). A map renders
 * as `KEY = VALUE` lines.
 */
void spec_field_text(const struct spec *s, const struct field_def *f,
		     struct buf *out);

/*
 * The fields whose effective values differ between old (NULL: none) and
 * neu, as a plan step shows them: "nodes: 2 -> 4, labels.team: (unset)
 * -> nlp" appended to text, {"field", "from", "to"} objects to changes.
 * Nothing appended when the two have the same effect.
 */
void spec_changes(const struct spec *old, const struct spec *neu,
		  struct buf *text, json_t *changes);

/* The effective values as a JSON object: integers, numbers, arrays, objects. */
json_t *spec_to_json(const struct spec *s);

/*
 * Rewrites a spec text so that one field holds value: the first assignment
 * of the field is replaced in place, later ones are dropped, comments and
 * every other line are kept; an unset field is appended. An empty value
 * removes the field (back to its default). For a map field, value is
 * `KEY = VALUE` lines and replaces the whole map. JSON text is first turned
 * into key = value lines. Returns 0 or -EINVAL (value checked as
 * spec_check_value does).
 */
int spec_set_field(const struct kind_def *k, const char *text, size_t len,
		   const struct field_def *f, const char *value, size_t vlen,
		   struct buf *out, struct spec_error *err);

/* kinds/NAME: every field with its type, default, range and meaning. */
void kind_render_doc(const struct kind_def *k, struct buf *out);

#endif
