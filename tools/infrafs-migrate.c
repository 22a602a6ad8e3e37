// SPDX-License-Identifier: MIT
/*
 * infrafs-migrate: copies a state store to another backend, whole, and
 * proves the copy: every row of every table, ids included (a sealed
 * secret is bound to its environment's id, so ids must not change), then
 * a digest of each table read back from both sides, then each
 * environment's audit chain walked on the copy.
 *
 * Usage: infrafs-migrate SOURCE DESTINATION
 *   SOURCE, DESTINATION: sqlite:PATH or postgresql://...
 * Exit status: 0 copied and verified, 1 the copy differs, 2 usage or
 * store errors (nothing is left half written: the copy is one
 * transaction).
 *
 * Neither store may be in use: a daemon committing during the copy would
 * make the source move on without it. The destination is created with
 * the schema this build knows and must hold nothing yet; the source must
 * be at that schema too.
 */
#include "audit_chain.h"
#include "store/backend.h"
#include "util/text.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first half of the lease keys postgres.c takes (LEASE_CLASS). */
#define LEASE_CLASS "1768842867"

/*
 * Column types: i integer, B boolean (integer in SQLite), r real, b text
 * (bytea in PostgreSQL), s text in both, x blob (bytea).
 */
struct table {
	const char *name;
	const char *cols;
	const char *types;
	bool identity; /* PostgreSQL makes its ids: move the sequence on */
};

static const struct table tables[] = {
	{ "envs",
	  "id, name, uid, gid, mode, ctime, mtime, rev, rev_time, config,"
	  " config_rev, policy, policy_rev, deleted, applied_rev, audit_head,"
	  " first_rev, audit_base",
	  "ibiiirrirbibiBisis", true },
	{ "resources",
	  "id, env_id, kind, name, spec, rev, ctime, mtime, destroy_requested",
	  "iisbbirrB", true },
	{ "revisions",
	  "env_id, rev, time, uid, gid, pid, comm, path, summary, diff",
	  "iiriiibbbb", false },
	{ "history", "env_id, kind, name, rev, text", "isbib", false },
	{ "audit", "id, env_id, line", "iib", true },
	{ "events", "id, env_id, res_id, line", "iiib", true },
	{ "secrets", "env_id, name, version, mtime, sealed", "ibirx", false },
	{ "meta", "key, value", "ss", false },
};
#define NTABLES (sizeof(tables) / sizeof(tables[0]))
#define MAX_COLS 18

struct value {
	bool null;
	int64_t i;
	double r;
	const char *p;
	size_t len;
};

struct db {
	const char *url;
	const struct backend_ops *ops;
	const char *location;
	sqlite3 *lite;
	PGconn *pg;
};

static void fail(const char *fmt, ...)
{
	va_list ap;

	fputs("infrafs-migrate: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- opening ------------------------------------------------------------ */

static bool is_postgres(const char *url)
{
	return !strncmp(url, "postgresql://", 13) ||
	       !strncmp(url, "postgres://", 11);
}

static int parse_url(struct db *d, const char *url)
{
	memset(d, 0, sizeof(*d));
	d->url = url;
	if (is_postgres(url)) {
		d->ops = &postgres_backend;
		d->location = strchr(url, ':') + 1;
		return 0;
	}
	if (!strncmp(url, "sqlite:", 7) && url[7]) {
		d->ops = &sqlite_backend;
		d->location = url + 7;
		return 0;
	}
	fail("%s: use sqlite:PATH or postgresql://USER@HOST/DB", url);
	return -EINVAL;
}

static int connect_raw(struct db *d, bool readonly)
{
	if (d->ops == &postgres_backend) {
		d->pg = PQconnectdb(d->url);
		if (PQstatus(d->pg) != CONNECTION_OK) {
			fail("cannot connect to %s: %s", d->url,
			     PQerrorMessage(d->pg));
			return -EIO;
		}
		return 0;
	}
	if (sqlite3_open_v2(d->location, &d->lite,
			    readonly ? SQLITE_OPEN_READONLY
				     : SQLITE_OPEN_READWRITE,
			    NULL) != SQLITE_OK) {
		fail("cannot open %s: %s", d->url, sqlite3_errmsg(d->lite));
		return -EIO;
	}
	sqlite3_busy_timeout(d->lite, 5000);
	return 0;
}

static void disconnect(struct db *d)
{
	PQfinish(d->pg);
	sqlite3_close(d->lite);
	d->pg = NULL;
	d->lite = NULL;
}

/* One number from a query, or -1. */
static int64_t query_number(struct db *d, const char *sql)
{
	int64_t n = -1;

	if (d->pg) {
		PGresult *r = PQexec(d->pg, sql);

		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
			n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
		return n;
	}
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(d->lite, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static int exec_sql(struct db *d, const char *sql)
{
	if (d->pg) {
		PGresult *r = PQexec(d->pg, sql);
		int ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
			 PQresultStatus(r) == PGRES_TUPLES_OK;

		if (!ok)
			fail("%s: %s", d->url, PQresultErrorMessage(r));
		PQclear(r);
		return ok ? 0 : -EIO;
	}
	char *msg = NULL;

	if (sqlite3_exec(d->lite, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fail("%s: %s", d->url, msg ? msg : sqlite3_errmsg(d->lite));
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

static int64_t schema_version(struct db *d)
{
	return d->pg ? query_number(d, "SELECT version FROM infrafs_schema"
				       " WHERE app = 'infrafs'")
		     : query_number(d, "PRAGMA user_version");
}

/* Daemons of a shared store hold leases; one of SQLite holds its lock,
 * which the backend's check reports. */
static int check_not_in_use(struct db *d)
{
	int64_t n;

	if (!d->pg)
		return 0;
	n = query_number(d, "SELECT count(DISTINCT pid) FROM pg_locks WHERE"
			    " locktype = 'advisory' AND classid = " LEASE_CLASS
			    " AND granted AND database = (SELECT oid FROM"
			    " pg_database WHERE datname = current_database())");
	if (n > 0) {
		fail("%s is mounted by %" PRId64 " infrafs daemon(s); unmount "
		     "them first, or commits made during the copy would be "
		     "lost",
		     d->url, n);
		return -EBUSY;
	}
	return 0;
}

/* The source: checked as `infrafs --check` does, without writing. */
static int open_source(struct db *d)
{
	struct buf report = BUF_INIT, fingerprint = BUF_INIT;
	char err[1024] = "";
	int rc = d->ops->check(d->location, &report, &fingerprint, err,
			       sizeof(err));

	buf_free(&report);
	buf_free(&fingerprint);
	if (rc == 1) {
		fail("%s holds no infrafs state store", d->url);
		return -ENOENT;
	}
	if (rc) {
		fail("%s", err);
		return rc;
	}
	rc = connect_raw(d, true);
	if (!rc)
		rc = check_not_in_use(d);
	if (!rc && schema_version(d) != STORE_SCHEMA_VERSION) {
		fail("%s is at schema version %" PRId64 "; mount it once with "
		     "this infrafs (schema %d) first",
		     d->url, schema_version(d), STORE_SCHEMA_VERSION);
		rc = -EPROTO;
	}
	/* One snapshot for the copy and the digests after it. */
	if (!rc)
		rc = exec_sql(d, d->pg ? "BEGIN ISOLATION LEVEL REPEATABLE READ"
					 " READ ONLY"
				       : "BEGIN");
	return rc;
}

/* The destination: made by the backend (schema, ownership), then empty. */
static int open_destination(struct db *d)
{
	struct backend *be = NULL;
	char err[1024] = "";
	int rc = d->ops->open(d->location, &be, err, sizeof(err));

	if (rc) {
		fail("%s", err);
		return rc;
	}
	d->ops->close(be);
	rc = connect_raw(d, false);
	if (!rc)
		rc = check_not_in_use(d);
	if (!rc && (query_number(d, "SELECT count(*) FROM envs") != 0 ||
		    query_number(d, "SELECT count(*) FROM meta") != 0)) {
		fail("%s already holds a state store; the copy goes only into "
		     "an empty one",
		     d->url);
		rc = -EEXIST;
	}
	if (!rc)
		rc = exec_sql(d, "BEGIN");
	return rc;
}

/* ---- rows ----------------------------------------------------------------- */

static int64_t be_int(const char *p, int len)
{
	uint64_t x = 0;

	for (int i = 0; i < len; i++)
		x = x << 8 | (unsigned char)p[i];
	if (len < 8 && len > 0 && (p[0] & 0x80))
		x |= ~(uint64_t)0 << (len * 8);
	return (int64_t)x;
}

static void pg_value(const PGresult *r, int col, char type, struct value *v)
{
	const char *p = PQgetvalue(r, 0, col);
	int len = PQgetlength(r, 0, col);

	memset(v, 0, sizeof(*v));
	v->null = PQgetisnull(r, 0, col);
	if (v->null)
		return;
	if (type == 'r') {
		uint64_t bits = (uint64_t)be_int(p, len);

		memcpy(&v->r, &bits, sizeof(v->r));
	} else if (type == 'i' || type == 'B') {
		v->i = be_int(p, len);
	} else {
		v->p = p;
		v->len = (size_t)len;
	}
}

static void lite_value(sqlite3_stmt *st, int col, char type, struct value *v)
{
	memset(v, 0, sizeof(*v));
	v->null = sqlite3_column_type(st, col) == SQLITE_NULL;
	if (v->null)
		return;
	if (type == 'r') {
		v->r = sqlite3_column_double(st, col);
	} else if (type == 'i' || type == 'B') {
		v->i = sqlite3_column_int64(st, col);
	} else {
		v->p = sqlite3_column_blob(st, col);
		v->len = (size_t)sqlite3_column_bytes(st, col);
		if (!v->p)
			v->p = "";
	}
}

typedef int (*row_fn)(void *ctx, const struct table *t, struct value *v);

/* Every row of t, streamed (a long history need not fit in memory). */
static int each_row(struct db *d, const struct table *t, row_fn fn, void *ctx)
{
	struct value v[MAX_COLS];
	size_t ncols = strlen(t->types);
	char sql[512];
	int rc = 0;

	snprintf(sql, sizeof(sql), "SELECT %s FROM %s", t->cols, t->name);
	if (d->pg) {
		PGresult *r;

		if (!PQsendQueryParams(d->pg, sql, 0, NULL, NULL, NULL, NULL,
				       1) ||
		    !PQsetSingleRowMode(d->pg)) {
			fail("%s: %s", d->url, PQerrorMessage(d->pg));
			return -EIO;
		}
		while ((r = PQgetResult(d->pg))) {
			if (PQresultStatus(r) == PGRES_SINGLE_TUPLE && !rc) {
				for (size_t c = 0; c < ncols; c++)
					pg_value(r, (int)c, t->types[c], &v[c]);
				rc = fn(ctx, t, v);
			} else if (PQresultStatus(r) != PGRES_TUPLES_OK &&
				   PQresultStatus(r) != PGRES_SINGLE_TUPLE) {
				fail("%s: reading %s: %s", d->url, t->name,
				     PQresultErrorMessage(r));
				rc = -EIO;
			}
			PQclear(r);
		}
		return rc;
	}
	sqlite3_stmt *st;
	int step;

	if (sqlite3_prepare_v2(d->lite, sql, -1, &st, NULL) != SQLITE_OK) {
		fail("%s: reading %s: %s", d->url, t->name,
		     sqlite3_errmsg(d->lite));
		return -EIO;
	}
	while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
		for (size_t c = 0; c < ncols; c++)
			lite_value(st, (int)c, t->types[c], &v[c]);
		rc = fn(ctx, t, v);
	}
	if (!rc && step != SQLITE_DONE) {
		fail("%s: reading %s: %s", d->url, t->name,
		     sqlite3_errmsg(d->lite));
		rc = -EIO;
	}
	sqlite3_finalize(st);
	return rc;
}

/* ---- writing ---------------------------------------------------------- */

struct writer {
	struct db *d;
	sqlite3_stmt *st;
	uint64_t rows;
};

static int write_pg(struct writer *w, const struct table *t, struct value *v)
{
	size_t ncols = strlen(t->types);
	const char *vals[MAX_COLS];
	int lens[MAX_COLS], fmts[MAX_COLS];
	char num[MAX_COLS][32];
	PGresult *r;
	int ok;

	for (size_t c = 0; c < ncols; c++) {
		char type = t->types[c];

		fmts[c] = 0;
		lens[c] = 0;
		vals[c] = num[c];
		if (v[c].null) {
			vals[c] = NULL;
		} else if (type == 'i') {
			snprintf(num[c], sizeof(num[c]), "%" PRId64, v[c].i);
		} else if (type == 'B') {
			snprintf(num[c], sizeof(num[c]), "%s",
				 v[c].i ? "true" : "false");
		} else if (type == 'r') {
			snprintf(num[c], sizeof(num[c]), "%.17g", v[c].r);
		} else {
			/* bytea and text alike: the bytes, in binary. */
			vals[c] = v[c].p;
			lens[c] = (int)v[c].len;
			fmts[c] = 1;
		}
	}
	r = PQexecPrepared(w->d->pg, t->name, (int)ncols, vals, lens, fmts, 0);
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		fail("%s: writing %s: %s", w->d->url, t->name,
		     PQresultErrorMessage(r));
	PQclear(r);
	return ok ? 0 : -EIO;
}

static int write_lite(struct writer *w, const struct table *t, struct value *v)
{
	size_t ncols = strlen(t->types);
	int rc = SQLITE_OK;

	sqlite3_reset(w->st);
	for (size_t c = 0; c < ncols && rc == SQLITE_OK; c++) {
		char type = t->types[c];
		int at = (int)c + 1;

		if (v[c].null)
			rc = sqlite3_bind_null(w->st, at);
		else if (type == 'i' || type == 'B')
			rc = sqlite3_bind_int64(w->st, at, v[c].i);
		else if (type == 'r')
			rc = sqlite3_bind_double(w->st, at, v[c].r);
		else if (type == 'x')
			rc = sqlite3_bind_blob(w->st, at, v[c].p, (int)v[c].len,
					       SQLITE_TRANSIENT);
		else
			rc = sqlite3_bind_text(w->st, at, v[c].p, (int)v[c].len,
					       SQLITE_TRANSIENT);
	}
	if (rc == SQLITE_OK && sqlite3_step(w->st) != SQLITE_DONE)
		rc = SQLITE_ERROR;
	if (rc != SQLITE_OK) {
		fail("%s: writing %s: %s", w->d->url, t->name,
		     sqlite3_errmsg(w->d->lite));
		return -EIO;
	}
	return 0;
}

static int write_row(void *ctx, const struct table *t, struct value *v)
{
	struct writer *w = ctx;

	w->rows++;
	return w->d->pg ? write_pg(w, t, v) : write_lite(w, t, v);
}

static int prepare_insert(struct writer *w, const struct table *t)
{
	char sql[1024];
	size_t ncols = strlen(t->types), n;

	n = (size_t)snprintf(sql, sizeof(sql), "INSERT INTO %s(%s) VALUES(",
			     t->name, t->cols);
	for (size_t c = 0; c < ncols; c++)
		n += (size_t)snprintf(sql + n, sizeof(sql) - n, "%s$%zu",
				      c ? ", " : "", c + 1);
	snprintf(sql + n, sizeof(sql) - n, ")");
	if (w->d->pg) {
		PGresult *r =
			PQprepare(w->d->pg, t->name, sql, (int)ncols, NULL);
		int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

		if (!ok)
			fail("%s: %s", w->d->url, PQresultErrorMessage(r));
		PQclear(r);
		return ok ? 0 : -EIO;
	}
	/* SQLite takes $N too. */
	if (sqlite3_prepare_v2(w->d->lite, sql, -1, &w->st, NULL) !=
	    SQLITE_OK) {
		fail("%s: %s", w->d->url, sqlite3_errmsg(w->d->lite));
		return -EIO;
	}
	return 0;
}

/* PostgreSQL hands out ids from a sequence, which the copied rows did not
 * move on: the next id it gives must come after them. */
static int move_identity_on(struct db *d, const struct table *t)
{
	char sql[256];

	if (!d->pg || !t->identity)
		return 0;
	snprintf(sql, sizeof(sql),
		 "SELECT setval(pg_get_serial_sequence('%s', 'id'),"
		 " COALESCE(max(id), 0) + 1, false) FROM %s",
		 t->name, t->name);
	return exec_sql(d, sql);
}

static int copy_table(struct db *from, struct db *to, const struct table *t)
{
	struct writer w = { .d = to };
	int rc = prepare_insert(&w, t);

	if (!rc)
		rc = each_row(from, t, write_row, &w);
	sqlite3_finalize(w.st);
	if (!rc)
		rc = move_identity_on(to, t);
	if (!rc)
		printf("%s: %" PRIu64 " rows copied\n", t->name, w.rows);
	return rc;
}

/* ---- proving the copy ------------------------------------------------- */

/* A sum of row hashes: the same rows give the same digest in any order,
 * so neither side's collation matters. */
struct digest {
	uint64_t sum[4];
	uint64_t rows;
};

static void hash_value(EVP_MD_CTX *md, char type, const struct value *v)
{
	char num[40];

	if (v->null) {
		EVP_DigestUpdate(md, "N;", 2);
		return;
	}
	if (type == 'i' || type == 'B')
		snprintf(num, sizeof(num), "i%" PRId64 ";",
			 type == 'B' ? (int64_t)(v->i != 0) : v->i);
	else if (type == 'r')
		snprintf(num, sizeof(num), "r%.17g;", v->r);
	else
		snprintf(num, sizeof(num), "b%zu:", v->len);
	EVP_DigestUpdate(md, num, strlen(num));
	if (type != 'i' && type != 'B' && type != 'r')
		EVP_DigestUpdate(md, v->p, v->len);
}

static int digest_row(void *ctx, const struct table *t, struct value *v)
{
	struct digest *dg = ctx;
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(md);
		return -ENOMEM;
	}
	for (size_t c = 0; t->types[c]; c++)
		hash_value(md, t->types[c], &v[c]);
	EVP_DigestFinal_ex(md, out, &len);
	EVP_MD_CTX_free(md);
	for (int i = 0; i < 4; i++) {
		uint64_t word;

		memcpy(&word, out + 8 * i, sizeof(word));
		dg->sum[i] += word;
	}
	dg->rows++;
	return 0;
}

static bool same_table(struct db *from, struct db *to, const struct table *t)
{
	struct digest a = { 0 }, b = { 0 };

	if (each_row(from, t, digest_row, &a) ||
	    each_row(to, t, digest_row, &b))
		return false;
	if (a.rows != b.rows || memcmp(a.sum, b.sum, sizeof(a.sum))) {
		fail("%s differs: %" PRIu64 " rows in the source, %" PRIu64
		     " in the copy",
		     t->name, a.rows, b.rows);
		return false;
	}
	return true;
}

struct env_row {
	int64_t id;
	char *name, *head, *base;
};

struct env_rows {
	struct env_row *v;
	size_t n, cap;
};

static int keep_env(void *ctx, const struct table *t, struct value *v)
{
	struct env_rows *l = ctx;

	(void)t;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			return -ENOMEM;
	}
	l->v[l->n++] = (struct env_row){ v[0].i, strndup(v[1].p, v[1].len),
					 strndup(v[2].p, v[2].len),
					 strndup(v[3].p, v[3].len) };
	return 0;
}

static int walk_line(void *ctx, const struct table *t, struct value *v)
{
	struct audit_walk *w = ctx;
	char *line = strndup(v[0].p ? v[0].p : "", v[0].len);
	bool ok;

	(void)t;
	ok = line && audit_walk_line(w, line);
	free(line);
	return ok ? 0 : 1;
}

/* One environment's audit chain, walked on the copy as
 * infrafs-audit-verify walks it. */
static bool chain_holds(struct db *d, const struct env_row *e)
{
	char sql[160];
	/* The table's name takes the rest of the query: the lines of one
	 * environment, in order. */
	struct table lines = { sql, "line", "b", false };
	struct audit_walk w;
	bool ok;

	snprintf(sql, sizeof(sql),
		 "audit WHERE env_id = %" PRId64 " ORDER BY id", e->id);
	audit_walk_begin(&w, e->name, e->head, e->base, stdout);
	ok = each_row(d, &lines, walk_line, &w) == 0;
	return audit_walk_end(&w, ok);
}

static int verify(struct db *from, struct db *to)
{
	/* As in chain_holds: the name takes the order along. */
	const struct table envs = { "envs ORDER BY id",
				    "id, name, audit_head, audit_base", "ibss",
				    false };
	struct env_rows l = { 0 };
	bool ok = true;

	for (size_t i = 0; i < NTABLES; i++)
		ok &= same_table(from, to, &tables[i]);
	/* Read whole first: one PostgreSQL session runs one query at a
	 * time. */
	if (each_row(to, &envs, keep_env, &l))
		ok = false;
	for (size_t i = 0; i < l.n; i++) {
		ok &= chain_holds(to, &l.v[i]);
		free(l.v[i].name);
		free(l.v[i].head);
		free(l.v[i].base);
	}
	free(l.v);
	return ok ? 0 : 1;
}

/* ---- main --------------------------------------------------------------- */

static int migrate(struct db *from, struct db *to)
{
	int rc = 0;

	for (size_t i = 0; i < NTABLES && !rc; i++)
		rc = copy_table(from, to, &tables[i]);
	if (rc) {
		exec_sql(to, "ROLLBACK");
		fail("nothing was kept in %s", to->url);
		return 2;
	}
	if (exec_sql(to, "COMMIT")) {
		fail("the copy could not be committed to %s; nothing was kept",
		     to->url);
		return 2;
	}
	rc = verify(from, to);
	if (rc) {
		fail("the copy in %s does not match %s", to->url, from->url);
		return 1;
	}
	printf("copied and verified: %s -> %s\n", from->url, to->url);
	return 0;
}

int main(int argc, char **argv)
{
	struct db from, to;
	int rc;

	if (argc == 2 &&
	    (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: infrafs-migrate SOURCE DESTINATION\n"
		       "  each sqlite:PATH or postgresql://USER@HOST/DB\n");
		return 0;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: infrafs-migrate SOURCE DESTINATION\n");
		return 2;
	}
	if (parse_url(&from, argv[1]) || parse_url(&to, argv[2]))
		return 2;
	if (!strcmp(argv[1], argv[2])) {
		fail("the source and the destination are the same store");
		return 2;
	}
	rc = open_source(&from) || open_destination(&to) ? 2
							 : migrate(&from, &to);
	disconnect(&from);
	disconnect(&to);
	return rc;
}
