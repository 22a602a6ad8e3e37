// SPDX-License-Identifier: MIT
/*
 * The SQLite state-store backend. One database file in WAL mode with
 * synchronous=FULL, so a committed transaction is fsync'd before commit()
 * returns. The committer thread owns the write connection; readers of
 * history and audit share a second connection under a mutex, and WAL lets
 * them read while a commit is in flight.
 */
#include "backend.h"

#include "util/files.h"
#include "util/log.h"
#include "util/text.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* "infr": lets us tell our own database from any other SQLite file. */
#define APPLICATION_ID 0x696e6672

/* Each entry moves the schema one version on; never edit a shipped one. */
static const char *const migrations[] = {
	/* 1: the first schema. */
	"CREATE TABLE envs(id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" name TEXT NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,"
	" mode INTEGER NOT NULL, ctime REAL NOT NULL, mtime REAL NOT NULL,"
	" rev INTEGER NOT NULL, rev_time REAL NOT NULL,"
	" config TEXT, config_rev INTEGER NOT NULL DEFAULT 0,"
	" policy TEXT, policy_rev INTEGER NOT NULL DEFAULT 0,"
	" deleted INTEGER NOT NULL DEFAULT 0);"
	"CREATE UNIQUE INDEX envs_live_name ON envs(name) WHERE deleted = 0;"
	"CREATE TABLE resources(id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" env_id INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,"
	" spec TEXT, rev INTEGER NOT NULL, ctime REAL NOT NULL,"
	" mtime REAL NOT NULL, UNIQUE(env_id, kind, name));"
	"CREATE TABLE revisions(env_id INTEGER NOT NULL, rev INTEGER NOT NULL,"
	" time REAL NOT NULL, uid INTEGER, gid INTEGER, pid INTEGER,"
	" comm TEXT, path TEXT, summary TEXT NOT NULL, diff TEXT NOT NULL,"
	" PRIMARY KEY(env_id, rev)) WITHOUT ROWID;"
	"CREATE TABLE history(env_id INTEGER NOT NULL, kind TEXT NOT NULL,"
	" name TEXT NOT NULL, rev INTEGER NOT NULL, text TEXT,"
	" PRIMARY KEY(env_id, kind, name, rev)) WITHOUT ROWID;"
	"CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" env_id INTEGER NOT NULL, line TEXT NOT NULL);"
	"CREATE INDEX audit_env ON audit(env_id, id);"
	"CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" env_id INTEGER NOT NULL, res_id INTEGER NOT NULL,"
	" line TEXT NOT NULL);"
	"CREATE INDEX events_obj ON events(env_id, res_id, id);"
	"CREATE TABLE secrets(env_id INTEGER NOT NULL, name TEXT NOT NULL,"
	" version INTEGER NOT NULL, mtime REAL NOT NULL, sealed BLOB NOT NULL,"
	" PRIMARY KEY(env_id, name)) WITHOUT ROWID;",
	/* 2: what the reconciler has applied, for `discard`. */
	"ALTER TABLE envs ADD COLUMN applied_rev INTEGER NOT NULL DEFAULT 0;",
	/* 3: facts about the store, such as which key sealed its secrets. */
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
	" WITHOUT ROWID;",
	/* 4: the hash of each environment's newest audit line. */
	"ALTER TABLE envs ADD COLUMN audit_head TEXT NOT NULL DEFAULT '';",
	/* 5: protected destroys waiting for approval. */
	"ALTER TABLE resources ADD COLUMN destroy_requested INTEGER NOT NULL"
	" DEFAULT 0;",
	/* 6: history_keep: the oldest revision kept, and the hash the oldest
	 * kept audit line chains to. */
	"ALTER TABLE envs ADD COLUMN first_rev INTEGER NOT NULL DEFAULT 1;"
	"ALTER TABLE envs ADD COLUMN audit_base TEXT NOT NULL DEFAULT '';",
	/* 7: what daemons sharing a PostgreSQL store count and lease. A
	 * SQLite store has one daemon: nothing to add. */
	"",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))
_Static_assert(SCHEMA_VERSION == STORE_SCHEMA_VERSION,
	       "a schema change lands in both backends under one number");

enum stmt_id {
	S_PUT_ENV_NEW,
	S_PUT_ENV,
	S_DROP_ENV,
	S_PUT_RES_NEW,
	S_PUT_RES,
	S_DROP_RES,
	S_ADD_REVISION,
	S_ADD_HISTORY,
	S_ADD_AUDIT,
	S_ADD_EVENT,
	S_PUT_SECRET,
	S_DROP_SECRET,
	S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
	[S_PUT_ENV_NEW] = "INSERT INTO envs(name, uid, gid, mode, ctime, mtime,"
			  " rev, rev_time, config, config_rev, policy,"
			  " policy_rev, applied_rev, audit_head, first_rev,"
			  " audit_base)"
			  " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
	[S_PUT_ENV] = "UPDATE envs SET name=?, uid=?, gid=?, mode=?, ctime=?,"
		      " mtime=?, rev=?, rev_time=?, config=?, config_rev=?,"
		      " policy=?, policy_rev=?, applied_rev=?, audit_head=?,"
		      " first_rev=?, audit_base=? WHERE id=?",
	[S_DROP_ENV] = "UPDATE envs SET deleted=1 WHERE id=?",
	[S_PUT_RES_NEW] = "INSERT INTO resources(env_id, kind, name, spec, rev,"
			  " ctime, mtime, destroy_requested)"
			  " VALUES(?,?,?,?,?,?,?,?)",
	[S_PUT_RES] = "UPDATE resources SET env_id=?, kind=?, name=?, spec=?,"
		      " rev=?, ctime=?, mtime=?, destroy_requested=?"
		      " WHERE id=?",
	[S_DROP_RES] = "DELETE FROM resources WHERE id=?",
	[S_ADD_REVISION] = "INSERT INTO revisions(env_id, rev, time, uid, gid,"
			   " pid, comm, path, summary, diff)"
			   " VALUES(?,?,?,?,?,?,?,?,?,?)",
	[S_ADD_HISTORY] = "INSERT OR REPLACE INTO history(env_id, kind, name,"
			  " rev, text) VALUES(?,?,?,?,?)",
	[S_ADD_AUDIT] = "INSERT INTO audit(env_id, line) VALUES(?,?)",
	[S_ADD_EVENT] = "INSERT INTO events(env_id, res_id, line)"
			" VALUES(?,?,?)",
	[S_PUT_SECRET] = "INSERT OR REPLACE INTO secrets(env_id, name, version,"
			 " mtime, sealed) VALUES(?,?,?,?,?)",
	[S_DROP_SECRET] = "DELETE FROM secrets WHERE env_id=? AND name=?",
};

struct backend {
	sqlite3 *db; /* the committer's */
	sqlite3 *rd; /* readers', under rd_lock */
	pthread_mutex_t rd_lock;
	sqlite3_stmt *stmts[S_COUNT];
	int lock_fd;
	bool lock_made; /* this start made PATH.lock: a refusal removes it */
	char path[PATH_MAX];
	char holder[256];
};

static int sql_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
	case SQLITE_PERM:
		return -EROFS;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/*
 * A failed write's errno. SQLite says SQLITE_FULL only when write(2) ran
 * out of space; growing the -shm file, truncating or fsync on a full or
 * read-only disk come back as one of the SQLITE_IOERR codes, so the
 * system's errno behind it decides what the writer is told.
 */
static int db_errno(sqlite3 *db, int rc)
{
	switch ((rc & 0xff) == SQLITE_IOERR ? sqlite3_system_errno(db) : 0) {
	case ENOSPC:
	case EDQUOT:
		return -ENOSPC;
	case EROFS:
		return -EROFS;
	default:
		return sql_errno(rc);
	}
}

static int exec_sql(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		log_err("state store: %s", msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return db_errno(db, rc);
	}
	return 0;
}

static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
	sqlite3_finalize(st);
	return rc;
}

/* Opens PATH.lock, noting whether this start made it. */
static int open_lock_file(struct backend *be, const char *lockpath)
{
	for (;;) {
		int fd = open(lockpath, O_RDWR | O_CLOEXEC);

		if (fd >= 0 || errno != ENOENT) {
			be->lock_made = false;
			return fd;
		}
		fd = open(lockpath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
			  0600);
		if (fd >= 0 || errno != EEXIST) {
			be->lock_made = fd >= 0;
			return fd;
		}
	}
}

/*
 * A refused start removes the lock file it made. A daemon that opened that
 * file just before would then hold a lock on a name nobody else sees, so a
 * lock counts only while the file it is on is still PATH.lock.
 */
static bool lock_is_current(int fd, const char *lockpath)
{
	struct stat held, named;

	return fstat(fd, &held) == 0 && stat(lockpath, &named) == 0 &&
	       held.st_dev == named.st_dev && held.st_ino == named.st_ino;
}

/* Leaves no lock file behind where a refused start found none. */
static void remove_lock_made(struct backend *be)
{
	char lockpath[PATH_MAX + 8];

	if (be->lock_fd < 0 || !be->lock_made)
		return;
	snprintf(lockpath, sizeof(lockpath), "%s.lock", be->path);
	unlink(lockpath);
}

/*
 * One daemon per store: a second one on the same file would interleave
 * revision numbers. flock() on a side file is released by the kernel when
 * the holder dies, so a crash never leaves a stale lock behind.
 */
static int take_lock(struct backend *be, char *err, size_t errlen)
{
	char lockpath[PATH_MAX + 8];
	char host[128] = "";
	char when[40];
	int n;

	snprintf(lockpath, sizeof(lockpath), "%s.lock", be->path);
again:
	be->lock_fd = open_lock_file(be, lockpath);
	if (be->lock_fd < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot open lock file %s: %s", lockpath,
			 strerror(e));
		return -e;
	}
	if (flock(be->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		char who[256] = "";
		ssize_t got = pread(be->lock_fd, who, sizeof(who) - 1, 0);

		if (got > 0)
			who[strcspn(who, "\n")] = '\0';
		snprintf(err, errlen,
			 "state store sqlite:%s is in use by another infrafs "
			 "(%s); unmount it first",
			 be->path, got > 0 ? who : "holder unknown");
		close(be->lock_fd);
		be->lock_fd = -1;
		return -EBUSY;
	}
	if (!lock_is_current(be->lock_fd, lockpath)) {
		close(be->lock_fd);
		goto again;
	}
	gethostname(host, sizeof(host) - 1);
	time_rfc3339(time_now(), when, sizeof(when));
	n = snprintf(be->holder, sizeof(be->holder), "pid %d on %s since %s",
		     (int)getpid(), host, when);
	if (ftruncate(be->lock_fd, 0) == 0 &&
	    pwrite(be->lock_fd, be->holder, (size_t)n, 0) != n)
		log_warn("could not record the lock holder in %s", lockpath);
	return 0;
}

static int report_unreadable(struct backend *be, sqlite3 *db, char *err,
			     size_t errlen)
{
	snprintf(err, errlen,
		 "state store sqlite:%s cannot be read (%s); it was left as "
		 "it is",
		 be->path, sqlite3_errmsg(db));
	return -EIO;
}

/* Bytes of quick_check's findings quoted in a refusal. */
#define VERDICT_SHOWN 200

/*
 * A damaged store is refused, never repaired behind the user's back: the
 * revisions in it may be the only record of what runs where.
 */
static int check_integrity(struct backend *be, sqlite3 *db, char *err,
			   size_t errlen)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
	const char *verdict;

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_finalize(st);
		return report_unreadable(be, db, err, errlen);
	}
	verdict = (const char *)sqlite3_column_text(st, 0);
	if (!verdict || strcmp(verdict, "ok") != 0) {
		/* Cut short, so what was done and what to do are never lost. */
		snprintf(err, errlen,
			 "state store sqlite:%s failed its integrity check "
			 "(%.*s%s); it was left as it is: restore it from a "
			 "backup",
			 be->path, VERDICT_SHOWN,
			 verdict ? verdict : "no answer",
			 verdict && strlen(verdict) > VERDICT_SHOWN ? "..."
								    : "");
		sqlite3_finalize(st);
		return -EIO;
	}
	sqlite3_finalize(st);
	return 0;
}

/* Another program's database, or a newer schema, is not ours to change. */
static int check_owner(struct backend *be, sqlite3 *db, char *err,
		       size_t errlen)
{
	int version = 0, app = 0, tables = 0;

	if (pragma_int(db, "PRAGMA user_version", &version) ||
	    pragma_int(db, "PRAGMA application_id", &app) ||
	    pragma_int(db, "SELECT count(*) FROM sqlite_master", &tables))
		return report_unreadable(be, db, err, errlen);
	if ((tables > 0 || app != 0) && app != APPLICATION_ID) {
		snprintf(
			err, errlen,
			"sqlite:%s is a SQLite database of some other program, "
			"not an infrafs state store; it was left as it is",
			be->path);
		return -EINVAL;
	}
	if (version > SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "state store sqlite:%s has schema version %d; this "
			 "infrafs knows up to %d: use a newer infrafs",
			 be->path, version, SCHEMA_VERSION);
		return -EPROTO;
	}
	return 0;
}

static void set_version_sql(char *out, size_t len, int version)
{
	snprintf(out, len, "PRAGMA user_version=%d; PRAGMA application_id=%d;",
		 version, APPLICATION_ID);
}

/*
 * A new store is made at the current schema in one transaction: there
 * is nothing to migrate, and a crash part way leaves an empty file, not
 * a store stuck at some older version.
 */
static int create_schema(struct backend *be, char *err, size_t errlen)
{
	char setver[96];
	int rc = exec_sql(be->db, "BEGIN IMMEDIATE");

	for (int v = 0; !rc && v < SCHEMA_VERSION; v++)
		rc = exec_sql(be->db, migrations[v]);
	set_version_sql(setver, sizeof(setver), SCHEMA_VERSION);
	if (!rc)
		rc = exec_sql(be->db, setver);
	if (!rc)
		rc = exec_sql(be->db, "COMMIT");
	if (rc) {
		exec_sql(be->db, "ROLLBACK");
		snprintf(err, errlen,
			 "state store sqlite:%s: creating schema version %d "
			 "failed",
			 be->path, SCHEMA_VERSION);
		return -EIO;
	}
	return 0;
}

static int migrate(struct backend *be, char *err, size_t errlen)
{
	int version = 0;

	if (pragma_int(be->db, "PRAGMA user_version", &version)) {
		snprintf(err, errlen, "state store sqlite:%s: %s", be->path,
			 sqlite3_errmsg(be->db));
		return -EIO;
	}
	if (version == 0)
		return create_schema(be, err, errlen);
	for (int v = version; v < SCHEMA_VERSION; v++) {
		char setver[96];

		set_version_sql(setver, sizeof(setver), v + 1);
		if (exec_sql(be->db, "BEGIN IMMEDIATE") ||
		    exec_sql(be->db, migrations[v]) ||
		    exec_sql(be->db, setver) || exec_sql(be->db, "COMMIT")) {
			exec_sql(be->db, "ROLLBACK");
			snprintf(err, errlen,
				 "state store sqlite:%s: migration to schema "
				 "version %d failed",
				 be->path, v + 1);
			return -EIO;
		}
		log_info("state store migrated to schema version %d", v + 1);
	}
	return 0;
}

/* Size of the file at path, or -1 when there is none. */
static off_t size_of(const char *path, const char *suffix)
{
	char name[PATH_MAX + 8];
	struct stat sb;

	snprintf(name, sizeof(name), "%s%s", path, suffix);
	return stat(name, &sb) == 0 ? sb.st_size : -1;
}

/* A file: URI naming path, every byte outside the plain set %-escaped. */
static void path_uri(struct buf *uri, const char *path, const char *params)
{
	static const char plain[] = "abcdefghijklmnopqrstuvwxyz"
				    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-~";

	/* "file://" keeps an absolute path that starts with "//" a path. */
	buf_adds(uri, path[0] == '/' ? "file://" : "file:");
	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		if (strchr(plain, *p))
			buf_addc(uri, (char)*p);
		else
			buf_printf(uri, "%%%02X", *p);
	}
	buf_printf(uri, "?%s", params);
}

/*
 * How to read the store without changing a byte of it. A read-only
 * connection is not enough: for a database whose header says WAL, SQLite
 * creates a missing -wal and -shm, rebuilds the -shm when it is the first
 * to open it, and deletes the -wal of an empty main file.
 * - No -wal (or an empty one): the main file is the whole store, and the
 *   lock keeps every other infrafs off it, so immutable=1 reads it with no
 *   locks and without opening a -wal or -shm at all.
 * - A -wal and a -shm (after a crash): readonly_shm=1 maps the -shm
 *   read-only; alone on it, SQLite then reads the -wal into private memory
 *   rather than rebuild the -shm in place.
 * - A -wal without its -shm: SQLite cannot read the -wal without making a
 *   -shm, which it builds from the -wal. That index holds no data, and it
 *   is the one file a refused start can leave behind.
 * Returns 1 for a store with nothing in it yet, to be made as new.
 */
static int reading_uri(struct backend *be, struct buf *uri, char *err,
		       size_t errlen)
{
	off_t main_size = size_of(be->path, "");
	off_t wal_size = size_of(be->path, "-wal");

	if (main_size <= 0 && wal_size > 0) {
		/* SQLite would delete that -wal as stale. */
		snprintf(err, errlen,
			 "state store sqlite:%s is empty or missing but its "
			 "-wal holds %lld bytes; it was left as it is: restore "
			 "it from a backup",
			 be->path, (long long)wal_size);
		return -EIO;
	}
	if (main_size <= 0)
		return 1;
	if (wal_size <= 0)
		path_uri(uri, be->path, "immutable=1");
	else if (size_of(be->path, "-shm") >= 0)
		path_uri(uri, be->path, "mode=ro&readonly_shm=1");
	else
		path_uri(uri, be->path, "mode=ro");
	return 0;
}

/*
 * Ownership, schema version and integrity are checked on a connection
 * that can neither write nor checkpoint, before the writing connection
 * exists: that one switches to WAL and migrates, and its close would
 * checkpoint a -wal into a damaged main file.
 */
static int check_before_writing(struct backend *be, char *err, size_t errlen)
{
	BUF_AUTO uri = BUF_INIT;
	sqlite3 *db = NULL;
	int rc = reading_uri(be, &uri, err, errlen);

	if (rc)
		return rc > 0 ? 0 : rc;
	if (sqlite3_open_v2(buf_str(&uri), &db,
			    SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
				    SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		rc = db ? report_unreadable(be, db, err, errlen) : -ENOMEM;
		sqlite3_close(db);
		return rc;
	}
	sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	sqlite3_busy_timeout(db, 5000);
	rc = check_owner(be, db, err, errlen);
	if (!rc)
		rc = check_integrity(be, db, err, errlen);
	sqlite3_close(db);
	return rc;
}

static int open_conn(struct backend *be, sqlite3 **db, char *err, size_t errlen)
{
	int rc = sqlite3_open_v2(be->path, db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
					 SQLITE_OPEN_NOMUTEX,
				 NULL);

	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "cannot open state store sqlite:%s: %s",
			 be->path, *db ? sqlite3_errmsg(*db) : "out of memory");
		return -EIO;
	}
	sqlite3_busy_timeout(*db, 5000);
	return 0;
}

static void be_close(struct backend *be)
{
	if (!be)
		return;
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(be->stmts[i]);
	sqlite3_close(be->rd);
	sqlite3_close(be->db);
	if (be->lock_fd >= 0)
		close(be->lock_fd);
	pthread_mutex_destroy(&be->rd_lock);
	free(be);
}

static int be_open(const char *location, struct backend **out, char *err,
		   size_t errlen)
{
	struct backend *be = xcalloc(1, sizeof(*be));
	int rc;

	be->lock_fd = -1;
	pthread_mutex_init(&be->rd_lock, NULL);
	if (!*location || strlen(location) >= sizeof(be->path) - 1) {
		snprintf(err, errlen, "sqlite: needs a file path");
		rc = -EINVAL;
		goto fail;
	}
	snprintf(be->path, sizeof(be->path), "%s", location);
	rc = mkdir_parents(be->path);
	if (rc) {
		snprintf(err, errlen, "cannot create the folder of %s: %s",
			 be->path, strerror(-rc));
		goto fail;
	}
	rc = take_lock(be, err, errlen);
	if (rc)
		goto fail;
	rc = check_before_writing(be, err, errlen);
	if (rc)
		goto fail;
	rc = open_conn(be, &be->db, err, errlen);
	if (rc)
		goto fail;
	/* FULL: the WAL is fsync'd at every commit, the durability promise. */
	rc = exec_sql(be->db, "PRAGMA journal_mode=WAL; "
			      "PRAGMA synchronous=FULL;");
	if (rc) {
		snprintf(err, errlen, "state store sqlite:%s: cannot use WAL",
			 be->path);
		goto fail;
	}
	rc = migrate(be, err, errlen);
	if (rc)
		goto fail;
	rc = open_conn(be, &be->rd, err, errlen);
	if (rc)
		goto fail;
	for (int i = 0; i < S_COUNT; i++) {
		if (sqlite3_prepare_v3(be->db, stmt_sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &be->stmts[i],
				       NULL) != SQLITE_OK) {
			snprintf(err, errlen, "state store sqlite:%s: %s",
				 be->path, sqlite3_errmsg(be->db));
			rc = -EIO;
			goto fail;
		}
	}
	*out = be;
	return 0;
fail:
	remove_lock_made(be);
	be_close(be);
	return rc;
}

static const char *be_lock_holder(struct backend *be)
{
	return be->holder;
}

/* Binds a run of values; NULL text binds SQL NULL. */
static void bind_text(sqlite3_stmt *st, int i, const char *s, size_t len)
{
	if (s)
		sqlite3_bind_text(st, i, s, (int)len, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static int run(struct backend *be, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE) {
		log_err("state store write failed: %s", sqlite3_errmsg(be->db));
		return db_errno(be->db, rc);
	}
	return 0;
}

static int be_begin(struct backend *be)
{
	return exec_sql(be->db, "BEGIN IMMEDIATE");
}

static int be_commit(struct backend *be)
{
	return exec_sql(be->db, "COMMIT");
}

static void be_rollback(struct backend *be)
{
	/* After SQLITE_FULL or an I/O error SQLite may have rolled back
	 * already; a second ROLLBACK would only log a confusing error. */
	if (!sqlite3_get_autocommit(be->db))
		exec_sql(be->db, "ROLLBACK");
}

static int be_put_env(struct backend *be, const struct env *e, uint64_t *id)
{
	sqlite3_stmt *st = be->stmts[*id ? S_PUT_ENV : S_PUT_ENV_NEW];
	int rc;

	sqlite3_bind_text(st, 1, e->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, e->uid);
	sqlite3_bind_int64(st, 3, e->gid);
	sqlite3_bind_int64(st, 4, e->mode);
	sqlite3_bind_double(st, 5, e->ctime);
	sqlite3_bind_double(st, 6, e->mtime);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)e->rev);
	sqlite3_bind_double(st, 8, e->rev_time);
	bind_text(st, 9, e->config.text, e->config.len);
	sqlite3_bind_int64(st, 10, (sqlite3_int64)e->config.rev);
	bind_text(st, 11, e->policy.text, e->policy.len);
	sqlite3_bind_int64(st, 12, (sqlite3_int64)e->policy.rev);
	sqlite3_bind_int64(st, 13, (sqlite3_int64)e->applied_rev);
	sqlite3_bind_text(st, 14, e->audit_head, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 15, (sqlite3_int64)e->first_rev);
	sqlite3_bind_text(st, 16, e->audit_base, -1, SQLITE_STATIC);
	if (*id)
		sqlite3_bind_int64(st, 17, (sqlite3_int64)*id);
	rc = run(be, st);
	if (!rc && !*id)
		*id = (uint64_t)sqlite3_last_insert_rowid(be->db);
	return rc;
}

static int be_drop_env(struct backend *be, uint64_t env_id)
{
	sqlite3_stmt *st = be->stmts[S_DROP_ENV];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
	return run(be, st);
}

static int be_put_res(struct backend *be, const struct resource *r,
		      uint64_t *id)
{
	sqlite3_stmt *st = be->stmts[*id ? S_PUT_RES : S_PUT_RES_NEW];
	int rc;

	sqlite3_bind_int64(st, 1, (sqlite3_int64)r->env->id);
	sqlite3_bind_text(st, 2, kind_at(r->kind)->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, r->name, -1, SQLITE_STATIC);
	bind_text(st, 4, r->spec.text, r->spec.len);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)r->spec.rev);
	sqlite3_bind_double(st, 6, r->ctime);
	sqlite3_bind_double(st, 7, r->spec.mtime);
	sqlite3_bind_int(st, 8, r->destroy_requested);
	if (*id)
		sqlite3_bind_int64(st, 9, (sqlite3_int64)*id);
	rc = run(be, st);
	if (!rc && !*id)
		*id = (uint64_t)sqlite3_last_insert_rowid(be->db);
	return rc;
}

static int be_drop_res(struct backend *be, uint64_t res_id)
{
	sqlite3_stmt *st = be->stmts[S_DROP_RES];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)res_id);
	return run(be, st);
}

static int be_add_revision(struct backend *be, const struct revision_row *row)
{
	sqlite3_stmt *st = be->stmts[S_ADD_REVISION];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)row->env_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)row->rev);
	sqlite3_bind_double(st, 3, row->time);
	sqlite3_bind_int64(st, 4, row->uid);
	sqlite3_bind_int64(st, 5, row->gid);
	sqlite3_bind_int64(st, 6, row->pid);
	sqlite3_bind_text(st, 7, row->comm, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, row->path, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, row->summary, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 10, row->diff, -1, SQLITE_STATIC);
	return run(be, st);
}

static int be_add_history(struct backend *be, uint64_t env_id, uint64_t rev,
			  const char *kind, const char *name, const char *text,
			  size_t len)
{
	sqlite3_stmt *st = be->stmts[S_ADD_HISTORY];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)rev);
	bind_text(st, 5, text, len);
	return run(be, st);
}

static int be_add_audit(struct backend *be, uint64_t env_id, const char *line)
{
	sqlite3_stmt *st = be->stmts[S_ADD_AUDIT];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
	sqlite3_bind_text(st, 2, line, -1, SQLITE_STATIC);
	return run(be, st);
}

static int be_add_event(struct backend *be, uint64_t env_id, uint64_t res_id,
			const char *line)
{
	sqlite3_stmt *st = be->stmts[S_ADD_EVENT];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)res_id);
	sqlite3_bind_text(st, 3, line, -1, SQLITE_STATIC);
	return run(be, st);
}

static int be_put_secret(struct backend *be, uint64_t env_id,
			 const struct secret_meta *s, const void *sealed,
			 size_t len)
{
	sqlite3_stmt *st = be->stmts[S_PUT_SECRET];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
	sqlite3_bind_text(st, 2, s->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)s->version);
	sqlite3_bind_double(st, 4, s->mtime);
	sqlite3_bind_blob(st, 5, sealed, (int)len, SQLITE_STATIC);
	return run(be, st);
}

static int be_drop_secret(struct backend *be, uint64_t env_id, const char *name)
{
	sqlite3_stmt *st = be->stmts[S_DROP_SECRET];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	return run(be, st);
}

/* Runs sql with env_id and before bound as $1 and $2; counts rows. */
static int delete_before(struct backend *be, const char *sql, uint64_t env_id,
			 uint64_t before, uint64_t *count)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(be->db, sql, -1, &st, NULL);

	if (rc != SQLITE_OK)
		return db_errno(be->db, rc);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)before);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_errno(be->db, rc);
	*count += (uint64_t)sqlite3_changes(be->db);
	return 0;
}

static int each_audit_line(struct backend *be, uint64_t env_id,
			   bool (*each)(int64_t id, const char *line,
					void *ctx),
			   void *ctx)
{
	sqlite3_stmt *st;
	int rc =
		sqlite3_prepare_v2(be->db,
				   "SELECT id, line FROM audit WHERE env_id = ?"
				   " ORDER BY id",
				   -1, &st, NULL);

	if (rc != SQLITE_OK)
		return db_errno(be->db, rc);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW &&
	       each(sqlite3_column_int64(st, 0),
		    (const char *)sqlite3_column_text(st, 1), ctx))
		;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_errno(be->db, rc);
}

static int be_prune(struct backend *be, uint64_t env_id, uint64_t keep_from,
		    bool (*keep_line)(const char *line, uint64_t keep_from),
		    struct prune_result *out)
{
	static const struct prune_steps steps = {
		.delete_before = delete_before,
		.each_audit_line = each_audit_line,
	};

	return backend_prune(be, &steps, env_id, keep_from, keep_line, out);
}

/* ---- loading ---------------------------------------------------------- */

static char *column_dup(sqlite3_stmt *st, int col, size_t *len)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	if (!t) {
		*len = 0;
		return NULL;
	}
	*len = (size_t)sqlite3_column_bytes(st, col);
	return xstrndup((const char *)t, *len);
}

static int load_envs(struct backend *be, struct model *m)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(
		be->db,
		"SELECT id, name, uid, gid, mode, ctime, mtime, rev, rev_time,"
		" config, config_rev, policy, policy_rev,"
		" (SELECT count(*) FROM audit a WHERE a.env_id = envs.id),"
		" applied_rev, audit_head, first_rev, audit_base"
		" FROM envs WHERE deleted = 0"
		" ORDER BY id",
		-1, &st, NULL);

	if (rc != SQLITE_OK)
		return sql_errno(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct env *e =
			model_add_env(m, (uint64_t)sqlite3_column_int64(st, 0),
				      (const char *)sqlite3_column_text(st, 1));
		size_t len;
		char *text;

		e->uid = (uid_t)sqlite3_column_int64(st, 2);
		e->gid = (gid_t)sqlite3_column_int64(st, 3);
		e->mode = (mode_t)sqlite3_column_int64(st, 4);
		e->ctime = sqlite3_column_double(st, 5);
		e->mtime = sqlite3_column_double(st, 6);
		e->rev = (uint64_t)sqlite3_column_int64(st, 7);
		e->rev_durable = e->rev;
		e->rev_time = sqlite3_column_double(st, 8);
		text = column_dup(st, 9, &len);
		doc_load(&e->config, &kind_config, text, len,
			 (uint64_t)sqlite3_column_int64(st, 10), e->mtime);
		text = column_dup(st, 11, &len);
		doc_load(&e->policy, &kind_policy, text, len,
			 (uint64_t)sqlite3_column_int64(st, 12), e->mtime);
		e->audit_lines = (uint64_t)sqlite3_column_int64(st, 13);
		e->audit_durable = e->audit_lines;
		e->applied_rev = (uint64_t)sqlite3_column_int64(st, 14);
		snprintf(e->audit_head, sizeof(e->audit_head), "%s",
			 (const char *)sqlite3_column_text(st, 15));
		e->first_rev = (uint64_t)sqlite3_column_int64(st, 16);
		snprintf(e->audit_base, sizeof(e->audit_base), "%s",
			 (const char *)sqlite3_column_text(st, 17));
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sql_errno(rc);
}

static int load_resources(struct backend *be, struct model *m)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(be->db,
				    "SELECT id, env_id, kind, name, spec, rev,"
				    " ctime, mtime, destroy_requested"
				    " FROM resources ORDER BY id",
				    -1, &st, NULL);

	if (rc != SQLITE_OK)
		return sql_errno(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct env *e = model_env_by_id(
			m, (uint64_t)sqlite3_column_int64(st, 1));
		const struct kind_def *k =
			kind_by_name((const char *)sqlite3_column_text(st, 2));
		struct resource *r;
		size_t len;
		char *text;

		if (!e || !k || kind_index(k) < 0)
			continue;
		r = model_add_res(m, e, (uint64_t)sqlite3_column_int64(st, 0),
				  kind_index(k),
				  (const char *)sqlite3_column_text(st, 3));
		r->ctime = sqlite3_column_double(st, 6);
		r->destroy_requested = sqlite3_column_int(st, 8) != 0;
		text = column_dup(st, 4, &len);
		doc_load(&r->spec, k, text, len,
			 (uint64_t)sqlite3_column_int64(st, 5),
			 sqlite3_column_double(st, 7));
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sql_errno(rc);
}

static int load_secrets(struct backend *be, struct model *m)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(
		be->db, "SELECT env_id, name, version, mtime FROM secrets", -1,
		&st, NULL);

	if (rc != SQLITE_OK)
		return sql_errno(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct env *e = model_env_by_id(
			m, (uint64_t)sqlite3_column_int64(st, 0));
		struct secret_meta *s;

		if (!e)
			continue;
		s = xcalloc(1, sizeof(*s));
		snprintf(s->name, sizeof(s->name), "%s",
			 (const char *)sqlite3_column_text(st, 1));
		s->version = (uint64_t)sqlite3_column_int64(st, 2);
		s->mtime = sqlite3_column_double(st, 3);
		map_put(&e->secrets, s->name, strlen(s->name), s);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sql_errno(rc);
}

/* The newest EVENTS_KEPT lines of every environment and resource. */
static int load_events(struct backend *be, struct model *m)
{
	sqlite3_stmt *st;
	char sql[512];
	int rc;

	snprintf(sql, sizeof(sql),
		 "SELECT env_id, res_id, line FROM (SELECT *, row_number()"
		 " OVER (PARTITION BY env_id, res_id ORDER BY id DESC) AS n"
		 " FROM events) WHERE n <= %d ORDER BY id",
		 EVENTS_KEPT);
	rc = sqlite3_prepare_v2(be->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t env_id = (uint64_t)sqlite3_column_int64(st, 0);
		uint64_t res_id = (uint64_t)sqlite3_column_int64(st, 1);
		struct env *e = model_env_by_id(m, env_id);
		struct resource *r = res_id ? model_res_by_id(m, res_id) : NULL;
		size_t len;
		char *line = column_dup(st, 2, &len);

		if (r)
			event_log_append(&r->events, line);
		else if (e && !res_id)
			event_log_append(&e->events, line);
		else
			free(line);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sql_errno(rc);
}

/* Counts every line ever kept, so an events file's size covers them all. */
static int load_event_totals(struct backend *be, struct model *m)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(
		be->db,
		"SELECT env_id, res_id, count(*),"
		" sum(length(CAST(line AS BLOB))) FROM events"
		" GROUP BY env_id, res_id",
		-1, &st, NULL);

	if (rc != SQLITE_OK)
		return sql_errno(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t res_id = (uint64_t)sqlite3_column_int64(st, 1);
		struct env *e = model_env_by_id(
			m, (uint64_t)sqlite3_column_int64(st, 0));
		struct resource *r = res_id ? model_res_by_id(m, res_id) : NULL;
		struct event_log *log =
			r ? &r->events : (e && !res_id ? &e->events : NULL);

		if (!log)
			continue;
		log->total = (uint64_t)sqlite3_column_int64(st, 2);
		log->bytes = (uint64_t)sqlite3_column_int64(st, 3);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sql_errno(rc);
}

static int be_load(struct backend *be, struct model *m)
{
	int rc = load_envs(be, m);

	if (!rc)
		rc = load_resources(be, m);
	if (!rc)
		rc = load_secrets(be, m);
	if (!rc)
		rc = load_events(be, m);
	if (!rc)
		rc = load_event_totals(be, m);
	return rc;
}

/* ---- readers ---------------------------------------------------------- */

static int be_revision(struct backend *be, uint64_t env_id, uint64_t rev,
		       struct revision_row *row)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&be->rd_lock);
	rc = sqlite3_prepare_v2(be->rd,
				"SELECT time, uid, gid, pid, comm, path,"
				" summary, diff FROM revisions"
				" WHERE env_id = ? AND rev = ?",
				-1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)rev);
		rc = sqlite3_step(st);
	}
	if (rc == SQLITE_ROW) {
		struct buf b = BUF_INIT;
		size_t off[4];

		memset(row, 0, sizeof(*row));
		row->env_id = env_id;
		row->rev = rev;
		row->time = sqlite3_column_double(st, 0);
		row->uid = (uint32_t)sqlite3_column_int64(st, 1);
		row->gid = (uint32_t)sqlite3_column_int64(st, 2);
		row->pid = (int32_t)sqlite3_column_int64(st, 3);
		for (int i = 0; i < 4; i++) {
			const char *t =
				(const char *)sqlite3_column_text(st, 4 + i);

			off[i] = b.len;
			buf_adds(&b, t ? t : "");
			buf_addc(&b, '\0');
		}
		row->storage = buf_steal(&b);
		row->comm = row->storage + off[0];
		row->path = row->storage + off[1];
		row->summary = row->storage + off[2];
		row->diff = row->storage + off[3];
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : sql_errno(rc);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&be->rd_lock);
	return rc;
}

/* Reads from the oldest kept revision on, so it costs what the age rule
 * is about to prune, not the whole history. */
static int be_first_rev_since(struct backend *be, uint64_t env_id, double since,
			      uint64_t *rev)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&be->rd_lock);
	rc = sqlite3_prepare_v2(be->rd,
				"SELECT rev FROM revisions WHERE env_id = ?"
				" AND time >= ? ORDER BY rev LIMIT 1",
				-1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
		sqlite3_bind_double(st, 2, since);
		rc = sqlite3_step(st);
	}
	if (rc == SQLITE_ROW) {
		*rev = (uint64_t)sqlite3_column_int64(st, 0);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : sql_errno(rc);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&be->rd_lock);
	return rc;
}

static int be_history_text(struct backend *be, uint64_t env_id, uint64_t rev,
			   const char *kind, const char *name, struct buf *out)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&be->rd_lock);
	rc = sqlite3_prepare_v2(be->rd,
				"SELECT text FROM history WHERE env_id = ?"
				" AND kind = ? AND name = ? AND rev <= ?"
				" ORDER BY rev DESC LIMIT 1",
				-1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
		sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)rev);
		rc = sqlite3_step(st);
	}
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		buf_add(out, sqlite3_column_text(st, 0),
			(size_t)sqlite3_column_bytes(st, 0));
		rc = 0;
	} else {
		rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? -ENOENT
							   : sql_errno(rc);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&be->rd_lock);
	return rc;
}

static int be_history_names(struct backend *be, uint64_t env_id, uint64_t rev,
			    const char *kind, struct buf *out)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&be->rd_lock);
	/* SQLite takes the bare column `text` from the row holding max(rev). */
	rc = sqlite3_prepare_v2(be->rd,
				"SELECT name, text IS NOT NULL, max(rev)"
				" FROM history WHERE env_id = ? AND kind = ?"
				" AND rev <= ? GROUP BY name ORDER BY name",
				-1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
		sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)rev);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			if (!sqlite3_column_int(st, 1))
				continue;
			buf_adds(out, (const char *)sqlite3_column_text(st, 0));
			buf_addc(out, '\n');
		}
	}
	rc = rc == SQLITE_DONE ? 0 : sql_errno(rc);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&be->rd_lock);
	return rc;
}

static int be_audit(struct backend *be, uint64_t env_id, struct buf *out)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&be->rd_lock);
	rc = sqlite3_prepare_v2(be->rd,
				"SELECT line FROM audit WHERE env_id = ?"
				" ORDER BY id",
				-1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			buf_add(out, sqlite3_column_text(st, 0),
				(size_t)sqlite3_column_bytes(st, 0));
			buf_addc(out, '\n');
		}
	}
	rc = rc == SQLITE_DONE ? 0 : sql_errno(rc);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&be->rd_lock);
	return rc;
}

static int be_events(struct backend *be, uint64_t env_id, uint64_t res_id,
		     uint64_t limit, struct buf *out)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&be->rd_lock);
	rc = sqlite3_prepare_v2(be->rd,
				"SELECT line FROM events WHERE env_id = ?"
				" AND res_id = ? ORDER BY id LIMIT ?",
				-1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)env_id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)res_id);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW)
			buf_add(out, sqlite3_column_text(st, 0),
				(size_t)sqlite3_column_bytes(st, 0));
	}
	rc = rc == SQLITE_DONE ? 0 : sql_errno(rc);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&be->rd_lock);
	return rc;
}

/* One text value from the read connection, for a one-column query. */
static int read_one(struct backend *be, const char *sql, sqlite3_int64 id,
		    const char *text, struct buf *out)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&be->rd_lock);
	rc = sqlite3_prepare_v2(be->rd, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		int i = 1;

		if (id >= 0)
			sqlite3_bind_int64(st, i++, id);
		sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	if (rc == SQLITE_ROW) {
		buf_add(out, sqlite3_column_blob(st, 0),
			(size_t)sqlite3_column_bytes(st, 0));
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : sql_errno(rc);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&be->rd_lock);
	return rc;
}

static int be_secret_sealed(struct backend *be, uint64_t env_id,
			    const char *name, struct buf *out)
{
	return read_one(be,
			"SELECT sealed FROM secrets WHERE env_id = ? AND"
			" name = ?",
			(sqlite3_int64)env_id, name, out);
}

static int be_meta_get(struct backend *be, const char *key, struct buf *out)
{
	return read_one(be, "SELECT value FROM meta WHERE key = ?", -1, key,
			out);
}

static int be_meta_put(struct backend *be, const char *key, const char *value)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(be->db,
				    "INSERT OR REPLACE INTO meta(key, value)"
				    " VALUES(?, ?)",
				    -1, &st, NULL);

	if (rc != SQLITE_OK)
		return sql_errno(rc);
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sql_errno(rc);
}

/* ---- checking without opening ------------------------------------------ */

/*
 * A daemon on the store holds PATH.lock; a shared lock tells without
 * writing (the file is never made here). Held by the caller until the
 * check ends, so no daemon starts migrating under it.
 */
static int check_not_in_use(struct backend *be, char *err, size_t errlen)
{
	char lockpath[PATH_MAX + 8];
	char who[256] = "";
	ssize_t got;

	snprintf(lockpath, sizeof(lockpath), "%s.lock", be->path);
	be->lock_fd = open(lockpath, O_RDONLY | O_CLOEXEC);
	if (be->lock_fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (flock(be->lock_fd, LOCK_SH | LOCK_NB) == 0)
		return 0;
	got = pread(be->lock_fd, who, sizeof(who) - 1, 0);
	if (got > 0)
		who[strcspn(who, "\n")] = '\0';
	snprintf(err, errlen,
		 "state store sqlite:%s is in use by an infrafs (%s); it "
		 "cannot be checked while mounted",
		 be->path, got > 0 ? who : "holder unknown");
	return -EBUSY;
}

/* A -wal without its -shm cannot be read without making a -shm: only the
 * main file is checked then, and the report says so. */
static void check_uri(struct backend *be, struct buf *uri, struct buf *report)
{
	if (size_of(be->path, "-wal") <= 0) {
		path_uri(uri, be->path, "immutable=1");
	} else if (size_of(be->path, "-shm") >= 0) {
		path_uri(uri, be->path, "mode=ro&readonly_shm=1");
	} else {
		path_uri(uri, be->path, "immutable=1");
		buf_printf(report,
			   "wal: %s-wal has no -shm; only the main file was "
			   "checked (a start reads the -wal)\n",
			   be->path);
	}
}

static int check_db(struct backend *be, sqlite3 *db, struct buf *report,
		    struct buf *fingerprint, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int version = 0;
	int rc = check_owner(be, db, err, errlen);

	if (!rc)
		rc = check_integrity(be, db, err, errlen);
	if (rc)
		return rc;
	pragma_int(db, "PRAGMA user_version", &version);
	buf_printf(report, "schema: version %d%s\n", version,
		   version < SCHEMA_VERSION ? " (migrated at the next start)"
					    : "");
	buf_adds(report, "integrity: ok\n");
	if (version > 0 &&
	    sqlite3_prepare_v2(db,
			       "SELECT value FROM meta WHERE key = "
			       "'key_fingerprint'",
			       -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		buf_adds(fingerprint, (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return 0;
}

static int be_check(const char *location, struct buf *report,
		    struct buf *fingerprint, char *err, size_t errlen)
{
	struct backend be = { .lock_fd = -1 };
	BUF_AUTO uri = BUF_INIT;
	sqlite3 *db = NULL;
	int rc;

	if (!*location || strlen(location) >= sizeof(be.path) - 1) {
		snprintf(err, errlen, "sqlite: needs a file path");
		return -EINVAL;
	}
	snprintf(be.path, sizeof(be.path), "%s", location);
	rc = check_not_in_use(&be, err, errlen);
	if (rc)
		goto out;
	if (size_of(be.path, "") <= 0 && size_of(be.path, "-wal") <= 0) {
		rc = 1;
		goto out;
	}
	rc = reading_uri(&be, &uri, err, errlen);
	if (rc < 0)
		goto out;
	buf_truncate(&uri, 0);
	check_uri(&be, &uri, report);
	if (sqlite3_open_v2(buf_str(&uri), &db,
			    SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
				    SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		rc = db ? report_unreadable(&be, db, err, errlen) : -ENOMEM;
		goto out;
	}
	sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	rc = check_db(&be, db, report, fingerprint, err, errlen);
out:
	sqlite3_close(db);
	if (be.lock_fd >= 0)
		close(be.lock_fd);
	return rc;
}

const struct backend_ops sqlite_backend = {
	.scheme = "sqlite",
	.location_is_file = true,
	.open = be_open,
	.close = be_close,
	.check = be_check,
	.lock_holder = be_lock_holder,
	.load = be_load,
	.begin = be_begin,
	.commit = be_commit,
	.rollback = be_rollback,
	.put_env = be_put_env,
	.drop_env = be_drop_env,
	.put_res = be_put_res,
	.drop_res = be_drop_res,
	.add_revision = be_add_revision,
	.add_history = be_add_history,
	.prune = be_prune,
	.add_audit = be_add_audit,
	.add_event = be_add_event,
	.put_secret = be_put_secret,
	.drop_secret = be_drop_secret,
	.revision = be_revision,
	.first_rev_since = be_first_rev_since,
	.history_text = be_history_text,
	.history_names = be_history_names,
	.audit = be_audit,
	.events = be_events,
	.secret_sealed = be_secret_sealed,
	.meta_get = be_meta_get,
	.meta_put = be_meta_put,
};
