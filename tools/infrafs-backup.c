// SPDX-License-Identifier: MIT
/*
 * infrafs-backup: a consistent copy of a state store, taken while the
 * daemon runs and commits. SQLite's online backup API copies the pages
 * through a read-only connection, in steps, inside one read transaction:
 * in WAL mode (the daemon's) that pins one snapshot without blocking the
 * daemon's writers, so the copy holds whole revisions only and never
 * restarts. The copy goes to a temporary file beside DEST, is checked
 * (integrity, schema, audit chains) and fsync'd, and only then renamed
 * to DEST: DEST is either absent, the old file, or a checked backup.
 *
 * The daemon's flock on PATH.lock is not taken: it guards against a
 * second writer, and this tool never writes to the store.
 *
 * Usage: infrafs-backup [--force] sqlite:PATH|PATH DEST
 * Exit status: 0 the backup is in place, 1 it is not (the message says
 * why).
 */
#include "audit_chain.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "infr", as store/sqlite.c stamps it: only infrafs stores are copied. */
#define APPLICATION_ID 0x696e6672
/* Pages per step: a few MiB, so each step is short. */
#define STEP_PAGES 1024
/* Steps in a row the store may refuse, each after its busy timeout. */
#define MAX_BUSY_STEPS 12

struct backup {
	const char *src_path;
	const char *dest;
	bool force;
	char tmp[PATH_MAX];
	int tmp_fd;
	sqlite3 *src;
	sqlite3 *dst;
	int app_id;
	int user_version;
	/* What the backup holds, printed once it is in place. */
	FILE *summary;
	char *summary_text;
	size_t summary_len;
};

static void fail(const char *fmt, ...)
{
	va_list ap;

	fputs("infrafs-backup: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int(st, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

/* The first column of the first row as text, into out. */
static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t len)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *text = (const char *)sqlite3_column_text(st, 0);

		snprintf(out, len, "%s", text ? text : "");
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

static int usage(FILE *to, int rc)
{
	fprintf(to, "usage: infrafs-backup [--force] sqlite:PATH|PATH DEST\n");
	return rc;
}

static int parse_args(struct backup *b, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
		if (c == 'f')
			b->force = true;
		else if (c == 'h')
			return usage(stdout, -1); /* done, exit 0 */
		else
			return usage(stderr, 1);
	}
	if (argc - optind != 2)
		return usage(stderr, 1);
	b->src_path = argv[optind];
	if (!strncmp(b->src_path, "sqlite:", 7))
		b->src_path += 7;
	b->dest = argv[optind + 1];
	return 0;
}

/*
 * DEST is refused when it exists (unless --force) and always when it is
 * the store itself, which --force would otherwise replace.
 */
static int check_dest(const struct backup *b)
{
	struct stat src, dst;

	if (stat(b->src_path, &src) < 0) {
		fail("cannot read the state store %s: %s", b->src_path,
		     strerror(errno));
		return 1;
	}
	if (lstat(b->dest, &dst) < 0)
		return 0;
	if (src.st_dev == dst.st_dev && src.st_ino == dst.st_ino) {
		fail("%s is the state store itself; back it up elsewhere",
		     b->dest);
		return 1;
	}
	if (!b->force) {
		fail("%s exists; use --force to replace it", b->dest);
		return 1;
	}
	if (S_ISDIR(dst.st_mode)) {
		fail("%s is a folder; name the backup file", b->dest);
		return 1;
	}
	return 0;
}

/*
 * Opens the store read-only and starts the read transaction every step
 * of the copy shares, so all of them see one snapshot; the schema stamps
 * are read from that same snapshot.
 */
static int open_source(struct backup *b)
{
	if (sqlite3_open_v2(b->src_path, &b->src, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		fail("cannot open the state store %s: %s", b->src_path,
		     sqlite3_errmsg(b->src));
		return 1;
	}
	sqlite3_busy_timeout(b->src, 5000);
	if (sqlite3_exec(b->src, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    pragma_int(b->src, "PRAGMA application_id", &b->app_id) ||
	    pragma_int(b->src, "PRAGMA user_version", &b->user_version)) {
		fail("cannot read the state store %s: %s", b->src_path,
		     sqlite3_errmsg(b->src));
		return 1;
	}
	if (b->app_id != APPLICATION_ID) {
		fail("%s is not an infrafs state store", b->src_path);
		return 1;
	}
	return 0;
}

/* A new private file beside DEST, so the final rename stays on one fs. */
static int make_temp(struct backup *b)
{
	int n = snprintf(b->tmp, sizeof(b->tmp), "%s.tmp-XXXXXX", b->dest);

	if (n < 0 || (size_t)n >= sizeof(b->tmp)) {
		fail("%s: name too long", b->dest);
		return 1;
	}
	b->tmp_fd = mkstemp(b->tmp);
	if (b->tmp_fd < 0) {
		fail("cannot create %s: %s", b->tmp, strerror(errno));
		b->tmp[0] = '\0';
		return 1;
	}
	if (sqlite3_open_v2(b->tmp, &b->dst, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK) {
		fail("cannot open %s: %s", b->tmp, sqlite3_errmsg(b->dst));
		return 1;
	}
	return 0;
}

static int copy_pages(struct backup *b)
{
	sqlite3_backup *bk =
		sqlite3_backup_init(b->dst, "main", b->src, "main");
	int rc, busy = 0;

	if (!bk) {
		fail("cannot start the copy: %s", sqlite3_errmsg(b->dst));
		return 1;
	}
	do {
		rc = sqlite3_backup_step(bk, STEP_PAGES);
		if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
			busy++;
			sqlite3_sleep(10);
		} else {
			busy = 0;
		}
	} while (
		(rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) &&
		busy < MAX_BUSY_STEPS);
	sqlite3_backup_finish(bk);
	if (rc != SQLITE_DONE) {
		fail("copying %s failed: %s", b->src_path, sqlite3_errstr(rc));
		return 1;
	}
	/* The snapshot is copied; let the daemon checkpoint past it. */
	sqlite3_exec(b->src, "COMMIT", NULL, NULL, NULL);
	return 0;
}

/*
 * The pages carry the store's WAL mode; a backup in rollback mode is one
 * self-contained file, and the daemon turns WAL on again when it mounts it.
 */
static int make_self_contained(struct backup *b)
{
	char mode[16] = "";

	if (pragma_text(b->dst, "PRAGMA journal_mode=DELETE", mode,
			sizeof(mode)) ||
	    strcmp(mode, "delete") != 0) {
		fail("cannot finish %s: %s", b->tmp, sqlite3_errmsg(b->dst));
		return 1;
	}
	return 0;
}

/* The copy is page for page, so damage in the store shows here. */
static int check_integrity(struct backup *b)
{
	char verdict[256] = "";
	int app = 0, version = 0;

	if (pragma_text(b->dst, "PRAGMA integrity_check(1)", verdict,
			sizeof(verdict)) ||
	    strcmp(verdict, "ok") != 0) {
		fail("the state store %s failed its integrity check (%s); "
		     "no backup was written",
		     b->src_path,
		     verdict[0] ? verdict : sqlite3_errmsg(b->dst));
		return 1;
	}
	if (pragma_int(b->dst, "PRAGMA application_id", &app) ||
	    pragma_int(b->dst, "PRAGMA user_version", &version) ||
	    app != b->app_id || version != b->user_version) {
		fail("the copy's schema stamps (%d, version %d) differ from "
		     "the store's (%d, version %d); no backup was written",
		     app, version, b->app_id, b->user_version);
		return 1;
	}
	return 0;
}

/*
 * Every environment's audit chain, removed ones too, walked by the code
 * infrafs-audit-verify runs; the verdicts go into the summary.
 */
static int check_audit(struct backup *b)
{
	sqlite3_stmt *st;
	bool ok = true;

	if (audit_chain_envs(b->dst, &st) != SQLITE_OK) {
		fail("the copy has no audit chains: %s",
		     sqlite3_errmsg(b->dst));
		return 1;
	}
	while (sqlite3_step(st) == SQLITE_ROW)
		ok &= audit_chain_verify(b->dst, st, b->summary);
	sqlite3_finalize(st);
	if (!ok) {
		fflush(b->summary);
		fputs(b->summary_text, stderr);
		fail("an audit chain of %s is broken; no backup was written",
		     b->src_path);
		return 1;
	}
	return 0;
}

/* What the backup holds: revisions of each live environment, its size. */
static int summarize(struct backup *b)
{
	sqlite3_stmt *st;
	struct stat sb;

	if (sqlite3_prepare_v2(
		    b->dst,
		    "SELECT name, rev, (SELECT count(*) FROM revisions"
		    " WHERE env_id = envs.id) FROM envs WHERE deleted = 0"
		    " ORDER BY name",
		    -1, &st, NULL) != SQLITE_OK) {
		fail("cannot read the copy: %s", sqlite3_errmsg(b->dst));
		return 1;
	}
	while (sqlite3_step(st) == SQLITE_ROW)
		fprintf(b->summary, "%s: %lld revisions, newest %lld\n",
			sqlite3_column_text(st, 0), sqlite3_column_int64(st, 2),
			sqlite3_column_int64(st, 1));
	sqlite3_finalize(st);
	if (fstat(b->tmp_fd, &sb) == 0)
		fprintf(b->summary, "%s: %lld bytes, schema version %d\n",
			b->dest, (long long)sb.st_size, b->user_version);
	return 0;
}

static int fsync_dir_of(const char *path)
{
	char copy[PATH_MAX];
	int fd, rc;

	snprintf(copy, sizeof(copy), "%s", path);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* A file system without RENAME_NOREPLACE gets the same from link(2). */
static int rename_noreplace(const char *from, const char *to)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	if (link(from, to) < 0)
		return -1;
	unlink(from);
	return 0;
}

/*
 * Durable before it is visible: the file is fsync'd, then renamed, then
 * the folder fsync'd so the new name survives a crash too. Without
 * --force the rename refuses to replace a DEST made meanwhile.
 */
static int install(struct backup *b)
{
	int rc;

	sqlite3_close(b->dst);
	b->dst = NULL;
	if (fsync(b->tmp_fd) < 0) {
		fail("cannot write %s: %s", b->tmp, strerror(errno));
		return 1;
	}
	if (b->force)
		rc = rename(b->tmp, b->dest);
	else
		rc = rename_noreplace(b->tmp, b->dest);
	if (rc < 0) {
		fail("cannot put the backup at %s: %s", b->dest,
		     strerror(errno));
		return 1;
	}
	b->tmp[0] = '\0';
	if (fsync_dir_of(b->dest) < 0) {
		fail("cannot make %s durable: %s", b->dest, strerror(errno));
		return 1;
	}
	return 0;
}

/* Whatever did not reach DEST is removed; DEST itself is never touched. */
static void cleanup(struct backup *b)
{
	sqlite3_close(b->dst);
	sqlite3_close(b->src);
	if (b->tmp_fd >= 0)
		close(b->tmp_fd);
	if (b->summary)
		fclose(b->summary);
	if (b->tmp[0]) {
		char journal[PATH_MAX + 16];

		snprintf(journal, sizeof(journal), "%s-journal", b->tmp);
		unlink(journal);
		unlink(b->tmp);
	}
}

int main(int argc, char **argv)
{
	struct backup b = { .tmp_fd = -1 };
	int rc = parse_args(&b, argc, argv);

	if (rc)
		return rc < 0 ? 0 : rc;
	b.summary = open_memstream(&b.summary_text, &b.summary_len);
	if (!b.summary) {
		fail("out of memory");
		return 1;
	}
	rc = check_dest(&b) || open_source(&b) || make_temp(&b) ||
	     copy_pages(&b) || make_self_contained(&b) || check_integrity(&b) ||
	     summarize(&b) || check_audit(&b) || install(&b);
	cleanup(&b);
	if (!rc)
		fputs(b.summary_text, stdout);
	free(b.summary_text);
	return rc ? 1 : 0;
}
