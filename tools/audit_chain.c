// SPDX-License-Identifier: MIT
/*
 * The audit chain: each line ends in prev=SHA-256 of the line before it,
 * and the store keeps the hash of each environment's newest line, so a
 * line changed or removed anywhere, the last one included, breaks the
 * chain at a place this walk names.
 */
#include "audit_chain.h"

#include <openssl/sha.h>
#include <string.h>

#define ZERO_HASH \
	"0000000000000000000000000000000000000000000000000000000000000000"

static void sha_hex(const char *text, char out[65])
{
	unsigned char md[32];

	SHA256((const unsigned char *)text, strlen(text), md);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The prev= field a chained line ends with, or NULL for an older line. */
static const char *prev_of(const char *line)
{
	const char *p = strstr(line, " prev=");
	const char *last = NULL;

	while (p) {
		last = p;
		p = strstr(p + 1, " prev=");
	}
	if (!last || strlen(last + 6) != 64)
		return NULL;
	return last + 6;
}

int audit_chain_envs(sqlite3 *db, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(db,
			       "SELECT id, name, audit_head, audit_base"
			       " FROM envs ORDER BY id",
			       -1, st, NULL) == SQLITE_OK)
		return SQLITE_OK;
	return sqlite3_prepare_v2(db,
				  "SELECT id, name, audit_head, '' FROM envs"
				  " ORDER BY id",
				  -1, st, NULL);
}

/* Checks one line against the one before; false once the chain broke. */
bool audit_walk_line(struct audit_walk *w, const char *line)
{
	const char *base = w->base;
	FILE *out = w->out;
	const char *prev = prev_of(line);
	bool ok = true;

	w->n++;
	if (w->n == 1 && base[0] && (!prev || strcmp(prev, base) != 0)) {
		fprintf(out,
			"%s: audit line 1 does not chain to the checkpoint "
			"left by pruning: it was changed, or lines before it "
			"removed\n",
			w->name);
		return false;
	}
	if (prev && (w->chained || strcmp(prev, ZERO_HASH) == 0 ||
		     strcmp(prev, w->expected) == 0)) {
		if (strcmp(prev, w->expected) != 0) {
			if (w->n == 1)
				fprintf(out,
					"%s: audit line 1 was changed, "
					"or lines before it removed\n",
					w->name);
			else
				fprintf(out,
					"%s: audit line %ld (%s) was "
					"changed, or the line after it "
					"removed\n",
					w->name, w->n - 1, w->last_line);
			ok = false;
		}
		w->chained = true;
	} else if (w->chained) {
		fprintf(out,
			"%s: audit line %ld lost its chain: it was changed\n",
			w->name, w->n);
		ok = false;
	}
	sha_hex(line, w->expected);
	snprintf(w->last_line, sizeof(w->last_line), "%.*s",
		 (int)strcspn(line, " "), line);
	return ok;
}

void audit_walk_begin(struct audit_walk *w, const char *name, const char *head,
		      const char *base, FILE *out)
{
	memset(w, 0, sizeof(*w));
	w->name = name;
	w->head = head ? head : "";
	w->base = base ? base : "";
	w->out = out;
	snprintf(w->expected, sizeof(w->expected), "%s",
		 w->base[0] ? w->base : ZERO_HASH);
}

bool audit_walk_end(struct audit_walk *w, bool ok)
{
	if (ok && w->chained && w->head[0] &&
	    strcmp(w->head, w->expected) != 0) {
		fprintf(w->out,
			"%s: audit line %ld (%s), the newest, was changed, or "
			"lines after it removed\n",
			w->name, w->n, w->last_line);
		ok = false;
	}
	if (ok && w->base[0])
		fprintf(w->out,
			"%s: %ld audit lines after the checkpoint %.16s... "
			"left by pruning, chain intact\n",
			w->name, w->n, w->base);
	else if (ok)
		fprintf(w->out, "%s: %ld audit lines, chain intact\n", w->name,
			w->n);
	return ok;
}

bool audit_chain_verify(sqlite3 *db, sqlite3_stmt *env_row, FILE *out)
{
	sqlite3_stmt *st;
	struct audit_walk w;
	bool ok = true;

	audit_walk_begin(&w, (const char *)sqlite3_column_text(env_row, 1),
			 (const char *)sqlite3_column_text(env_row, 2),
			 (const char *)sqlite3_column_text(env_row, 3), out);
	if (sqlite3_prepare_v2(db,
			       "SELECT line FROM audit WHERE env_id = ?"
			       " ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK) {
		fprintf(out, "%s: audit lines cannot be read: %s\n", w.name,
			sqlite3_errmsg(db));
		return false;
	}
	sqlite3_bind_int64(st, 1, sqlite3_column_int64(env_row, 0));
	while (ok && sqlite3_step(st) == SQLITE_ROW)
		ok = audit_walk_line(&w,
				     (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return audit_walk_end(&w, ok);
}
