// SPDX-License-Identifier: MIT
/*
 * The shape of the tree: which names each folder holds, what node each name
 * is, and the attributes the kernel sees. Permissions of everything inside
 * an environment derive from the environment folder's owner, group and
 * mode, so `chmod 750 dev` governs every file below it, and the kernel's
 * default_permissions enforces that.
 */
#include "fs.h"

#include "providers/provider.h"
#include "store/policy.h"
#include "util/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How a node's permission bits follow from its environment's mode. */
enum access {
	A_STATIC_FILE, /* 0444, belongs to the mount */
	A_STATIC_DIR, /* 0555 */
	A_DIR, /* the environment's own mode */
	A_RO_DIR, /* the environment's mode without write */
	A_RW, /* read and write bits of the environment */
	A_OWNER_RW, /* read bits, and the owner's write bit: config, policy */
	A_RO, /* read bits only */
	A_SECRET, /* 0200, and the group's write bit: see narrowed_by_policy */
};

struct type_info {
	const char *name; /* fixed name, or NULL for named children */
	bool dir;
	enum access access;
};

static const struct type_info types[NT_COUNT] = {
	[NT_ROOT] = { NULL, true, A_STATIC_DIR },
	[NT_README] = { "README", false, A_STATIC_FILE },
	[NT_VERSION] = { "version", false, A_STATIC_FILE },
	[NT_METRICS] = { "metrics", false, A_STATIC_FILE },
	[NT_KINDS] = { "kinds", true, A_STATIC_DIR },
	[NT_KIND_DOC] = { NULL, false, A_STATIC_FILE },
	[NT_PROVIDERS] = { "providers", true, A_STATIC_DIR },
	[NT_PROVIDER_DOC] = { NULL, false, A_STATIC_FILE },
	[NT_ENV] = { NULL, true, A_DIR },
	[NT_ENV_CONFIG] = { "config", false, A_OWNER_RW },
	[NT_ENV_POLICY] = { "policy", false, A_OWNER_RW },
	[NT_ENV_PLAN] = { "plan", false, A_RO },
	[NT_ENV_PLAN_JSON] = { "plan.json", false, A_RO },
	[NT_ENV_CTL] = { "ctl", false, A_RW },
	[NT_ENV_STATUS] = { "status", false, A_RO },
	[NT_ENV_EVENTS] = { "events", false, A_RO },
	[NT_ENV_AUDIT] = { "audit", false, A_RO },
	[NT_HISTORY] = { "history", true, A_RO_DIR },
	[NT_REV] = { NULL, true, A_RO_DIR },
	[NT_REV_INFO] = { "info", false, A_RO },
	[NT_REV_DIFF] = { "diff", false, A_RO },
	[NT_REV_CONFIG] = { "config", false, A_RO },
	[NT_REV_POLICY] = { "policy", false, A_RO },
	[NT_REV_KIND] = { NULL, true, A_RO_DIR },
	[NT_REV_SPEC] = { NULL, false, A_RO },
	[NT_KIND_DIR] = { NULL, true, A_DIR },
	[NT_RES] = { NULL, true, A_DIR },
	[NT_RES_SPEC] = { "spec", false, A_RW },
	[NT_RES_FIELD] = { NULL, false, A_RW },
	[NT_RES_STATUS] = { "status", false, A_RO },
	[NT_RES_STATUS_JSON] = { "status.json", false, A_RO },
	[NT_RES_STATE] = { "state", false, A_RO },
	[NT_RES_EVENTS] = { "events", false, A_RO },
	[NT_SECRETS] = { "secrets", true, A_DIR },
	[NT_SECRET] = { NULL, false, A_SECRET },
	[NT_EXPORT] = { "export", true, A_RO_DIR },
	[NT_EXPORT_TERRAFORM] = { "terraform.tf.json", false, A_RO },
	[NT_SCRATCH] = { NULL, false, A_RW },
	[NT_SINK_DIR] = { NULL, true, A_RW },
	[NT_SINK_FILE] = { NULL, false, A_RW },
};

/* Fixed children, in listing order. */
static const enum node_type root_children[] = { NT_README, NT_VERSION,
						NT_METRICS, NT_KINDS,
						NT_PROVIDERS };
static const enum node_type env_children[] = {
	NT_ENV_CONFIG, NT_ENV_POLICY, NT_ENV_PLAN,   NT_ENV_PLAN_JSON,
	NT_ENV_CTL,    NT_ENV_STATUS, NT_ENV_EVENTS, NT_ENV_AUDIT,
	NT_HISTORY,    NT_SECRETS,    NT_EXPORT,
};
static const enum node_type export_children[] = { NT_EXPORT_TERRAFORM };
static const enum node_type res_children[] = { NT_RES_SPEC, NT_RES_STATUS,
					       NT_RES_STATUS_JSON, NT_RES_STATE,
					       NT_RES_EVENTS };
static const enum node_type rev_children[] = { NT_REV_INFO, NT_REV_DIFF,
					       NT_REV_CONFIG, NT_REV_POLICY };

bool tree_is_dir(const struct node_key *k)
{
	return types[k->type].dir;
}

bool tree_is_editable(const struct node_key *k)
{
	switch (k->type) {
	case NT_ENV_CONFIG:
	case NT_ENV_POLICY:
	case NT_RES_SPEC:
	case NT_RES_FIELD:
	case NT_SECRET:
	case NT_ENV_CTL:
		return true;
	default:
		return false;
	}
}

struct env *tree_env(struct fs *fs, const struct node_key *k)
{
	switch (k->type) {
	case NT_ROOT:
	case NT_README:
	case NT_VERSION:
	case NT_METRICS:
	case NT_KINDS:
	case NT_KIND_DOC:
	case NT_PROVIDERS:
	case NT_PROVIDER_DOC:
		return NULL;
	case NT_RES:
	case NT_RES_SPEC:
	case NT_RES_FIELD:
	case NT_RES_STATUS:
	case NT_RES_STATUS_JSON:
	case NT_RES_STATE:
	case NT_RES_EVENTS: {
		struct resource *r = model_res_by_id(fs->model, k->id);

		return r ? r->env : NULL;
	}
	case NT_SINK_DIR:
	case NT_SINK_FILE:
		return NULL;
	case NT_SCRATCH: {
		struct node_key parent;

		return scratch_parent(&fs->scratch, k->id, &parent) == 0
			       ? tree_env(fs, &parent)
			       : NULL;
	}
	default:
		return model_env_by_id(fs->model, k->id);
	}
}

int tree_env_name(struct fs *fs, const struct node_key *k,
		  char out[NAME_MAX_LEN + 1])
{
	struct env *e;

	model_rdlock(fs->model);
	e = tree_env(fs, k);
	if (e)
		memcpy(out, e->name, NAME_MAX_LEN + 1);
	model_unlock(fs->model);
	return e ? 0 : -ENOENT;
}

struct resource *tree_res(struct fs *fs, const struct node_key *k)
{
	if (k->type < NT_RES || k->type > NT_RES_EVENTS)
		return NULL;
	return model_res_by_id(fs->model, k->id);
}

/* ---- specs unlinked to be made again ----------------------------------- */

/*
 * `mv` across file systems, `install` and `cp --remove-destination`
 * replace a file by unlinking it and creating it again. Unlinking a
 * spec commits nothing: the name is gone from lookups and listings until
 * a new spec is created there (whose close(2) is one revision), or until
 * SPEC_GAP_SECONDS pass, when the spec still in force shows again.
 */
#define SPEC_GAP_SECONDS 5.0

struct spec_gap {
	uint64_t res_id;
	double until; /* CLOCK_MONOTONIC */
};

static double monotonic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tree_init(struct fs *fs)
{
	pthread_mutex_init(&fs->gaps_lock, NULL);
}

void tree_destroy(struct fs *fs)
{
	void *v;

	for (size_t pos = 0; map_next(&fs->spec_gaps, &pos, &v);)
		free(v);
	map_free(&fs->spec_gaps);
	for (size_t i = 0; i < FRESH_MAX; i++) {
		buf_free(&fs->fresh[i].claimed);
		buf_free(&fs->fresh[i].sunk);
	}
	pthread_mutex_destroy(&fs->gaps_lock);
}

void tree_hide_spec(struct fs *fs, uint64_t res_id)
{
	struct spec_gap *g;

	pthread_mutex_lock(&fs->gaps_lock);
	g = map_get_u64(&fs->spec_gaps, &res_id);
	if (!g) {
		g = xcalloc(1, sizeof(*g));
		g->res_id = res_id;
		map_put(&fs->spec_gaps, &g->res_id, sizeof(g->res_id), g);
	}
	g->until = monotonic_now() + SPEC_GAP_SECONDS;
	pthread_mutex_unlock(&fs->gaps_lock);
}

/* Drops the gap; true when there was one still open. */
bool tree_unhide_spec(struct fs *fs, uint64_t res_id)
{
	struct spec_gap *g;
	bool open = false;

	pthread_mutex_lock(&fs->gaps_lock);
	g = map_del(&fs->spec_gaps, &res_id, sizeof(res_id));
	if (g) {
		open = monotonic_now() < g->until;
		free(g);
	}
	pthread_mutex_unlock(&fs->gaps_lock);
	return open;
}

bool tree_spec_hidden(struct fs *fs, uint64_t res_id)
{
	struct spec_gap *g;
	bool hidden = false;

	pthread_mutex_lock(&fs->gaps_lock);
	g = map_get_u64(&fs->spec_gaps, &res_id);
	if (g && monotonic_now() < g->until) {
		hidden = true;
	} else if (g) {
		map_del(&fs->spec_gaps, &res_id, sizeof(res_id));
		free(g);
	}
	pthread_mutex_unlock(&fs->gaps_lock);
	return hidden;
}

/* ---- folders fresh from mkdir ------------------------------------------- */

/*
 * `cp -r`, `cp -a` and rsync, having made a folder, take it to be empty:
 * they create every file with O_CREAT|O_EXCL and fail on EEXIST. A
 * resource folder is made with its spec, fields and status files already
 * there, and an environment with its config, generated files and the
 * folders pools/, endpoints/, secrets/, history/ and export/. So for the process
 * that made it, and only for it, the names it has not created yet are
 * hidden while it fills the folder: until it lists the folder, or
 * FRESH_SECONDS after its last create anywhere in that environment. Its
 * creates of those names open the file they stand for (spec, config) or
 * a sink (fields, which the spec holds, and the generated files); its
 * mkdir of a folder made with the environment hands that folder back,
 * fresh in turn.
 */
#define FRESH_SECONDS 5.0

static bool fresh_kind(const struct node_key *dir)
{
	switch (dir->type) {
	case NT_ENV:
	case NT_RES:
	case NT_KIND_DIR:
	case NT_SECRETS:
	case NT_HISTORY:
	case NT_EXPORT:
		return true;
	default:
		return false;
	}
}

static bool same_dir(const struct fresh *f, const struct node_key *dir)
{
	return f->dir.type == dir->type && f->dir.sub == dir->sub &&
	       f->dir.id == dir->id;
}

/* Caller holds gaps_lock. */
static struct fresh *fresh_find(struct fs *fs, pid_t pid,
				const struct node_key *dir, double now)
{
	for (size_t i = 0; i < FRESH_MAX; i++) {
		struct fresh *f = &fs->fresh[i];

		if (f->until && f->until <= now) {
			buf_free(&f->claimed);
			buf_free(&f->sunk);
			memset(f, 0, sizeof(*f));
		}
		if (f->until && f->pid == pid && same_dir(f, dir))
			return f;
	}
	return NULL;
}

/* A copy goes on in pid: every folder it fills in env_id stays fresh.
 * Caller holds gaps_lock. */
static void fresh_extend(struct fs *fs, pid_t pid, uint64_t env_id, double now)
{
	for (size_t i = 0; i < FRESH_MAX; i++) {
		struct fresh *f = &fs->fresh[i];

		if (f->until > now && f->pid == pid && f->env_id == env_id)
			f->until = now + FRESH_SECONDS;
	}
}

/*
 * All taken: a copier makes its resource folders one after another, and
 * is done with the one it filled longest ago (cp goes depth first), so
 * that one gives way; failing that, the folder is as any other, and a
 * copy gets EEXIST. Caller holds gaps_lock.
 */
static struct fresh *fresh_evict(struct fs *fs, pid_t pid)
{
	struct fresh *oldest = NULL;

	for (size_t i = 0; i < FRESH_MAX; i++) {
		struct fresh *f = &fs->fresh[i];

		if (f->pid == pid && f->dir.type == NT_RES &&
		    (!oldest || f->touched < oldest->touched))
			oldest = f;
	}
	if (oldest) {
		buf_free(&oldest->claimed);
		buf_free(&oldest->sunk);
		memset(oldest, 0, sizeof(*oldest));
	}
	return oldest;
}

void tree_fresh_add(struct fs *fs, pid_t pid, const struct node_key *dir,
		    uint64_t env_id)
{
	double now = monotonic_now();
	struct fresh *f;

	pthread_mutex_lock(&fs->gaps_lock);
	f = fresh_find(fs, pid, dir, now);
	for (size_t i = 0; !f && i < FRESH_MAX; i++) {
		if (!fs->fresh[i].until)
			f = &fs->fresh[i];
	}
	if (!f)
		f = fresh_evict(fs, pid);
	if (f) {
		f->touched = now;
		f->pid = pid;
		f->dir = node_key_make(dir->type, dir->sub, dir->id, 0);
		f->env_id = env_id;
		f->until = now + FRESH_SECONDS;
		fresh_extend(fs, pid, env_id, now);
	}
	pthread_mutex_unlock(&fs->gaps_lock);
}

static bool claimed(const struct buf *b, const char *name)
{
	for (size_t off = 0; off < b->len; off += strlen(b->data + off) + 1) {
		if (!strcmp(b->data + off, name))
			return true;
	}
	return false;
}

bool tree_fresh_hides(struct fs *fs, pid_t pid, const struct node_key *dir,
		      const char *name)
{
	struct fresh *f;
	bool hides;

	if (!fresh_kind(dir))
		return false;
	pthread_mutex_lock(&fs->gaps_lock);
	f = fresh_find(fs, pid, dir, monotonic_now());
	hides = f && !claimed(&f->claimed, name);
	pthread_mutex_unlock(&fs->gaps_lock);
	return hides;
}

/* The kernel answers from its cache of names without asking: what
 * anyone else looks up in a folder being filled must not stay there,
 * or the maker's mkdir or create would meet it. */
bool tree_fresh_any(struct fs *fs, const struct node_key *dir)
{
	double now = monotonic_now();
	bool any = false;

	if (!fresh_kind(dir))
		return false;
	pthread_mutex_lock(&fs->gaps_lock);
	for (size_t i = 0; !any && i < FRESH_MAX; i++)
		any = fs->fresh[i].until > now && same_dir(&fs->fresh[i], dir);
	pthread_mutex_unlock(&fs->gaps_lock);
	return any;
}

bool tree_fresh_is(struct fs *fs, pid_t pid, const struct node_key *dir)
{
	bool fresh;

	if (!fresh_kind(dir))
		return false;
	pthread_mutex_lock(&fs->gaps_lock);
	fresh = fresh_find(fs, pid, dir, monotonic_now()) != NULL;
	pthread_mutex_unlock(&fs->gaps_lock);
	return fresh;
}

void tree_fresh_claim(struct fs *fs, pid_t pid, const struct node_key *dir,
		      const char *name)
{
	double now = monotonic_now();
	struct fresh *f;

	pthread_mutex_lock(&fs->gaps_lock);
	f = fresh_find(fs, pid, dir, now);
	if (f && !claimed(&f->claimed, name))
		buf_add(&f->claimed, name, strlen(name) + 1);
	if (f) {
		f->touched = now;
		fresh_extend(fs, pid, f->env_id, now);
	}
	pthread_mutex_unlock(&fs->gaps_lock);
}

void tree_fresh_sink(struct fs *fs, pid_t pid, const struct node_key *dir,
		     const char *name)
{
	struct fresh *f;

	pthread_mutex_lock(&fs->gaps_lock);
	f = fresh_find(fs, pid, dir, monotonic_now());
	if (f && !claimed(&f->sunk, name))
		buf_add(&f->sunk, name, strlen(name) + 1);
	pthread_mutex_unlock(&fs->gaps_lock);
}

/* The folder k is in and its name there, for the kinds of node a
 * fresh folder holds; false for any other. Caller holds the model lock. */
static bool fresh_place(struct fs *fs, const struct node_key *k,
			struct node_key *dir, const char **name)
{
	const struct resource *r;

	if (k->type >= NT_RES_SPEC && k->type <= NT_RES_EVENTS) {
		r = tree_res(fs, k);
		if (!r)
			return false;
		*name = k->type == NT_RES_FIELD
				? kind_at(r->kind)->fields[k->sub].name
				: types[k->type].name;
		*dir = node_key_make(NT_RES, 0, k->id, 0);
		return true;
	}
	if (k->type == NT_EXPORT_TERRAFORM) {
		*name = types[k->type].name;
		*dir = node_key_make(NT_EXPORT, 0, k->id, 0);
		return true;
	}
	if (k->type == NT_KIND_DIR)
		*name = kind_at(k->sub)->dir;
	else if ((k->type >= NT_ENV_CONFIG && k->type <= NT_HISTORY) ||
		 k->type == NT_SECRETS || k->type == NT_EXPORT)
		*name = types[k->type].name;
	else
		return false;
	*dir = node_key_make(NT_ENV, 0, k->id, 0);
	return true;
}

/* Whether k's name is in pid's list of claimed (or sunk) names. */
static bool fresh_listed(struct fs *fs, pid_t pid, const struct node_key *k,
			 bool sunk)
{
	struct node_key dir;
	const char *name;
	struct fresh *f;
	bool created = false;

	model_rdlock(fs->model);
	if (fresh_place(fs, k, &dir, &name)) {
		pthread_mutex_lock(&fs->gaps_lock);
		f = fresh_find(fs, pid, &dir, monotonic_now());
		created = f && claimed(sunk ? &f->sunk : &f->claimed, name);
		pthread_mutex_unlock(&fs->gaps_lock);
	}
	model_unlock(fs->model);
	return created;
}

bool tree_fresh_created(struct fs *fs, pid_t pid, const struct node_key *k)
{
	return fresh_listed(fs, pid, k, false);
}

/* tar --xattrs makes a file with mknod(2), then opens it to write it:
 * that open of a name whose create went to a sink is the copy's too. */
bool tree_fresh_sunk(struct fs *fs, pid_t pid, const struct node_key *k)
{
	return fresh_listed(fs, pid, k, true);
}

/* A process's parent, from /proc/PID/stat; 0 if it cannot be read. */
pid_t tree_parent_of(pid_t pid)
{
	char path[32], line[512];
	const char *rest;
	FILE *f;
	int ppid = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	/* The command name may hold spaces and ')': the fields we want
	 * follow its last ')'. */
	if (fgets(line, sizeof(line), f)) {
		rest = strrchr(line, ')');
		if (!rest || sscanf(rest, ") %*c %d", &ppid) != 1)
			ppid = 0;
	}
	fclose(f);
	return (pid_t)ppid;
}

/*
 * rsync makes a folder in one process (its generator) and fills it
 * from a child (its receiver), which writes each file aside and renames
 * it over its name. Either of them renaming over a name of a folder the
 * first is filling is copying it; each such rename keeps the folder
 * fresh for the maker. Reading /proc is only needed while a folder is
 * fresh.
 */
enum fresh_filler tree_fresh_filler(struct fs *fs, pid_t pid,
				    const struct node_key *dir)
{
	enum fresh_filler who = FRESH_NONE;
	double now = monotonic_now();
	bool any = false;
	struct fresh *f;
	pid_t parent;

	if (!fresh_kind(dir))
		return FRESH_NONE;
	pthread_mutex_lock(&fs->gaps_lock);
	f = fresh_find(fs, pid, dir, now);
	for (size_t i = 0; !f && !any && i < FRESH_MAX; i++)
		any = fs->fresh[i].until && same_dir(&fs->fresh[i], dir);
	if (f) {
		who = FRESH_MAKER;
		f->until = now + FRESH_SECONDS;
	}
	pthread_mutex_unlock(&fs->gaps_lock);
	if (who || !any)
		return who;
	parent = tree_parent_of(pid);
	if (!parent)
		return FRESH_NONE;
	pthread_mutex_lock(&fs->gaps_lock);
	f = fresh_find(fs, parent, dir, now);
	if (f) {
		who = FRESH_CHILD;
		f->until = now + FRESH_SECONDS;
	}
	pthread_mutex_unlock(&fs->gaps_lock);
	return who;
}

void tree_fresh_end(struct fs *fs, pid_t pid, const struct node_key *dir)
{
	struct fresh *f;

	if (!fresh_kind(dir))
		return;
	pthread_mutex_lock(&fs->gaps_lock);
	f = fresh_find(fs, pid, dir, monotonic_now());
	if (f) {
		buf_free(&f->claimed);
		buf_free(&f->sunk);
		memset(f, 0, sizeof(*f));
	}
	pthread_mutex_unlock(&fs->gaps_lock);
}

/* ---- lookup ------------------------------------------------------------ */

static int fixed_child(const enum node_type *list, size_t n, const char *name,
		       enum node_type *out)
{
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(types[list[i]].name, name)) {
			*out = list[i];
			return 0;
		}
	}
	return -ENOENT;
}

#define FIXED(list, name, out) \
	fixed_child(list, sizeof(list) / sizeof(list[0]), name, out)

static int parse_rev(const char *name, uint64_t *rev)
{
	char *end;
	unsigned long long v;

	if (name[0] < '1' || name[0] > '9')
		return -ENOENT;
	errno = 0;
	v = strtoull(name, &end, 10);
	if (*end || errno)
		return -ENOENT;
	*rev = v;
	return 0;
}

static int lookup_root(struct fs *fs, const char *name, struct node_key *c)
{
	enum node_type t;
	struct env *e;

	if (FIXED(root_children, name, &t) == 0) {
		*c = node_key_make(t, 0, 0, 0);
		return 0;
	}
	e = model_env(fs->model, name);
	if (!e)
		return -ENOENT;
	*c = node_key_make(NT_ENV, 0, e->id, 0);
	return 0;
}

static int lookup_env(struct fs *fs, const struct env *e, const char *name,
		      struct node_key *c)
{
	enum node_type t;
	const struct kind_def *k = kind_by_dir(name);

	if (FIXED(env_children, name, &t) == 0) {
		*c = node_key_make(t, 0, e->id, 0);
		return 0;
	}
	if (k && kind_index(k) >= 0) {
		*c = node_key_make(NT_KIND_DIR, (uint16_t)kind_index(k), e->id,
				   0);
		return 0;
	}
	(void)fs;
	return -ENOENT;
}

static int lookup_res(const struct resource *r, const char *name,
		      struct node_key *c)
{
	const struct kind_def *k = kind_at(r->kind);
	const struct field_def *f;
	enum node_type t;

	if (FIXED(res_children, name, &t) == 0) {
		*c = node_key_make(t, 0, r->id, 0);
		return 0;
	}
	f = kind_field(k, name, strlen(name));
	if (!f)
		return -ENOENT;
	*c = node_key_make(NT_RES_FIELD, (uint16_t)kind_field_index(k, f),
			   r->id, 0);
	return 0;
}

static int lookup_rev_spec(struct fs *fs, const struct node_key *p,
			   const char *name, struct node_key *c)
{
	BUF_AUTO b = BUF_INIT;

	if (!name_is_valid(name))
		return -ENOENT;
	if (store_history_text(fs->store, p->id, p->rev, kind_at(p->sub)->name,
			       name, &b) < 0)
		return -ENOENT;
	*c = node_key_make(NT_REV_SPEC, p->sub, p->id, p->rev);
	snprintf(c->name, sizeof(c->name), "%s", name);
	return 0;
}

static int lookup_rev(const struct env *e, const struct node_key *p,
		      const char *name, struct node_key *c)
{
	enum node_type t;
	const struct kind_def *k = kind_by_dir(name);

	if (FIXED(rev_children, name, &t) == 0) {
		*c = node_key_make(t, 0, e->id, p->rev);
		return 0;
	}
	if (k && kind_index(k) >= 0) {
		*c = node_key_make(NT_REV_KIND, (uint16_t)kind_index(k), e->id,
				   p->rev);
		return 0;
	}
	return -ENOENT;
}

static int lookup_in_env(struct fs *fs, const struct env *e,
			 const struct node_key *p, const char *name,
			 struct node_key *c)
{
	uint64_t rev;
	enum node_type t;

	switch (p->type) {
	case NT_ENV:
		return lookup_env(fs, e, name, c);
	case NT_KIND_DIR: {
		struct resource *r = model_res(e, p->sub, name);

		if (!r)
			return -ENOENT;
		*c = node_key_make(NT_RES, 0, r->id, 0);
		return 0;
	}
	case NT_HISTORY:
		if (parse_rev(name, &rev) < 0 || !env_shows_rev(e, rev))
			return -ENOENT;
		*c = node_key_make(NT_REV, 0, e->id, rev);
		return 0;
	case NT_REV:
		return lookup_rev(e, p, name, c);
	case NT_REV_KIND:
		return lookup_rev_spec(fs, p, name, c);
	case NT_EXPORT:
		if (FIXED(export_children, name, &t))
			return -ENOENT;
		*c = node_key_make(t, 0, e->id, 0);
		return 0;
	case NT_SECRETS:
		if (!map_get(&e->secrets, name, strlen(name)))
			return -ENOENT;
		*c = node_key_make(NT_SECRET, 0, e->id, 0);
		snprintf(c->name, sizeof(c->name), "%s", name);
		return 0;
	default:
		return -ENOTDIR;
	}
}

/* kinds/ documents the resource kinds, then an environment's config and
 * policy, whose keys are as much a part of the language. */
const struct kind_def *tree_kind_doc(uint16_t sub)
{
	static const struct kind_def *const env_docs[] = { &kind_config,
							   &kind_policy };

	if (sub < NKINDS)
		return kind_at(sub);
	sub -= NKINDS;
	return sub < sizeof(env_docs) / sizeof(env_docs[0]) ? env_docs[sub]
							    : NULL;
}

static int lookup_static(const struct node_key *p, const char *name,
			 struct node_key *c)
{
	if (p->type == NT_KINDS) {
		const struct kind_def *k;

		for (uint16_t i = 0; (k = tree_kind_doc(i)); i++) {
			if (!strcmp(k->name, name)) {
				*c = node_key_make(NT_KIND_DOC, i, 0, 0);
				return 0;
			}
		}
		return -ENOENT;
	}
	for (size_t i = 0; builtin_providers[i]; i++) {
		if (!strcmp(builtin_providers[i]->info->name, name)) {
			*c = node_key_make(NT_PROVIDER_DOC, (uint16_t)i, 0, 0);
			return 0;
		}
	}
	return -ENOENT;
}

int tree_lookup(struct fs *fs, const struct node_key *p, const char *name,
		struct node_key *c)
{
	int rc = -ENOENT;
	uint64_t scratch;

	model_rdlock(fs->model);
	switch (p->type) {
	case NT_ROOT:
		rc = lookup_root(fs, name, c);
		break;
	case NT_KINDS:
	case NT_PROVIDERS:
		rc = lookup_static(p, name, c);
		break;
	case NT_RES: {
		struct resource *r = model_res_by_id(fs->model, p->id);

		rc = r ? lookup_res(r, name, c) : -ENOENT;
		if (!rc && c->type == NT_RES_SPEC &&
		    tree_spec_hidden(fs, r->id))
			rc = -ENOENT;
		break;
	}
	default: {
		struct env *e = tree_env(fs, p);

		if (!tree_is_dir(p))
			rc = -ENOTDIR;
		else if (e)
			rc = lookup_in_env(fs, e, p, name, c);
	}
	}
	model_unlock(fs->model);
	if (rc == -ENOENT && scratch_allowed_in(p)) {
		scratch = scratch_id_of(&fs->scratch, p, name);
		if (scratch) {
			*c = node_key_make(NT_SCRATCH, 0, scratch, 0);
			rc = 0;
		}
	}
	return rc;
}

/* ---- attributes -------------------------------------------------------- */

static mode_t perm_of(enum access a, mode_t env_mode)
{
	switch (a) {
	case A_STATIC_FILE:
		return 0444;
	case A_STATIC_DIR:
		return 0555;
	case A_DIR:
		return env_mode & 07777;
	case A_RO_DIR:
		return env_mode & 0555;
	case A_RW:
		return env_mode & 0666;
	case A_OWNER_RW:
		return env_mode & 0644;
	case A_RO:
		return env_mode & 0444;
	case A_SECRET:
		return 0200 | (env_mode & 0020);
	}
	return 0;
}

/*
 * Where a policy rule narrows who may write below the folder's mode, the
 * mode says so, so that the kernel refuses at open(2) what the store
 * would refuse at close(2). secrets_use keeps secrets/ and the fields
 * that reach a secret (command, image, env of an endpoint using one) to
 * the owner unless it opens them to the group.
 */
static mode_t narrowed_by_policy(struct fs *fs, const struct node_key *k,
				 const struct env *e, mode_t perm)
{
	const struct resource *r;

	switch (k->type) {
	case NT_SECRETS:
	case NT_SECRET:
		return policy_secrets_open_to_group(e) ? perm : perm & ~0022;
	case NT_RES_FIELD:
		r = tree_res(fs, k);
		if (r && policy_field_needs_secrets_use(
				 r, kind_at(r->kind)->fields[k->sub].name))
			return perm & ~0022;
		return perm;
	default:
		return perm;
	}
}

static void set_time(struct timespec *ts, double t)
{
	ts->tv_sec = (time_t)t;
	ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
}

/* The time a node last changed, as well as the model can say. */
static double mtime_of(struct fs *fs, const struct node_key *k,
		       const struct env *e)
{
	const struct resource *r = tree_res(fs, k);

	if (r) {
		if (k->type == NT_RES_EVENTS || k->type == NT_RES_STATUS ||
		    k->type == NT_RES_STATUS_JSON || k->type == NT_RES_STATE)
			return r->events.mtime > r->spec.mtime ? r->events.mtime
							       : r->spec.mtime;
		return r->spec.mtime ? r->spec.mtime : r->ctime;
	}
	if (e) {
		if (k->type == NT_ENV_EVENTS || k->type == NT_ENV_STATUS)
			return e->events.mtime ? e->events.mtime : e->mtime;
		if (k->type == NT_SECRET) {
			const struct secret_meta *s =
				map_get(&e->secrets, k->name, strlen(k->name));

			return s ? s->mtime : e->mtime;
		}
		return e->mtime;
	}
	return fs->started;
}

static int size_of(struct fs *fs, const struct node_key *k, off_t *size)
{
	struct blob *b;
	int err = 0;

	if (k->type == NT_SECRET) {
		*size = 0; /* and reads as empty: see open_secret() */
		return 0;
	}
	if (k->type == NT_ENV_CTL) {
		BUF_AUTO text = BUF_INIT;

		ctl_render(fs, k->id, &text);
		*size = (off_t)text.len;
		return 0;
	}
	if (k->type == NT_METRICS) {
		b = file_metrics(fs, &err);
		if (!b)
			return err;
		*size = (off_t)b->len;
		blob_unref(b);
		return 0;
	}
	if (k->type == NT_RES_EVENTS || k->type == NT_ENV_EVENTS) {
		const struct env *e = tree_env(fs, k);
		const struct resource *r = tree_res(fs, k);

		*size = (off_t)(r ? r->events.bytes : e ? e->events.bytes : 0);
		return 0;
	}
	b = render_get(fs, k, &err);
	if (!b)
		return err;
	*size = (off_t)b->len;
	blob_unref(b);
	return 0;
}

static int scratch_getattr(struct fs *fs, const struct node_key *k,
			   struct stat *st)
{
	struct scratch *s;
	int rc = -ENOENT;

	pthread_mutex_lock(&fs->scratch.lock);
	s = map_get_u64(&fs->scratch.by_id, &k->id);
	if (s && !s->unlinked) {
		st->st_mode = S_IFREG | s->mode;
		st->st_nlink = 1;
		st->st_uid = s->uid;
		st->st_gid = s->gid;
		st->st_size = (off_t)s->data.len;
		st->st_atim = s->atime;
		st->st_mtim = s->mtime;
		st->st_ctim = s->ctime;
		rc = 0;
	}
	pthread_mutex_unlock(&fs->scratch.lock);
	return rc;
}

static bool node_exists(struct fs *fs, const struct node_key *k,
			const struct env *e)
{
	switch (k->type) {
	case NT_ROOT:
	case NT_README:
	case NT_VERSION:
	case NT_METRICS:
	case NT_KINDS:
	case NT_PROVIDERS:
	case NT_KIND_DOC:
	case NT_PROVIDER_DOC:
		return true;
	case NT_REV:
	case NT_REV_INFO:
	case NT_REV_DIFF:
	case NT_REV_CONFIG:
	case NT_REV_POLICY:
	case NT_REV_KIND:
	case NT_REV_SPEC:
		return e && env_shows_rev(e, k->rev);
	case NT_SECRET:
		return e && (map_get(&e->secrets, k->name, strlen(k->name)) ||
			     pending_secret_has(fs, k));
	default:
		return e != NULL;
	}
}

/* A copier fills the history/ and export/ of an environment it made as
 * folders of its own (see sink.c), and the kernel checks that it may
 * write there. */
static enum access access_of(struct fs *fs, const struct node_key *k)
{
	if ((k->type == NT_HISTORY || k->type == NT_EXPORT) &&
	    tree_fresh_any(fs, k))
		return A_DIR;
	return types[k->type].access;
}

int tree_getattr(struct fs *fs, const struct node_key *k, struct stat *st)
{
	const struct type_info *ti = &types[k->type];
	struct env *e;
	int rc = 0;

	memset(st, 0, sizeof(*st));
	if (k->type == NT_SCRATCH)
		return scratch_getattr(fs, k, st);
	if (k->type == NT_SINK_DIR || k->type == NT_SINK_FILE)
		return sink_getattr(&fs->sinks, k, st);
	model_rdlock(fs->model);
	e = tree_env(fs, k);
	if (!node_exists(fs, k, e)) {
		rc = -ENOENT;
		goto out;
	}
	st->st_mode = (ti->dir ? S_IFDIR : S_IFREG) |
		      (e ? narrowed_by_policy(
				   fs, k, e, perm_of(access_of(fs, k), e->mode))
			 : perm_of(ti->access, 0755));
	st->st_nlink = ti->dir ? 2 : 1;
	st->st_uid = e ? e->uid : fs->owner;
	st->st_gid = e ? e->gid : fs->group;
	if (k->type == NT_ROOT)
		st->st_mode = S_IFDIR | 0755;
	set_time(&st->st_mtim, mtime_of(fs, k, e));
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
	st->st_blksize = 4096;
	if (!ti->dir)
		rc = size_of(fs, k, &st->st_size);
	st->st_blocks = (st->st_size + 511) / 512;
out:
	model_unlock(fs->model);
	return rc;
}

/* ---- listings ---------------------------------------------------------- */

void dir_snapshot_add(struct dir_snapshot *d, const char *name,
		      const struct node_key *k, mode_t type)
{
	struct dir_entry *de;

	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 32;
		d->v = xrealloc(d->v, d->cap * sizeof(*d->v));
	}
	de = &d->v[d->n++];
	de->name_off = d->names.len;
	buf_add(&d->names, name, strlen(name) + 1);
	de->key = *k;
	de->type = type;
}

size_t dir_snapshot_count(const struct dir_snapshot *d)
{
	return d->n + (size_t)d->revs;
}

const char *dir_snapshot_at(const struct dir_snapshot *d, size_t i,
			    char scratch[24], struct node_key *key,
			    mode_t *type)
{
	uint64_t rev;

	if (i < d->n) {
		*key = d->v[i].key;
		*type = d->v[i].type;
		return d->names.data + d->v[i].name_off;
	}
	rev = (uint64_t)(i - d->n) + d->first_rev;
	*key = node_key_make(NT_REV, 0, d->env_id, rev);
	*type = S_IFDIR;
	snprintf(scratch, 24, "%" PRIu64, rev);
	return scratch;
}

void dir_snapshot_free(struct dir_snapshot *d)
{
	free(d->v);
	buf_free(&d->names);
	memset(d, 0, sizeof(*d));
}

static void add_entry(struct dir_snapshot *d, const char *name,
		      const struct node_key *k)
{
	dir_snapshot_add(d, name, k, types[k->type].dir ? S_IFDIR : S_IFREG);
}

static void add_fixed(struct dir_snapshot *d, const enum node_type *list,
		      size_t n, uint64_t id, uint64_t rev)
{
	for (size_t i = 0; i < n; i++) {
		struct node_key k = node_key_make(list[i], 0, id, rev);

		add_entry(d, types[list[i]].name, &k);
	}
}

#define ADD_FIXED(d, list, id, rev) \
	add_fixed(d, list, sizeof(list) / sizeof(list[0]), id, rev)

static void list_root(struct fs *fs, struct dir_snapshot *d)
{
	ADD_FIXED(d, root_children, 0, 0);
	for (size_t i = 0; i < fs->model->envs.n; i++) {
		const struct env *e = fs->model->envs.v[i];
		struct node_key k = node_key_make(NT_ENV, 0, e->id, 0);

		add_entry(d, e->name, &k);
	}
}

static void list_static(const struct node_key *dir, struct dir_snapshot *d)
{
	if (dir->type == NT_KINDS) {
		const struct kind_def *kd;

		for (uint16_t i = 0; (kd = tree_kind_doc(i)); i++) {
			struct node_key k = node_key_make(NT_KIND_DOC, i, 0, 0);

			add_entry(d, kd->name, &k);
		}
		return;
	}
	for (size_t i = 0; builtin_providers[i]; i++) {
		struct node_key k =
			node_key_make(NT_PROVIDER_DOC, (uint16_t)i, 0, 0);

		add_entry(d, builtin_providers[i]->info->name, &k);
	}
}

static void list_kind_dirs(enum node_type t, uint64_t id, uint64_t rev,
			   struct dir_snapshot *d)
{
	for (int i = 0; i < NKINDS; i++) {
		struct node_key k = node_key_make(t, (uint16_t)i, id, rev);

		add_entry(d, kind_at(i)->dir, &k);
	}
}

static void list_resources(const struct env *e, int kind,
			   struct dir_snapshot *d)
{
	const struct res_list *l = &e->list[kind];

	for (size_t i = 0; i < l->n; i++) {
		struct node_key k = node_key_make(NT_RES, 0, l->v[i]->id, 0);

		add_entry(d, l->v[i]->name, &k);
	}
}

static void list_res(struct fs *fs, const struct resource *r,
		     struct dir_snapshot *d)
{
	const struct kind_def *k = kind_at(r->kind);
	bool hidden = tree_spec_hidden(fs, r->id);

	for (size_t i = 0; i < sizeof(res_children) / sizeof(*res_children);
	     i++) {
		struct node_key key =
			node_key_make(res_children[i], 0, r->id, 0);

		if (!(hidden && res_children[i] == NT_RES_SPEC))
			add_entry(d, types[res_children[i]].name, &key);
	}
	for (size_t i = 0; i < k->nfields; i++) {
		struct node_key key =
			node_key_make(NT_RES_FIELD, (uint16_t)i, r->id, 0);

		add_entry(d, k->fields[i].name, &key);
	}
}

static int cmp_names(const void *a, const void *b, void *names)
{
	return strcmp(
		(const char *)names + ((const struct dir_entry *)a)->name_off,
		(const char *)names + ((const struct dir_entry *)b)->name_off);
}

static void list_secrets(const struct env *e, struct dir_snapshot *d)
{
	size_t first = d->n;
	void *v;

	for (size_t pos = 0; map_next(&e->secrets, &pos, &v);) {
		const struct secret_meta *s = v;
		struct node_key k = node_key_make(NT_SECRET, 0, e->id, 0);

		snprintf(k.name, sizeof(k.name), "%s", s->name);
		add_entry(d, s->name, &k);
	}
	if (d->n - first > 1)
		qsort_r(d->v + first, d->n - first, sizeof(*d->v), cmp_names,
			d->names.data);
}

static void list_history(const struct env *e, struct dir_snapshot *d)
{
	d->first_rev = e->first_rev;
	d->revs = e->rev_durable >= e->first_rev
			  ? e->rev_durable - e->first_rev + 1
			  : 0;
	d->env_id = e->id;
}

static int list_rev_kind(struct fs *fs, const struct node_key *dir,
			 struct dir_snapshot *d)
{
	BUF_AUTO names = BUF_INIT;
	int rc = store_history_names(fs->store, dir->id, dir->rev,
				     kind_at(dir->sub)->name, &names);
	char *save = NULL;

	if (rc || !names.len)
		return rc;
	for (char *n = strtok_r(names.data, "\n", &save); n;
	     n = strtok_r(NULL, "\n", &save)) {
		struct node_key k =
			node_key_make(NT_REV_SPEC, dir->sub, dir->id, dir->rev);

		snprintf(k.name, sizeof(k.name), "%s", n);
		add_entry(d, n, &k);
	}
	return 0;
}

static int list_in_env(struct fs *fs, const struct env *e,
		       const struct node_key *dir, struct dir_snapshot *d)
{
	switch (dir->type) {
	case NT_ENV:
		ADD_FIXED(d, env_children, e->id, 0);
		list_kind_dirs(NT_KIND_DIR, e->id, 0, d);
		return 0;
	case NT_KIND_DIR:
		list_resources(e, dir->sub, d);
		return 0;
	case NT_HISTORY:
		list_history(e, d);
		return 0;
	case NT_REV:
		if (!env_shows_rev(e, dir->rev))
			return -ENOENT;
		ADD_FIXED(d, rev_children, e->id, dir->rev);
		list_kind_dirs(NT_REV_KIND, e->id, dir->rev, d);
		return 0;
	case NT_REV_KIND:
		return list_rev_kind(fs, dir, d);
	case NT_SECRETS:
		list_secrets(e, d);
		return 0;
	case NT_EXPORT:
		ADD_FIXED(d, export_children, e->id, 0);
		return 0;
	default:
		return -ENOTDIR;
	}
}

int tree_list(struct fs *fs, const struct node_key *dir, struct dir_snapshot *d)
{
	int rc = 0;

	model_rdlock(fs->model);
	switch (dir->type) {
	case NT_ROOT:
		list_root(fs, d);
		break;
	case NT_KINDS:
	case NT_PROVIDERS:
		list_static(dir, d);
		break;
	case NT_SINK_DIR:
		break; /* a sink keeps no names for anyone to list */
	case NT_RES: {
		struct resource *r = model_res_by_id(fs->model, dir->id);

		if (r)
			list_res(fs, r, d);
		else
			rc = -ENOENT;
		break;
	}
	default: {
		struct env *e = tree_env(fs, dir);

		rc = e ? list_in_env(fs, e, dir, d) : -ENOENT;
	}
	}
	model_unlock(fs->model);
	if (!rc && scratch_allowed_in(dir))
		scratch_list(&fs->scratch, dir, d);
	return rc;
}

/* ---- paths ------------------------------------------------------------- */

void tree_path(struct fs *fs, const struct node_key *k, struct buf *out)
{
	const struct resource *r;
	const struct env *e;

	model_rdlock(fs->model);
	r = tree_res(fs, k);
	e = tree_env(fs, k);
	if (r) {
		buf_printf(out, "%s/%s/%s", e->name, kind_at(r->kind)->dir,
			   r->name);
		if (k->type == NT_RES_FIELD)
			buf_printf(out, "/%s",
				   kind_at(r->kind)->fields[k->sub].name);
		else if (k->type != NT_RES)
			buf_printf(out, "/%s", types[k->type].name);
	} else if (e) {
		buf_adds(out, e->name);
		if (k->type == NT_SECRET)
			buf_printf(out, "/secrets/%s", k->name);
		else if (k->type == NT_EXPORT_TERRAFORM)
			buf_printf(out, "/export/%s", types[k->type].name);
		else if (types[k->type].name && k->type != NT_ENV)
			buf_printf(out, "/%s", types[k->type].name);
	} else if (types[k->type].name) {
		buf_adds(out, types[k->type].name);
	}
	model_unlock(fs->model);
}
