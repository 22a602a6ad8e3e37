// SPDX-License-Identifier: MIT
/*
 * infrafs-audit-verify: checks the audit chain of environments straight
 * from the state store. Each audit line ends in prev=SHA-256 of the line
 * before it, and the store keeps the hash of each environment's newest
 * line, so a line changed or removed anywhere, the last one included,
 * breaks the chain at a place this tool names.
 *
 * Usage: infrafs-audit-verify sqlite:PATH|PATH|postgresql://... [ENV...]
 * Exit status: 0 every chain intact, 1 a chain broken, 2 usage or
 * store errors.
 */
#include "audit_chain.h"

#include <libpq-fe.h>
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

/* The audit lines of one environment of a PostgreSQL store, in order. */
static bool verify_pg_env(PGconn *c, PGresult *envs, int i)
{
	const char *id = PQgetvalue(envs, i, 0);
	PGresult *r = PQexecParams(c,
				   "SELECT line FROM audit WHERE env_id = $1"
				   " ORDER BY id",
				   1, NULL, &id, NULL, NULL, 1);
	struct audit_walk w;
	bool ok = true;

	/* Binary values come NUL-terminated from libpq: bytea is the line. */
	audit_walk_begin(&w, PQgetvalue(envs, i, 1), PQgetvalue(envs, i, 2),
			 PQgetvalue(envs, i, 3), stdout);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		printf("%s: audit lines cannot be read: %s", w.name,
		       PQerrorMessage(c));
		PQclear(r);
		return false;
	}
	for (int n = 0; ok && n < PQntuples(r); n++)
		ok = audit_walk_line(&w, PQgetvalue(r, n, 0));
	PQclear(r);
	return audit_walk_end(&w, ok);
}

/*
 * A postgresql:// store: every environment read in one read-only
 * snapshot, so a commit made meanwhile cannot look like a break.
 */
static int verify_postgres(const char *url, int argc, char **argv, int *found)
{
	PGconn *c = PQconnectdb(url);
	PGresult *envs = NULL;
	bool ok = true;

	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "infrafs-audit-verify: cannot connect: %s",
			PQerrorMessage(c));
		PQfinish(c);
		return 2;
	}
	PQclear(PQexec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
	envs = PQexecParams(c,
			    "SELECT id::text, name, audit_head, audit_base"
			    " FROM envs ORDER BY id",
			    0, NULL, NULL, NULL, NULL, 1);
	if (PQresultStatus(envs) != PGRES_TUPLES_OK) {
		fprintf(stderr,
			"infrafs-audit-verify: not an infrafs state store "
			"with audit chains: %s",
			PQerrorMessage(c));
		PQclear(envs);
		PQfinish(c);
		return 2;
	}
	for (int i = 0; i < PQntuples(envs); i++) {
		if (!wanted(argc, argv, PQgetvalue(envs, i, 1)))
			continue;
		++*found;
		ok &= verify_pg_env(c, envs, i);
	}
	PQclear(envs);
	PQfinish(c);
	return ok ? 0 : 1;
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
			"usage: infrafs-audit-verify "
			"sqlite:PATH|PATH|postgresql://... [ENV...]\n");
		return argc < 2 ? 2 : 0;
	}
	if (!strncmp(argv[1], "postgresql://", 13) ||
	    !strncmp(argv[1], "postgres://", 11)) {
		int rc = verify_postgres(argv[1], argc, argv, &found);

		if (rc != 2 && argc > 2 && found < argc - 2) {
			fprintf(stderr,
				"infrafs-audit-verify: no such environment\n");
			return 2;
		}
		return rc;
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
