/* SPDX-License-Identifier: MIT */
/*
 * What a state-store backend provides to the committer. The committer
 * decides what to write and when; a backend only stores rows durably and
 * reads them back. SQLite (sqlite.c) is the first, for the one daemon that
 * has the file; PostgreSQL (postgres.c) the second, shared by every daemon
 * that mounts it. Rows written between begin() and commit() become
 * durable together at commit(), or not at all.
 *
 * Writers, begin() and commit() fail with the cause as a negative errno,
 * which the committer hands to every writer of the batch: -ENOSPC (disk
 * or quota full), -EROFS (read-only), -EBUSY (another program holds the
 * lock), -ENOMEM, and -EIO for anything else.
 */
#ifndef INFRAFS_STORE_BACKEND_H
#define INFRAFS_STORE_BACKEND_H

#include "model.h"
#include "util/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct revision_row {
	uint64_t env_id, rev;
	double time;
	uint32_t uid, gid;
	int32_t pid;
	const char *comm, *path, *summary, *diff;
	char *storage; /* readers: the strings above live here; free it */
};

struct backend;

struct observation_row {
	uint64_t env_id, res_id;
	const char *doc; /* JSON */
	uint64_t seq; /* readers: its place in the order of puts */
};

/*
 * What one prune removed. The oldest kept audit line is the first one
 * keep_line() accepts; last_audit_line is the newest one removed (NULL
 * when none was), for the checkpoint the kept ones chain to. Owned by
 * the caller: free last_audit_line.
 */
struct prune_result {
	uint64_t revisions, history_rows, audit_lines;
	char *last_audit_line;
};

/* Both backends number their schemas alike: a change lands in both. */
#define STORE_SCHEMA_VERSION 7

struct backend_ops {
	const char *scheme; /* "sqlite": the URL is SCHEME:LOCATION */
	const char *alias; /* another name for the scheme, or NULL */
	/* LOCATION is a file on this machine, beside which providers keep
	 * theirs; otherwise they keep them in the local state folder. */
	bool location_is_file;
	/* Opens, takes the single-daemon lock, checks integrity, migrates. */
	int (*open)(const char *location, struct backend **out, char *err,
		    size_t errlen);
	void (*close)(struct backend *be);
	/* Checks ownership, schema and integrity without writing a byte nor
	 * taking the lock; report gets one line per finding and fingerprint
	 * the recorded key fingerprint, if any. 1: no store there yet. */
	int (*check)(const char *location, struct buf *report,
		     struct buf *fingerprint, char *err, size_t errlen);
	const char *(*lock_holder)(struct backend *be);
	/* Fills an empty model with everything declared. */
	int (*load)(struct backend *be, struct model *m);

	int (*begin)(struct backend *be);
	int (*commit)(struct backend *be); /* durable when it returns 0 */
	void (*rollback)(struct backend *be);

	/* Row writers, between begin() and commit(). An id of 0 asks the
	 * backend for a new one, returned in *id. */
	int (*put_env)(struct backend *be, const struct env *e, uint64_t *id);
	int (*drop_env)(struct backend *be, uint64_t env_id);
	int (*put_res)(struct backend *be, const struct resource *r,
		       uint64_t *id);
	int (*drop_res)(struct backend *be, uint64_t res_id);
	int (*add_revision)(struct backend *be, const struct revision_row *row);
	/* text NULL records that the object was destroyed at rev. */
	int (*add_history)(struct backend *be, uint64_t env_id, uint64_t rev,
			   const char *kind, const char *name, const char *text,
			   size_t len);
	int (*add_audit)(struct backend *be, uint64_t env_id, const char *line);
	int (*add_event)(struct backend *be, uint64_t env_id, uint64_t res_id,
			 const char *line);
	int (*put_secret)(struct backend *be, uint64_t env_id,
			  const struct secret_meta *s, const void *sealed,
			  size_t len);
	int (*drop_secret)(struct backend *be, uint64_t env_id,
			   const char *name);
	/* Removes revisions before keep_from, the history rows no revision
	 * from keep_from on can show, and the audit lines before the first
	 * one keep_line() accepts. */
	int (*prune)(struct backend *be, uint64_t env_id, uint64_t keep_from,
		     bool (*keep_line)(const char *line, uint64_t keep_from),
		     struct prune_result *out);

	/* Readers, from any thread. */
	int (*revision)(struct backend *be, uint64_t env_id, uint64_t rev,
			struct revision_row *row);
	/* The oldest revision made at or after time since; -ENOENT when
	 * there is none. */
	int (*first_rev_since)(struct backend *be, uint64_t env_id,
			       double since, uint64_t *rev);
	int (*history_text)(struct backend *be, uint64_t env_id, uint64_t rev,
			    const char *kind, const char *name,
			    struct buf *out);
	int (*history_names)(struct backend *be, uint64_t env_id, uint64_t rev,
			     const char *kind, struct buf *out);
	int (*audit)(struct backend *be, uint64_t env_id, struct buf *out);
	/* The sealed bytes of a secret's current version. */
	int (*secret_sealed)(struct backend *be, uint64_t env_id,
			     const char *name, struct buf *out);
	/* Small facts about the store itself (the secret key's fingerprint);
	 * meta_get returns -ENOENT for an unknown key. */
	int (*meta_get)(struct backend *be, const char *key, struct buf *out);
	int (*meta_put)(struct backend *be, const char *key, const char *value);
	/* The oldest `limit` event lines of an object (res_id 0: the env). */
	int (*events)(struct backend *be, uint64_t env_id, uint64_t res_id,
		      uint64_t limit, struct buf *out);

	/*
	 * A store that several daemons share has these; a store with one
	 * daemon leaves them NULL. Every transaction that writes counts as
	 * one commit of the whole store.
	 */
	/* Right after begin(): waits for any other daemon's transaction to
	 * end and keeps the next from starting until this one ends, then
	 * gives the store's commit count as it was. claim: this transaction
	 * writes, counts as the next commit and wakes the other daemons'
	 * wait_commit() when it commits. */
	int (*serialize)(struct backend *be, bool claim, uint64_t *count);
	/*
	 * The watcher's two calls, on a session of their own that no other
	 * thread uses. wait_commit() waits up to timeout_ms for a commit and
	 * gives the commit count. lease() keeps or tries to take env_id's
	 * lease (*held) and names its holder as "HOST pid N" ("" when none);
	 * every lease goes when the session ends, so one that fails means
	 * none is held.
	 */
	int (*wait_commit)(struct backend *be, int timeout_ms, uint64_t *count,
			   void (*heard)(void *ctx, const char *message),
			   void *ctx);
	int (*lease)(struct backend *be, uint64_t env_id, bool *held,
		     char *holder, size_t len);
	/* Sends a message (at most MESSAGE_MAX bytes) that every daemon's
	 * wait_commit() hands to its heard(): ctl commands for the daemon
	 * that leads an environment. Lost when nobody listens. Any
	 * thread. */
	int (*announce)(struct backend *be, const char *message);
	/* What the daemon leading an environment observed, for the other
	 * daemons to show: put_observations() replaces each object's
	 * document (res_id 0: the environment's), and gives each a new
	 * place in the order observations_after() reads them in. Any
	 * thread. */
	int (*put_observations)(struct backend *be,
				const struct observation_row *rows, size_t n);
	int (*observations_after)(struct backend *be, uint64_t after,
				  void (*each)(void *ctx,
					       const struct observation_row *row),
				  void *ctx);
};

#define MESSAGE_MAX 4000

/*
 * The two things prune needs of a backend, in its own SQL dialect;
 * backend_prune (prune.c) does the rest, in SQL both accept.
 */
struct prune_steps {
	/* Runs sql with env_id as $1 and a revision or audit line id as
	 * $2; adds the rows it removed to *count. */
	int (*delete_before)(struct backend *be, const char *sql,
			     uint64_t env_id, uint64_t before, uint64_t *count);
	/* Calls each on the audit lines of env_id, oldest first, while it
	 * returns true. */
	int (*each_audit_line)(struct backend *be, uint64_t env_id,
			       bool (*each)(int64_t id, const char *line,
					    void *ctx),
			       void *ctx);
};

int backend_prune(struct backend *be, const struct prune_steps *steps,
		  uint64_t env_id, uint64_t keep_from,
		  bool (*keep_line)(const char *line, uint64_t keep_from),
		  struct prune_result *out);

extern const struct backend_ops sqlite_backend;
extern const struct backend_ops postgres_backend;

#endif
