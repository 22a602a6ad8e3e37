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
#include "audit_chain.h"

#include <string.h>

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
	if (audit_chain_envs(db, &st) != SQLITE_OK) {
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
		ok &= audit_chain_verify(db, st, stdout);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	if (argc > 2 && found < argc - 2) {
		fprintf(stderr, "infrafs-audit-verify: no such environment\n");
		return 2;
	}
	return ok ? 0 : 1;
}
