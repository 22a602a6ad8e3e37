/* SPDX-License-Identifier: MIT */
/*
 * The state store: the durable record of everything declared, every
 * revision, every audit line. One store per mount.
 *
 * Every change goes through store_apply(): a committer thread checks it
 * against the model (spec rules, references, policy), writes it to the
 * backend and applies it to the in-memory model. Changes that arrive
 * together share one durable commit (group commit), and store_apply()
 * returns only once its change is on disk, so close(2) reports durability.
 *
 * The backend (SQLite now, etcd later) sits behind struct store_backend in
 * backend.h; nothing outside store/ sees it.
 */
#ifndef INFRAFS_STORE_STORE_H
#define INFRAFS_STORE_STORE_H

#include "model.h"
#include "util/buf.h"

#include <stdbool.h>
#include <sys/types.h>

struct store;
struct folder;

/* Who made a change, for audit lines and history. */
struct caller {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	char comm[32];
};

enum change_op {
	CH_ENV_CREATE, /* name, mode */
	CH_ENV_REMOVE, /* env */
	CH_ENV_ATTR, /* env, uid, gid, mode (-1 keeps) */
	CH_RES_DRAFT, /* env, kind, name: mkdir of a resource */
	CH_RES_COMMIT, /* env, kind, name, text */
	CH_RES_FIELD, /* env, kind, name, field, text: one field's value */
	CH_RES_REMOVE, /* env, kind, name */
	CH_CONFIG, /* env, text */
	CH_POLICY, /* env, text */
	CH_SECRET_SET, /* env, name, text (the value) */
	CH_SECRET_REMOVE, /* env, name */
	CH_NOTE_ERROR, /* env, kind, name (or none), text: a refused write */
	CH_ROLLBACK, /* env, rev: a new revision equal to rev */
	/* env, name: env's pools and endpoints become those of environment
	 * name, as one revision checked against env's rules */
	CH_PROMOTE,
	/* env, folder, text (the source path, NUL-terminated), name (its
	 * Git commit or ""): env becomes what the folder declares; or,
	 * with field set instead of folder, why it could not be read */
	CH_SYNC,
	CH_APPLIED, /* env, rev: every revision up to rev is applied */
};

struct change {
	enum change_op op;
	const char *env;
	int kind; /* KIND_*_IDX for resource changes */
	const char *name;
	const char *field; /* CH_RES_FIELD; CH_SYNC: why the folder is unread */
	const char *text;
	size_t len;
	uid_t uid; /* CH_ENV_ATTR; (uid_t)-1 keeps */
	gid_t gid;
	mode_t mode; /* CH_ENV_CREATE, CH_ENV_ATTR; (mode_t)-1 keeps */
	uint64_t rev; /* CH_ROLLBACK, CH_APPLIED */
	bool approved; /* CH_RES_REMOVE: a protected destroy was approved */
	const struct folder *folder; /* CH_SYNC */
	const char *subject; /* CH_SYNC: the Git commit's subject, or NULL */
	/* As the user named it, for audit: dev/pools/a/spec. */
	const char *path;
	struct caller who;
};

struct change_result {
	uint64_t rev; /* the revision made, 0 when none */
	char msg[600]; /* why it was refused, for the user */
};

struct store_options {
	const char *url; /* sqlite:PATH or postgresql://... */
	const char *key_file; /* secret key file, created when missing */
	/* Privileged config keys an environment's owner may set anyway:
	 * ",aws.profile,aws.endpoint_url," (the daemon's --allow-config-key),
	 * or NULL. */
	const char *allow_config_keys;
};

/* One object a committed batch changed: res_id 0 is the environment
 * itself; env_id 0 too means environments came or went. */
struct store_touch {
	uint64_t env_id, res_id;
	uint64_t rev; /* the environment's durable revision after the batch */
	/* history_keep removed revisions pruned_from..first_rev-1 (both 0
	 * when none went): whatever the kernel knows of them must go. */
	uint64_t pruned_from, first_rev;
};

/*
 * Called by the committer once per durable batch with everything it
 * changed, under no lock: all of a batch at once, so that a reader never
 * sees half of a commit's changes announced.
 */
typedef void (*store_change_fn)(void *ctx, const struct store_touch *t,
				size_t n);

int store_open(const struct store_options *opt, struct store **out, char *err,
	       size_t errlen);
void store_close(struct store *st);
/* What store_open would find, without writing anything: ownership,
 * schema, integrity and the key file's fingerprint. 0 with a report of
 * one line per check, or negative errno with the reason in err. */
int store_check(const struct store_options *opt, struct buf *report, char *err,
		size_t errlen);
struct model *store_model(struct store *st);
/*
 * Sets (or, with fn NULL, removes) the hook. It returns only once no call
 * of the hook it replaced is running, so a caller that removes the hook
 * may then free what the hook's ctx points to.
 */
void store_set_change_hook(struct store *st, store_change_fn fn, void *ctx);
/* Whether other daemons may share the store (postgresql:). */
bool store_shared(const struct store *st);
/* Whether this daemon carries env_id to its provider: always, unless the
 * store is shared and another daemon holds that environment's lease. */
bool store_leads(struct store *st, uint64_t env_id);
/* Who holds env_id's lease in a shared store ("HOST pid N"), "" when
 * nobody does, the store cannot be reached, or it is not shared. */
void store_reconciler_of(struct store *st, uint64_t env_id, char *out,
			 size_t len);
/* Moves on whenever store_reconciler_of() or store_unreachable_since()
 * may answer differently. */
uint64_t store_sharing_gen(struct store *st);
/* Messages between the daemons of a shared store: store_announce() sends
 * one (at most 4000 bytes of text) to every daemon's handler, this one's
 * too, on the store's watcher thread. -EOPNOTSUPP for a store that is
 * not shared. */
typedef void (*store_message_fn)(void *ctx, const char *message);
void store_set_message_handler(struct store *st, store_message_fn fn,
			       void *ctx);
int store_announce(struct store *st, const char *message);
/* The observations of the daemons leading environments of a shared
 * store (backend.h's struct observation_row); -EOPNOTSUPP otherwise. */
struct observation_row;
int store_put_observations(struct store *st,
			   const struct observation_row *rows, size_t n);
int store_observations_after(struct store *st, uint64_t after,
			     void (*each)(void *ctx,
					  const struct observation_row *row),
			     void *ctx);
/* Since when a shared store has not answered; 0 when it does. */
double store_unreachable_since(struct store *st);
/* What holds the store's lock: "pid 123 on host since RFC3339". */
const char *store_lock_holder(const struct store *st);
/* The store's URL without its password, if it had one. */
const char *store_url(const struct store *st);
/* The path in url when its backend keeps a file on this machine (sqlite:),
 * else NULL (postgresql:). */
const char *store_url_file(const char *url);
/* Why secrets cannot be used (key missing, wrong), or NULL when they can. */
const char *store_key_problem(const struct store *st);

/*
 * Validates, makes durable and applies one change. Returns 0, or a
 * negative errno (-EINVAL bad spec, -EACCES/-EDQUOT policy, -ENOENT,
 * -EEXIST, -ENOTEMPTY, -EBUSY, -EINPROGRESS; and when the store could not
 * record the batch -ENOSPC, -EROFS, -EBUSY, -ENOMEM or -EIO) with
 * res->msg saying why; a refused or failed commit to a resource is also
 * recorded as its last_error and an event.
 */
int store_apply(struct store *st, const struct change *ch,
		struct change_result *res);

/*
 * The plain value of a secret, for a provider applying it: *plain is a
 * locked buffer to release with secret_wipe_free(*plain, *len). Returns 0,
 * -ENOENT, or -EIO when the key is missing or wrong.
 */
int store_secret_value(struct store *st, const char *env, const char *name,
		       char **plain, size_t *len, uint64_t *version);
/* The current version of a secret, 0 when there is none: cheap. */
uint64_t store_secret_version(struct store *st, const char *env,
			      const char *name);

/*
 * The folder an environment follows (its config's source), or "" when
 * none: out has PATH_MAX bytes. Call under the model's lock.
 */
void env_source(const struct env *e, char *out, size_t outlen);

/* Appends an event line to a resource (res_id) or to its environment. */
void store_event(struct store *st, uint64_t env_id, uint64_t res_id,
		 const char *text);

/*
 * History and audit, read from the backend on demand (not kept in memory).
 * Each returns 0 or a negative errno; text is appended to out.
 */
int store_history_info(struct store *st, uint64_t env_id, uint64_t rev,
		       struct buf *out);
int store_history_diff(struct store *st, uint64_t env_id, uint64_t rev,
		       struct buf *out);
/* The text of config, policy ("" name) or a resource as of rev. */
int store_history_text(struct store *st, uint64_t env_id, uint64_t rev,
		       const char *kind, const char *name, struct buf *out);
/* Names of a kind's resources that existed at rev, one per line. */
int store_history_names(struct store *st, uint64_t env_id, uint64_t rev,
			const char *kind, struct buf *out);
int store_audit(struct store *st, uint64_t env_id, struct buf *out);
/*
 * The whole events file of an object: lines no longer kept in memory come
 * from the backend, the newest from the model. Call under the read lock.
 */
int store_events_text(struct store *st, const struct env *e,
		      const struct resource *r, struct buf *out);

struct hist;
/* The latency of store_apply() as its callers see it, for metrics. */
const struct hist *store_commit_hist(const struct store *st);

#endif
