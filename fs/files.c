// SPDX-License-Identifier: MIT
/*
 * Open files. A reader gets a snapshot of the rendered content at open and
 * reads offsets out of it. A writer of a spec, field, config, policy or
 * secret edits a private buffer: each complete line is checked as it
 * arrives (a bad one fails that write(2)), and the whole buffer is
 * committed at flush, so close(2) reports whether the change was accepted
 * and durable. Scratch files are plain bytes in memory.
 */
#include "fs.h"

#include "util/log.h"
#include "util/text.h"
#include "util/wipe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

struct pending_secret {
	struct node_key key;
	unsigned count;
};

void pending_secret_add(struct fs *fs, const struct node_key *k)
{
	struct pending_secret *p;

	pthread_mutex_lock(&fs->pending_lock);
	p = map_get(&fs->pending_secrets, k, sizeof(*k));
	if (!p) {
		p = xcalloc(1, sizeof(*p));
		p->key = *k;
		map_put(&fs->pending_secrets, &p->key, sizeof(p->key), p);
	}
	p->count++;
	pthread_mutex_unlock(&fs->pending_lock);
}

void pending_secret_drop(struct fs *fs, const struct node_key *k)
{
	struct pending_secret *p;

	pthread_mutex_lock(&fs->pending_lock);
	p = map_get(&fs->pending_secrets, k, sizeof(*k));
	if (p && --p->count == 0) {
		map_del(&fs->pending_secrets, k, sizeof(*k));
		free(p);
	}
	pthread_mutex_unlock(&fs->pending_lock);
}

void pending_secrets_destroy(struct fs *fs)
{
	void *v;

	for (size_t pos = 0; map_next(&fs->pending_secrets, &pos, &v);)
		free(v);
	map_free(&fs->pending_secrets);
	pthread_mutex_destroy(&fs->pending_lock);
}

bool pending_secret_has(struct fs *fs, const struct node_key *k)
{
	bool has;

	pthread_mutex_lock(&fs->pending_lock);
	has = map_get(&fs->pending_secrets, k, sizeof(*k)) != NULL;
	pthread_mutex_unlock(&fs->pending_lock);
	return has;
}

enum handle_kind { H_VIEW, H_EDIT, H_SCRATCH, H_CTL, H_SINK };

struct handle {
	enum handle_kind kind;
	struct node_key key;
	int flags;
	struct blob *snap; /* H_VIEW */
	/* H_EDIT: a wipebuf (util/wipe.h), for it may hold a secret. */
	struct buf edit;
	bool written; /* H_EDIT: bytes arrived since the last commit */
	bool created; /* a secret made by this open, pending until release */
	bool truncated; /* H_EDIT: emptied, with nothing written yet */
	bool only_changes; /* H_EDIT: what the file shows already is no commit */
	struct caller opener; /* who opened it, for a commit at release */
	int poisoned; /* H_EDIT: a write was refused; flush returns this */
	/* H_EDIT: an fsync's refused commit, for the close(2) after it to
	 * report too, without a second commit of the same text. */
	int refused;
	struct scratch *scratch; /* H_SCRATCH */
	/* H_VIEW: the poll handle of the last poll(2) that asked to be
	 * woken, and whether the handle is in the poll table. */
	struct fuse_pollhandle *ph;
	bool polled;
	/* H_VIEW: the content last told to poll(2), NULL when it is snap. */
	struct blob *told;
	bool served; /* H_VIEW: a read has had bytes of snap */
	fuse_ino_t ino;
	/*
	 * One open file is shared by every descriptor dup()ed from it, so
	 * its reads, writes, flushes, truncations and fstat()s arrive on
	 * different threads at once. This lock guards what they change:
	 * snap, ph, polled, told and served (H_VIEW), and edit, written,
	 * truncated, poisoned and refused (H_EDIT). A flush, fsync or
	 * release holds it across its commit, since the committer reads the
	 * edit buffer in place until store_apply() returns. Taken before
	 * the model lock, and never while holding a table's mutex but the
	 * poll table's. kind, key, flags, opener, ino, created and scratch
	 * are set at open and only read after; a scratch file's bytes are
	 * under the scratch table's lock instead.
	 */
	pthread_mutex_t lock;
	struct handle *prev, *next; /* fs->handles */
};

static bool wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY;
}

static bool wants_read(int flags)
{
	return (flags & O_ACCMODE) != O_WRONLY;
}

static const struct kind_def *edit_kind(struct fs *fs, const struct node_key *k)
{
	const struct resource *r;

	switch (k->type) {
	case NT_ENV_CONFIG:
		return &kind_config;
	case NT_ENV_POLICY:
		return &kind_policy;
	case NT_RES_SPEC:
		r = tree_res(fs, k);
		return r ? kind_at(r->kind) : NULL;
	default:
		return NULL;
	}
}

static int open_edit(struct fs *fs, struct handle *h, int flags)
{
	struct blob *b;
	int err = 0;

	h->kind = H_EDIT;
	/* A secret is replaced whole and never read back: it starts empty. */
	if (h->key.type == NT_SECRET)
		return 0;
	if (flags & O_TRUNC) {
		h->truncated = true;
		return 0;
	}
	model_rdlock(fs->model);
	b = render_get(fs, &h->key, &err);
	model_unlock(fs->model);
	if (!b)
		return err;
	wipebuf_add(&h->edit, b->data, b->len);
	blob_unref(b);
	return 0;
}

static int open_view(struct fs *fs, struct handle *h, struct fuse_file_info *fi)
{
	int err = 0;

	model_rdlock(fs->model);
	h->snap = h->key.type == NT_METRICS ? file_metrics(fs, &err)
					    : render_get(fs, &h->key, &err);
	model_unlock(fs->model);
	if (!h->snap)
		return err;
	h->kind = H_VIEW;
	if (render_is_live(&h->key)) {
		fi->direct_io = 1;
	} else if (node_cached_gen(&fs->nodes, h->ino) == h->snap->gen) {
		/* The kernel's pages and size are of this very content. */
		fi->keep_cache = 1;
	} else {
		/* They may be of an older one. Without keep_cache the kernel
		 * drops the pages itself as this open completes; its cached
		 * size could still cut the first read short, so that is
		 * dropped now, before the reply, and the first read or
		 * fstat(2) asks again. Dropping attributes alone takes no
		 * lock a request may hold (pages would), so it is safe here.
		 * Not direct I/O: mmap(2) needs the page cache. The notifier
		 * then records that later opens may keep the cache. */
		if (fs->se)
			fuse_lowlevel_notify_inval_inode(fs->se, h->ino, -1, 0);
		notify_inode(fs, h->ino, h->snap->gen);
	}
	fi->noflush = 1;
	return 0;
}

static int open_scratch(struct fs *fs, struct handle *h, int flags)
{
	struct scratch *s;
	int rc = 0;

	pthread_mutex_lock(&fs->scratch.lock);
	s = map_get_u64(&fs->scratch.by_id, &h->key.id);
	if (!s || s->unlinked) {
		rc = -ENOENT;
	} else {
		s->opens++;
		if ((flags & O_TRUNC) && wants_write(flags))
			wipebuf_truncate(&s->data, 0);
		h->scratch = s;
		h->kind = H_SCRATCH;
	}
	pthread_mutex_unlock(&fs->scratch.lock);
	return rc;
}

/*
 * ctl runs one command per write(2); read, it shows the commands it takes
 * and the last results, as the open found them.
 */
static int open_ctl(struct fs *fs, struct handle *h, int flags,
		    struct fuse_file_info *fi)
{
	BUF_AUTO text = BUF_INIT;

	h->kind = H_CTL;
	fi->direct_io = 1;
	if (!wants_read(flags))
		return 0;
	ctl_render(fs, h->key.id, &text);
	h->snap = blob_new(text.data ? text.data : "", text.len, 0);
	return 0;
}

/*
 * A secret's value never leaves the daemon. Opened for reading it is an
 * empty file, as `ls -l` shows it, so that programs that read a whole
 * tree as root (tar, rsync, cp -a, grep -r) go through; the mode (0200)
 * keeps everyone else out at open(2) as on any file system. Read and
 * write at once would read back what is being written: refused.
 */
static int open_secret(struct fs *fs, struct handle *h, int flags,
		       struct fuse_file_info *fi)
{
	fi->direct_io = 1;
	if (wants_read(flags) && (wants_write(flags) || h->created))
		return -EACCES;
	if (wants_write(flags))
		return open_edit(fs, h, flags);
	h->snap = blob_new("", 0, 0);
	h->kind = H_VIEW;
	fi->noflush = 1;
	return 0;
}

static void handle_track(struct fs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->handles_lock);
	h->next = fs->handles;
	if (h->next)
		h->next->prev = h;
	fs->handles = h;
	pthread_mutex_unlock(&fs->handles_lock);
}

/*
 * A file a copier creates where the daemon already shows one (a field
 * file, status, events): its writes are taken and dropped, since the
 * spec it also copies says the same, and the rest is the daemon's.
 */
int file_open_sink(struct fs *fs, fuse_ino_t ino, const struct node_key *k,
		   struct handle **out, struct fuse_file_info *fi)
{
	struct handle *h = xcalloc(1, sizeof(*h));

	h->ino = ino;
	pthread_mutex_init(&h->lock, NULL);
	h->key = *k;
	h->kind = H_SINK;
	h->flags = O_WRONLY;
	fi->direct_io = 1;
	handle_track(fs, h);
	*out = h;
	return 0;
}

int file_open(struct fs *fs, fuse_ino_t ino, const struct node_key *k,
	      int flags, const struct caller *who, struct handle **out,
	      struct fuse_file_info *fi)
{
	struct handle *h = xcalloc(1, sizeof(*h));
	int rc;

	h->ino = ino;
	pthread_mutex_init(&h->lock, NULL);
	if (k->type == NT_SECRET && (flags & O_CREAT)) {
		h->created = true;
		pending_secret_add(fs, k);
	}

	h->opener = *who;
	h->key = *k;
	h->flags = flags;
	if (tree_is_dir(k)) {
		rc = -EISDIR;
	} else if (k->type == NT_SCRATCH) {
		rc = open_scratch(fs, h, flags);
	} else if (k->type == NT_ENV_CTL) {
		rc = open_ctl(fs, h, flags, fi);
	} else if (k->type == NT_SECRET) {
		rc = open_secret(fs, h, flags, fi);
	} else if (wants_write(flags)) {
		rc = tree_is_editable(k) ? open_edit(fs, h, flags) : -EACCES;
		fi->direct_io = 1;
	} else {
		rc = open_view(fs, h, fi);
	}
	if (rc) {
		if (h->created)
			pending_secret_drop(fs, k);
		wipebuf_free(&h->edit);
		pthread_mutex_destroy(&h->lock);
		free(h);
		return rc;
	}
	handle_track(fs, h);
	*out = h;
	return 0;
}

/* The open file's bytes become these (a reference it takes over). */
static void take(struct handle *h, struct blob *b)
{
	blob_unref(h->snap);
	h->snap = b;
	blob_unref(h->told);
	h->told = NULL;
}

static void take_current(struct fs *fs, struct handle *h)
{
	struct blob *b;
	int err;

	model_rdlock(fs->model);
	b = render_get(fs, &h->key, &err);
	model_unlock(fs->model);
	if (b)
		take(h, b);
}

/*
 * A live file (events) grows while open: past the snapshot, look again.
 * A read from the start takes the current content too, as a disk file
 * would give it. Live files use direct I/O: no size the kernel keeps cuts
 * what they read. metrics is not one: its open shows the one-second
 * snapshot that stat sized, and a fresh one would be another text.
 */
static void refresh_live(struct fs *fs, struct handle *h, off_t off)
{
	if (h->key.type == NT_METRICS ||
	    (off != 0 && (size_t)off < h->snap->len))
		return;
	take_current(fs, h);
}

/*
 * A read from the start of a file read through the page cache fills the
 * kernel's pages, which it then cuts at the size it was last told of the
 * inode: the bytes served must be those that size was of, or the reader
 * gets a document cut short or padded with zeros. So that content is
 * served, whichever open file it came through (see file_size()).
 */
static void refresh_from_start(struct fs *fs, struct handle *h)
{
	struct blob *b;

	if (!render_may_change(&h->key))
		return;
	b = node_sized(&fs->nodes, h->ino);
	if (b && b != h->snap)
		take(h, b);
	else
		blob_unref(b);
}

static void slice(const char *data, size_t len, off_t off, size_t size,
		  const char **out, size_t *outlen)
{
	if ((size_t)off >= len) {
		*out = data;
		*outlen = 0;
		return;
	}
	*out = data + off;
	*outlen = len - (size_t)off < size ? len - (size_t)off : size;
}

int file_read(struct fs *fs, struct handle *h, off_t off, size_t size,
	      const char **data, size_t *len, char **owned, struct blob **hold)
{
	*owned = NULL;
	*hold = NULL;
	switch (h->kind) {
	case H_SINK:
		*data = "";
		*len = 0;
		return 0;
	case H_CTL:
		if (!h->snap)
			return -EBADF;
		*hold = blob_ref(h->snap);
		slice((*hold)->data, (*hold)->len, off, size, data, len);
		return 0;
	case H_VIEW:
		/* The reply goes out after this returns, and the kernel may
		 * release the handle as soon as it has the bytes: the caller
		 * holds its own reference to them until the reply is sent. */
		pthread_mutex_lock(&h->lock);
		if (render_is_live(&h->key))
			refresh_live(fs, h, off);
		else if (off == 0)
			refresh_from_start(fs, h);
		h->served = true;
		*hold = blob_ref(h->snap);
		pthread_mutex_unlock(&h->lock);
		slice((*hold)->data, (*hold)->len, off, size, data, len);
		/* An older snapshot read into the page cache after the cache
		 * moved on: what the kernel keeps of it must go again. */
		if (!render_is_live(&h->key) && h->key.type != NT_SECRET &&
		    node_cached_gen(&fs->nodes, h->ino) != (*hold)->gen)
			notify_inode(fs, h->ino, 0);
		return 0;
	case H_EDIT:
		/* Copied: a write on the same descriptor may move the bytes
		 * (direct I/O reads do not wait for writes). */
		pthread_mutex_lock(&h->lock);
		slice(buf_str(&h->edit), h->edit.len, off, size, data, len);
		*owned = xstrndup(*data, *len);
		*data = *owned;
		pthread_mutex_unlock(&h->lock);
		return 0;
	case H_SCRATCH:
		/* Copied: another descriptor's write may move the bytes. */
		pthread_mutex_lock(&fs->scratch.lock);
		slice(buf_str(&h->scratch->data), h->scratch->data.len, off,
		      size, data, len);
		*owned = xstrndup(*data, *len);
		*data = *owned;
		pthread_mutex_unlock(&fs->scratch.lock);
		return 0;
	default:
		return -EBADF;
	}
}

/* Names of what a key edits, copied out from under the read lock. */
struct edit_target {
	char env[NAME_MAX_LEN + 1];
	char name[NAME_MAX_LEN + 1];
	char field[64];
	int kind;
	uint64_t env_id, res_id;
};

static int resolve_target(struct fs *fs, const struct node_key *k,
			  struct edit_target *t)
{
	struct env *e;
	struct resource *r;
	int rc = 0;

	memset(t, 0, sizeof(*t));
	model_rdlock(fs->model);
	e = tree_env(fs, k);
	r = tree_res(fs, k);
	if (!e) {
		rc = -ENOENT;
	} else {
		snprintf(t->env, sizeof(t->env), "%s", e->name);
		t->env_id = e->id;
	}
	if (r) {
		snprintf(t->name, sizeof(t->name), "%s", r->name);
		t->kind = r->kind;
		t->res_id = r->id;
		if (k->type == NT_RES_FIELD)
			snprintf(t->field, sizeof(t->field), "%s",
				 kind_at(r->kind)->fields[k->sub].name);
	} else if (k->type == NT_SECRET) {
		snprintf(t->name, sizeof(t->name), "%s", k->name);
	}
	model_unlock(fs->model);
	return rc;
}

/*
 * Where a write refused line by line leaves its reason for the user: in
 * status and events, recorded before the write returns, so a `cat status`
 * right after the failed `echo` shows it.
 */
static void report_write_error(struct fs *fs, struct handle *h, const char *msg)
{
	struct change ch = { .op = CH_NOTE_ERROR };
	struct change_result res;
	struct edit_target t;

	atomic_fetch_add(&fs->write_rejections, 1);
	if (resolve_target(fs, &h->key, &t) < 0)
		return;
	ch.env = t.env;
	ch.kind = t.kind;
	ch.name = t.res_id ? t.name : NULL;
	ch.text = msg;
	ch.len = strlen(msg);
	ch.who = h->opener;
	store_apply(fs->store, &ch, &res);
	notify_changed_now(fs, t.env_id, t.res_id);
	log_debug("write refused: %s", msg);
}

static int check_edit_write(struct fs *fs, struct handle *h, size_t start,
			    size_t end)
{
	const struct kind_def *k;
	struct spec_error err;
	int rc = 0;

	if (h->edit.len > SPEC_MAX_BYTES) {
		snprintf(err.msg, sizeof(err.msg),
			 "the file would be %zu bytes; the limit is %d",
			 h->edit.len, SPEC_MAX_BYTES);
		report_write_error(fs, h, err.msg);
		return -EFBIG;
	}
	if (h->key.type == NT_SECRET)
		return 0;
	model_rdlock(fs->model);
	if (h->key.type == NT_RES_FIELD) {
		const struct resource *r = tree_res(fs, &h->key);

		if (r) {
			const struct field_def *f =
				&kind_at(r->kind)->fields[h->key.sub];
			const char *nl = memrchr(h->edit.data, '\n', end);

			/* A field file holds one value; check it once its
			 * line is complete. */
			if (nl && f->type != FT_MAP)
				rc = spec_check_value(
					f, h->edit.data,
					(size_t)(nl - h->edit.data), &err);
		}
	} else {
		k = edit_kind(fs, &h->key);
		if (k)
			rc = spec_check_lines(k, h->edit.data, h->edit.len,
					      start, end, &err);
	}
	model_unlock(fs->model);
	if (rc)
		report_write_error(fs, h, err.msg);
	return rc;
}

/* ---- ctl read back and metrics ------------------------------------------ */

/* Results kept per environment, in memory only: they are also in events. */
#define CTL_RESULTS 16

/* How long one rendering of metrics stands for stat(2) and open(2). */
#define METRICS_SECONDS 1.0

struct ctl_results {
	uint64_t env_id; /* the map's key */
	char *lines[CTL_RESULTS]; /* oldest first */
	size_t n;
};

static const char ctl_help[] =
	"# ctl takes one command per write(2), e.g. echo apply > ctl:\n"
	"#   apply           carry the accepted specs out now\n"
	"#   approve [PLAN]  approve the pending plan (approval = manual)\n"
	"#   discard         go back to the revision last applied\n"
	"#   import endpoints/NAME ID  adopt a cloud endpoint (name or ARN)\n"
	"#   promote ENV     make the pools and endpoints those of ENV\n"
	"#   refresh         look at the live state again now\n"
	"#   rollback REV    make revision REV's specs the ones in force\n"
	"# Last results, oldest first (kept until the daemon stops):\n";

void file_init(struct fs *fs)
{
	pthread_mutex_init(&fs->ctl_lock, NULL);
	pthread_mutex_init(&fs->metrics_lock, NULL);
	fs->metrics = NULL;
}

void file_destroy(struct fs *fs)
{
	void *v;

	for (size_t pos = 0; map_next(&fs->ctl_results, &pos, &v);) {
		struct ctl_results *c = v;

		for (size_t i = 0; i < c->n; i++)
			free(c->lines[i]);
		free(c);
	}
	map_free(&fs->ctl_results);
	if (fs->metrics)
		blob_unref(fs->metrics);
	pthread_mutex_destroy(&fs->ctl_lock);
	pthread_mutex_destroy(&fs->metrics_lock);
}

void ctl_note(struct fs *fs, uint64_t env_id, const struct caller *who,
	      const char *line, int rc, const char *msg)
{
	BUF_AUTO b = BUF_INIT;
	struct ctl_results *c;
	char when[64];

	time_rfc3339(time_now(), when, sizeof(when));
	buf_printf(&b, "%s uid=%u ", when, (unsigned)who->uid);
	/* Written by a user: escaped, it stays one line. */
	text_escape(&b, line, strcspn(line, "\n"), 0);
	buf_adds(&b, rc ? ": refused: " : ": ok");
	if (rc)
		text_escape(&b, msg[0] ? msg : strerror(-rc),
			    strlen(msg[0] ? msg : strerror(-rc)), 0);
	buf_addc(&b, '\n');
	pthread_mutex_lock(&fs->ctl_lock);
	c = map_get_u64(&fs->ctl_results, &env_id);
	if (!c) {
		c = xcalloc(1, sizeof(*c));
		c->env_id = env_id;
		map_put(&fs->ctl_results, &c->env_id, sizeof(c->env_id), c);
	}
	if (c->n == CTL_RESULTS) {
		free(c->lines[0]);
		memmove(c->lines, c->lines + 1,
			(CTL_RESULTS - 1) * sizeof(char *));
		c->n--;
	}
	c->lines[c->n++] = buf_steal(&b);
	pthread_mutex_unlock(&fs->ctl_lock);
}

void ctl_render(struct fs *fs, uint64_t env_id, struct buf *out)
{
	struct ctl_results *c;

	buf_adds(out, ctl_help);
	pthread_mutex_lock(&fs->ctl_lock);
	c = map_get_u64(&fs->ctl_results, &env_id);
	for (size_t i = 0; c && i < c->n; i++)
		buf_adds(out, c->lines[i]);
	pthread_mutex_unlock(&fs->ctl_lock);
}

/*
 * metrics changes at every request; a fresh rendering for each stat(2)
 * and open(2) would give a size that is never the size read, which tar
 * and rsync take for a file changed under them. One rendering stands for
 * a second. The caller holds the model's read lock.
 */
struct blob *file_metrics(struct fs *fs, int *err)
{
	const struct node_key k = node_key_make(NT_METRICS, 0, 0, 0);
	double now = time_now();
	struct blob *b = NULL;

	pthread_mutex_lock(&fs->metrics_lock);
	if (fs->metrics && now - fs->metrics_at < METRICS_SECONDS &&
	    now >= fs->metrics_at) {
		b = blob_ref(fs->metrics);
	} else {
		b = render_get(fs, &k, err);
		if (b) {
			if (fs->metrics)
				blob_unref(fs->metrics);
			fs->metrics = blob_ref(b);
			fs->metrics_at = now;
		}
	}
	pthread_mutex_unlock(&fs->metrics_lock);
	return b;
}

/*
 * promote SRC shows what SRC declares to whoever may read the target:
 * the writer must be able to read SRC themselves.
 */
static int ctl_may_run(struct fs *fs, fuse_req_t req, const char *line,
		       char *msg, size_t msglen)
{
	char cmd[16] = "", src[NAME_MAX_LEN + 1] = "";
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	if (sscanf(line, "%15s %63s", cmd, src) < 2 || strcmp(cmd, "promote"))
		return 0;
	if (fs_may_read_env(fs, req, src) == 0)
		return 0;
	snprintf(msg, msglen,
		 "promote %s: uid %u may not read %s (its folder's mode "
		 "says so), so may not promote it",
		 src, (unsigned)ctx->uid, src);
	return -EACCES;
}

/* One command per write(2), carried out before the write returns. */
static int ctl_command(struct fs *fs, fuse_req_t req, struct handle *h,
		       const char *data, size_t len)
{
	char line[400], msg[600];
	struct edit_target t;
	int rc;

	if (len == 0 || len >= sizeof(line) || memchr(data, '\0', len))
		return -EINVAL;
	memcpy(line, data, len);
	line[len] = '\0';
	if (resolve_target(fs, &h->key, &t) < 0)
		return -ENOENT;
	if (!fs->rec)
		return -EOPNOTSUPP;
	msg[0] = '\0';
	rc = ctl_may_run(fs, req, line, msg, sizeof(msg));
	if (!rc)
		rc = reconciler_ctl(fs->rec, t.env, line, &h->opener, msg,
				    sizeof(msg));
	ctl_note(fs, t.env_id, &h->opener, line, rc, msg);
	if (rc && msg[0]) {
		struct change ch = { .op = CH_NOTE_ERROR, .env = t.env };
		struct change_result res;
		char text[700];

		snprintf(text, sizeof(text), "ctl %.*s: %s",
			 (int)strcspn(line, "\n"), line, msg);
		ch.text = text;
		ch.len = strlen(text);
		ch.who = h->opener;
		store_apply(fs->store, &ch, &res);
		notify_changed_now(fs, t.env_id, 0);
	}
	return rc;
}

static int edit_write(struct fs *fs, struct handle *h, const char *data,
		      size_t len, off_t off)
{
	int rc;

	if (h->poisoned)
		return h->poisoned;
	if (h->flags & O_APPEND)
		off = (off_t)h->edit.len;
	if ((size_t)off + len > SPEC_MAX_BYTES) {
		h->poisoned = -EFBIG;
		report_write_error(fs, h,
				   "the file would pass the 1 MiB limit");
		return -EFBIG;
	}
	wipebuf_write_at(&h->edit, (size_t)off, data, len);
	h->written = true;
	rc = check_edit_write(fs, h, (size_t)off, (size_t)off + len);
	if (rc) {
		/* Nothing of this handle may be committed now: what reached
		 * us is not what the writer meant. */
		h->poisoned = rc;
		return rc;
	}
	return (int)len;
}

int file_write(struct fs *fs, fuse_req_t req, struct handle *h,
	       const char *data, size_t len, off_t off)
{
	int rc;

	switch (h->kind) {
	case H_SINK:
		return (int)len;
	case H_CTL:
		rc = ctl_command(fs, req, h, data, len);
		return rc ? rc : (int)len;
	case H_SCRATCH:
		pthread_mutex_lock(&fs->scratch.lock);
		if (h->flags & O_APPEND)
			off = (off_t)h->scratch->data.len;
		rc = scratch_check_size((uint64_t)off + len);
		if (!rc) {
			wipebuf_write_at(&h->scratch->data, (size_t)off, data,
					 len);
			clock_gettime(CLOCK_REALTIME, &h->scratch->mtime);
		}
		pthread_mutex_unlock(&fs->scratch.lock);
		return rc ? rc : (int)len;
	case H_EDIT:
		break;
	default:
		return -EBADF;
	}
	pthread_mutex_lock(&h->lock);
	rc = edit_write(fs, h, data, len, off);
	pthread_mutex_unlock(&h->lock);
	/* The request buffer is libfuse's, reused by this worker's next
	 * request: a secret's value must not wait there until then. */
	if (h->key.type == NT_SECRET)
		explicit_bzero((char *)data, len);
	return rc;
}

static int edit_truncate(struct handle *h, size_t size)
{
	int rc = 0;

	pthread_mutex_lock(&h->lock);
	/* Growing would pad the text with NUL bytes: never a spec. */
	if (size > h->edit.len) {
		rc = -EINVAL;
	} else {
		/* ftruncate(2) is a write, unlike O_TRUNC: committed at the
		 * close(2) that follows, which waits for it and returns its
		 * verdict, not later at release (truncate(1) exits, then a
		 * reader would still see the text it cut). */
		wipebuf_truncate(&h->edit, size);
		h->written = true;
	}
	pthread_mutex_unlock(&h->lock);
	return rc;
}

int file_truncate(struct fs *fs, struct handle *h, off_t size)
{
	(void)fs;
	if (size < 0 ||
	    size > (h->kind == H_SCRATCH ? SCRATCH_MAX_BYTES : SPEC_MAX_BYTES))
		return -EFBIG;
	switch (h->kind) {
	case H_EDIT:
		return edit_truncate(h, (size_t)size);
	case H_SCRATCH:
		pthread_mutex_lock(&fs->scratch.lock);
		wipebuf_truncate(&h->scratch->data, (size_t)size);
		pthread_mutex_unlock(&fs->scratch.lock);
		return 0;
	case H_SINK:
		return 0;
	default:
		return -EACCES;
	}
}

void file_untruncate(struct handle *h)
{
	pthread_mutex_lock(&h->lock);
	h->truncated = false;
	pthread_mutex_unlock(&h->lock);
}

void file_only_changes(struct handle *h)
{
	pthread_mutex_lock(&h->lock);
	h->truncated = false;
	h->only_changes = true;
	pthread_mutex_unlock(&h->lock);
}

/* The caller holds h->lock. */
static bool edit_unchanged(struct fs *fs, struct handle *h)
{
	struct blob *b;
	bool same;
	int err = 0;

	if (!h->only_changes)
		return false;
	model_rdlock(fs->model);
	b = render_get(fs, &h->key, &err);
	model_unlock(fs->model);
	if (!b)
		return false;
	same = b->len == h->edit.len &&
	       (!b->len || !memcmp(b->data, h->edit.data, b->len));
	blob_unref(b);
	return same;
}

void file_told_size(struct fs *fs, fuse_ino_t ino, const struct node_key *k,
		    const struct stat *st)
{
	struct blob *b;
	int err = 0;

	if (!S_ISREG(st->st_mode) || !render_may_change(k))
		return;
	model_rdlock(fs->model);
	b = render_get(fs, k, &err);
	model_unlock(fs->model);
	/* Moved on since, or an open spec's own size: no bytes known to
	 * go with it, and a read takes the newest. */
	if (b && (off_t)b->len != st->st_size) {
		blob_unref(b);
		b = NULL;
	}
	node_set_sized(&fs->nodes, ino, b);
}

/*
 * The kernel asks with the open file's handle before it reads past the
 * size it knows, and after a change dropped its attributes, also in the
 * middle of a read whose pages that change dropped: there the open file
 * keeps its content, so the reader gets the rest of the document it
 * started, never the tail of a newer one. What poll(2) told the open file
 * is what its waiter rereads; an open file nothing was read from yet
 * takes the newest content, as an open would.
 */
static off_t view_size(struct fs *fs, struct handle *h)
{
	if (h->told) {
		blob_unref(h->snap);
		h->snap = h->told;
		h->told = NULL;
	} else if (!h->served) {
		take_current(fs, h);
	}
	node_set_sized(&fs->nodes, h->ino, blob_ref(h->snap));
	return (off_t)h->snap->len;
}

off_t file_size(struct fs *fs, struct handle *h)
{
	off_t size = -1;

	pthread_mutex_lock(&h->lock);
	if (h->kind == H_EDIT) {
		size = (off_t)h->edit.len;
		/* No rendered bytes go with that size. */
		node_set_sized(&fs->nodes, h->ino, NULL);
	} else if (h->kind == H_VIEW && render_may_change(&h->key)) {
		size = view_size(fs, h);
	}
	pthread_mutex_unlock(&h->lock);
	return size;
}

int file_commit(struct fs *fs, const struct node_key *k, const char *data,
		size_t len, const struct caller *who)
{
	BUF_AUTO path = BUF_INIT;
	struct change_result res;
	struct change ch = { 0 };
	struct edit_target t;
	int rc = resolve_target(fs, k, &t);

	if (rc)
		return rc;
	tree_path(fs, k, &path);
	ch.env = t.env;
	ch.kind = t.kind;
	ch.name = t.name;
	ch.field = t.field;
	ch.text = data;
	ch.len = len;
	ch.path = buf_str(&path);
	ch.who = *who;
	switch (k->type) {
	case NT_RES_SPEC:
		ch.op = CH_RES_COMMIT;
		break;
	case NT_RES_FIELD:
		ch.op = CH_RES_FIELD;
		break;
	case NT_ENV_CONFIG:
		ch.op = CH_CONFIG;
		break;
	case NT_ENV_POLICY:
		ch.op = CH_POLICY;
		break;
	case NT_SECRET:
		ch.op = CH_SECRET_SET;
		break;
	default:
		return -EACCES;
	}
	rc = store_apply(fs->store, &ch, &res);
	if (rc)
		log_debug("%s: %s", ch.path, res.msg);
	/* The writer's next read must show what is now in force, accepted
	 * or not, never the bytes it wrote into the page cache. */
	notify_changed_now(fs, t.env_id, t.res_id);
	return rc;
}

/* Commits the whole buffer; the caller holds h->lock. */
static int edit_commit(struct fs *fs, struct handle *h,
		       const struct caller *who)
{
	h->written = false;
	h->truncated = false;
	if (edit_unchanged(fs, h))
		return 0;
	return file_commit(fs, &h->key, buf_str(&h->edit), h->edit.len, who);
}

/*
 * What a flush or an fsync commits and returns. An fsync commits a bare
 * truncation too, since its caller asked for the file as it stands, and
 * keeps a refusal for the close after it, which reports it once instead
 * of committing the same text a second time.
 */
static int edit_settle(struct fs *fs, struct handle *h,
		       const struct caller *who, bool fsync)
{
	int rc;

	if (h->kind != H_EDIT)
		return 0;
	pthread_mutex_lock(&h->lock);
	if (h->poisoned) {
		rc = h->poisoned;
	} else if (h->written || (fsync && h->truncated)) {
		rc = edit_commit(fs, h, who);
		h->refused = fsync ? rc : 0;
	} else {
		rc = h->refused;
		if (!fsync)
			h->refused = 0;
	}
	pthread_mutex_unlock(&h->lock);
	return rc;
}

/*
 * Flush comes at every close(2) of a descriptor, dup'd ones included: the
 * shell's `echo x > spec` opens, dup2()s onto stdout and closes the first
 * descriptor before echo writes a byte. So a flush commits only what was
 * written; a truncation with nothing written after it (`: > spec`) is
 * committed at release, when the last descriptor is gone.
 */
int file_flush(struct fs *fs, struct handle *h, const struct caller *who)
{
	return edit_settle(fs, h, who, false);
}

/*
 * fsync(2) and fdatasync(2) promise that what was written is durable, and
 * the writer may be killed before it closes: commit now, as a close would.
 * The marks the commit clears keep that close from making a second
 * revision. Scratch files live in memory by design and generated files
 * hold nothing of the caller's: an fsync of either has nothing to do.
 */
int file_fsync(struct fs *fs, struct handle *h, const struct caller *who)
{
	return edit_settle(fs, h, who, true);
}

static void handle_free(struct fs *fs, struct handle *h)
{
	if (h->ph)
		fuse_pollhandle_destroy(h->ph);
	if (h->snap)
		blob_unref(h->snap);
	blob_unref(h->told);
	if (h->scratch)
		scratch_release(&fs->scratch, h->scratch);
	if (h->created)
		pending_secret_drop(fs, &h->key);
	/* The only copy of a secret's plain value outside the store. */
	wipebuf_free(&h->edit);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

void file_release_all(struct fs *fs)
{
	while (fs->handles) {
		struct handle *h = fs->handles;

		fs->handles = h->next;
		handle_free(fs, h);
	}
	pthread_mutex_destroy(&fs->handles_lock);
}

void file_release(struct fs *fs, struct handle *h)
{
	/* The kernel releases an open file once no request holds it; the
	 * lock only orders this commit after the last one's writes. */
	pthread_mutex_lock(&h->lock);
	if (h->kind == H_EDIT && !h->poisoned && (h->truncated || h->written))
		edit_commit(fs, h, &h->opener);
	pthread_mutex_unlock(&h->lock);
	pthread_mutex_lock(&fs->handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		fs->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_lock);
	if (h->polled)
		poll_forget(fs, h->ino, h);
	handle_free(fs, h);
}

/*
 * Whether the content moved on since this open file last read it or was
 * told; h->lock held. Told counts as read because most reads never reach
 * the daemon: the kernel serves them from the page cache, which another
 * open file of the same inode may have filled with the new content. So
 * each change is reported once, and a woken reader's next poll(2) waits
 * for the next change instead of spinning on news it already read. The
 * bytes are compared, not only the generation: `state` is made from the
 * same generation as `status`, but says news only when its word changes.
 */
static bool view_news(struct fs *fs, struct handle *h)
{
	const struct blob *last = h->told ? h->told : h->snap;
	struct blob *now;
	uint64_t gen;
	int err = 0;

	model_rdlock(fs->model);
	/* Made anew at every read (metrics): never news, or a poller would
	 * spin; a file whose object is gone shows a generation of its own. */
	if (!render_gen(fs, &h->key, &gen) || gen == last->gen) {
		model_unlock(fs->model);
		return false;
	}
	now = render_get(fs, &h->key, &err);
	model_unlock(fs->model);
	if (!now)
		return true;
	if (now->len == last->len && !memcmp(now->data, last->data, now->len)) {
		/* The same bytes: remember the generation, say nothing. */
		blob_unref(h->told);
		h->told = now;
		return false;
	}
	blob_unref(h->told);
	h->told = now;
	return true;
}

/*
 * POLLPRI alone: sysfs adds POLLERR, but less(1) in F mode polls its
 * input for POLLERR|POLLHUP and stops following at the first one, and a
 * file on disk never reports it.
 */
unsigned file_poll(struct fs *fs, struct handle *h, struct fuse_pollhandle *ph)
{
	unsigned revents = POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM;

	if (h->kind != H_VIEW) {
		if (ph)
			fuse_pollhandle_destroy(ph);
		return revents;
	}
	/* Kept before looking, so a change after the look still wakes it. */
	if (ph)
		poll_watch(fs, h->ino, h, ph);
	pthread_mutex_lock(&h->lock);
	if (view_news(fs, h))
		revents |= POLLPRI;
	pthread_mutex_unlock(&h->lock);
	return revents;
}

bool file_poll_keep(struct handle *h, struct fuse_pollhandle *ph)
{
	struct fuse_pollhandle *old;
	bool first;

	pthread_mutex_lock(&h->lock);
	old = h->ph;
	h->ph = ph;
	first = !h->polled;
	h->polled = true;
	pthread_mutex_unlock(&h->lock);
	if (old)
		fuse_pollhandle_destroy(old);
	return first;
}

struct fuse_pollhandle *file_poll_take(struct handle *h)
{
	struct fuse_pollhandle *ph;

	pthread_mutex_lock(&h->lock);
	ph = h->ph;
	h->ph = NULL;
	pthread_mutex_unlock(&h->lock);
	return ph;
}
