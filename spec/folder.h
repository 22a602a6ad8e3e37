/* SPDX-License-Identifier: MIT */
/*
 * A folder that declares an environment with the mount's own layout,
 * usually a Git work tree:
 *
 *	pools/NAME/spec
 *	endpoints/NAME/spec
 *	policy                  (optional)
 *
 * read into a list of documents, for a tool that compares it with an
 * environment (infrafs-plan --against) and for an environment that
 * follows it. Reading checks the layout only; the texts are parsed by
 * spec_parse() like any other.
 *
 * Names starting with '.' are skipped at every level (.git, .gitkeep,
 * an editor's swap file); anything else that does not fit the layout
 * (a README, config, secrets/, a field file next to a spec, a bad name)
 * is refused with its path named, so that a typo such as pool/train/spec
 * never silently declares nothing. Symbolic links are refused, never
 * followed, and only regular files and folders are opened, so a reader
 * with more authority than the folder's owner (the daemon as root) reads
 * nothing outside the folder. Whether the folder's owner may have it
 * read at all is the caller's to decide. Sizes and counts are bounded.
 *
 * The only part of spec/ that does I/O. No printing, no global state:
 * safe from any thread, on distinct folders or the same one.
 */
#ifndef INFRAFS_SPEC_FOLDER_H
#define INFRAFS_SPEC_FOLDER_H

#include "schema.h"
#include "util/text.h"

#include <stddef.h>

/* Resources in one folder, all kinds together. */
#define FOLDER_MAX_DOCS 100000
/* All texts together; each text is also bounded by SPEC_MAX_BYTES. */
#define FOLDER_MAX_BYTES (256u << 20)
/* Entries in one folder, skipped ones included. */
#define FOLDER_MAX_ENTRIES 200000
/* A document's path: "endpoints/" NAME "/spec". */
#define FOLDER_DOC_PATH_MAX (NAME_MAX_LEN + 16)

struct folder_doc {
	/* &kind_pool, &kind_endpoint or &kind_policy. */
	const struct kind_def *kind;
	char name[NAME_MAX_LEN + 1]; /* "" for the policy */
	char *text; /* NUL-terminated; len bytes, which may hold NULs */
	size_t len;
	/* Relative to the folder: "pools/train/spec", "policy". */
	char path[FOLDER_DOC_PATH_MAX];
};

/*
 * Pools first, then endpoints, each sorted by name, then the policy if
 * there is one: the same folder always reads the same.
 */
struct folder {
	struct folder_doc *docs;
	size_t n;
};

struct folder_error {
	/* Relative to the folder, "" for the folder itself; bytes that
	 * could drive a terminal are escaped as text_escape() does. */
	char path[600];
	/* The whole message, path included:
	 * "pools/Train: not a valid name: use lowercase letters, ..." */
	char msg[512];
};

/*
 * Reads the folder open at dirfd (opened by the caller with whatever
 * authority it chooses; it is not closed). Returns 0 with *out filled,
 * or a negative errno with err filled and *out empty: -EINVAL for what
 * does not fit the layout, -ELOOP for a symbolic link, -EFBIG or -E2BIG
 * past a bound, or what the system said (-EACCES, -EIO, ...).
 */
int folder_read_at(int dirfd, struct folder *out, struct folder_error *err);

/* The same for a path, opened as given (a link to the folder is
 * followed: links are refused inside it, not on the way to it). */
int folder_read(const char *dir, struct folder *out, struct folder_error *err);

/* The document of kind k named name ("" for the policy), or NULL. */
const struct folder_doc *
folder_find(const struct folder *f, const struct kind_def *k, const char *name);

void folder_free(struct folder *f);

#endif
