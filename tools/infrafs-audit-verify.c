// SPDX-License-Identifier: MIT
/*
 * infrafs-audit-verify: checks the audit chain of environments straight
 * from the state store. Each audit line ends in prev=SHA-256 of the line
 * before it, and the store keeps the hash of each environment's newest
 * line, so a line changed or removed anywhere, the last one included,
 * breaks the chain at a place this tool names.
 *
 * Usage: infrafs-audit-verify sqlite:PATH|PATH [ENV...]
 * Exit status: 0 every chain intact, 1 a chain broken, 2 usage or
 * store errors.
 */
#include <openssl/sha.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
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

/* Verifies one environment; returns true when its chain holds. */
static bool verify_env(sqlite3 *db, long long env_id, const char *name,
		       const char *head)
{
	sqlite3_stmt *st;
	char expected[65] = ZERO_HASH, last_line[64] = "";
	long n = 0;
	bool ok = true, chained = false;

	if (sqlite3_prepare_v2(db,
			       "SELECT line FROM audit WHERE env_id = ?"
			       " ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "infrafs-audit-verify: %s\n",
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
					printf("%s: audit line 1 was changed, "
					       "or lines before it removed\n",
					       name);
				else
					printf("%s: audit line %ld (%s) was "
					       "changed, or the line after it "
					       "removed\n",
					       name, n - 1, last_line);
				ok = false;
			}
			chained = true;
		} else if (chained) {
			printf("%s: audit line %ld lost its chain: it was "
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
		printf("%s: audit line %ld (%s), the newest, was changed, or "
		       "lines after it removed\n",
		       name, n, last_line);
		ok = false;
	}
	if (ok)
		printf("%s: %ld audit lines, chain intact\n", name, n);
	return ok;
}

static bool wanted(int argc, char **argv, const char *name)
{
	if (argc < 3)
		return true;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], name))
			return true;
	}
	return false;
}

int main(int argc, char **argv)
{
	const char *path;
	sqlite3_stmt *st;
	sqlite3 *db;
	bool ok = true;
	int found = 0;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fprintf(argc < 2 ? stderr : stdout,
			"usage: infrafs-audit-verify sqlite:PATH|PATH "
			"[ENV...]\n");
		return argc < 2 ? 2 : 0;
	}
	path = strncmp(argv[1], "sqlite:", 7) ? argv[1] : argv[1] + 7;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		fprintf(stderr, "infrafs-audit-verify: cannot open %s: %s\n",
			path, sqlite3_errmsg(db));
		return 2;
	}
	if (sqlite3_prepare_v2(db,
			       "SELECT id, name, audit_head FROM envs"
			       " ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr,
			"infrafs-audit-verify: %s is not an infrafs state "
			"store with audit chains (%s)\n",
			path, sqlite3_errmsg(db));
		sqlite3_close(db);
		return 2;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 1);

		if (!wanted(argc, argv, name))
			continue;
		found++;
		ok &= verify_env(db, sqlite3_column_int64(st, 0), name,
				 (const char *)sqlite3_column_text(st, 2));
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	if (argc > 2 && found < argc - 2) {
		fprintf(stderr, "infrafs-audit-verify: no such environment\n");
		return 2;
	}
	return ok ? 0 : 1;
}
