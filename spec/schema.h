/* SPDX-License-Identifier: MIT */
/*
 * The schemas of everything a user writes: the resource kinds (pool,
 * endpoint) and the per-environment documents (config, policy). These tables
 * are the one source of truth for field names, types, defaults, ranges and
 * help text: the parser checks against them, kinds/ in the mount is rendered
 * from them, and providers declare their support in terms of them.
 */
#ifndef INFRAFS_SPEC_SCHEMA_H
#define INFRAFS_SPEC_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum field_type {
	FT_INT, /* integer within [min, max] */
	FT_NUMBER, /* decimal number, > nmin (or >= when !nmin_exclusive) */
	FT_ENUM, /* one word of choices */
	FT_STRING, /* any single-line UTF-8 text */
	FT_URI, /* text starting with one of the schemes in choices */
	FT_NAME, /* a resource name: [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])? */
	FT_LIST, /* comma-separated; items must be in choices when set */
	FT_MAP, /* filled by dotted keys: FIELD.KEY = value */
};

struct field_def {
	const char *name;
	enum field_type type;
	const char *const *choices; /* NULL-terminated, or NULL */
	int64_t min, max; /* FT_INT */
	double nmin; /* FT_NUMBER */
	bool nmin_exclusive;
	/* Default as text, NULL when there is none or it is derived. */
	const char *def;
	/* Field whose effective value is this field's default (min_nodes
	 * defaults to nodes), or NULL. */
	const char *def_from;
	/* How kinds/ describes a default that is neither (derived by the
	 * provider), or NULL. */
	const char *def_doc;
	const char *help;
	/*
	 * The longest value accepted, in bytes, for text, URI, list and map
	 * fields (for a map, each value); for a map, max_key_len bounds each
	 * KEY. 0 for types whose own rules bound them (integers, numbers,
	 * enums, names). Longer text is refused when written, naming the
	 * limit, so that nothing downstream has to cut what a user wrote.
	 */
	size_t max_len;
	size_t max_key_len;
	/* FT_MAP: keys that choose whose credentials the daemon uses or
	 * where it sends them ("profile" of aws.profile); NULL-terminated,
	 * or NULL. Only root or the daemon's own user sets them, unless the
	 * daemon was started allowing the key. */
	const char *const *privileged;
};

struct kind_def {
	const char *name; /* "pool" */
	const char *dir; /* "pools"; NULL for config and policy */
	const char *summary;
	const struct field_def *fields;
	size_t nfields;
};

extern const struct kind_def kind_pool;
extern const struct kind_def kind_endpoint;
extern const struct kind_def kind_config;
extern const struct kind_def kind_policy;

/* The resource kinds, in the order the tree lists them; NULL-terminated. */
extern const struct kind_def *const resource_kinds[];
/* The accelerator models a pool or endpoint may ask for; NULL-terminated. */
extern const char *const accelerator_names[];

const struct kind_def *kind_by_name(const char *name);
const struct kind_def *kind_by_dir(const char *dir);
/* Looks a field up by name (len bytes, need not be NUL-terminated). */
const struct field_def *kind_field(const struct kind_def *k, const char *name,
				   size_t len);
/* Whether "FIELD.KEY" (len bytes) names a privileged map key of k. */
bool kind_key_privileged(const struct kind_def *k, const char *dotted,
			 size_t len);
static inline size_t kind_field_index(const struct kind_def *k,
				      const struct field_def *f)
{
	return (size_t)(f - k->fields);
}

#endif
