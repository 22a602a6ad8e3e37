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

bool audit_chain_verify(sqlite3 *db, long long env_id, const char *name,
			const char *head, FILE *out)
{
	sqlite3_stmt *st;
	char expected[65] = ZERO_HASH, last_line[64] = "";
	long n = 0;
	bool ok = true, chained = false;

	if (sqlite3_prepare_v2(db,
			       "SELECT line FROM audit WHERE env_id = ?"
			       " ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK) {
		fprintf(out, "%s: audit lines cannot be read: %s\n", name,
			sqlite3_errmsg(db));
		return false;
	}
	sqlite3_bind_int64(st, 1, env_id);
	while (ok && sqlite3_step(st) == SQLITE_ROW) {
		const char *line = (const char *)sqlite3_column_text(st, 0);
		const char *prev = prev_of(line);

		n++;
		if (prev && (chained || strcmp(prev, ZERO_HASH) == 0 ||
			     strcmp(prev, expected) == 0)) {
			if (strcmp(prev, expected) != 0) {
				if (n == 1)
					fprintf(out,
						"%s: audit line 1 was changed, "
						"or lines before it removed\n",
						name);
				else
					fprintf(out,
						"%s: audit line %ld (%s) was "
						"changed, or the line after it "
						"removed\n",
						name, n - 1, last_line);
				ok = false;
			}
			chained = true;
		} else if (chained) {
			fprintf(out,
				"%s: audit line %ld lost its chain: it was "
				"changed\n",
				name, n);
			ok = false;
		}
		sha_hex(line, expected);
		snprintf(last_line, sizeof(last_line), "%.*s",
			 (int)strcspn(line, " "), line);
	}
	sqlite3_finalize(st);
	if (ok && chained && head[0] && strcmp(head, expected) != 0) {
		fprintf(out,
			"%s: audit line %ld (%s), the newest, was changed, or "
			"lines after it removed\n",
			name, n, last_line);
		ok = false;
	}
	if (ok)
		fprintf(out, "%s: %ld audit lines, chain intact\n", name, n);
	return ok;
}
