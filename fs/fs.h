/* SPDX-License-Identifier: MIT */
/*
 * The FUSE front end: one struct fs per mount, shared by the request
 * handlers in ops.c. The tree's shape lives in tree.c, file contents are
 * rendered in render.c, open files are served in files.c, editor scratch
 * files are kept in scratch.c, and kernel caches are invalidated through
 * notify.c. Handlers return negative errno values; only ops.c replies.
 */
#ifndef INFRAFS_FS_FS_H
#define INFRAFS_FS_FS_H

#include "cache/blob.h"
#include "cache/observed.h"
#include "metrics.h"
#include "node.h"
#include "reconciler/reconciler.h"
#include "reconciler/source.h"
#include "store/store.h"
#include "util/hist.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>

/* How long the kernel may trust names and attributes; every change
 * invalidates what it touched, so this only bounds a missed one. */
#define FS_CACHE_SECONDS 1.0

struct scratch;

/*
 * lock guards the map and every field of every scratch file in it, data
 * included. A scratch file is freed under it once unlinked, forgotten and
 * closed, so no pointer to one is used after unlocking: the functions
 * below take and return ids and copy out. The one exception is an open
 * handle's pointer, which keeps its file alive by counting in `opens`.
 * Taken after the model lock and a handle's lock; nothing is taken under
 * it.
 */
struct scratch_table {
	pthread_mutex_t lock;
	struct map by_id; /* id -> struct scratch */
	uint64_t next_id;
};

/* lock guards both maps and every sink in them; nothing is taken under
 * it. See sink.c. */
struct sink_table {
	pthread_mutex_t lock;
	struct map by_id; /* id -> struct sink */
	struct map by_place; /* parent key and name -> struct sink */
	uint64_t next_id;
};

struct notify_entry {
	fuse_ino_t parent;
	char name[256];
};

struct notify_inode {
	fuse_ino_t ino;
	uint64_t gen; /* the inode's cached generation once dropped */
	bool wake; /* its content changed: wake those polling it too */
};

struct handle;
struct dir_handle;

/*
 * The open files that asked to be told of changes, by inode: poll(2) on
 * a generated file registers its handle here once, and the notifier wakes
 * them after dropping the kernel's cache of what changed. Each handle's
 * poll handle itself lives in the handle, under its lock. lock guards
 * by_ino and every list in it; it is taken before a handle's lock (the
 * notifier takes the poll handles out under both) and under no other.
 */
struct poll_table {
	pthread_mutex_t lock;
	struct map by_ino; /* ino -> struct poll_waiters */
};

/*
 * lock guards everything here but thread. Callers on any thread queue
 * under it and signal cond; the notifier takes the whole queue under it
 * and sends the invalidations with it released, since a send may wait on
 * the kernel. It is taken under no other lock but the node table's
 * (never the reverse), and the node table's is taken under it.
 */
struct notify_queue {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct notify_inode *inos;
	size_t n, cap;
	struct notify_entry *entries;
	size_t nentries, entries_cap;
	bool stopping;
	/* Set once the request loop has ended: nothing more is sent. */
	atomic_bool quiet;
	pthread_t thread;
};

/* A folder made by mkdir, as its maker sees it while filling it. */
#define FRESH_MAX 64
struct fresh {
	pid_t pid;
	struct node_key dir; /* an environment or resource folder, or one
			      * made with an environment */
	uint64_t env_id; /* the environment it is in */
	double until; /* CLOCK_MONOTONIC; 0 for a free slot */
	double touched; /* its maker's last create there */
	struct buf claimed; /* names created since, NUL-separated */
	struct buf sunk; /* those of them whose bytes go to a sink */
};

struct fs {
	struct store *store;
	struct model *model;
	struct fuse_session *se;
	struct node_table nodes;
	struct render_cache renders;
	struct observed_cache observed; /* written by the reconciler */
	/* Set by main once the reconciler runs, while the committer's hook
	 * may already read it; cleared once the hook is gone. */
	struct reconciler *_Atomic rec;
	/* The folder watcher (reconciler/source.h); main's only. */
	struct source_watch *source;
	struct scratch_table scratch;
	struct sink_table sinks;
	struct notify_queue notify;
	struct poll_table polls;
	uid_t owner; /* the mount's root belongs to whoever mounted it */
	gid_t group;
	double started;
	/* Secrets created but not yet committed: they exist for the
	 * creator's descriptor before their first value lands. */
	pthread_mutex_t pending_lock;
	struct map pending_secrets; /* node key -> struct pending_secret */
	/* Open handles, so that those the kernel never released (a release
	 * still in flight at unmount) are freed at exit. */
	pthread_mutex_t handles_lock;
	struct handle *handles;
	/* Open folders, for the same reason; dirs_lock guards the list. */
	pthread_mutex_t dirs_lock;
	struct dir_handle *dirs;
	atomic_ulong requests;
	atomic_ulong write_rejections;
	/* The last results of ctl commands, for reading ctl back. */
	pthread_mutex_t ctl_lock;
	struct map ctl_results; /* env id -> struct ctl_results */
	/* metrics as last rendered, and when: see file_metrics(). */
	pthread_mutex_t metrics_lock;
	struct blob *metrics;
	double metrics_at;
	/* How long each FUSE operation took, timed in ops.c's table. */
	struct hist op_hist[FOP_COUNT];
	void *metrics_http; /* the --metrics-listen daemon, or NULL */
	/* Specs unlinked to be made again, hidden until then (see
	 * tree_hide_spec()), and resource folders fresh from a copier's
	 * mkdir (see tree_fresh_add()); gaps_lock guards both. It may be
	 * taken under the model lock; nothing is taken under it. */
	pthread_mutex_t gaps_lock;
	struct map spec_gaps; /* resource id -> struct spec_gap */
	struct fresh fresh[FRESH_MAX];
};

/* ---- tree.c: names, attributes and listings ---------------------------- */

struct dir_entry {
	size_t name_off; /* into the snapshot's names */
	struct node_key key;
	mode_t type; /* S_IFDIR or S_IFREG */
};

/*
 * A folder's entries as opendir saw them, what readdir serves offsets
 * from. Names cost what they are long: they share one buffer. history/
 * holds an entry per revision and may hold millions, all derived from
 * one number, so its entries are not stored at all: revs says how many
 * there were at opendir and readdir makes each as it is read.
 */
struct dir_snapshot {
	struct dir_entry *v;
	size_t n, cap;
	struct buf names; /* each entry's name, NUL-terminated */
	/* history/: revs revisions of env_id, from first_rev on, follow v */
	uint64_t revs, first_rev;
	uint64_t env_id;
};

void dir_snapshot_add(struct dir_snapshot *d, const char *name,
		      const struct node_key *k, mode_t type);
size_t dir_snapshot_count(const struct dir_snapshot *d);
/* Entry i (< count): its name (valid until the next call with the same
 * scratch) and key. */
const char *dir_snapshot_at(const struct dir_snapshot *d, size_t i,
			    char scratch[24], struct node_key *key,
			    mode_t *type);
void dir_snapshot_free(struct dir_snapshot *d);

int tree_lookup(struct fs *fs, const struct node_key *parent, const char *name,
		struct node_key *child);
int tree_getattr(struct fs *fs, const struct node_key *k, struct stat *st);
int tree_list(struct fs *fs, const struct node_key *dir,
	      struct dir_snapshot *out);
bool tree_is_dir(const struct node_key *k);
/* Files whose writes are checked and committed at close. */
bool tree_is_editable(const struct node_key *k);
/* The kind documented by kinds/ entry sub, NULL past the last. */
const struct kind_def *tree_kind_doc(uint16_t sub);
void tree_init(struct fs *fs);
void tree_destroy(struct fs *fs);
/* An unlinked spec: gone from lookups until made again, for a while. */
void tree_hide_spec(struct fs *fs, uint64_t res_id);
bool tree_spec_hidden(struct fs *fs, uint64_t res_id);
/* The spec was made again; true when it was still hidden. */
bool tree_unhide_spec(struct fs *fs, uint64_t res_id);
/* A folder just made by pid, in env_id: see tree.c. */
void tree_fresh_add(struct fs *fs, pid_t pid, const struct node_key *dir,
		    uint64_t env_id);
/* Whether anyone is filling dir. */
bool tree_fresh_any(struct fs *fs, const struct node_key *dir);
/* Whether pid is filling dir, a folder it made. */
bool tree_fresh_is(struct fs *fs, pid_t pid, const struct node_key *dir);
/* Whether pid, filling dir, has yet to create name there. */
bool tree_fresh_hides(struct fs *fs, pid_t pid, const struct node_key *dir,
		      const char *name);
void tree_fresh_claim(struct fs *fs, pid_t pid, const struct node_key *dir,
		      const char *name);
/* Whether pid created the file k stands for in a folder it is filling. */
bool tree_fresh_created(struct fs *fs, pid_t pid, const struct node_key *k);
/* pid's create of name went to a sink; whether k's did. */
void tree_fresh_sink(struct fs *fs, pid_t pid, const struct node_key *dir,
		     const char *name);
bool tree_fresh_sunk(struct fs *fs, pid_t pid, const struct node_key *k);
/* pid listed dir: it knows what is there. */
void tree_fresh_end(struct fs *fs, pid_t pid, const struct node_key *dir);
/* A process's parent, from /proc; 0 if it cannot be read. */
pid_t tree_parent_of(pid_t pid);
/* Who, of a folder's maker and its children, renames into it. */
enum fresh_filler { FRESH_NONE, FRESH_MAKER, FRESH_CHILD };
enum fresh_filler tree_fresh_filler(struct fs *fs, pid_t pid,
				    const struct node_key *dir);
/* The path of a node inside the mount, for audit lines and messages. */
void tree_path(struct fs *fs, const struct node_key *k, struct buf *out);
/* The environment a node belongs to, under the model's read lock. */
struct env *tree_env(struct fs *fs, const struct node_key *k);
struct resource *tree_res(struct fs *fs, const struct node_key *k);
/* Copies out the name of a node's environment; 0 or -ENOENT. */
int tree_env_name(struct fs *fs, const struct node_key *k,
		  char out[NAME_MAX_LEN + 1]);

/* ---- render.c: every generated file's bytes ---------------------------- */

/* The current content of a generated file, shared; NULL with *err set. */
struct blob *render_get(struct fs *fs, const struct node_key *k, int *err);
/* The generation of a file's current content, without rendering it,
 * under the model's read lock; false for files that change on every read. */
bool render_gen(struct fs *fs, const struct node_key *k, uint64_t *gen);
/* Files whose content grows while open, read past the page cache. */
bool render_is_live(const struct node_key *k);
/* Files read through the page cache whose bytes change while the daemon
 * runs (history and the documents never do; live files are not cached). */
bool render_may_change(const struct node_key *k);

/* ---- scratch.c: editors' temporary files -------------------------------- */

/*
 * Scratch files live in the daemon's memory, so anyone who may write an
 * environment could exhaust it: each file holds at most SCRATCH_MAX_BYTES
 * (EFBIG past it), and an environment at most SCRATCH_MAX_FILES (ENOSPC).
 * Editors need a spec's size and a few files each: vim's swap file is a
 * spec plus its block overhead (up to about twice the text for short
 * lines), and vim, sed -i and backups keep one to three files per editor.
 */
#define SCRATCH_MAX_BYTES (4 * SPEC_MAX_BYTES)
#define SCRATCH_MAX_FILES 128

struct scratch {
	uint64_t id;
	struct node_key parent;
	uint64_t env_id; /* whose SCRATCH_MAX_FILES it counts against */
	char name[256];
	struct buf data;
	uid_t uid;
	gid_t gid;
	mode_t mode;
	struct timespec atime, mtime, ctime;
	unsigned opens;
	bool unlinked;
	/* Renamed over a spec: the kernel's dentry for the spec points at
	 * this inode until it looks again, so the inode stands for the spec. */
	struct node_key alias;
};

void scratch_init(struct scratch_table *t);
void scratch_destroy(struct scratch_table *t);
/* Scratch files may live where editors put them: beside specs. */
bool scratch_allowed_in(const struct node_key *dir);
/* The id of the file `name` in `dir`, 0 when there is none. */
uint64_t scratch_id_of(struct scratch_table *t, const struct node_key *dir,
		       const char *name);
/* Copies out the folder a scratch file is in; 0 or -ENOENT. */
int scratch_parent(struct scratch_table *t, uint64_t id,
		   struct node_key *parent);
/* Returns the new file's id, or 0 when its environment holds
 * SCRATCH_MAX_FILES already (ENOSPC). */
uint64_t scratch_create(struct scratch_table *t, const struct node_key *dir,
			uint64_t env_id, const char *name, uid_t uid, gid_t gid,
			mode_t mode);
/* 0 when a scratch file may be size bytes long, else -EFBIG. */
int scratch_check_size(uint64_t size);
/* The file `name` in `dir`, made if missing, now holds exactly data;
 * -ENOSPC when it had to be made and env_id is full. */
int scratch_fill(struct scratch_table *t, const struct node_key *dir,
		 uint64_t env_id, const char *name, uid_t uid, gid_t gid,
		 const char *data, size_t len);
/* Appends a copy of the file's bytes to out, a wipebuf; 0 or -ENOENT. */
int scratch_bytes(struct scratch_table *t, uint64_t id, struct buf *out);
void scratch_unlink(struct scratch_table *t, uint64_t id);
/* Renames a file into dir of env_id, replacing another of the new name;
 * 0, -ENOENT, or -ENOSPC when that environment is full. */
int scratch_move(struct scratch_table *t, uint64_t id,
		 const struct node_key *dir, uint64_t env_id, const char *name);
void scratch_release(struct scratch_table *t, struct scratch *s);
/* The scratch file became the spec `to`: hide it, keep it as an alias. */
void scratch_become_alias(struct scratch_table *t, uint64_t id,
			  const struct node_key *to);
/* The key a scratch inode stands for now: itself, or the spec it became. */
void scratch_resolve(struct scratch_table *t, struct node_key *k);
/* The kernel forgot a scratch inode: an alias or unlinked file may go. */
void scratch_forget(struct scratch_table *t, uint64_t id);
void scratch_list(struct scratch_table *t, const struct node_key *dir,
		  struct dir_snapshot *out);

/* ---- sink.c: what a copier writes under history/ ----------------------- */

void sink_init(struct sink_table *t);
void sink_destroy(struct sink_table *t);
/* The sink `name` in parent (history/ or a sink folder); one directly
 * in history/ only for the process that made it. 0 or -ENOENT. */
int sink_lookup(struct sink_table *t, pid_t pid, const struct node_key *parent,
		const char *name, struct node_key *out);
/* A folder (S_ISDIR(mode)) or file; 0, -EEXIST, -ENOSPC, -ENAMETOOLONG. */
int sink_make(struct sink_table *t, const struct caller *who,
	      const struct node_key *parent, const char *name, mode_t mode,
	      struct node_key *out);
int sink_getattr(struct sink_table *t, const struct node_key *k,
		 struct stat *st);
/* Removed, or forgotten by the kernel. */
void sink_drop(struct sink_table *t, uint64_t id);
/* rename(2) of a sink into dir, a sink folder, over any sink there;
 * 0 or -ENOENT. */
int sink_move(struct sink_table *t, uint64_t id, const struct node_key *dir,
	      const char *name);

/* ---- notify.c: kernel cache invalidation ------------------------------- */

/*
 * Shutdown, in this order, once the request loop has ended and while the
 * session is still mounted: notify_detach() (nothing more is sent, and the
 * committer stops calling into fs and the reconciler), reconciler_stop()
 * (its last changes are dropped), notify_stop() (the notifier, the last
 * thread that writes to the session, is joined); only then is the session
 * unmounted and destroyed.
 */
int notify_start(struct fs *fs);
/* Stops sending and removes the store's change hook; no call of the hook
 * runs once it returns. */
void notify_detach(struct fs *fs);
/*
 * Joins the notifier: 0, or -ETIMEDOUT when it is still inside a send
 * after a while. Such a send waits on a request that no worker will
 * answer now; unmounting aborts the connection and ends it, and then
 * notify_reap() joins.
 */
int notify_stop(struct fs *fs);
void notify_reap(struct fs *fs);
/* Queues invalidation of what the kernel caches for a changed object. */
void notify_changed(struct fs *fs, uint64_t env_id, uint64_t res_id);
/* The same, done now: for the writer who must see its own change. */
void notify_changed_now(struct fs *fs, uint64_t env_id, uint64_t res_id);
/* Queues dropping the kernel's cached pages and attributes of one inode;
 * once dropped, the inode's cached generation becomes gen. */
void notify_inode(struct fs *fs, fuse_ino_t ino, uint64_t gen);
/* Queues dropping the kernel's cached name `name` in folder `parent`. */
void notify_entry(struct fs *fs, fuse_ino_t parent, const char *name);
/* Handle h of inode ino is polled: keeps ph in it (file_poll_keep) and
 * registers it, so that the next change wakes it. Called without its
 * lock held. */
void poll_watch(struct fs *fs, fuse_ino_t ino, struct handle *h,
		struct fuse_pollhandle *ph);
/* Handle h is being released: it is never woken again. */
void poll_forget(struct fs *fs, fuse_ino_t ino, struct handle *h);

void pending_secret_add(struct fs *fs, const struct node_key *k);
void pending_secret_drop(struct fs *fs, const struct node_key *k);
bool pending_secret_has(struct fs *fs, const struct node_key *k);
void pending_secrets_destroy(struct fs *fs);

/* ---- files.c: open files ------------------------------------------------ */

struct handle;

int file_open(struct fs *fs, fuse_ino_t ino, const struct node_key *k,
	      int flags, const struct caller *who, struct handle **out,
	      struct fuse_file_info *fi);
/* A write-only handle whose bytes are dropped: see files.c. */
int file_open_sink(struct fs *fs, fuse_ino_t ino, const struct node_key *k,
		   struct handle **out, struct fuse_file_info *fi);
/* *owned, when set, is a copy the caller frees after replying; *hold,
 * when set, a reference to the bytes it drops after replying. */
int file_read(struct fs *fs, struct handle *h, off_t off, size_t size,
	      const char **data, size_t *len, char **owned, struct blob **hold);
int file_write(struct fs *fs, fuse_req_t req, struct handle *h,
	       const char *data, size_t len, off_t off);
int file_truncate(struct fs *fs, struct handle *h, off_t size);
int file_flush(struct fs *fs, struct handle *h, const struct caller *who);
int file_fsync(struct fs *fs, struct handle *h, const struct caller *who);
void file_release(struct fs *fs, struct handle *h);
/* Frees every handle still open, at exit. */
void file_release_all(struct fs *fs);
/* Frees every folder handle still open, at exit. */
void ops_release_dirs(struct fs *fs);
/* An emptied file whose emptying alone is not to be committed. */
void file_untruncate(struct handle *h);
/* The same, and only bytes other than the file shows are a change. */
void file_only_changes(struct handle *h);
/*
 * poll(2) on an open file. A regular file is always readable (and
 * writable), as on any disk file system; a generated file also reports
 * POLLPRI, once, when its content has moved on since this open
 * file last read it or was told, the sysfs convention: a waiter polls
 * for POLLPRI, then lseek()s to 0 and reads the new content. ph, when
 * not NULL, is kept (or freed) here, and used to wake the poller at the
 * next change.
 */
unsigned file_poll(struct fs *fs, struct handle *h, struct fuse_pollhandle *ph);
/* Keeps ph as the handle's poll handle (freeing the one before); true
 * the first time, when the handle is to be registered. */
bool file_poll_keep(struct handle *h, struct fuse_pollhandle *ph);
/* Takes the handle's poll handle out, NULL when it holds none. */
struct fuse_pollhandle *file_poll_take(struct handle *h);
/* Size to report for an open handle, or -1 when the tree's is right;
 * either way the caller tells the kernel, and file_told_size() or this
 * remembers which bytes that size is of. */
off_t file_size(struct fs *fs, struct handle *h);
/* st, about to be told to the kernel for ino: remembers which content
 * that size is of, for the read that fills the kernel's pages. */
void file_told_size(struct fs *fs, fuse_ino_t ino, const struct node_key *k,
		    const struct stat *st);
void file_init(struct fs *fs);
void file_destroy(struct fs *fs);
/* Records a ctl command's result, shown when ctl is read. */
void ctl_note(struct fs *fs, uint64_t env_id, const struct caller *who,
	      const char *line, int rc, const char *msg);
/* What reading ctl shows: the commands and the last results. */
void ctl_render(struct fs *fs, uint64_t env_id, struct buf *out);
/* metrics as stat(2) and open(2) see it; caller holds the model's read
 * lock. */
struct blob *file_metrics(struct fs *fs, int *err);
/* Commits bytes to an editable file, as a close or a rename does. */
int file_commit(struct fs *fs, const struct node_key *k, const char *data,
		size_t len, const struct caller *who);

/* ---- ops.c ------------------------------------------------------------- */

extern const struct fuse_lowlevel_ops infrafs_ops;
void caller_of(fuse_req_t req, struct caller *who);
/* Whether the caller of req may read what environment env declares (its
 * folder's mode for read and search, with the caller's groups): 0,
 * -EACCES, or 0 when there is no such environment. */
int fs_may_read_env(struct fs *fs, fuse_req_t req, const char *env);

#endif
