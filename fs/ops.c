// SPDX-License-Identifier: MIT
/*
 * The FUSE low-level request handlers. Each one turns a request into calls
 * on the tree, the files and the store, and sends exactly one reply; errors
 * travel as negative errno values up to here and become fuse_reply_err().
 * Nothing here waits on a provider or the network: the only thing a
 * request may wait for is the local state store's fsync at close(2) or
 * fsync(2).
 */
#include "fs.h"

#include "util/log.h"
#include "util/wipe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <stdbool.h>
#include <unistd.h>

static struct fs *fs_of(fuse_req_t req)
{
	struct fs *fs = fuse_req_userdata(req);

	atomic_fetch_add(&fs->requests, 1);
	return fs;
}

/* Who asks, without the command name: cheap enough for every open. */
static void caller_ids(fuse_req_t req, struct caller *who)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	memset(who, 0, sizeof(*who));
	who->uid = ctx->uid;
	who->gid = ctx->gid;
	who->pid = ctx->pid;
}

void caller_of(fuse_req_t req, struct caller *who)
{
	char path[64];
	FILE *f;

	caller_ids(req, who);
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)who->pid);
	f = fopen(path, "re");
	if (f) {
		/* All of it: prctl(PR_SET_NAME) lets a process put a newline
		 * in its name, and a name cut there would hide the rest. The
		 * kernel ends the file with one newline of its own. */
		size_t n = fread(who->comm, 1, sizeof(who->comm) - 1, f);

		if (n && who->comm[n - 1] == '\n')
			n--;
		who->comm[n] = '\0';
		fclose(f);
	}
}

static bool in_groups(fuse_req_t req, gid_t gid)
{
	gid_t groups[64];
	int n = fuse_req_getgroups(req, 64, groups);

	for (int i = 0; i < n && i < 64; i++) {
		if (groups[i] == gid)
			return true;
	}
	return false;
}

/*
 * The daemon's own check of the caller against a node's owner, group and
 * mode, with the caller's supplementary groups from the request. The
 * kernel's default_permissions makes the same check first; this one holds
 * whatever the mount options, for every request that reads or changes.
 */
static int may_access(struct fs *fs, fuse_req_t req, const struct node_key *k,
		      int want)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat st;
	mode_t bits;
	int rc;

	if (ctx->uid == 0)
		return 0;
	rc = tree_getattr(fs, k, &st);
	if (rc)
		return rc;
	if (ctx->uid == st.st_uid)
		bits = (st.st_mode >> 6) & 7;
	else if (ctx->gid == st.st_gid || in_groups(req, st.st_gid))
		bits = (st.st_mode >> 3) & 7;
	else
		bits = st.st_mode & 7;
	if (((want & R_OK) && !(bits & 4)) || ((want & W_OK) && !(bits & 2)) ||
	    ((want & X_OK) && !(bits & 1)))
		return -EACCES;
	return 0;
}

int fs_may_read_env(struct fs *fs, fuse_req_t req, const char *env)
{
	struct node_key k;
	struct env *e;

	model_rdlock(fs->model);
	e = model_env(fs->model, env);
	k = node_key_make(NT_ENV, 0, e ? e->id : 0, 0);
	model_unlock(fs->model);
	/* One that does not exist is the store's to name. */
	return e ? may_access(fs, req, &k, R_OK | X_OK) : 0;
}

static int open_mode(int flags)
{
	switch (flags & O_ACCMODE) {
	case O_RDONLY:
		return R_OK;
	case O_WRONLY:
		return W_OK;
	default:
		return R_OK | W_OK;
	}
}

static void reply_errno(fuse_req_t req, int rc)
{
	fuse_reply_err(req, rc < 0 ? -rc : rc);
}

static int entry_of(struct fs *fs, const struct node_key *k,
		    struct fuse_entry_param *e)
{
	int rc;

	memset(e, 0, sizeof(*e));
	rc = tree_getattr(fs, k, &e->attr);
	if (rc)
		return rc;
	e->ino = node_get(&fs->nodes, k, 1);
	e->attr.st_ino = e->ino;
	file_told_size(fs, e->ino, k, &e->attr);
	e->attr_timeout = FS_CACHE_SECONDS;
	e->entry_timeout = FS_CACHE_SECONDS;
	return 0;
}

static int key_of(struct fs *fs, fuse_ino_t ino, struct node_key *k)
{
	int rc = node_key_of(&fs->nodes, ino, k);

	if (!rc)
		scratch_resolve(&fs->scratch, k);
	return rc;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* O_TRUNC arrives with open, so a truncating open is one request
	 * that knows it truncates (and `echo > spec` starts empty). */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* Writes must reach us one write(2) at a time to be checked. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

static bool is_sink(const struct node_key *k)
{
	return k->type == NT_SINK_DIR || k->type == NT_SINK_FILE;
}

/* history/ and export/ hold only what the daemon writes: a copier
 * filling them gets sinks. */
static bool takes_sinks(const struct node_key *dir)
{
	return dir->type == NT_HISTORY || dir->type == NT_EXPORT;
}

/*
 * Whose sink what the caller makes in dir is (see sink.c), 0 for none:
 * in a sink, the caller's; in a history/ or export/ being filled, its
 * maker's, also for a child of the maker (rsync's receiver writes the
 * files of folders its generator made).
 */
static pid_t sink_maker(struct fs *fs, fuse_req_t req,
			const struct node_key *dir)
{
	pid_t pid = fuse_req_ctx(req)->pid;

	if (dir->type == NT_SINK_DIR)
		return pid;
	if (!takes_sinks(dir))
		return 0;
	switch (tree_fresh_filler(fs, pid, dir)) {
	case FRESH_MAKER:
		return pid;
	case FRESH_CHILD:
		return tree_parent_of(pid);
	default:
		return 0;
	}
}

/* A sink in dir; directly in history/ or export/, one that the caller,
 * or the process that made the caller (rsync's generator), made while it
 * fills that folder. 0 or -ENOENT. */
static int sink_in(struct fs *fs, fuse_req_t req, const struct node_key *dir,
		   const char *name, struct node_key *child)
{
	pid_t pid = fuse_req_ctx(req)->pid;
	enum fresh_filler who;

	if (dir->type == NT_SINK_DIR)
		return sink_lookup(&fs->sinks, pid, dir, name, child);
	if (!takes_sinks(dir))
		return -ENOENT;
	who = tree_fresh_filler(fs, pid, dir);
	if (who == FRESH_NONE)
		return -ENOENT;
	return sink_lookup(&fs->sinks,
			   who == FRESH_CHILD ? tree_parent_of(pid) : pid, dir,
			   name, child);
}

/* name in dir as the caller sees it. */
static int lookup_as(struct fs *fs, fuse_req_t req, const struct node_key *dir,
		     const char *name, struct node_key *child)
{
	int rc = sink_in(fs, req, dir, name, child);

	if (rc != -ENOENT || dir->type == NT_SINK_DIR)
		return rc;
	rc = tree_lookup(fs, dir, name, child);
	/* A copier filling the folder it made sees it empty. */
	if (!rc && child->type != NT_SCRATCH &&
	    tree_fresh_hides(fs, fuse_req_ctx(req)->pid, dir, name))
		rc = -ENOENT;
	return rc;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct node_key pk, ck;
	struct fuse_entry_param e;
	int rc = key_of(fs, parent, &pk);

	if (!rc)
		rc = lookup_as(fs, req, &pk, name, &ck);
	if (!rc)
		rc = entry_of(fs, &ck, &e);
	if (!rc && tree_fresh_any(fs, &pk))
		e.entry_timeout = 0;
	if (rc)
		reply_errno(req, rc);
	else
		fuse_reply_entry(req, &e);
}

static void forget_one(struct fs *fs, fuse_ino_t ino, uint64_t nlookup)
{
	struct node_key gone;

	if (!node_forget(&fs->nodes, ino, nlookup, &gone))
		return;
	if (gone.type == NT_SCRATCH)
		scratch_forget(&fs->scratch, gone.id);
	if (is_sink(&gone))
		sink_drop(&fs->sinks, gone.id);
	render_cache_drop(&fs->renders, &gone, sizeof(gone));
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct fs *fs = fs_of(req);

	forget_one(fs, ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	struct fs *fs = fs_of(req);

	for (size_t i = 0; i < count; i++)
		forget_one(fs, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct node_key k;
	struct stat st;
	off_t size = -1;
	int rc = key_of(fs, ino, &k);

	if (!rc)
		rc = tree_getattr(fs, &k, &st);
	if (rc) {
		reply_errno(req, rc);
		return;
	}
	if (fi && fi->fh)
		size = file_size(fs, (struct handle *)fi->fh);
	if (size >= 0)
		st.st_size = size;
	else
		file_told_size(fs, ino, &k, &st);
	st.st_ino = ino;
	fuse_reply_attr(req, &st, FS_CACHE_SECONDS);
}

/* ---- setattr ----------------------------------------------------------- */

/*
 * chown(2)'s rule, kept by the daemon too: an owner may give the folder
 * only to a group they are in (or keep its group); root to any. Whether
 * the caller owns it is the store's check, with the audit of a refusal.
 */
static bool may_chgrp(struct fs *fs, fuse_req_t req, const struct node_key *k,
		      gid_t gid)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat cur;

	if (ctx->uid == 0 || ctx->gid == gid || in_groups(req, gid))
		return true;
	return tree_getattr(fs, k, &cur) == 0 && cur.st_gid == gid;
}

static int setattr_env(struct fs *fs, fuse_req_t req, const struct node_key *k,
		       const struct stat *attr, int to_set)
{
	struct change ch = { .op = CH_ENV_ATTR };
	struct change_result res;
	char name[NAME_MAX_LEN + 1];
	int rc;

	if (to_set & (FUSE_SET_ATTR_SIZE))
		return -EISDIR;
	if (!(to_set &
	      (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
		return 0; /* times: nothing to keep */
	if (tree_env_name(fs, k, name) < 0)
		return -ENOENT;
	if ((to_set & FUSE_SET_ATTR_GID) &&
	    !may_chgrp(fs, req, k, attr->st_gid))
		return -EPERM;
	caller_of(req, &ch.who);
	ch.env = name;
	ch.path = name;
	ch.uid = to_set & FUSE_SET_ATTR_UID ? attr->st_uid : (uid_t)-1;
	ch.gid = to_set & FUSE_SET_ATTR_GID ? attr->st_gid : (gid_t)-1;
	ch.mode = to_set & FUSE_SET_ATTR_MODE ? attr->st_mode : (mode_t)-1;
	rc = store_apply(fs->store, &ch, &res);
	notify_changed_now(fs, 0, 0);
	return rc;
}

static int setattr_scratch(struct fs *fs, const struct node_key *k,
			   const struct stat *attr, int to_set)
{
	struct scratch *s;
	int rc = 0;

	pthread_mutex_lock(&fs->scratch.lock);
	s = map_get_u64(&fs->scratch.by_id, &k->id);
	if (!s) {
		rc = -ENOENT;
	} else if (to_set & FUSE_SET_ATTR_SIZE &&
		   scratch_check_size((uint64_t)attr->st_size)) {
		/* `truncate -s 1P`: refused before anything is allocated. */
		rc = -EFBIG;
	} else {
		if (to_set & FUSE_SET_ATTR_SIZE)
			wipebuf_truncate(&s->data, (size_t)attr->st_size);
		if (to_set & FUSE_SET_ATTR_MODE)
			s->mode = attr->st_mode & 07777;
		if (to_set & FUSE_SET_ATTR_UID)
			s->uid = attr->st_uid;
		if (to_set & FUSE_SET_ATTR_GID)
			s->gid = attr->st_gid;
		if (to_set & FUSE_SET_ATTR_MTIME)
			s->mtime = attr->st_mtim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			clock_gettime(CLOCK_REALTIME, &s->mtime);
		if (to_set & FUSE_SET_ATTR_ATIME)
			s->atime = attr->st_atim;
	}
	pthread_mutex_unlock(&fs->scratch.lock);
	return rc;
}

/*
 * Mode and owner of files below an environment follow the environment
 * folder. Tools that copy attributes (vim, sed -i, cp -p) set them to what
 * they already are: that is accepted; a real change is refused. So is a
 * narrower mode, not kept: install(1) makes its file 0600 while it
 * writes, and mv and cp -p give a spec the mode of a private copy. So is
 * anything a copier sets on a file it created in a folder it is filling,
 * or on that folder (cp -a copies the modes and owners of what it
 * copies, and makes each folder 0700 until it is filled).
 */
static int setattr_fixed(struct fs *fs, fuse_req_t req,
			 const struct node_key *k, const struct stat *attr,
			 int to_set)
{
	pid_t pid = fuse_req_ctx(req)->pid;
	struct stat cur;
	int rc = tree_getattr(fs, k, &cur);

	if (rc || tree_fresh_created(fs, pid, k) || tree_fresh_is(fs, pid, k))
		return rc;
	if ((to_set & FUSE_SET_ATTR_MODE) &&
	    (attr->st_mode & 07777) != (cur.st_mode & 07777) &&
	    (!tree_is_editable(k) || (attr->st_mode & ~cur.st_mode & 07777)))
		return -EPERM;
	if ((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != cur.st_uid)
		return -EPERM;
	if ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != cur.st_gid)
		return -EPERM;
	return 0;
}

static int setattr_size(struct fs *fs, fuse_req_t req, const struct node_key *k,
			off_t size, struct fuse_file_info *fi)
{
	struct caller who;
	struct blob *b;
	int err = 0, rc;

	if (fi && fi->fh)
		return file_truncate(fs, (struct handle *)fi->fh, size);
	if (!tree_is_editable(k) || k->type == NT_ENV_CTL ||
	    k->type == NT_SECRET)
		return -EACCES;
	/* truncate(1) on a spec: a commit of its first `size` bytes. */
	model_rdlock(fs->model);
	b = render_get(fs, k, &err);
	model_unlock(fs->model);
	if (!b)
		return err;
	caller_of(req, &who);
	rc = (size_t)size <= b->len
		     ? file_commit(fs, k, b->data, (size_t)size, &who)
		     : -EINVAL;
	blob_unref(b);
	return rc;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct node_key k;
	int rc = key_of(fs, ino, &k);

	if (rc)
		goto out;
	if (k.type == NT_ENV) {
		rc = setattr_env(fs, req, &k, attr, to_set);
	} else if (k.type == NT_SCRATCH) {
		rc = setattr_scratch(fs, &k, attr, to_set);
	} else if (is_sink(&k)) {
		rc = 0; /* a copy's: taken and not kept */
	} else {
		rc = setattr_fixed(fs, req, &k, attr, to_set);
		if (!rc && (to_set & FUSE_SET_ATTR_SIZE) && !(fi && fi->fh))
			rc = may_access(fs, req, &k, W_OK);
		if (!rc && (to_set & FUSE_SET_ATTR_SIZE))
			rc = setattr_size(fs, req, &k, attr->st_size, fi);
	}
out:
	if (rc) {
		reply_errno(req, rc);
		return;
	}
	op_getattr(req, ino, fi);
	atomic_fetch_sub(&fs->requests, 1);
}

/* ---- directories ------------------------------------------------------- */

/* The environment a folder belongs to, for the scratch files in it and the
 * folders its maker fills. */
static uint64_t env_id_of(struct fs *fs, const struct node_key *dir)
{
	const struct env *e;
	uint64_t id;

	model_rdlock(fs->model);
	e = tree_env(fs, dir);
	id = e ? e->id : 0;
	model_unlock(fs->model);
	return id;
}

/*
 * The maker of an environment, filling it, makes pools/ (or history/)
 * in it as in an empty folder: that is the folder made with the
 * environment, handed back; 1 when it is one, else 0.
 */
static int mkdir_made(struct fs *fs, fuse_req_t req, const struct node_key *p,
		      const char *name, struct node_key *child)
{
	pid_t pid = fuse_req_ctx(req)->pid;

	if (tree_lookup(fs, p, name, child) || !tree_is_dir(child) ||
	    !tree_fresh_hides(fs, pid, p, name))
		return 0;
	tree_fresh_claim(fs, pid, p, name);
	return 1;
}

static int mkdir_in(struct fs *fs, fuse_req_t req, const struct node_key *p,
		    const char *name, mode_t mode, struct node_key *child)
{
	struct change ch = { 0 };
	struct change_result res;
	BUF_AUTO path = BUF_INIT;
	char env[NAME_MAX_LEN + 1] = "";
	int rc;

	ch.who.pid = sink_maker(fs, req, p);
	if (ch.who.pid) {
		pid_t maker = ch.who.pid;

		caller_ids(req, &ch.who);
		ch.who.pid = maker;
		return sink_make(&fs->sinks, &ch.who, p, name,
				 S_IFDIR | (mode & 07777), child);
	}
	if (mkdir_made(fs, req, p, name, child))
		return 0;
	if (!name_is_valid(name)) {
		log_debug("mkdir %s: not a valid name", name);
		return -EINVAL;
	}
	caller_of(req, &ch.who);
	ch.name = name;
	ch.mode = mode;
	if (p->type == NT_ROOT) {
		ch.op = CH_ENV_CREATE;
		ch.path = name;
	} else if (p->type == NT_KIND_DIR) {
		if (tree_env_name(fs, p, env) < 0)
			return -ENOENT;
		ch.op = CH_RES_DRAFT;
		ch.env = env;
		ch.kind = p->sub;
		buf_printf(&path, "%s/%s/%s", env, kind_at(p->sub)->dir, name);
		ch.path = buf_str(&path);
	} else {
		return tree_is_dir(p) ? -EPERM : -ENOTDIR;
	}
	rc = store_apply(fs->store, &ch, &res);
	if (rc)
		return rc;
	return tree_lookup(fs, p, name, child);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fs *fs = fs_of(req);
	struct node_key pk, ck;
	struct fuse_entry_param e;
	int rc = key_of(fs, parent, &pk);

	if (!rc)
		rc = may_access(fs, req, &pk, W_OK | X_OK);
	if (!rc)
		rc = mkdir_in(fs, req, &pk, name, mode, &ck);
	if (!rc)
		tree_fresh_claim(fs, fuse_req_ctx(req)->pid, &pk, name);
	if (!rc && !is_sink(&ck))
		tree_fresh_add(fs, fuse_req_ctx(req)->pid, &ck,
			       env_id_of(fs, &ck));
	if (!rc)
		rc = entry_of(fs, &ck, &e);
	if (rc)
		reply_errno(req, rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct change ch = { 0 };
	struct change_result res;
	BUF_AUTO path = BUF_INIT;
	struct node_key pk, ck;
	char env[NAME_MAX_LEN + 1] = "";
	int rc = key_of(fs, parent, &pk);

	if (!rc)
		rc = may_access(fs, req, &pk, W_OK | X_OK);
	if (!rc && sink_in(fs, req, &pk, name, &ck) == 0) {
		sink_drop(&fs->sinks, ck.id);
		goto out;
	}
	if (!rc)
		rc = tree_lookup(fs, &pk, name, &ck);
	if (rc)
		goto out;
	caller_of(req, &ch.who);
	ch.name = name;
	if (pk.type == NT_ROOT && ck.type == NT_ENV) {
		ch.op = CH_ENV_REMOVE;
		ch.env = name;
		ch.path = name;
	} else if (pk.type == NT_KIND_DIR && ck.type == NT_RES) {
		rc = tree_env_name(fs, &pk, env);
		if (rc)
			goto out;
		ch.op = CH_RES_REMOVE;
		ch.env = env;
		ch.kind = pk.sub;
		buf_printf(&path, "%s/%s/%s", env, kind_at(pk.sub)->dir, name);
		ch.path = buf_str(&path);
	} else {
		rc = tree_is_dir(&ck) ? -EPERM : -ENOTDIR;
		goto out;
	}
	rc = store_apply(fs->store, &ch, &res);
	if (rc)
		log_info("rmdir %s: %s", ch.path, res.msg);
	else
		notify_changed_now(fs, ck.type == NT_ENV ? 0 : pk.id, 0);
out:
	reply_errno(req, rc);
}

struct dir_handle {
	struct dir_snapshot snap;
	struct dir_handle *prev, *next; /* fs->dirs */
};

static void dir_track(struct fs *fs, struct dir_handle *d)
{
	pthread_mutex_lock(&fs->dirs_lock);
	d->next = fs->dirs;
	if (d->next)
		d->next->prev = d;
	fs->dirs = d;
	pthread_mutex_unlock(&fs->dirs_lock);
}

static void dir_untrack(struct fs *fs, struct dir_handle *d)
{
	pthread_mutex_lock(&fs->dirs_lock);
	if (d->prev)
		d->prev->next = d->next;
	else
		fs->dirs = d->next;
	if (d->next)
		d->next->prev = d->prev;
	pthread_mutex_unlock(&fs->dirs_lock);
}

/* A releasedir still in flight when the loop ended never comes. */
void ops_release_dirs(struct fs *fs)
{
	while (fs->dirs) {
		struct dir_handle *d = fs->dirs;

		fs->dirs = d->next;
		dir_snapshot_free(&d->snap);
		free(d);
	}
	pthread_mutex_destroy(&fs->dirs_lock);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct dir_handle *d = xcalloc(1, sizeof(*d));
	struct node_key k;
	int rc = key_of(fs, ino, &k);

	if (!rc && tree_is_dir(&k))
		rc = may_access(fs, req, &k, R_OK);
	if (!rc)
		rc = tree_is_dir(&k) ? tree_list(fs, &k, &d->snap) : -ENOTDIR;
	if (rc) {
		dir_snapshot_free(&d->snap);
		free(d);
		reply_errno(req, rc);
		return;
	}
	dir_track(fs, d);
	fi->fh = (uint64_t)(uintptr_t)d;
	fuse_reply_open(req, fi);
}

/* The kernel's FUSE_UNKNOWN_INO: a real inode number comes at lookup. */
#define UNKNOWN_INO 0xffffffffULL

/* Offsets: 1 is ".", 2 is "..", 3 + i is snapshot entry i. */
static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi, bool plus)
{
	struct fs *fs = fs_of(req);
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	char *buf = xmalloc(size);
	size_t used = 0, count = dir_snapshot_count(&d->snap);
	struct node_key dir;
	bool dir_known = !key_of(fs, ino, &dir), filled;

	/* A listing ends what its reader did not know; an open does not:
	 * rsync opens each folder it made to fchmod it. */
	if (dir_known && off == 0)
		tree_fresh_end(fs, fuse_req_ctx(req)->pid, &dir);
	filled = plus && dir_known && tree_fresh_any(fs, &dir);

	for (off_t pos = off; pos < (off_t)count + 2; pos++) {
		struct fuse_entry_param e = { 0 };
		struct node_key key;
		char scratch[24];
		const char *name;
		size_t need;

		if (pos < 2) {
			name = pos == 0 ? "." : "..";
			e.attr.st_mode = S_IFDIR;
			e.attr.st_ino = pos == 0 ? ino : FUSE_ROOT_ID;
		} else {
			fuse_ino_t known;

			name = dir_snapshot_at(&d->snap, (size_t)(pos - 2),
					       scratch, &key, &e.attr.st_mode);
			known = node_find(&fs->nodes, &key);
			/* readdir(3) skips entries whose inode number is 0;
			 * one the kernel has not looked up yet gets the
			 * "unknown" number the kernel reserves for this. */
			e.attr.st_ino = known ? known : UNKNOWN_INO;
		}
		need = plus ? fuse_add_direntry_plus(req, NULL, 0, name, NULL,
						     0)
			    : fuse_add_direntry(req, NULL, 0, name, NULL, 0);
		if (used + need > size)
			break;
		/* Gone since opendir: skip it, as a listing may. */
		if (plus && pos >= 2 && entry_of(fs, &key, &e) < 0)
			continue;
		if (filled)
			e.entry_timeout = 0;
		if (plus)
			fuse_add_direntry_plus(req, buf + used, size - used,
					       name, &e, pos + 1);
		else
			fuse_add_direntry(req, buf + used, size - used, name,
					  &e.attr, pos + 1);
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;

	(void)ino;
	dir_untrack(fs_of(req), d);
	dir_snapshot_free(&d->snap);
	free(d);
	fuse_reply_err(req, 0);
}

/* ---- files ------------------------------------------------------------- */

/* What the daemon makes in an environment folder. */
static bool env_generated(const struct node_key *k)
{
	return k->type >= NT_ENV_PLAN && k->type <= NT_ENV_AUDIT &&
	       k->type != NT_ENV_CTL;
}

/*
 * Who of a folder's maker and the maker's children writes k, a field or
 * generated file of a resource or environment folder being filled (see
 * tree_fresh_filler()); FRESH_NONE for anything else.
 */
static enum fresh_filler filler_of(struct fs *fs, fuse_req_t req,
				   const struct node_key *k)
{
	struct node_key dir;

	if (k->type > NT_RES_SPEC && k->type <= NT_RES_EVENTS)
		dir = node_key_make(NT_RES, 0, k->id, 0);
	else if (env_generated(k))
		dir = node_key_make(NT_ENV, 0, k->id, 0);
	else
		return FRESH_NONE;
	return tree_fresh_filler(fs, fuse_req_ctx(req)->pid, &dir);
}

/* rsync --inplace's receiver writes each file of a folder it fills in
 * place, and tar --xattrs opens each file it made with mknod(2): those
 * writes are a copy's, and go to a sink. */
static bool write_is_copy(struct fs *fs, fuse_req_t req,
			  const struct node_key *k, int flags)
{
	enum fresh_filler who;

	if ((flags & O_ACCMODE) == O_RDONLY)
		return false;
	who = filler_of(fs, req, k);
	return who == FRESH_CHILD ||
	       (who == FRESH_MAKER &&
		tree_fresh_sunk(fs, fuse_req_ctx(req)->pid, k));
}

/*
 * A spec of an environment that follows a folder changes in the folder:
 * refused at open, before O_TRUNC empties what an editor then writes
 * back; the committer refuses the same at close for any other path in.
 */
static int refuse_if_managed(struct fs *fs, const struct node_key *k, int flags)
{
	char src[PATH_MAX] = "";
	struct env *e;

	if ((flags & O_ACCMODE) == O_RDONLY ||
	    (k->type != NT_RES_SPEC && k->type != NT_RES_FIELD))
		return 0;
	model_rdlock(fs->model);
	e = tree_env(fs, k);
	if (e)
		env_source(e, src, sizeof(src));
	model_unlock(fs->model);
	return src[0] ? -EROFS : 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct handle *h = NULL;
	struct caller who;
	struct node_key k;
	int rc = key_of(fs, ino, &k);

	/* Only writers are named in audit lines; readers skip /proc. */
	if ((fi->flags & O_ACCMODE) == O_RDONLY)
		caller_ids(req, &who);
	else
		caller_of(req, &who);
	if (!rc && (is_sink(&k) || write_is_copy(fs, req, &k, fi->flags))) {
		rc = file_open_sink(fs, ino, &k, &h, fi);
		goto opened;
	}
	if (!rc)
		rc = may_access(fs, req, &k,
				open_mode(fi->flags) |
					(fi->flags & O_TRUNC ? W_OK : 0));
	if (!rc)
		rc = refuse_if_managed(fs, &k, fi->flags);
	if (!rc)
		rc = file_open(fs, ino, &k, fi->flags, &who, &h, fi);
opened:
	if (rc) {
		reply_errno(req, rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	if (fuse_reply_open(req, fi) == -ENOENT)
		file_release(fs, h); /* the opener was interrupted */
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct blob *hold;
	const char *data;
	char *owned;
	size_t len;
	int rc = file_read(fs, (struct handle *)(uintptr_t)fi->fh, off, size,
			   &data, &len, &owned, &hold);

	(void)ino;
	if (rc)
		reply_errno(req, rc);
	else
		fuse_reply_buf(req, data, len);
	free(owned);
	blob_unref(hold);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int rc = file_write(fs, req, (struct handle *)(uintptr_t)fi->fh, data,
			    size, off);

	(void)ino;
	if (rc < 0)
		reply_errno(req, rc);
	else
		fuse_reply_write(req, (size_t)rc);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct caller who;

	(void)ino;
	caller_of(req, &who);
	reply_errno(req,
		    file_flush(fs, (struct handle *)(uintptr_t)fi->fh, &who));
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);

	(void)ino;
	file_release(fs, (struct handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* fdatasync(2) too: a commit is the whole text, data and all. The kernel
 * holds the inode's lock meanwhile, which invalidating it does not take. */
static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct caller who;

	(void)ino;
	(void)datasync;
	caller_of(req, &who);
	reply_errno(req,
		    file_fsync(fs, (struct handle *)(uintptr_t)fi->fh, &who));
}

/* Waiting for a change: see file_poll(). Never waits itself. */
static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		    struct fuse_pollhandle *ph)
{
	struct fs *fs = fs_of(req);

	(void)ino;
	fuse_reply_poll(req,
			file_poll(fs, (struct handle *)(uintptr_t)fi->fh, ph));
}

/* Every name here is a file or folder the daemon defines: there is no
 * link of either kind to make, which link(2) and symlink(2) say with
 * EPERM for a file system that does not support them. */
static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	(void)fs_of(req);
	(void)link;
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent,
		    const char *name)
{
	(void)fs_of(req);
	(void)ino;
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

/* What create_in() made, beside a new file. */
enum { CREATED_SINK = 1, CREATED_ANEW = 2 };

/* The files that say what their folder is: a copy of one is kept. */
static bool holds_the_text(const struct node_key *k)
{
	return k->type == NT_RES_SPEC || k->type == NT_ENV_CONFIG ||
	       k->type == NT_ENV_POLICY;
}

/*
 * What a create in a folder its caller is filling (see tree_fresh_add())
 * opens: the spec or config itself, or a sink for the rest, whose bytes
 * the spec or the daemon already has (a copy of ctl would run what it
 * shows). A field file or ctl created without O_EXCL is a writer setting
 * it (`open(..., "w")` right after mkdir), not a copier (cp -r and tar
 * create with O_EXCL, and copy the spec too): it gets the file.
 */
static int create_fresh(struct fs *fs, fuse_req_t req, const struct node_key *p,
			const char *name, int flags,
			const struct node_key *probe, struct node_key *child)
{
	if (tree_is_dir(probe))
		return -EEXIST;
	tree_fresh_claim(fs, fuse_req_ctx(req)->pid, p, name);
	*child = *probe;
	if (holds_the_text(probe))
		return flags & O_EXCL ? CREATED_ANEW : 0;
	if ((probe->type == NT_RES_FIELD || probe->type == NT_ENV_CTL) &&
	    !(flags & O_EXCL))
		return 0;
	tree_fresh_sink(fs, fuse_req_ctx(req)->pid, p, name);
	return CREATED_SINK;
}

/* 0, CREATED_SINK, CREATED_ANEW, or a negative errno. */
static int create_in(struct fs *fs, fuse_req_t req, const struct node_key *p,
		     const char *name, mode_t mode, int flags,
		     struct node_key *child)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct node_key probe;
	struct caller who;
	uint64_t id;
	pid_t maker;
	int rc;

	if (strlen(name) > 255)
		return -ENAMETOOLONG;
	maker = sink_maker(fs, req, p);
	if (maker) {
		caller_ids(req, &who);
		who.pid = maker;
		rc = sink_make(&fs->sinks, &who, p, name,
			       S_IFREG | (mode & 07777), child);
		return rc ? rc : CREATED_SINK;
	}
	if (tree_lookup(fs, p, name, &probe) == 0) {
		if (probe.type == NT_SCRATCH ||
		    !tree_fresh_hides(fs, ctx->pid, p, name))
			return -EEXIST;
		return create_fresh(fs, req, p, name, flags, &probe, child);
	}
	/* A spec unlinked to be replaced: this is its replacement. */
	if (p->type == NT_RES && !strcmp(name, "spec") &&
	    tree_unhide_spec(fs, p->id)) {
		*child = node_key_make(NT_RES_SPEC, 0, p->id, 0);
		return CREATED_ANEW;
	}
	if (p->type == NT_SECRETS) {
		if (!name_is_valid(name))
			return -EINVAL;
		*child = node_key_make(NT_SECRET, 0, p->id, 0);
		snprintf(child->name, sizeof(child->name), "%s", name);
		return 0;
	}
	if (!scratch_allowed_in(p))
		return tree_is_dir(p) ? -EPERM : -ENOTDIR;
	id = scratch_create(&fs->scratch, p, env_id_of(fs, p), name, ctx->uid,
			    ctx->gid, mode);
	if (!id)
		return -ENOSPC;
	*child = node_key_make(NT_SCRATCH, 0, id, 0);
	return 0;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct handle *h = NULL;
	struct node_key pk, ck;
	struct caller who;
	int rc = key_of(fs, parent, &pk);

	caller_of(req, &who);
	if (!rc)
		rc = may_access(fs, req, &pk, W_OK | X_OK);
	if (!rc)
		rc = create_in(fs, req, &pk, name, mode, fi->flags, &ck);
	if (rc == CREATED_SINK) {
		rc = file_open_sink(fs, node_get(&fs->nodes, &ck, 0), &ck, &h,
				    fi);
	} else if (rc >= 0) {
		bool anew = rc == CREATED_ANEW;

		/* Opened before its entry is made: a new secret exists for
		 * getattr only once its creator's handle is there. */
		rc = file_open(fs, node_get(&fs->nodes, &ck, 0), &ck,
			       fi->flags | O_TRUNC | O_CREAT, &who, &h, fi);
		/* A spec made anew (after an unlink, or by a copier) starts
		 * empty, but only what is written to it is committed: an
		 * install that fails before writing leaves the spec in
		 * force, and a copy of a draft is a draft. */
		if (!rc && anew)
			file_untruncate(h);
		/* In a folder being filled, a field's writer may be a
		 * copier that copies the spec too: only a value that
		 * differs from what the field shows is a change. */
		if (!rc && ck.type == NT_RES_FIELD)
			file_only_changes(h);
	}
	if (!rc)
		rc = entry_of(fs, &ck, &e);
	/* Made by a copier in a folder it fills: there for it from now. */
	if (!rc)
		tree_fresh_claim(fs, fuse_req_ctx(req)->pid, &pk, name);
	if (rc) {
		if (h)
			file_release(fs, h);
		reply_errno(req, rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	fuse_reply_create(req, &e, fi);
}

/*
 * tar --xattrs makes each file with mknod(2) before it opens it. A
 * regular file is made as an exclusive create is, and closed at once;
 * a spec or field made so commits nothing until it is written. Other
 * types of node have no place in the tree.
 */
static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct fuse_file_info fi = { .flags = O_WRONLY | O_CREAT | O_EXCL };
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct handle *h = NULL;
	struct node_key pk, ck;
	struct caller who;
	bool again = false;
	int rc = key_of(fs, parent, &pk);

	(void)rdev;
	caller_of(req, &who);
	if (!rc && !S_ISREG(mode))
		rc = -EPERM;
	if (!rc)
		rc = may_access(fs, req, &pk, W_OK | X_OK);
	if (!rc)
		rc = create_in(fs, req, &pk, name, mode, fi.flags, &ck);
	/* A secret exists once a value is written: nothing to make. */
	if (rc >= 0 && ck.type == NT_SECRET)
		rc = -EPERM;
	if (rc == 0) {
		rc = file_open(fs, node_get(&fs->nodes, &ck, 0), &ck, fi.flags,
			       &who, &h, &fi);
		if (h)
			file_release(fs, h);
	} else if (rc == CREATED_ANEW &&
		   !tree_fresh_created(fs, fuse_req_ctx(req)->pid, &ck)) {
		/* An unlinked spec's replacement: the open that follows
		 * must be its create, which starts empty, so the gap stays
		 * and the kernel is told to look the name up again. */
		tree_hide_spec(fs, ck.id);
		again = true;
		rc = 0;
	} else if (rc > 0) {
		rc = 0; /* a spec made anew or a sink: written by the open after */
	}
	if (!rc)
		rc = entry_of(fs, &ck, &e);
	if (!rc && again)
		e.entry_timeout = e.attr_timeout = 0;
	if (!rc)
		tree_fresh_claim(fs, fuse_req_ctx(req)->pid, &pk, name);
	if (rc)
		reply_errno(req, rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct node_key pk, ck;
	int rc = key_of(fs, parent, &pk);

	if (!rc)
		rc = may_access(fs, req, &pk, W_OK | X_OK);
	if (!rc && sink_in(fs, req, &pk, name, &ck) == 0) {
		sink_drop(&fs->sinks, ck.id);
		goto out;
	}
	if (!rc)
		rc = tree_lookup(fs, &pk, name, &ck);
	if (rc)
		goto out;
	if (ck.type == NT_SCRATCH) {
		scratch_unlink(&fs->scratch, ck.id);
	} else if (ck.type == NT_SECRET) {
		struct change ch = { .op = CH_SECRET_REMOVE };
		struct change_result res;
		BUF_AUTO path = BUF_INIT;
		char env[NAME_MAX_LEN + 1] = "";

		rc = tree_env_name(fs, &ck, env);
		if (rc)
			goto out;
		caller_of(req, &ch.who);
		tree_path(fs, &ck, &path);
		ch.env = env;
		ch.name = ck.name;
		ch.path = buf_str(&path);
		rc = store_apply(fs->store, &ch, &res);
	} else if (ck.type == NT_RES_SPEC) {
		/* Replaced by remove-then-create (mv across file systems,
		 * install): nothing is committed; the spec in force stays
		 * and shows again unless a new one is created. */
		tree_hide_spec(fs, ck.id);
	} else {
		/* status and the rest are the object; rmdir removes it. */
		rc = tree_is_dir(&ck) ? -EISDIR : -EPERM;
	}
out:
	reply_errno(req, rc);
}

/* ---- rename ------------------------------------------------------------ */

/*
 * `mv tmp spec`, sed -i, vim: the file's bytes become the new spec. That
 * is a write to the file it replaces, so it needs the right to write
 * that file: rename(2) itself (and the kernel) check only the folders.
 */
static int rename_over_editable(struct fs *fs, fuse_req_t req,
				const struct node_key *from,
				const struct node_key *to)
{
	/* Renamed over a secret, the bytes are its value. */
	WIPEBUF_AUTO data = BUF_INIT;
	struct caller who;
	int rc = may_access(fs, req, to, W_OK);

	if (!rc)
		rc = scratch_bytes(&fs->scratch, from->id, &data);
	if (rc)
		return rc;
	caller_of(req, &who);
	rc = file_commit(fs, to, buf_str(&data), data.len, &who);
	if (rc)
		return rc;
	scratch_become_alias(&fs->scratch, from->id, to);
	return 0;
}

/*
 * Editors that keep a backup rename the original away first (vim's
 * `spec~`, emacs's). The spec stays where it is; the new name gets a copy,
 * and the editor's next write to spec commits as usual.
 */
static int rename_editable_away(struct fs *fs, fuse_req_t req,
				const struct node_key *from,
				const struct node_key *newp,
				const char *newname)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct blob *b;
	int err = 0, rc;

	if (!scratch_allowed_in(newp))
		return -EPERM;
	model_rdlock(fs->model);
	b = render_get(fs, from, &err);
	model_unlock(fs->model);
	if (!b)
		return err;
	rc = scratch_fill(&fs->scratch, newp, env_id_of(fs, newp), newname,
			  ctx->uid, ctx->gid, b->data, b->len);
	blob_unref(b);
	return rc;
}

static int rename_scratch(struct fs *fs, const struct node_key *from,
			  const struct node_key *newp, const char *newname)
{
	if (!scratch_allowed_in(newp))
		return -EPERM;
	return scratch_move(&fs->scratch, from->id, newp, env_id_of(fs, newp),
			    newname);
}

/*
 * rsync fills a resource folder it made by renaming a copy of each
 * file over its name (see tree_fresh_filler()). Its copies of status,
 * state and events are taken and not kept, as a copier's creates of
 * them are; so are its receiver's copies of field files, since the spec
 * it copies too says the same. The maker itself renaming over a field
 * is a writer setting it, as with a create without O_EXCL.
 */
static bool rename_is_copy(struct fs *fs, fuse_req_t req,
			   const struct node_key *to)
{
	struct node_key env = node_key_make(NT_ENV, 0, to->id, 0);
	/* A copy of ctl is the text it showed, never a command. */
	enum fresh_filler who =
		to->type == NT_ENV_CTL
			? tree_fresh_filler(fs, fuse_req_ctx(req)->pid, &env)
			: filler_of(fs, req, to);

	return who == FRESH_CHILD ||
	       (who == FRESH_MAKER && to->type != NT_RES_FIELD);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct fs *fs = fs_of(req);
	struct node_key pk, npk, from, to;
	bool to_exists, to_hidden = false;
	int rc = key_of(fs, parent, &pk);

	if (!rc)
		rc = key_of(fs, newparent, &npk);
	if (!rc)
		rc = may_access(fs, req, &pk, W_OK | X_OK);
	if (!rc)
		rc = may_access(fs, req, &npk, W_OK | X_OK);
	if (!rc && sink_in(fs, req, &pk, name, &from) == 0) {
		rc = is_sink(&npk) || sink_maker(fs, req, &npk)
			     ? sink_move(&fs->sinks, from.id, &npk, newname)
			     : -EXDEV;
		goto out;
	}
	if (!rc)
		rc = tree_lookup(fs, &pk, name, &from);
	if (rc)
		goto out;
	if (flags & RENAME_EXCHANGE) {
		rc = -EINVAL;
		goto out;
	}
	to_exists = tree_lookup(fs, &npk, newname, &to) == 0;
	/* Over a spec unlinked to be replaced: that is its replacement. */
	if (!to_exists && npk.type == NT_RES && !strcmp(newname, "spec") &&
	    tree_spec_hidden(fs, npk.id)) {
		to = node_key_make(NT_RES_SPEC, 0, npk.id, 0);
		to_exists = to_hidden = true;
	}
	/* A hidden spec is absent to every reader, so a rename that must
	 * not replace anything (mv tries that first) may take its name. */
	if (to_exists && !to_hidden && (flags & RENAME_NOREPLACE)) {
		rc = -EEXIST;
	} else if (from.type == NT_SCRATCH && to_exists &&
		   rename_is_copy(fs, req, &to)) {
		scratch_become_alias(&fs->scratch, from.id, &to);
	} else if (from.type == NT_SCRATCH && to_exists &&
		   to.type != NT_SCRATCH) {
		rc = tree_is_editable(&to) && to.type != NT_ENV_CTL
			     ? rename_over_editable(fs, req, &from, &to)
			     : -EPERM;
		if (!rc && to.type == NT_RES_SPEC)
			tree_unhide_spec(fs, to.id);
	} else if (from.type == NT_SCRATCH) {
		rc = rename_scratch(fs, &from, &npk, newname);
	} else if (tree_is_editable(&from) && from.type != NT_ENV_CTL &&
		   from.type != NT_SECRET && !to_exists) {
		rc = rename_editable_away(fs, req, &from, &npk, newname);
	} else {
		rc = -EPERM;
	}
out:
	reply_errno(req, rc);
	/* The kernel has moved its dentries as a rename does; where the
	 * tree kept a spec in place or made a copy, make it look again. */
	if (!rc && from.type != NT_SCRATCH) {
		notify_entry(fs, parent, name);
		notify_entry(fs, newparent, newname);
	}
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv = { 0 };

	(void)ino;
	fs_of(req);
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

/* ---- timing -------------------------------------------------------------- */

/*
 * Each operation is timed here, once, around its handler: the handlers
 * reply before they return, so this is the time a request spent in the
 * daemon. The fs is read before the call: a replied req is gone.
 */
#define TIMED(op, id, params, ...)                       \
	static void timed_##op params                    \
	{                                                \
		struct fs *fs_ = fuse_req_userdata(req); \
		uint64_t t0_ = hist_clock();             \
                                                         \
		op_##op(__VA_ARGS__);                    \
		hist_since(&fs_->op_hist[id], t0_);      \
	}

TIMED(lookup, FOP_LOOKUP, (fuse_req_t req, fuse_ino_t p, const char *n), req, p,
      n)
TIMED(forget, FOP_FORGET, (fuse_req_t req, fuse_ino_t i, uint64_t n), req, i, n)
TIMED(forget_multi, FOP_FORGET,
      (fuse_req_t req, size_t c, struct fuse_forget_data *f), req, c, f)
TIMED(getattr, FOP_GETATTR,
      (fuse_req_t req, fuse_ino_t i, struct fuse_file_info *fi), req, i, fi)
TIMED(setattr, FOP_SETATTR,
      (fuse_req_t req, fuse_ino_t i, struct stat *a, int t,
       struct fuse_file_info *fi),
      req, i, a, t, fi)
TIMED(mkdir, FOP_MKDIR, (fuse_req_t req, fuse_ino_t p, const char *n, mode_t m),
      req, p, n, m)
TIMED(rmdir, FOP_RMDIR, (fuse_req_t req, fuse_ino_t p, const char *n), req, p,
      n)
TIMED(unlink, FOP_UNLINK, (fuse_req_t req, fuse_ino_t p, const char *n), req, p,
      n)
TIMED(rename, FOP_RENAME,
      (fuse_req_t req, fuse_ino_t p, const char *n, fuse_ino_t np,
       const char *nn, unsigned int f),
      req, p, n, np, nn, f)
TIMED(open, FOP_OPEN, (fuse_req_t req, fuse_ino_t i, struct fuse_file_info *fi),
      req, i, fi)
TIMED(read, FOP_READ,
      (fuse_req_t req, fuse_ino_t i, size_t s, off_t o,
       struct fuse_file_info *fi),
      req, i, s, o, fi)
TIMED(write, FOP_WRITE,
      (fuse_req_t req, fuse_ino_t i, const char *d, size_t s, off_t o,
       struct fuse_file_info *fi),
      req, i, d, s, o, fi)
TIMED(flush, FOP_FLUSH,
      (fuse_req_t req, fuse_ino_t i, struct fuse_file_info *fi), req, i, fi)
TIMED(release, FOP_RELEASE,
      (fuse_req_t req, fuse_ino_t i, struct fuse_file_info *fi), req, i, fi)
TIMED(fsync, FOP_FSYNC,
      (fuse_req_t req, fuse_ino_t i, int d, struct fuse_file_info *fi), req, i,
      d, fi)
TIMED(opendir, FOP_OPENDIR,
      (fuse_req_t req, fuse_ino_t i, struct fuse_file_info *fi), req, i, fi)
TIMED(readdir, FOP_READDIR,
      (fuse_req_t req, fuse_ino_t i, size_t s, off_t o,
       struct fuse_file_info *fi),
      req, i, s, o, fi)
TIMED(readdirplus, FOP_READDIR,
      (fuse_req_t req, fuse_ino_t i, size_t s, off_t o,
       struct fuse_file_info *fi),
      req, i, s, o, fi)
TIMED(releasedir, FOP_RELEASEDIR,
      (fuse_req_t req, fuse_ino_t i, struct fuse_file_info *fi), req, i, fi)
TIMED(create, FOP_CREATE,
      (fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
       struct fuse_file_info *fi),
      req, p, n, m, fi)
TIMED(mknod, FOP_MKNOD,
      (fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, dev_t r), req, p,
      n, m, r)
TIMED(statfs, FOP_STATFS, (fuse_req_t req, fuse_ino_t i), req, i)
TIMED(poll, FOP_POLL,
      (fuse_req_t req, fuse_ino_t i, struct fuse_file_info *fi,
       struct fuse_pollhandle *ph),
      req, i, fi, ph)
TIMED(symlink, FOP_SYMLINK,
      (fuse_req_t req, const char *l, fuse_ino_t p, const char *n), req, l, p,
      n)
TIMED(link, FOP_LINK,
      (fuse_req_t req, fuse_ino_t i, fuse_ino_t p, const char *n), req, i, p, n)

const struct fuse_lowlevel_ops infrafs_ops = {
	.init = op_init,
	.lookup = timed_lookup,
	.forget = timed_forget,
	.forget_multi = timed_forget_multi,
	.getattr = timed_getattr,
	.setattr = timed_setattr,
	.mkdir = timed_mkdir,
	.rmdir = timed_rmdir,
	.unlink = timed_unlink,
	.rename = timed_rename,
	.open = timed_open,
	.read = timed_read,
	.write = timed_write,
	.flush = timed_flush,
	.release = timed_release,
	.fsync = timed_fsync,
	.opendir = timed_opendir,
	.readdir = timed_readdir,
	.readdirplus = timed_readdirplus,
	.releasedir = timed_releasedir,
	.create = timed_create,
	.mknod = timed_mknod,
	.statfs = timed_statfs,
	.poll = timed_poll,
	.symlink = timed_symlink,
	.link = timed_link,
};
