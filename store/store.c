// SPDX-License-Identifier: MIT
/*
 * The committer: the one thread that changes the declared world. Callers
 * queue a change and sleep; the committer takes everything queued, checks
 * and writes each change inside one backend transaction, commits once (one
 * fsync for the whole group) and wakes them all. Validation happens here,
 * not in the caller, so every check sees the world exactly as the change
 * will land in it, with no window between check and write.
 *
 * When other daemons share the store, each transaction that writes first
 * takes its turn in the store (backend serialize()); if another daemon
 * committed since this model was loaded, the model is reloaded inside
 * that turn, before any check, so checks and revision numbers always
 * start from the store's newest state.
 */
#include "store.h"

#include "backend.h"
#include "config_keys.h"
#include "diff.h"
#include "policy.h"
#include "providers/provider.h"
#include "retention.h"
#include "secretbox.h"
#include "watcher.h"
#include "spec/folder.h"
#include "util/hist.h"
#include "util/log.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/crypto.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct pending {
	const struct change *ch;
	struct change_result *res;
	int err;
	bool done;
	struct pending *next;
};

struct queued_event {
	uint64_t env_id, res_id;
	char *line;
	struct queued_event *next;
};

struct store {
	const struct backend_ops *ops;
	/* How long store_apply() callers waited: queue, checks, fsync. */
	struct hist commit_hist;
	struct backend *be;
	struct model model;
	struct secret_key key;
	bool have_key;
	char key_error[PATH_MAX + 512]; /* the key file's path and why */
	char url[4200];
	char allow_config_keys[1024]; /* store_options' list, fixed at open */

	/*
	 * The queue. qlock guards head, tail, ev_head, ev_tail, stopping,
	 * each queued pending's done and err, and hook, hook_ctx and
	 * in_hook. A caller of store_apply() queues a change that lives on
	 * its own stack and sleeps on donecond until the committer marks it
	 * done; until then the committer reads the change (its text in
	 * place), so the caller must not touch what it points to. The
	 * committer drops qlock while it runs a batch and while it calls
	 * the hook. Nothing else is locked under qlock; the committer takes
	 * the model lock only with qlock released.
	 */
	pthread_t thread;
	/* The committer was started: written by store_open, read by
	 * store_close, both on the opening thread (tail, which the
	 * committer writes, is no marker to read unlocked). */
	bool started;
	pthread_mutex_t qlock;
	pthread_cond_t qcond; /* work arrived */
	pthread_cond_t donecond; /* a batch finished, or a hook call ended */
	struct pending *head, **tail;
	struct queued_event *ev_head, **ev_tail;
	bool stopping;

	store_change_fn hook;
	void *hook_ctx;
	bool in_hook; /* the committer is calling hook now */

	/* Committer-only state for the batch in flight. */
	struct store_touch *touched;
	size_t ntouched, touched_cap;
	int batch_err; /* the first backend failure, a negative errno */

	/* Committer-only: event lines shown in memory that the store does
	 * not hold yet (why a commit failed, events of a failed batch).
	 * The next batch writes them first, so the store keeps them in the
	 * order readers saw them; they are lost if the daemon stops before
	 * a commit succeeds. */
	struct queued_event *unstored;
	size_t nunstored;

	/* A shared store only (ops->serialize set). The store's commit
	 * count the model reflects: written by the committer alone, read
	 * by the watcher to tell when it is behind. known is false after a
	 * failure: the next transaction reloads. Committer-only: known,
	 * claimed (the count this batch's commit makes). */
	_Atomic uint64_t count;
	bool count_known;
	uint64_t claimed;
	/* Under qlock: another daemon committed (behind), or this one took a
	 * lease (retouch): the committer reloads, or tells everything again
	 * to the mount and the reconciler. */
	bool behind, retouch;
	struct watcher watcher;
	bool watching;
	/* Who hears announced messages. message_lock is held while one is
	 * handed over, so a handler unset is not called afterwards; the
	 * handler must not set handlers itself. */
	pthread_mutex_t message_lock;
	store_message_fn message_fn;
	void *message_ctx;
};

static const struct backend_ops *const backends[] = { &sqlite_backend,
						      &postgres_backend };

struct model *store_model(struct store *st)
{
	return &st->model;
}

const char *store_lock_holder(const struct store *st)
{
	return st->ops->lock_holder(st->be);
}

const char *store_key_problem(const struct store *st)
{
	return st->have_key ? NULL : st->key_error;
}

const char *store_url(const struct store *st)
{
	return st->url;
}

void store_set_change_hook(struct store *st, store_change_fn fn, void *ctx)
{
	pthread_mutex_lock(&st->qlock);
	while (st->in_hook)
		pthread_cond_wait(&st->donecond, &st->qlock);
	st->hook = fn;
	st->hook_ctx = ctx;
	pthread_mutex_unlock(&st->qlock);
}

/* Called with qlock held; returns with it held. */
static void call_hook(struct store *st)
{
	store_change_fn hook = st->hook;
	void *ctx = st->hook_ctx;

	if (!hook || !st->ntouched)
		return;
	st->in_hook = true;
	pthread_mutex_unlock(&st->qlock);
	hook(ctx, st->touched, st->ntouched);
	pthread_mutex_lock(&st->qlock);
	st->in_hook = false;
	pthread_cond_broadcast(&st->donecond);
}

static void touch(struct store *st, uint64_t env_id, uint64_t res_id)
{
	if (st->ntouched == st->touched_cap) {
		st->touched_cap = st->touched_cap ? st->touched_cap * 2 : 16;
		st->touched = xrealloc(st->touched,
				       st->touched_cap * sizeof(*st->touched));
	}
	st->touched[st->ntouched++] =
		(struct store_touch){ env_id, res_id, 0, 0, 0 };
}

/* Backend writes in a batch: the first failure dooms the whole batch,
 * and its errno is what every writer of the batch is told. */
static int bw(struct store *st, int rc)
{
	if (rc && !st->batch_err)
		st->batch_err = rc;
	return rc;
}

__attribute__((format(printf, 3, 4))) static int
refuse(struct change_result *res, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(res->msg, sizeof(res->msg), fmt, ap);
	va_end(ap);
	return err;
}

/* Every event passes here; what it quotes of a user is escaped, so that
 * it stays one line of events. */
static char *event_line(const char *text)
{
	char when[40];
	struct buf b = BUF_INIT;

	time_rfc3339(time_now(), when, sizeof(when));
	buf_printf(&b, "%s ", when);
	text_escape(&b, text, strlen(text), 0);
	buf_addc(&b, '\n');
	return buf_steal(&b);
}

/* Shows an event line in memory; takes line. */
static void show_event(struct store *st, struct env *e, struct resource *r,
		       char *line)
{
	event_log_append(r ? &r->events : &e->events, line);
	if (r)
		r->gen++;
	e->gen++;
	touch(st, e->id, r ? r->id : 0);
}

/* Records an event in memory and in the batch; the committer's only. */
static void add_event(struct store *st, struct env *e, struct resource *r,
		      const char *text)
{
	char *line = event_line(text);

	bw(st, st->ops->add_event(st->be, e->id, r ? r->id : 0, line));
	show_event(st, e, r, line);
}

/* Command names come from /proc and may hold anything (prctl sets
 * them); audit lines are space-separated, so keep them to one word. */
static void comm_word(const struct change *ch, struct buf *out)
{
	const char *comm = ch->who.comm[0] ? ch->who.comm : "?";

	text_escape(out, comm, strnlen(comm, sizeof(ch->who.comm)),
		    TEXT_ESCAPE_SPACE);
}

/*
 * Audit lines form a chain: each ends with prev=SHA-256 of the line before
 * it, and the environment keeps the hash of its newest line, so
 * infrafs-audit-verify names the first line changed or removed, the last
 * one included.
 */
static void audit_chain(struct env *e, struct buf *line)
{
	BUF_AUTO shown = BUF_INIT;
	unsigned char md[32];

	/* Escaped before it is hashed: the chain covers what readers see,
	 * one line per change whatever a path or a message holds. */
	text_escape(&shown, line->data, line->len, 0);
	buf_truncate(line, 0);
	buf_add(line, shown.data, shown.len);
	buf_printf(line, " prev=%s",
		   e->audit_head[0] ? e->audit_head
				    : "00000000000000000000000000000000"
				      "00000000000000000000000000000000");
	SHA256((const unsigned char *)line->data, line->len, md);
	for (int i = 0; i < 32; i++)
		snprintf(e->audit_head + 2 * i, 3, "%02x", md[i]);
}

/*
 * One accepted change to an environment: a new revision with its info and
 * diff, an audit line, an environment event. Returns the revision number.
 */
static uint64_t new_revision(struct store *st, struct env *e,
			     const struct change *ch, const char *summary,
			     const char *diff)
{
	char when[40];
	double now = time_now();
	struct revision_row row;
	BUF_AUTO comm = BUF_INIT;
	BUF_AUTO line = BUF_INIT;
	BUF_AUTO ev = BUF_INIT;
	uint64_t id = e->id;

	e->rev++;
	e->rev_time = now;
	e->mtime = now;
	comm_word(ch, &comm);
	row = (struct revision_row){
		.env_id = e->id,
		.rev = e->rev,
		.time = now,
		.uid = ch->who.uid,
		.gid = ch->who.gid,
		.pid = ch->who.pid,
		.comm = buf_str(&comm),
		.path = ch->path ? ch->path : "",
		.summary = summary,
		.diff = diff ? diff : "",
	};
	bw(st, st->ops->add_revision(st->be, &row));
	time_rfc3339(now, when, sizeof(when));
	buf_printf(&line,
		   "%s rev=%" PRIu64 " uid=%u gid=%u pid=%d comm=%s path=%s %s",
		   when, e->rev, (unsigned)ch->who.uid, (unsigned)ch->who.gid,
		   (int)ch->who.pid, buf_str(&comm), ch->path ? ch->path : "-",
		   summary);
	audit_chain(e, &line);
	bw(st, st->ops->add_audit(st->be, e->id, buf_str(&line)));
	e->audit_lines++;
	bw(st, st->ops->put_env(st->be, e, &id));
	buf_printf(&ev, "revision %" PRIu64 ": %s (uid %u, %s)", e->rev,
		   summary, (unsigned)ch->who.uid, buf_str(&comm));
	add_event(st, e, NULL, buf_str(&ev));
	st->model.commits++;
	return e->rev;
}

static void audit_refusal(struct store *st, struct env *e,
			  const struct change *ch, const char *why)
{
	char when[40];
	BUF_AUTO comm = BUF_INIT;
	BUF_AUTO line = BUF_INIT;
	uint64_t id = e->id;

	comm_word(ch, &comm);
	time_rfc3339(time_now(), when, sizeof(when));
	buf_printf(&line,
		   "%s rev=- uid=%u gid=%u pid=%d comm=%s path=%s refused: %s",
		   when, (unsigned)ch->who.uid, (unsigned)ch->who.gid,
		   (int)ch->who.pid, buf_str(&comm), ch->path ? ch->path : "-",
		   why);
	audit_chain(e, &line);
	bw(st, st->ops->add_audit(st->be, e->id, buf_str(&line)));
	e->audit_lines++;
	e->gen++;
	bw(st, st->ops->put_env(st->be, e, &id));
}

static void make_diff(const struct kind_def *k, const char *name,
		      const char *old, size_t oldlen, const char *neu,
		      size_t newlen, struct buf *out)
{
	char a[160], b[160];

	if (k->dir) {
		snprintf(a, sizeof(a), "a/%s/%s/spec", k->dir, name);
		snprintf(b, sizeof(b), "b/%s/%s/spec", k->dir, name);
	} else {
		snprintf(a, sizeof(a), "a/%s", k->name);
		snprintf(b, sizeof(b), "b/%s", k->name);
	}
	diff_unified(old ? old : "", old ? oldlen : 0, neu ? neu : "",
		     neu ? newlen : 0, old ? a : "/dev/null",
		     neu ? b : "/dev/null", out);
}

/* "nodes, capacity": the fields whose effective values differ. */
static void changed_fields(const struct spec *old, const struct spec *neu,
			   struct buf *out)
{
	const struct kind_def *k = neu->kind;

	for (size_t i = 0; i < k->nfields; i++) {
		BUF_AUTO a = BUF_INIT;
		BUF_AUTO b = BUF_INIT;

		spec_field_text(old, &k->fields[i], &a);
		spec_field_text(neu, &k->fields[i], &b);
		if (strcmp(buf_str(&a), buf_str(&b)) != 0)
			buf_printf(out, "%s%s", out->len ? ", " : "",
				   k->fields[i].name);
	}
}

/* ---- environment changes ---------------------------------------------- */

static const char default_config[] =
	"# How this environment is applied. Keys: provider, region, approval,\n"
	"# settle_ms, refresh_s, drift, and PROVIDER.KEY settings.\n"
	"provider = local\n"
	"approval = auto\n";

static const char default_policy[] =
	"# Guardrails checked at every commit. Keys: max_accelerators,\n"
	"# max_nodes_per_pool, allowed_accelerators, allowed_capacity,\n"
	"# max_hourly_cost_usd, protect, require_labels, secrets_use. None\n"
	"# set: no limits, and only the owner uses secrets.\n";

static void set_doc_text(struct doc *d, const struct kind_def *k,
			 const char *text, uint64_t rev)
{
	struct spec *parsed = NULL;
	struct spec_error err;

	spec_parse(k, text, strlen(text), &parsed, &err);
	doc_set(d, xstrdup(text), strlen(text), parsed, rev, time_now());
}

static int env_create(struct store *st, const struct change *ch,
		      struct change_result *res)
{
	struct model *m = &st->model;
	struct env *e;
	uint64_t id = 0;
	double now = time_now();
	char summary[128];

	if (!name_is_valid(ch->name))
		return refuse(res, -EINVAL,
			      "%s: not a valid name: use lowercase letters, "
			      "digits and '-', at most 63",
			      ch->name);
	if (model_env(m, ch->name))
		return refuse(res, -EEXIST, "environment %s exists", ch->name);
	/* Written first to learn the id; the model follows only on success. */
	{
		struct env tmp = { 0 };

		snprintf(tmp.name, sizeof(tmp.name), "%s", ch->name);
		tmp.uid = ch->who.uid;
		tmp.gid = ch->who.gid;
		tmp.mode = ch->mode & 07777;
		tmp.ctime = tmp.mtime = now;
		if (bw(st, st->ops->put_env(st->be, &tmp, &id)))
			return refuse(res, -EIO, "state store write failed");
	}
	e = model_add_env(m, id, ch->name);
	e->uid = ch->who.uid;
	e->gid = ch->who.gid;
	e->mode = ch->mode & 07777;
	e->ctime = e->mtime = now;
	set_doc_text(&e->config, &kind_config, default_config, 1);
	set_doc_text(&e->policy, &kind_policy, default_policy, 1);
	bw(st, st->ops->add_history(st->be, id, 1, "config", "", e->config.text,
				    e->config.len));
	bw(st, st->ops->add_history(st->be, id, 1, "policy", "", e->policy.text,
				    e->policy.len));
	snprintf(summary, sizeof(summary), "create environment %s", e->name);
	res->rev = new_revision(st, e, ch, summary, NULL);
	touch(st, 0, 0);
	return 0;
}

static size_t env_resource_count(const struct env *e)
{
	size_t n = 0;

	for (int k = 0; k < NKINDS; k++)
		n += e->list[k].n;
	return n;
}

static int env_remove(struct store *st, struct env *e, const struct change *ch,
		      struct change_result *res)
{
	size_t n = env_resource_count(e);
	char summary[128];

	if (n) {
		const struct resource *first =
			e->list[0].n ? e->list[0].v[0] : e->list[1].v[0];

		return refuse(res, -ENOTEMPTY,
			      "environment %s still holds %zu resource%s "
			      "(%s/%s%s); remove them first",
			      e->name, n, n == 1 ? "" : "s",
			      kind_at(first->kind)->dir, first->name,
			      n > 1 ? ", ..." : "");
	}
	snprintf(summary, sizeof(summary), "remove environment %s", e->name);
	new_revision(st, e, ch, summary, NULL);
	bw(st, st->ops->drop_env(st->be, e->id));
	{
		void *v;

		for (size_t pos = 0; map_next(&e->secrets, &pos, &v);)
			bw(st, st->ops->drop_secret(st->be, e->id, v));
	}
	touch(st, e->id, 0);
	model_remove_env(&st->model, e);
	touch(st, 0, 0);
	return 0;
}

static int env_attr(struct store *st, struct env *e, const struct change *ch,
		    struct change_result *res)
{
	char summary[160];
	uid_t uid = ch->uid == (uid_t)-1 ? e->uid : ch->uid;
	gid_t gid = ch->gid == (gid_t)-1 ? e->gid : ch->gid;
	mode_t mode = ch->mode == (mode_t)-1 ? e->mode : (ch->mode & 07777);

	if (ch->who.uid != 0 && ch->who.uid != e->uid) {
		refuse(res, -EPERM,
		       "only the owner of %s (uid %u) or root may change its "
		       "owner, group or mode",
		       e->name, (unsigned)e->uid);
		audit_refusal(st, e, ch, res->msg);
		return -EPERM;
	}
	if (ch->who.uid != 0 && uid != e->uid) {
		refuse(res, -EPERM, "only root may give %s away", e->name);
		audit_refusal(st, e, ch, res->msg);
		return -EPERM;
	}
	if (uid == e->uid && gid == e->gid && mode == e->mode)
		return 0;
	snprintf(summary, sizeof(summary),
		 "set owner %u, group %u, mode %04o on %s", (unsigned)uid,
		 (unsigned)gid, (unsigned)mode, e->name);
	e->uid = uid;
	e->gid = gid;
	e->mode = mode;
	res->rev = new_revision(st, e, ch, summary, NULL);
	touch(st, e->id, 0);
	return 0;
}

/* ---- resource changes ------------------------------------------------- */

static int res_draft(struct store *st, struct env *e, const struct change *ch,
		     struct change_result *res)
{
	const struct kind_def *k = kind_at(ch->kind);
	struct resource tmp = { 0 };
	struct resource *r;
	uint64_t id = 0;

	if (!name_is_valid(ch->name))
		return refuse(res, -EINVAL,
			      "%s: not a valid name: use lowercase letters, "
			      "digits and '-', at most 63",
			      ch->name);
	if (model_res(e, ch->kind, ch->name))
		return refuse(res, -EEXIST, "%s/%s exists", k->dir, ch->name);
	snprintf(tmp.name, sizeof(tmp.name), "%s", ch->name);
	tmp.env = e;
	tmp.kind = ch->kind;
	tmp.ctime = tmp.spec.mtime = time_now();
	if (bw(st, st->ops->put_res(st->be, &tmp, &id)))
		return refuse(res, -EIO, "state store write failed");
	r = model_add_res(&st->model, e, id, ch->kind, ch->name);
	r->ctime = tmp.ctime;
	r->spec.mtime = tmp.ctime;
	add_event(st, e, r,
		  "declared as a draft: nothing is applied until spec or a "
		  "field is written");
	return 0;
}

/* A whole environment made equal to another (promote, a followed
 * folder) brings no secrets, so each one its endpoints name must be
 * there already; a single spec may name one still to come. */
static int check_references(const struct env *e, const struct spec *s,
			    struct change_result *res)
{
	const struct kind_def *k = s->kind;
	const struct field_def *f;

	if (k != &kind_endpoint)
		return 0;
	/* A pool not declared yet is no error: a tree copied or checked
	 * out in any order writes endpoints/ before pools/. The endpoint
	 * waits for it in the plan; removing a pool in use stays refused. */
	f = kind_field(k, "env", 3);
	if (f) {
		const struct spec_value *v = &s->v[kind_field_index(k, f)];

		for (size_t i = 0; i < v->npairs; i++) {
			const char *val = v->pairs[i].value;

			if (strncmp(val, "secret:", 7) != 0 ||
			    map_get(&e->secrets, val + 7, strlen(val + 7)))
				continue;
			return refuse(res, -EINVAL,
				      "line %u: env.%s: no secret named \"%s\" "
				      "in %s (write it to secrets/%s first)",
				      v->pairs[i].line, v->pairs[i].key,
				      val + 7, e->name, val + 7);
		}
	}
	return 0;
}

static int check_spec(const struct kind_def *k, const char *text, size_t len,
		      struct spec **parsed, struct change_result *res)
{
	struct spec_error err;

	if (len > SPEC_MAX_BYTES)
		return refuse(res, -EFBIG, "%s is %zu bytes; the limit is %d",
			      k->name, len, SPEC_MAX_BYTES);
	if (spec_parse(k, text, len, parsed, &err) < 0 ||
	    spec_check_rules(*parsed, &err) < 0)
		return refuse(res, -EINVAL, "%s", err.msg);
	return 0;
}

/* A refused attempt is news for the user and a fact for the audit. */
static void record_refusal(struct store *st, struct env *e, struct resource *r,
			   char **slot, const struct change *ch,
			   const struct change_result *res)
{
	char text[700];

	snprintf(text, sizeof(text), "commit refused: %s", res->msg);
	model_set_error(slot, res->msg);
	add_event(st, e, r, text);
	audit_refusal(st, e, ch, res->msg);
	st->model.rejections++;
}

static int res_commit(struct store *st, struct env *e, struct resource *r,
		      const struct change *ch, struct change_result *res);

/*
 * A field file's value lands on the spec as it is now, in the committer,
 * so two writers of different fields never lose each other's change.
 */
static int res_field(struct store *st, struct env *e, struct resource *r,
		     const struct change *ch, struct change_result *res)
{
	const struct kind_def *k = kind_at(r->kind);
	const struct field_def *f = kind_field(k, ch->field, strlen(ch->field));
	BUF_AUTO text = BUF_INIT;
	struct change whole = *ch;
	struct spec_error err;

	if (!f)
		return refuse(res, -ENOENT, "%s has no field %s", k->name,
			      ch->field);
	if (spec_set_field(k, r->spec.text ? r->spec.text : "", r->spec.len, f,
			   ch->text, ch->len, &text, &err) < 0) {
		refuse(res, -EINVAL, "%s", err.msg);
		record_refusal(st, e, r, &r->last_error, ch, res);
		return -EINVAL;
	}
	whole.op = CH_RES_COMMIT;
	whole.text = buf_str(&text);
	whole.len = text.len;
	return res_commit(st, e, r, &whole, res);
}

/* What the environment's provider cannot run is refused now, not later. */
static int check_provider_support(const struct env *e, const struct resource *r,
				  const struct spec *parsed,
				  struct change_result *res)
{
	const struct provider_ops *p = env_provider(e);
	struct desired want = {
		.env = e->name,
		.kind = r->kind,
		.name = r->name,
		.spec = parsed,
		.config = e->config.parsed,
		.owner_uid = e->uid,
		.owner_gid = e->gid,
	};

	if (!p || !p->check)
		return 0;
	return p->check(&want, res->msg, sizeof(res->msg));
}

static int res_commit(struct store *st, struct env *e, struct resource *r,
		      const struct change *ch, struct change_result *res)
{
	const struct kind_def *k = kind_at(r->kind);
	SPEC_AUTO *parsed = NULL;
	BUF_AUTO diff = BUF_INIT;
	BUF_AUTO summary = BUF_INIT;
	uint64_t id = r->id;
	/* A pool or secret an endpoint names need not be there yet: a
	 * tree copied or checked out in any order writes endpoints/
	 * before pools/ and secrets/. The endpoint waits for it in the
	 * plan; removing one in use stays refused. */
	int rc = check_spec(k, ch->text, ch->len, &parsed, res);

	if (!rc)
		rc = policy_check_secrets_use(e, r->kind, r->name, parsed,
					      r->spec.parsed, ch->who.uid,
					      res->msg, sizeof(res->msg));
	if (!rc)
		rc = policy_check(e, r->kind, r->name, parsed, r->spec.parsed,
				  res->msg, sizeof(res->msg));
	if (!rc)
		rc = check_provider_support(e, r, parsed, res);
	if (!rc)
		rc = policy_check_cost(e, r->kind, r->name, parsed,
				       r->spec.parsed, res->msg,
				       sizeof(res->msg));
	if (rc) {
		record_refusal(st, e, r, &r->last_error, ch, res);
		return rc;
	}
	model_set_error(&r->last_error, NULL);
	/* Writing back what is there (an editor's :wq) is no change. */
	if (r->spec.text && r->spec.len == ch->len &&
	    memcmp(r->spec.text, ch->text, ch->len) == 0) {
		res->rev = r->spec.rev;
		r->gen++;
		touch(st, e->id, r->id);
		return 0;
	}
	make_diff(k, r->name, r->spec.text, r->spec.len, ch->text, ch->len,
		  &diff);
	if (!r->spec.text) {
		buf_printf(&summary, "create %s/%s", k->dir, r->name);
	} else {
		BUF_AUTO fields = BUF_INIT;

		if (r->spec.parsed)
			changed_fields(r->spec.parsed, parsed, &fields);
		buf_printf(&summary, "update %s/%s%s%s%s", k->dir, r->name,
			   fields.len ? " (" : "", buf_str(&fields),
			   fields.len ? ")" : "");
	}
	res->rev = new_revision(st, e, ch, buf_str(&summary), buf_str(&diff));
	doc_set(&r->spec, xstrndup(ch->text, ch->len), ch->len, parsed,
		res->rev, time_now());
	parsed = NULL;
	bw(st, st->ops->put_res(st->be, r, &id));
	bw(st, st->ops->add_history(st->be, e->id, res->rev, k->name, r->name,
				    r->spec.text, r->spec.len));
	r->gen++;
	{
		char text[80];

		snprintf(text, sizeof(text), "committed as revision %" PRIu64,
			 res->rev);
		add_event(st, e, r, text);
	}
	return 0;
}

static const struct resource *pool_user(const struct env *e, const char *pool)
{
	for (size_t i = 0; i < e->list[KIND_ENDPOINT_IDX].n; i++) {
		const struct resource *r = e->list[KIND_ENDPOINT_IDX].v[i];
		char name[NAME_MAX_LEN + 1];

		if (!r->spec.parsed)
			continue;
		spec_text(r->spec.parsed, "pool", name, sizeof(name));
		if (!strcmp(name, pool))
			return r;
	}
	return NULL;
}

static bool protected_destroy(const struct env *e)
{
	char word[16] = "";

	if (e->policy.parsed)
		spec_text(e->policy.parsed, "protect", word, sizeof(word));
	return !strcmp(word, "destroy");
}

/* The destroy of a protected resource now waits in the plan. */
static void mark_destroy_requested(struct store *st, struct env *e,
				   struct resource *r)
{
	uint64_t id = r->id;

	r->destroy_requested = true;
	r->gen++;
	bw(st, st->ops->put_res(st->be, r, &id));
	add_event(st, e, r,
		  "destroy requested: waits for approval (echo approve > ctl) "
		  "by the environment's owner or root");
}

/*
 * protect = destroy: rmdir records the wish as a revision and a plan step;
 * the destroy happens once someone allowed to write the policy approves.
 */
static int request_destroy(struct store *st, struct env *e, struct resource *r,
			   const struct change *ch, struct change_result *res)
{
	const struct kind_def *k = kind_at(r->kind);
	char summary[160];

	if (!r->destroy_requested) {
		snprintf(summary, sizeof(summary),
			 "request destroy of %s/%s (protect = destroy)", k->dir,
			 r->name);
		new_revision(st, e, ch, summary, NULL);
		mark_destroy_requested(st, e, r);
	}
	return refuse(res, -EINPROGRESS,
		      "%s/%s is protected (protect = destroy): the destroy "
		      "waits in the plan for approval",
		      k->dir, r->name);
}

static int res_remove(struct store *st, struct env *e, struct resource *r,
		      const struct change *ch, struct change_result *res)
{
	const struct kind_def *k = kind_at(r->kind);
	const struct resource *user =
		r->kind == KIND_POOL_IDX ? pool_user(e, r->name) : NULL;

	if (user)
		return refuse(res, -EBUSY,
			      "pools/%s is used by endpoints/%s; change or "
			      "remove that first",
			      r->name, user->name);
	if (r->spec.text && !ch->approved && protected_destroy(e))
		return request_destroy(st, e, r, ch, res);
	if (r->spec.text) {
		BUF_AUTO diff = BUF_INIT;
		char summary[160];

		make_diff(k, r->name, r->spec.text, r->spec.len, NULL, 0,
			  &diff);
		snprintf(summary, sizeof(summary), "destroy %s/%s", k->dir,
			 r->name);
		res->rev = new_revision(st, e, ch, summary, buf_str(&diff));
		bw(st, st->ops->add_history(st->be, e->id, res->rev, k->name,
					    r->name, NULL, 0));
	}
	bw(st, st->ops->drop_res(st->be, r->id));
	touch(st, e->id, r->id);
	model_remove_res(&st->model, r);
	return 0;
}

static int check_provider(const struct spec *config, struct change_result *res)
{
	const struct field_def *f = kind_field(&kind_config, "provider", 8);
	const struct spec_value *v =
		&config->v[kind_field_index(&kind_config, f)];
	BUF_AUTO built = BUF_INIT;

	if (!v->set || provider_by_name(v->text))
		return 0;
	for (size_t i = 0; builtin_providers[i]; i++)
		buf_printf(&built, "%s%s", i ? ", " : "",
			   builtin_providers[i]->info->name);
	return refuse(res, -EINVAL,
		      "line %u: provider: %s is not built into this infrafs "
		      "(built in: %s)",
		      v->line, v->text, buf_str(&built));
}

/* The watcher runs as no working folder: a relative source means none. */
static int check_source(const struct spec *config, struct change_result *res)
{
	const struct spec_value *v = spec_field(config, "source");

	if (!v || !v->set || v->text[0] == '/')
		return 0;
	return refuse(res, -EINVAL,
		      "line %u: source: %s is not an absolute path", v->line,
		      v->text);
}

static int doc_commit(struct store *st, struct env *e, const struct change *ch,
		      struct change_result *res)
{
	const struct kind_def *k =
		ch->op == CH_CONFIG ? &kind_config : &kind_policy;
	struct doc *d = ch->op == CH_CONFIG ? &e->config : &e->policy;
	SPEC_AUTO *parsed = NULL;
	BUF_AUTO diff = BUF_INIT;
	BUF_AUTO summary = BUF_INIT;
	BUF_AUTO fields = BUF_INIT;
	int rc = 0;

	/* Group members may change specs; guardrails and settings are the
	 * owner's. */
	if (ch->who.uid != 0 && ch->who.uid != e->uid)
		rc = refuse(res, -EACCES,
			    "only the owner of %s (uid %u) or root may change "
			    "its %s",
			    e->name, (unsigned)e->uid, k->name);
	if (!rc)
		rc = check_spec(k, ch->text, ch->len, &parsed, res);
	if (!rc && ch->op == CH_CONFIG)
		rc = check_provider(parsed, res);
	if (!rc && ch->op == CH_CONFIG)
		rc = check_source(parsed, res);
	if (!rc && ch->op == CH_CONFIG)
		rc = config_keys_check(e->config.parsed, parsed, ch->who.uid,
				       st->allow_config_keys, res->msg,
				       sizeof(res->msg));
	if (rc) {
		record_refusal(st, e, NULL, &e->last_error, ch, res);
		return rc;
	}
	model_set_error(&e->last_error, NULL);
	if (d->text && d->len == ch->len &&
	    memcmp(d->text, ch->text, ch->len) == 0) {
		res->rev = d->rev;
		return 0;
	}
	make_diff(k, "", d->text, d->len, ch->text, ch->len, &diff);
	if (d->parsed)
		changed_fields(d->parsed, parsed, &fields);
	buf_printf(&summary, "update %s%s%s%s", k->name, fields.len ? " (" : "",
		   buf_str(&fields), fields.len ? ")" : "");
	res->rev = e->rev + 1;
	doc_set(d, xstrndup(ch->text, ch->len), ch->len, parsed, res->rev,
		time_now());
	parsed = NULL;
	new_revision(st, e, ch, buf_str(&summary), buf_str(&diff));
	bw(st, st->ops->add_history(st->be, e->id, res->rev, k->name, "",
				    d->text, d->len));
	touch(st, e->id, 0);
	return 0;
}

/* ---- secrets ---------------------------------------------------------- */

static int secret_set(struct store *st, struct env *e, const struct change *ch,
		      struct change_result *res)
{
	struct secret_meta *s =
		map_get(&e->secrets, ch->name, strlen(ch->name));
	BUF_AUTO sealed = BUF_INIT;
	char aad[160], summary[160];
	size_t len = ch->len;
	int rc = policy_check_secret_write(e, ch->who.uid, res->msg,
					   sizeof(res->msg));

	if (rc) {
		record_refusal(st, e, NULL, &e->last_error, ch, res);
		return rc;
	}
	if (!st->have_key) {
		refuse(res, -EIO, "secrets cannot be stored: %s",
		       st->key_error);
		record_refusal(st, e, NULL, &e->last_error, ch, res);
		return -EIO;
	}
	if (!name_is_valid(ch->name))
		return refuse(res, -EINVAL,
			      "%s: not a valid secret name: use lowercase "
			      "letters, digits and '-', at most 63",
			      ch->name);
	if (len > 65536)
		return refuse(res, -EFBIG, "a secret holds at most 64 KiB");
	/* `echo value > secrets/x` adds a newline nobody means as data. */
	if (len && ch->text[len - 1] == '\n')
		len--;
	snprintf(aad, sizeof(aad), "%" PRIu64 "/%s", e->id, ch->name);
	if (secret_seal(&st->key, ch->text, len, aad, strlen(aad), &sealed))
		return refuse(res, -EIO, "sealing the secret failed");
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		snprintf(s->name, sizeof(s->name), "%s", ch->name);
		map_put(&e->secrets, s->name, strlen(s->name), s);
	}
	s->version++;
	s->mtime = time_now();
	bw(st, st->ops->put_secret(st->be, e->id, s, sealed.data, sealed.len));
	snprintf(summary, sizeof(summary),
		 "set secret %s (version %" PRIu64 ")", s->name, s->version);
	res->rev = new_revision(st, e, ch, summary, NULL);
	touch(st, e->id, 0);
	return 0;
}

static const struct resource *secret_user(const struct env *e, const char *name)
{
	for (size_t i = 0; i < e->list[KIND_ENDPOINT_IDX].n; i++) {
		const struct resource *r = e->list[KIND_ENDPOINT_IDX].v[i];
		const struct field_def *f =
			kind_field(&kind_endpoint, "env", 3);
		const struct spec_value *v;

		if (!r->spec.parsed || !f)
			continue;
		v = &r->spec.parsed->v[kind_field_index(&kind_endpoint, f)];
		for (size_t j = 0; j < v->npairs; j++) {
			if (!strncmp(v->pairs[j].value, "secret:", 7) &&
			    !strcmp(v->pairs[j].value + 7, name))
				return r;
		}
	}
	return NULL;
}

static int secret_remove(struct store *st, struct env *e,
			 const struct change *ch, struct change_result *res)
{
	struct secret_meta *s =
		map_get(&e->secrets, ch->name, strlen(ch->name));
	const struct resource *user = s ? secret_user(e, ch->name) : NULL;
	char summary[160];

	if (!s)
		return refuse(res, -ENOENT, "no secret %s in %s", ch->name,
			      e->name);
	if (policy_check_secret_write(e, ch->who.uid, res->msg,
				      sizeof(res->msg))) {
		record_refusal(st, e, NULL, &e->last_error, ch, res);
		return -EACCES;
	}
	if (user)
		return refuse(res, -EBUSY,
			      "secret %s is used by endpoints/%s; change that "
			      "first",
			      ch->name, user->name);
	bw(st, st->ops->drop_secret(st->be, e->id, s->name));
	snprintf(summary, sizeof(summary), "remove secret %s", s->name);
	map_del(&e->secrets, s->name, strlen(s->name));
	free(s);
	res->rev = new_revision(st, e, ch, summary, NULL);
	touch(st, e->id, 0);
	return 0;
}

/* A write refused line by line: no revision, but the user must see why. */
static int note_error(struct store *st, struct env *e, const struct change *ch)
{
	struct resource *r = ch->name && ch->name[0]
				     ? model_res(e, ch->kind, ch->name)
				     : NULL;
	char text[700];

	snprintf(text, sizeof(text), "write refused: %.*s", (int)ch->len,
		 ch->text);
	model_set_error(r ? &r->last_error : &e->last_error, text);
	add_event(st, e, r, text);
	if (r)
		r->gen++;
	e->gen++;
	return 0;
}

/* ---- making an environment equal to a set of documents ----------------- */

/*
 * rollback, promote and a folder source all say the same thing: "let the
 * environment's pools and endpoints (and config, policy) be exactly these
 * documents, as one revision". They differ in where the documents come
 * from and in whether today's rules are checked again.
 */

/* One pool or endpoint the environment is to have. */
struct wanted_res {
	int kind;
	char name[NAME_MAX_LEN + 1];
	char *text;
	size_t len;
	struct spec *parsed; /* once checked; NULL when it does not parse */
};

/* Config or policy as it is to be; text NULL leaves it as it is. */
struct wanted_doc {
	char *text;
	size_t len;
	struct spec *parsed;
};

struct wanted {
	struct wanted_res *v;
	size_t n, cap;
	struct wanted_doc config, policy;
	/* name -> struct wanted_res, per kind, once v is complete: a folder
	 * may hold many thousands. */
	struct map by_name[NKINDS];
	/*
	 * Whether the spec rules, references, today's policy and the
	 * provider hold for what comes in: a promotion or a folder brings
	 * something new; a rollback restores what was accepted once.
	 */
	bool check_rules;
	/* How refusals begin: "revision 12", "promote dev". */
	char what[96];
};

static void wanted_add(struct wanted *w, int kind, const char *name,
		       const char *text, size_t len)
{
	struct wanted_res *wr;

	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 16;
		w->v = xrealloc(w->v, w->cap * sizeof(*w->v));
	}
	wr = &w->v[w->n++];
	memset(wr, 0, sizeof(*wr));
	wr->kind = kind;
	snprintf(wr->name, sizeof(wr->name), "%s", name);
	wr->text = xstrndup(text, len);
	wr->len = len;
}

static void wanted_doc_set(struct wanted_doc *d, const char *text, size_t len)
{
	free(d->text);
	d->text = xstrndup(text, len);
	d->len = len;
}

static void wanted_doc_free(struct wanted_doc *d)
{
	free(d->text);
	if (d->parsed)
		spec_free(d->parsed);
}

static void wanted_free(struct wanted *w)
{
	for (size_t i = 0; i < w->n; i++) {
		free(w->v[i].text);
		if (w->v[i].parsed)
			spec_free(w->v[i].parsed);
	}
	free(w->v);
	for (int k = 0; k < NKINDS; k++)
		map_free(&w->by_name[k]);
	wanted_doc_free(&w->config);
	wanted_doc_free(&w->policy);
}

/* Once every resource is added: the keys live in v. */
static void wanted_index(struct wanted *w)
{
	for (size_t i = 0; i < w->n; i++)
		map_put(&w->by_name[w->v[i].kind], w->v[i].name,
			strlen(w->v[i].name), &w->v[i]);
}

static const struct wanted_res *wanted_find(const struct wanted *w, int kind,
					    const char *name)
{
	return map_get(&w->by_name[kind], name, strlen(name));
}

static bool same_text(const struct doc *d, const char *text, size_t len)
{
	return d->text && d->len == len && !memcmp(d->text, text, len);
}

/*
 * The environment as it would be with w in force, for the rules that look
 * at all of it (max_accelerators, max_hourly_cost_usd): it shares all but
 * its lists and, when w brings one, its policy with the environment.
 */
struct env_view {
	struct env env;
	struct resource *res; /* one per wanted resource */
};

/* A protected resource w lacks stays until its destroy is approved. */
static bool stays_protected(const struct env *e, const struct wanted *w,
			    const struct resource *r)
{
	return r->spec.text && protected_destroy(e) &&
	       !wanted_find(w, r->kind, r->name);
}

static void view_make(struct env_view *v, const struct env *e,
		      const struct wanted *w)
{
	v->env = *e;
	if (w->policy.text)
		v->env.policy.parsed = w->policy.parsed;
	v->res = xcalloc(w->n + 1, sizeof(*v->res));
	for (int k = 0; k < NKINDS; k++) {
		struct res_list *l = &v->env.list[k];

		l->cap = e->list[k].n + w->n;
		l->v = xcalloc(l->cap + 1, sizeof(*l->v));
		l->n = 0;
		for (size_t i = 0; i < e->list[k].n; i++) {
			if (stays_protected(e, w, e->list[k].v[i]))
				l->v[l->n++] = e->list[k].v[i];
		}
	}
	for (size_t i = 0; i < w->n; i++) {
		struct resource *r = &v->res[i];
		struct res_list *l = &v->env.list[w->v[i].kind];

		r->kind = w->v[i].kind;
		memcpy(r->name, w->v[i].name, sizeof(r->name));
		r->env = (struct env *)e;
		r->spec.text = w->v[i].text;
		r->spec.len = w->v[i].len;
		r->spec.parsed = w->v[i].parsed;
		l->v[l->n++] = r;
	}
}

static void view_free(struct env_view *v)
{
	for (int k = 0; k < NKINDS; k++)
		free(v->env.list[k].v);
	free(v->res);
}

/* Puts "WHAT: LABEL: " (or "WHAT: ") before the reason a check gave. */
static int refuse_in(struct change_result *res, const struct wanted *w,
		     const char *label, int rc)
{
	char why[sizeof(res->msg)];

	memcpy(why, res->msg, sizeof(why));
	return refuse(res, rc, "%s: %s%s%s", w->what, label ? label : "",
		      label ? ": " : "", why);
}

static int refuse_res(struct change_result *res, const struct wanted *w,
		      const struct wanted_res *wr, int rc)
{
	char label[NAME_MAX_LEN + 32];

	snprintf(label, sizeof(label), "%s/%s/spec", kind_at(wr->kind)->dir,
		 wr->name);
	return refuse_in(res, w, label, rc);
}

/* Guardrails and settings are the owner's, whichever way they change. */
static int sync_check_owner_docs(const struct env *e, const struct wanted *w,
				 const struct change *ch,
				 struct change_result *res)
{
	const struct kind_def *const kinds[] = { &kind_config, &kind_policy };
	const struct doc *const have[] = { &e->config, &e->policy };
	const struct wanted_doc *const want[] = { &w->config, &w->policy };

	if (ch->who.uid == 0 || ch->who.uid == e->uid)
		return 0;
	for (size_t i = 0; i < 2; i++) {
		if (!want[i]->text ||
		    same_text(have[i], want[i]->text, want[i]->len))
			continue;
		return refuse(res, -EACCES,
			      "%s has another %s; only the owner of %s (uid "
			      "%u) or root may change its %s",
			      w->what, kinds[i]->name, e->name,
			      (unsigned)e->uid, kinds[i]->name);
	}
	return 0;
}

/* Parses config or policy; only a check of new text refuses one that
 * does not parse. */
static int sync_parse_doc(const struct wanted *w, const struct kind_def *k,
			  struct wanted_doc *d, struct change_result *res)
{
	int rc;

	if (!d->text)
		return 0;
	rc = check_spec(k, d->text, d->len, &d->parsed, res);
	return rc && w->check_rules ? refuse_in(res, w, k->name, rc) : 0;
}

static int sync_check_config(struct store *st, const struct env *e,
			     struct wanted *w, const struct change *ch,
			     struct change_result *res)
{
	int rc = sync_parse_doc(w, &kind_config, &w->config, res);

	if (!rc)
		rc = sync_parse_doc(w, &kind_policy, &w->policy, res);
	if (rc || !w->config.parsed)
		return rc;
	if (w->check_rules)
		rc = check_provider(w->config.parsed, res);
	/* A rollback must not restore a privileged key for an owner. */
	if (!rc)
		rc = config_keys_check(e->config.parsed, w->config.parsed,
				       ch->who.uid, st->allow_config_keys,
				       res->msg, sizeof(res->msg));
	return rc ? refuse_in(res, w, "config", rc) : 0;
}

/* Parses a resource; for a rollback, text that no longer parses is
 * restored as it was, as an rmdir would find it. */
static int sync_parse_res(const struct wanted *w, struct wanted_res *wr,
			  struct change_result *res)
{
	const struct kind_def *k = kind_at(wr->kind);
	int rc = check_spec(k, wr->text, wr->len, &wr->parsed, res);

	if (rc && w->check_rules)
		return refuse_res(res, w, wr, rc);
	if (rc)
		log_warn("%s: %s %s no longer parses: %s", w->what, k->name,
			 wr->name, res->msg);
	return 0;
}

static int sync_check_res(const struct env_view *v, const struct wanted *w,
			  size_t i, const struct change *ch,
			  struct change_result *res)
{
	const struct wanted_res *wr = &w->v[i];
	const struct resource *have = model_res(&v->env, wr->kind, wr->name);
	const struct spec *current = have ? have->spec.parsed : NULL;
	int rc = 0;

	/* What is declared already was checked when it came; a policy
	 * tightened since holds it where it is, as for an edit elsewhere. */
	if (!wr->parsed || (have && same_text(&have->spec, wr->text, wr->len)))
		return 0;
	if (w->check_rules)
		rc = check_references(&v->env, wr->parsed, res);
	if (!rc)
		rc = policy_check_secrets_use(&v->env, wr->kind, wr->name,
					      wr->parsed, current, ch->who.uid,
					      res->msg, sizeof(res->msg));
	if (!rc && w->check_rules)
		rc = policy_check(&v->env, wr->kind, wr->name, wr->parsed,
				  current, res->msg, sizeof(res->msg));
	if (!rc && w->check_rules)
		rc = check_provider_support(&v->env, &v->res[i], wr->parsed,
					    res);
	return rc ? refuse_res(res, w, wr, rc) : 0;
}

/*
 * Who may make the environment equal to w is who may make each change it
 * brings: nothing is touched until all of it is allowed.
 */
static int sync_check(struct store *st, struct env *e, struct wanted *w,
		      const struct change *ch, struct change_result *res)
{
	struct env_view view;
	int rc = sync_check_owner_docs(e, w, ch, res);

	if (!rc)
		rc = sync_check_config(st, e, w, ch, res);
	for (size_t i = 0; !rc && i < w->n; i++)
		rc = sync_parse_res(w, &w->v[i], res);
	if (rc)
		return rc;
	view_make(&view, e, w);
	for (size_t i = 0; !rc && i < w->n; i++)
		rc = sync_check_res(&view, w, i, ch, res);
	if (!rc && w->check_rules) {
		rc = policy_check_env_cost(e, &view.env, res->msg,
					   sizeof(res->msg));
		if (rc)
			rc = refuse_in(res, w, NULL, rc);
	}
	view_free(&view);
	return rc;
}

struct sync {
	struct store *st;
	struct env *e;
	uint64_t rev; /* the revision being made */
	unsigned changes;
	unsigned destroys; /* protected resources whose destroy now waits */
	struct buf diff;
};

/* Sets one resource (or config, policy) to its text; takes parsed. */
static void sync_text(struct sync *sy, const struct kind_def *k, struct doc *d,
		      const char *name, const char *text, size_t len,
		      struct spec **parsed)
{
	if (same_text(d, text, len))
		return;
	make_diff(k, name, d->text, d->len, text, len, &sy->diff);
	doc_set(d, xstrndup(text, len), len, *parsed, sy->rev, time_now());
	*parsed = NULL;
	bw(sy->st, sy->st->ops->add_history(sy->st->be, sy->e->id, sy->rev,
					    k->name, name, text, len));
	sy->changes++;
}

/* What w lacks goes; protect = destroy holds as for rmdir. */
static void sync_remove(struct sync *sy, struct resource *r)
{
	struct store *st = sy->st;
	const struct kind_def *k = kind_at(r->kind);

	if (r->spec.text && protected_destroy(sy->e)) {
		if (!r->destroy_requested) {
			mark_destroy_requested(st, sy->e, r);
			touch(st, sy->e->id, r->id);
			sy->destroys++;
		}
		return;
	}
	if (r->spec.text) {
		make_diff(k, r->name, r->spec.text, r->spec.len, NULL, 0,
			  &sy->diff);
		bw(st, st->ops->add_history(st->be, sy->e->id, sy->rev, k->name,
					    r->name, NULL, 0));
		sy->changes++;
	}
	bw(st, st->ops->drop_res(st->be, r->id));
	touch(st, sy->e->id, r->id);
	model_remove_res(&st->model, r);
}

static void sync_set(struct sync *sy, struct wanted_res *wr)
{
	struct store *st = sy->st;
	struct env *e = sy->e;
	struct resource *r = model_res(e, wr->kind, wr->name);
	uint64_t id = 0;

	if (!r) {
		struct resource tmp = { .env = e, .kind = wr->kind };

		memcpy(tmp.name, wr->name, sizeof(tmp.name));
		tmp.ctime = time_now();
		if (bw(st, st->ops->put_res(st->be, &tmp, &id)))
			return;
		r = model_add_res(&st->model, e, id, wr->kind, wr->name);
		r->ctime = tmp.ctime;
	}
	sync_text(sy, kind_at(wr->kind), &r->spec, wr->name, wr->text, wr->len,
		  &wr->parsed);
	id = r->id;
	bw(st, st->ops->put_res(st->be, r, &id));
	r->gen++;
	touch(st, e->id, r->id);
}

static void sync_apply(struct sync *sy, struct wanted *w)
{
	struct env *e = sy->e;

	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = e->list[k].n; i-- > 0;) {
			struct resource *r = e->list[k].v[i];

			if (!wanted_find(w, k, r->name))
				sync_remove(sy, r);
		}
	}
	for (size_t i = 0; i < w->n; i++)
		sync_set(sy, &w->v[i]);
	if (w->config.text)
		sync_text(sy, &kind_config, &e->config, "", w->config.text,
			  w->config.len, &w->config.parsed);
	if (w->policy.text)
		sync_text(sy, &kind_policy, &e->policy, "", w->policy.text,
			  w->policy.len, &w->policy.parsed);
}

/*
 * Makes the environment's pools and endpoints (and config and policy where
 * w brings them) equal to w, as one revision "HEAD (N changes)", or
 * refuses all of it with the rule named and nothing touched. A protected
 * resource w lacks waits for approval as after rmdir.
 */
static int make_equal(struct store *st, struct env *e, struct wanted *w,
		      const struct change *ch, const char *head,
		      struct change_result *res)
{
	struct sync sy = { .st = st, .e = e, .rev = e->rev + 1 };
	char summary[512];
	int rc;

	wanted_index(w);
	rc = sync_check(st, e, w, ch, res);

	if (rc) {
		audit_refusal(st, e, ch, res->msg);
		return rc;
	}
	sync_apply(&sy, w);
	if (!sy.changes && !sy.destroys) {
		buf_free(&sy.diff);
		res->rev = e->rev;
		return 0;
	}
	snprintf(summary, sizeof(summary), "%s (%u change%s%s)", head,
		 sy.changes, sy.changes == 1 ? "" : "s",
		 sy.destroys ? "; protected destroys wait for approval" : "");
	res->rev = new_revision(st, e, ch, summary, buf_str(&sy.diff));
	buf_free(&sy.diff);
	touch(st, e->id, 0);
	return 0;
}

/* ---- rollback ----------------------------------------------------------- */

static void wanted_from_history(struct store *st, const struct env *e,
				uint64_t rev, struct wanted *w)
{
	const struct kind_def *const docs[] = { &kind_config, &kind_policy };
	struct wanted_doc *const slots[] = { &w->config, &w->policy };

	for (int kind = 0; kind < NKINDS; kind++) {
		const struct kind_def *k = kind_at(kind);
		BUF_AUTO names = BUF_INIT;
		char *save = NULL;

		st->ops->history_names(st->be, e->id, rev, k->name, &names);
		for (char *n = names.len ? strtok_r(names.data, "\n", &save)
					 : NULL;
		     n; n = strtok_r(NULL, "\n", &save)) {
			BUF_AUTO text = BUF_INIT;

			if (st->ops->history_text(st->be, e->id, rev, k->name,
						  n, &text) == 0)
				wanted_add(w, kind, n, buf_str(&text),
					   text.len);
		}
	}
	for (size_t i = 0; i < 2; i++) {
		BUF_AUTO text = BUF_INIT;

		if (st->ops->history_text(st->be, e->id, rev, docs[i]->name, "",
					  &text) == 0)
			wanted_doc_set(slots[i], buf_str(&text), text.len);
	}
}

/*
 * rollback REV: one new revision in which everything declared is as it
 * was at REV. It restores what was accepted then, so today's policy is not
 * checked against it again; the rules of who may change what are.
 */
static int rollback(struct store *st, struct env *e, const struct change *ch,
		    struct change_result *res)
{
	struct wanted w = { 0 };
	char head[64];
	int rc;

	if (ch->rev < e->first_rev || ch->rev > e->rev_durable)
		return refuse(res, -EINVAL,
			      "rollback %" PRIu64 ": %s has revisions %" PRIu64
			      " to %" PRIu64 "%s",
			      ch->rev, e->name, e->first_rev, e->rev_durable,
			      ch->rev && ch->rev < e->first_rev
				      ? " (older ones were pruned by "
					"history_keep)"
				      : "");
	snprintf(w.what, sizeof(w.what), "revision %" PRIu64, ch->rev);
	wanted_from_history(st, e, ch->rev, &w);
	snprintf(head, sizeof(head), "rollback to revision %" PRIu64, ch->rev);
	rc = make_equal(st, e, &w, ch, head, res);
	wanted_free(&w);
	return rc;
}

/* ---- promote ------------------------------------------------------------ */

/*
 * promote SRC: the environment's pools and endpoints become those SRC
 * declares now, checked as new specs against this environment's rules;
 * its config, policy and secrets stay its own.
 */
static int promote(struct store *st, struct env *e, const struct change *ch,
		   struct change_result *res)
{
	const struct env *from = model_env(&st->model, ch->name);
	struct wanted w = { .check_rules = true };
	char head[NAME_MAX_LEN + 64];
	int rc;

	if (!from)
		return refuse(res, -ENOENT, "promote %s: no environment %s",
			      ch->name, ch->name);
	if (from == e)
		return refuse(res, -EINVAL,
			      "promote %s: an environment is not promoted "
			      "into itself",
			      ch->name);
	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < from->list[k].n; i++) {
			const struct resource *r = from->list[k].v[i];

			/* A draft declares nothing yet. */
			if (r->spec.text)
				wanted_add(&w, k, r->name, r->spec.text,
					   r->spec.len);
		}
	}
	snprintf(w.what, sizeof(w.what), "promote %s", from->name);
	snprintf(head, sizeof(head), "promote %s revision %" PRIu64, from->name,
		 from->rev);
	rc = make_equal(st, e, &w, ch, head, res);
	wanted_free(&w);
	return rc;
}

/* ---- a folder as the source -------------------------------------------- */

void env_source(const struct env *e, char *out, size_t outlen)
{
	out[0] = '\0';
	if (e->config.parsed)
		spec_text(e->config.parsed, "source", out, outlen);
}

/*
 * While a folder is the source, specs change there: a change made here
 * would be undone by the next sync, or silently kept apart from the
 * folder. An approved destroy is the plan's, not a new wish.
 */
static int check_not_managed(const struct env *e, const struct change *ch,
			     struct change_result *res)
{
	char src[PATH_MAX];
	bool spec_change = ch->op == CH_RES_DRAFT || ch->op == CH_RES_COMMIT ||
			   ch->op == CH_RES_FIELD || ch->op == CH_ROLLBACK ||
			   ch->op == CH_PROMOTE ||
			   (ch->op == CH_RES_REMOVE && !ch->approved);

	if (!spec_change)
		return 0;
	env_source(e, src, sizeof(src));
	if (!src[0])
		return 0;
	return refuse(res, -EROFS,
		      "%s is managed by %s%s%.7s%s: change the folder, or "
		      "unset source in config",
		      e->name, src, e->source_commit[0] ? " (commit " : "",
		      e->source_commit, e->source_commit[0] ? ")" : "");
}

static void wanted_from_folder(const struct folder *f, struct wanted *w)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct folder_doc *d = &f->docs[i];

		if (d->kind == &kind_policy) {
			wanted_doc_set(&w->policy, d->text, d->len);
			continue;
		}
		for (int k = 0; k < NKINDS; k++) {
			if (d->kind == kind_at(k))
				wanted_add(w, k, d->name, d->text, d->len);
		}
	}
}

/* What of a commit's subject the revision's summary keeps. */
#define SYNC_SUBJECT_MAX 120

/*
 * The environment becomes what its source folder declares, as one
 * revision, or stays at the last good sync with the reason (file, line,
 * rule) in last_error and events.
 */
static int sync_folder(struct store *st, struct env *e, const struct change *ch,
		       struct change_result *res)
{
	struct wanted w = { .check_rules = true };
	char src[PATH_MAX], head[PATH_MAX + 400];
	BUF_AUTO subject = BUF_INIT;
	int rc;

	env_source(e, src, sizeof(src));
	if (strcmp(src, ch->text))
		return refuse(res, -ESTALE, "%s no longer follows %s", e->name,
			      ch->text);
	snprintf(w.what, sizeof(w.what), "source %.80s", src);
	/* The subject is the committer's text: one line, escaped. */
	if (ch->subject)
		text_escape(&subject, ch->subject,
			    strnlen(ch->subject, SYNC_SUBJECT_MAX), 0);
	snprintf(head, sizeof(head), "sync from %s%s%.7s%s%s", src,
		 ch->name[0] ? " at commit " : "", ch->name,
		 subject.len ? ": " : "", buf_str(&subject));
	if (ch->folder) {
		wanted_from_folder(ch->folder, &w);
		rc = make_equal(st, e, &w, ch, head, res);
	} else {
		rc = refuse(res, -EINVAL, "%s: %s", w.what,
			    ch->field ? ch->field : "not read");
		audit_refusal(st, e, ch, res->msg);
	}
	wanted_free(&w);
	if (rc) {
		char text[700];

		snprintf(text, sizeof(text), "sync refused: %s", res->msg);
		model_set_error(&e->last_error, res->msg);
		add_event(st, e, NULL, text);
		return rc;
	}
	snprintf(e->source_commit, sizeof(e->source_commit), "%s", ch->name);
	e->gen++;
	touch(st, e->id, 0);
	return 0;
}

static int set_applied(struct store *st, struct env *e, const struct change *ch)
{
	uint64_t id = e->id;

	if (ch->rev <= e->applied_rev)
		return 0;
	e->applied_rev = ch->rev;
	e->gen++;
	bw(st, st->ops->put_env(st->be, e, &id));
	touch(st, e->id, 0);
	return 0;
}

/* ---- dispatch ----------------------------------------------------------- */

static int apply_to_env(struct store *st, struct env *e,
			const struct change *ch, struct change_result *res)
{
	struct resource *r = NULL;

	if (ch->op == CH_RES_COMMIT || ch->op == CH_RES_REMOVE ||
	    ch->op == CH_RES_FIELD) {
		r = model_res(e, ch->kind, ch->name);
		if (!r)
			return refuse(res, -ENOENT, "no %s/%s in %s",
				      kind_at(ch->kind)->dir, ch->name,
				      e->name);
	}
	if (check_not_managed(e, ch, res)) {
		if (r && ch->op != CH_RES_REMOVE)
			record_refusal(st, e, r, &r->last_error, ch, res);
		else
			audit_refusal(st, e, ch, res->msg);
		return -EROFS;
	}
	switch (ch->op) {
	case CH_ENV_REMOVE:
		return env_remove(st, e, ch, res);
	case CH_ENV_ATTR:
		return env_attr(st, e, ch, res);
	case CH_RES_DRAFT:
		return res_draft(st, e, ch, res);
	case CH_RES_COMMIT:
		return res_commit(st, e, r, ch, res);
	case CH_RES_FIELD:
		return res_field(st, e, r, ch, res);
	case CH_RES_REMOVE:
		return res_remove(st, e, r, ch, res);
	case CH_CONFIG:
	case CH_POLICY:
		return doc_commit(st, e, ch, res);
	case CH_SECRET_SET:
		return secret_set(st, e, ch, res);
	case CH_SECRET_REMOVE:
		return secret_remove(st, e, ch, res);
	case CH_NOTE_ERROR:
		return note_error(st, e, ch);
	case CH_ROLLBACK:
		return rollback(st, e, ch, res);
	case CH_PROMOTE:
		return promote(st, e, ch, res);
	case CH_SYNC:
		return sync_folder(st, e, ch, res);
	case CH_APPLIED:
		return set_applied(st, e, ch);
	case CH_ENV_CREATE:
		break;
	}
	return refuse(res, -EINVAL, "unknown change");
}

static int apply_change(struct store *st, const struct change *ch,
			struct change_result *res)
{
	struct env *e;

	if (ch->op == CH_ENV_CREATE)
		return env_create(st, ch, res);
	e = model_env(&st->model, ch->env);
	if (!e)
		return refuse(res, -ENOENT, "no environment %s", ch->env);
	return apply_to_env(st, e, ch, res);
}

/* ---- the committer thread ---------------------------------------------- */

/*
 * What an object holds in memory only, carried across a reload: its
 * last_error, and its gen, which must never go back to a value the
 * kernel may have cached pages of.
 */
struct kept {
	uint64_t id, gen;
	char *last_error;
};

struct kept_list {
	struct kept *v;
	size_t n, cap;
};

static void keep(struct kept_list *l, uint64_t id, uint64_t gen,
		 char **last_error)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = (struct kept){ id, gen, *last_error };
	*last_error = NULL;
}

static void keep_model(const struct model *m, struct kept_list *envs,
		       struct kept_list *res)
{
	for (size_t i = 0; i < m->envs.n; i++) {
		struct env *e = m->envs.v[i];

		keep(envs, e->id, e->gen, &e->last_error);
		for (int k = 0; k < NKINDS; k++) {
			for (size_t j = 0; j < e->list[k].n; j++) {
				struct resource *r = e->list[k].v[j];

				keep(res, r->id, r->gen, &r->last_error);
			}
		}
	}
}

static void restore(const struct kept *k, uint64_t *gen, char **last_error)
{
	*gen += k->gen + 1;
	model_set_error(last_error, k->last_error);
}

/* Gives back what keep_model() took, to the objects still there. */
static void restore_model(struct model *m, struct kept_list *envs,
			  struct kept_list *res)
{
	for (size_t i = 0; i < envs->n; i++) {
		struct env *e = model_env_by_id(m, envs->v[i].id);

		if (e)
			restore(&envs->v[i], &e->gen, &e->last_error);
		free(envs->v[i].last_error);
	}
	for (size_t i = 0; i < res->n; i++) {
		struct resource *r = model_res_by_id(m, res->v[i].id);

		if (r)
			restore(&res->v[i], &r->gen, &r->last_error);
		free(res->v[i].last_error);
	}
	free(envs->v);
	free(res->v);
}

/* The count no store has: the watcher sees the model behind and asks
 * for a reload until one succeeds. */
#define COUNT_UNKNOWN UINT64_MAX

/*
 * Loads the store aside and takes it only once loaded whole: a store that
 * cannot be read leaves the mount showing what it showed. After a batch
 * failed half way that is more than the store holds, so the count is
 * marked unknown and the reload is tried again once the store answers.
 */
static int reload_model(struct store *st)
{
	struct kept_list envs = { 0 }, res = { 0 };
	struct model fresh;
	int rc;

	model_init(&fresh);
	rc = st->ops->load(st->be, &fresh);
	st->count_known = false;
	if (rc < 0) {
		log_err("state store: reloading the model failed (%s); it is "
			"tried again when the store answers",
			strerror(-rc));
		atomic_store(&st->count, COUNT_UNKNOWN);
		model_destroy(&fresh);
		return rc;
	}
	model_wrlock(&st->model);
	keep_model(&st->model, &envs, &res);
	model_take(&st->model, &fresh);
	restore_model(&st->model, &envs, &res);
	model_unlock(&st->model);
	model_destroy(&fresh);
	return rc;
}

/* The reconciler's events: in memory and in the batch. The list stays
 * with the caller until the batch is known to have landed. */
static void apply_queued_events(struct store *st, const struct queued_event *q)
{
	for (; q; q = q->next) {
		struct env *e = model_env_by_id(&st->model, q->env_id);
		struct resource *r =
			q->res_id ? model_res_by_id(&st->model, q->res_id)
				  : NULL;

		if (e && (r || !q->res_id))
			add_event(st, e, r, q->line);
	}
}

static void free_events(struct queued_event *q)
{
	while (q) {
		struct queued_event *next = q->next;

		free(q->line);
		free(q);
		q = next;
	}
}

static void mark_durable(struct store *st)
{
	model_wrlock(&st->model);
	for (size_t i = 0; i < st->ntouched; i++) {
		struct env *e =
			model_env_by_id(&st->model, st->touched[i].env_id);

		if (e) {
			e->rev_durable = e->rev;
			e->audit_durable = e->audit_lines;
			st->touched[i].rev = e->rev;
		}
	}
	model_unlock(&st->model);
}

/* ---- daemons sharing the store ---------------------------------------- */

/* Every object, for the mount to drop what it cached and the reconciler
 * to look again. Committer only: it alone changes the model. */
static void touch_model(struct store *st)
{
	touch(st, 0, 0);
	for (size_t i = 0; i < st->model.envs.n; i++) {
		struct env *e = st->model.envs.v[i];

		touch(st, e->id, 0);
		for (int k = 0; k < NKINDS; k++)
			for (size_t j = 0; j < e->list[k].n; j++)
				touch(st, e->id, e->list[k].v[j]->id);
	}
}

/* Another daemon's commits: the objects before and after both change. */
static int catch_up(struct store *st, uint64_t count)
{
	int rc;

	touch_model(st);
	rc = reload_model(st);
	touch_model(st);
	if (!rc) {
		st->count_known = true;
		atomic_store(&st->count, count);
	}
	return rc;
}

/*
 * Begins a writing transaction. In a shared store it also waits for its
 * turn, and reloads first when another daemon committed since the model
 * was loaded. Committer only; touches start afresh.
 */
static int begin_writing(struct store *st)
{
	uint64_t before;
	int rc = st->ops->begin(st->be);

	st->ntouched = 0;
	if (rc || !st->ops->serialize)
		return rc;
	rc = st->ops->serialize(st->be, true, &before);
	if (!rc && (!st->count_known || before != atomic_load(&st->count)))
		rc = catch_up(st, before);
	st->claimed = before + 1;
	if (rc)
		st->ops->rollback(st->be);
	return rc;
}

/* After a writing transaction: the model now reflects the claimed count,
 * or, when the commit failed, an unknown one. */
static void count_commit(struct store *st, int rc)
{
	if (!st->ops->serialize)
		return;
	st->count_known = !rc;
	if (!rc)
		atomic_store(&st->count, st->claimed);
}

/* What the watcher asked for, between batches: behind reloads if the
 * model is behind still, retouch tells everything again whether or not
 * it moved. Committer only. */
static void catch_up_idle(struct store *st, bool behind, bool retouch)
{
	uint64_t now;
	bool reloaded = false;
	int rc = 0;

	st->ntouched = 0;
	if (!behind) {
		touch_model(st);
		mark_durable(st);
		return;
	}
	rc = st->ops->begin(st->be);
	if (!rc)
		rc = st->ops->serialize(st->be, false, &now);
	if (!rc && (!st->count_known || now != atomic_load(&st->count))) {
		rc = catch_up(st, now);
		reloaded = !rc;
	}
	st->ops->rollback(st->be);
	if (retouch && !reloaded)
		touch_model(st);
	if (rc)
		log_warn("state store: catching up with other daemons' "
			 "commits failed (%s); tried again shortly",
			 strerror(-rc));
	mark_durable(st);
}

/* ---- a failed batch ----------------------------------------------------- */

/* Enough for the reasons of a few failed batches; each object's ring of
 * EVENTS_KEPT lines in memory must always hold them all. */
#define UNSTORED_MAX 64

/* Queues a finished event line (takes it) to store with the next batch. */
static void keep_unstored(struct store *st, uint64_t env_id, uint64_t res_id,
			  char *line)
{
	struct queued_event **tail = &st->unstored;
	struct queued_event *q = xcalloc(1, sizeof(*q));

	q->env_id = env_id;
	q->res_id = res_id;
	q->line = line;
	while (*tail)
		tail = &(*tail)->next;
	*tail = q;
	if (++st->nunstored > UNSTORED_MAX) {
		q = st->unstored;
		st->unstored = q->next;
		st->nunstored--;
		log_warn("state store: an event that could not be stored was "
			 "dropped: %s",
			 q->line);
		q->next = NULL;
		free_events(q);
	}
}

/* First in every batch, so the store gets them in the order shown. */
static void write_unstored(struct store *st)
{
	for (const struct queued_event *q = st->unstored; q; q = q->next)
		bw(st,
		   st->ops->add_event(st->be, q->env_id, q->res_id, q->line));
}

static void drop_unstored(struct store *st)
{
	free_events(st->unstored);
	st->unstored = NULL;
	st->nunstored = 0;
}

/* After a reload: shows the kept lines again, and forgets those whose
 * object is gone. Under the model's write lock. */
static void show_unstored(struct store *st)
{
	struct queued_event **link = &st->unstored;

	while (*link) {
		struct queued_event *q = *link;
		struct env *e = model_env_by_id(&st->model, q->env_id);
		struct resource *r =
			q->res_id ? model_res_by_id(&st->model, q->res_id)
				  : NULL;

		if (e && (r || !q->res_id)) {
			show_event(st, e, r, xstrdup(q->line));
			link = &q->next;
			continue;
		}
		*link = q->next;
		q->next = NULL;
		free_events(q);
		st->nunstored--;
	}
}

/* What a writer is told when the store refuses a batch: the cause, so
 * that a full disk is not mistaken for a damaged one. */
static const char *store_failure_cause(int err)
{
	switch (err) {
	case -ENOSPC:
		return "the disk holding it is full (ENOSPC)";
	case -EROFS:
		return "it is read-only (EROFS)";
	case -EBUSY:
		return "another program holds its lock (EBUSY)";
	case -ENOMEM:
		return "the daemon is out of memory (ENOMEM)";
	default:
		return "an I/O error (EIO)";
	}
}

/* A failed change's reason goes where its writer looks: the resource's
 * last_error and events, or the environment's. The model is reloaded
 * already, so the line waits in the unstored list for a commit. */
static void note_failure(struct store *st, const struct change *ch,
			 const char *msg)
{
	struct resource *r = NULL;
	struct env *e;
	char text[700];

	if (ch->op == CH_ENV_CREATE || ch->op == CH_APPLIED ||
	    ch->op == CH_NOTE_ERROR)
		return;
	e = model_env(&st->model, ch->env);
	if (!e)
		return;
	if (ch->name && (ch->op == CH_RES_DRAFT || ch->op == CH_RES_COMMIT ||
			 ch->op == CH_RES_FIELD || ch->op == CH_RES_REMOVE))
		r = model_res(e, ch->kind, ch->name);
	snprintf(text, sizeof(text), "commit failed: %s", msg);
	model_set_error(r ? &r->last_error : &e->last_error, msg);
	keep_unstored(st, e->id, r ? r->id : 0, event_line(text));
}

/*
 * Nothing of the batch is kept: the model goes back to what the store
 * holds, and every writer of the batch is told the store's errno. The
 * reasons and the reconciler's events are shown at once and stored with
 * the next commit that succeeds.
 */
static void fail_batch(struct store *st, struct pending *batch,
		       const struct queued_event *events, bool begun)
{
	int err = st->batch_err;

	log_err("state store: a commit failed (%s); no change of this batch "
		"was kept",
		strerror(-err));
	/* Before begin() succeeded nothing of the batch reached the model:
	 * a store that cannot be reached is not read again for nothing. */
	if (begun) {
		st->ops->rollback(st->be);
		reload_model(st);
	}
	model_wrlock(&st->model);
	for (const struct queued_event *q = events; q; q = q->next)
		keep_unstored(st, q->env_id, q->res_id, event_line(q->line));
	for (struct pending *p = batch; p; p = p->next) {
		p->err = err;
		p->res->rev = 0;
		snprintf(p->res->msg, sizeof(p->res->msg),
			 "the state store could not record the change: %s; "
			 "nothing of it was kept",
			 store_failure_cause(err));
		note_failure(st, p->ch, p->res->msg);
	}
	show_unstored(st);
	model_unlock(&st->model);
	/* What the batch touched is announced with the revisions that are
	 * durable, as after a commit. */
	mark_durable(st);
}

static void run_batch(struct store *st, struct pending *batch,
		      struct queued_event *events)
{
	int rc = begin_writing(st);

	st->batch_err = rc;
	if (!rc)
		write_unstored(st);
	for (struct pending *p = batch; p && !st->batch_err; p = p->next) {
		model_wrlock(&st->model);
		p->err = apply_change(st, p->ch, p->res);
		model_unlock(&st->model);
	}
	model_wrlock(&st->model);
	if (!st->batch_err)
		apply_queued_events(st, events);
	model_unlock(&st->model);
	if (!st->batch_err)
		st->batch_err = st->ops->commit(st->be);
	count_commit(st, st->batch_err);
	if (!st->batch_err) {
		drop_unstored(st);
		mark_durable(st);
	} else {
		fail_batch(st, batch, events, rc == 0);
	}
	free_events(events);
}

/* ---- retention --------------------------------------------------------- */

/* How often the committer looks for revisions the age rule lets go when
 * no commit made it look. */
#define PRUNE_SWEEP_S 600

/* The most revisions one prune transaction removes: a commit that
 * arrives during the first prune of a long history waits for one such
 * step, not for all of it. */
#define PRUNE_STEP 50000

static void sha256_hex(const char *text, char out[65])
{
	unsigned char md[32];

	SHA256((const unsigned char *)text, strlen(text), md);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The oldest revision e must keep now; e->first_rev when none may go. */
static uint64_t prune_point(struct store *st, const struct env *e, double now)
{
	struct retention rules = retention_of(e->config.parsed);
	uint64_t since = e->rev + 1;

	if (!rules.keep && !rules.keep_days)
		return e->first_rev;
	if (rules.keep_days &&
	    st->ops->first_rev_since(st->be, e->id,
				     now - (double)rules.keep_days * 86400.0,
				     &since) == -EIO)
		return e->first_rev;
	return retention_keep_from(&rules, e->rev_durable, e->applied_rev,
				   since);
}

/*
 * Records a prune in the model and the store: the new oldest revision,
 * the checkpoint the oldest kept audit line chains to, and an audit line
 * and an event saying what went. Called with the model lock held.
 */
static void record_prune(struct store *st, struct env *e, uint64_t keep_from,
			 const struct prune_result *pr)
{
	char when[40];
	BUF_AUTO line = BUF_INIT;
	BUF_AUTO ev = BUF_INIT;
	uint64_t id = e->id, from = e->first_rev;

	if (pr->last_audit_line)
		sha256_hex(pr->last_audit_line, e->audit_base);
	e->first_rev = keep_from;
	time_rfc3339(time_now(), when, sizeof(when));
	buf_printf(&line,
		   "%s rev=- uid=%u gid=%u pid=%d comm=infrafs path=- pruned: "
		   "revisions %" PRIu64 " to %" PRIu64 " (%" PRIu64
		   " audit lines) by history_keep; checkpoint=%s",
		   when, (unsigned)geteuid(), (unsigned)getegid(),
		   (int)getpid(), from, keep_from - 1, pr->audit_lines,
		   e->audit_base[0] ? e->audit_base : "none");
	audit_chain(e, &line);
	bw(st, st->ops->add_audit(st->be, e->id, buf_str(&line)));
	e->audit_lines++;
	e->gen++;
	bw(st, st->ops->put_env(st->be, e, &id));
	buf_printf(&ev,
		   "history: revisions %" PRIu64 " to %" PRIu64
		   " pruned by history_keep; the oldest kept is %" PRIu64,
		   from, keep_from - 1, keep_from);
	add_event(st, e, NULL, buf_str(&ev));
	st->touched[st->ntouched - 1].pruned_from = from;
	st->touched[st->ntouched - 1].first_rev = keep_from;
}

/* Prunes one environment inside the open transaction. The deletes run
 * without the model lock (only this thread writes either), so readers
 * of the mount are not held up by a long first prune. */
static void prune_env(struct store *st, struct env *e, uint64_t keep_from)
{
	struct prune_result pr;
	uint64_t from = e->first_rev;
	int rc = st->ops->prune(st->be, e->id, keep_from,
				retention_keeps_audit_line, &pr);

	if (bw(st, rc))
		return;
	model_wrlock(&st->model);
	record_prune(st, e, keep_from, &pr);
	model_unlock(&st->model);
	log_info("%s: pruned revisions %" PRIu64 " to %" PRIu64 " (%" PRIu64
		 " revisions, %" PRIu64 " history rows, %" PRIu64
		 " audit lines)",
		 e->name, from, keep_from - 1, pr.revisions, pr.history_rows,
		 pr.audit_lines);
	free(pr.last_audit_line);
}

/*
 * Applies history_keep wherever it lets enough go, as one transaction of
 * its own, so a commit never fails with a prune; a long prune is taken
 * in steps. Committer only. Returns whether anything was pruned.
 */
static bool prune_due(struct store *st, const struct env *e, double now,
		      uint64_t *keep_from)
{
	*keep_from = prune_point(st, e, now);
	if (!retention_due(e->first_rev, *keep_from, e->rev_durable))
		return false;
	if (*keep_from - e->first_rev > PRUNE_STEP)
		*keep_from = e->first_rev + PRUNE_STEP;
	return true;
}

static bool any_prune_due(struct store *st, double now)
{
	uint64_t keep_from;

	for (size_t i = 0; i < st->model.envs.n; i++)
		if (prune_due(st, st->model.envs.v[i], now, &keep_from))
			return true;
	return false;
}

static bool prune_histories(struct store *st)
{
	double now = time_now();
	bool begun = false;

	st->ntouched = 0;
	st->batch_err = 0;
	if (!any_prune_due(st, now))
		return false;
	/* The transaction first: in a shared store it may reload the
	 * model, and what is due is decided on the store's newest state. */
	begun = !bw(st, begin_writing(st));
	for (size_t i = 0; begun && i < st->model.envs.n && !st->batch_err;
	     i++) {
		struct env *e = st->model.envs.v[i];
		uint64_t keep_from;

		if (prune_due(st, e, now, &keep_from))
			prune_env(st, e, keep_from);
	}
	if (begun && !st->batch_err)
		st->batch_err = st->ops->commit(st->be);
	if (begun)
		count_commit(st, st->batch_err);
	if (st->batch_err) {
		log_err("state store: pruning history failed (%s); it is "
			"tried again after the next commit",
			strerror(-st->batch_err));
		if (begun)
			st->ops->rollback(st->be);
		reload_model(st);
		st->ntouched = 0;
		return false;
	}
	mark_durable(st);
	return begun;
}

/*
 * Prunes step by step until nothing is due or changes are queued, which
 * are served first; the prune goes on after their batch. Called with
 * qlock held; returns with it held.
 */
static void prune_while_idle(struct store *st)
{
	do {
		pthread_mutex_unlock(&st->qlock);
		bool pruned = prune_histories(st);
		pthread_mutex_lock(&st->qlock);
		if (!pruned)
			return;
		call_hook(st);
	} while (!st->head && !st->ev_head && !st->stopping);
}

static bool work_queued(const struct store *st)
{
	return st->head || st->ev_head || st->behind || st->retouch;
}

/* Called with qlock held; returns with it held. */
static void catch_up_asked(struct store *st)
{
	bool behind = st->behind, retouch = st->retouch;

	if (!behind && !retouch)
		return;
	st->behind = st->retouch = false;
	pthread_mutex_unlock(&st->qlock);
	catch_up_idle(st, behind, retouch);
	pthread_mutex_lock(&st->qlock);
	call_hook(st);
}

static void *committer(void *arg)
{
	struct store *st = arg;

	struct timespec sweep;

	clock_gettime(CLOCK_REALTIME, &sweep);
	pthread_mutex_lock(&st->qlock);
	for (;;) {
		struct pending *batch;
		struct queued_event *events;

		while (!work_queued(st) && !st->stopping) {
			if (pthread_cond_timedwait(&st->qcond, &st->qlock,
						   &sweep) != ETIMEDOUT)
				continue;
			sweep.tv_sec += PRUNE_SWEEP_S;
			prune_while_idle(st);
		}
		if (!work_queued(st))
			break;
		catch_up_asked(st);
		if (!st->head && !st->ev_head)
			continue;
		batch = st->head;
		events = st->ev_head;
		st->head = NULL;
		st->tail = &st->head;
		st->ev_head = NULL;
		st->ev_tail = &st->ev_head;
		pthread_mutex_unlock(&st->qlock);

		run_batch(st, batch, events);

		pthread_mutex_lock(&st->qlock);
		for (struct pending *p = batch; p; p = p->next)
			p->done = true;
		pthread_cond_broadcast(&st->donecond);
		call_hook(st);
		prune_while_idle(st);
	}
	pthread_mutex_unlock(&st->qlock);
	return NULL;
}

int store_apply(struct store *st, const struct change *ch,
		struct change_result *res)
{
	struct pending p = { .ch = ch, .res = res };
	uint64_t start = hist_clock();

	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&st->qlock);
	*st->tail = &p;
	st->tail = &p.next;
	pthread_cond_signal(&st->qcond);
	while (!p.done)
		pthread_cond_wait(&st->donecond, &st->qlock);
	pthread_mutex_unlock(&st->qlock);
	hist_since(&st->commit_hist, start);
	if (p.err)
		log_debug("change refused: %s", res->msg);
	return p.err;
}

const struct hist *store_commit_hist(const struct store *st)
{
	return &st->commit_hist;
}

void store_event(struct store *st, uint64_t env_id, uint64_t res_id,
		 const char *text)
{
	struct queued_event *q = xcalloc(1, sizeof(*q));

	q->env_id = env_id;
	q->res_id = res_id;
	q->line = xstrdup(text);
	pthread_mutex_lock(&st->qlock);
	*st->ev_tail = q;
	st->ev_tail = &q->next;
	pthread_cond_signal(&st->qcond);
	pthread_mutex_unlock(&st->qlock);
}

/* ---- history ---------------------------------------------------------- */

int store_history_info(struct store *st, uint64_t env_id, uint64_t rev,
		       struct buf *out)
{
	struct revision_row row;
	char when[40];
	int rc = st->ops->revision(st->be, env_id, rev, &row);

	if (rc)
		return rc;
	time_rfc3339(row.time, when, sizeof(when));
	buf_printf(out,
		   "revision: %" PRIu64 "\ntime: %s\nuid: %u\ngid: %u\n"
		   "pid: %d\ncommand: %s\npath: %s\nsummary: %s\n",
		   rev, when, row.uid, row.gid, row.pid, row.comm, row.path,
		   row.summary);
	free(row.storage);
	return 0;
}

int store_history_diff(struct store *st, uint64_t env_id, uint64_t rev,
		       struct buf *out)
{
	struct revision_row row;
	int rc = st->ops->revision(st->be, env_id, rev, &row);

	if (rc)
		return rc;
	buf_adds(out, row.diff);
	free(row.storage);
	return 0;
}

int store_history_text(struct store *st, uint64_t env_id, uint64_t rev,
		       const char *kind, const char *name, struct buf *out)
{
	return st->ops->history_text(st->be, env_id, rev, kind, name, out);
}

int store_history_names(struct store *st, uint64_t env_id, uint64_t rev,
			const char *kind, struct buf *out)
{
	return st->ops->history_names(st->be, env_id, rev, kind, out);
}

int store_audit(struct store *st, uint64_t env_id, struct buf *out)
{
	return st->ops->audit(st->be, env_id, out);
}

int store_events_text(struct store *st, const struct env *e,
		      const struct resource *r, struct buf *out)
{
	const struct event_log *log = r ? &r->events : &e->events;
	uint64_t older = log->total - log->count;

	if (older) {
		int rc = st->ops->events(st->be, e->id, r ? r->id : 0, older,
					 out);

		if (rc)
			return rc;
	}
	for (size_t i = 0; i < log->count; i++)
		buf_adds(out, event_log_line(log, i));
	return 0;
}

/* ---- open and close --------------------------------------------------- */

/* A fingerprint of the key, safe to store: an HMAC of a fixed text. */
static void key_fingerprint(const struct secret_key *key, char out[17])
{
	static const char text[] = "infrafs secret key fingerprint";
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	HMAC(EVP_sha256(), key->bytes, sizeof(key->bytes),
	     (const unsigned char *)text, sizeof(text) - 1, mac, &len);
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

/*
 * Why the key file could not be used, in the loader's words (the mode or
 * the size it found), so that the fix is plain; a missing file that
 * sealed secrets is said to be missing, since making a new one would not
 * help.
 */
static void key_unusable(struct store *st, const char *path, bool known, int rc,
			 const char *why)
{
	if (!known)
		snprintf(st->key_error, sizeof(st->key_error), "%s", why);
	else if (rc == -ENOENT)
		snprintf(st->key_error, sizeof(st->key_error),
			 "the key file %s that sealed this store's secrets "
			 "is missing; secrets cannot be read or written until "
			 "it is restored",
			 path);
	else
		snprintf(st->key_error, sizeof(st->key_error),
			 "the key file that sealed this store's secrets "
			 "cannot be used: %s; secrets cannot be read or "
			 "written until it is fixed",
			 why);
}

/*
 * The key that seals secrets lives outside the store. The store keeps its
 * fingerprint, so a lost or swapped key file is said plainly instead of
 * a new key being made that cannot open the secrets already sealed.
 */
static void load_key(struct store *st, const char *path)
{
	BUF_AUTO recorded = BUF_INIT;
	char why[sizeof(st->key_error) - 160];
	char fp[17];
	bool known;
	int rc;

	if (!path) {
		snprintf(st->key_error, sizeof(st->key_error),
			 "no secret key file is configured");
		return;
	}
	known = st->ops->meta_get(st->be, "key_fingerprint", &recorded) == 0;
	rc = secret_key_load(path, !known, &st->key, why, sizeof(why));
	if (rc < 0) {
		key_unusable(st, path, known, rc, why);
		log_err("%s", st->key_error);
		return;
	}
	key_fingerprint(&st->key, fp);
	if (known && strcmp(buf_str(&recorded), fp) != 0) {
		snprintf(st->key_error, sizeof(st->key_error),
			 "the key file %s is not the key that sealed this "
			 "store's secrets (fingerprint %s, sealed with %s); "
			 "restore the right key file",
			 path, fp, buf_str(&recorded));
		log_err("%s", st->key_error);
		OPENSSL_cleanse(&st->key, sizeof(st->key));
		return;
	}
	if (!known && st->ops->meta_put(st->be, "key_fingerprint", fp) < 0)
		log_warn("could not record the secret key's fingerprint");
	st->have_key = true;
}

int store_secret_value(struct store *st, const char *env, const char *name,
		       char **plain, size_t *len, uint64_t *version)
{
	BUF_AUTO sealed = BUF_INIT;
	uint64_t env_id = 0;
	char aad[160];
	struct env *e;
	int rc;

	if (!st->have_key)
		return -EIO;
	model_rdlock(&st->model);
	e = model_env(&st->model, env);
	if (e) {
		const struct secret_meta *s =
			map_get(&e->secrets, name, strlen(name));

		env_id = e->id;
		*version = s ? s->version : 0;
	}
	model_unlock(&st->model);
	if (!env_id || !*version)
		return -ENOENT;
	rc = st->ops->secret_sealed(st->be, env_id, name, &sealed);
	if (rc)
		return rc;
	snprintf(aad, sizeof(aad), "%" PRIu64 "/%s", env_id, name);
	return secret_open(&st->key, sealed.data, sealed.len, aad, strlen(aad),
			   plain, len);
}

uint64_t store_secret_version(struct store *st, const char *env,
			      const char *name)
{
	uint64_t version = 0;
	struct env *e;

	model_rdlock(&st->model);
	e = model_env(&st->model, env);
	if (e) {
		const struct secret_meta *s =
			map_get(&e->secrets, name, strlen(name));

		version = s ? s->version : 0;
	}
	model_unlock(&st->model);
	return version;
}

/* The part after SCHEME: of url when scheme names it, else NULL. */
static const char *after_scheme(const char *url, const char *scheme)
{
	size_t n = scheme ? strlen(scheme) : 0;

	return n && !strncmp(url, scheme, n) && url[n] == ':' ? url + n + 1
							      : NULL;
}

static const struct backend_ops *backend_for(const char *url,
					     const char **location)
{
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		*location = after_scheme(url, backends[i]->scheme);
		if (!*location)
			*location = after_scheme(url, backends[i]->alias);
		if (*location)
			return backends[i];
	}
	return NULL;
}

static void unknown_store(const char *url, char *err, size_t errlen)
{
	char shown[1024];

	url_without_password(url, shown, sizeof(shown));
	snprintf(err, errlen,
		 "unknown state store %s: use sqlite:PATH or "
		 "postgresql://USER@HOST:PORT/DATABASE",
		 shown);
}

const char *store_url_file(const char *url)
{
	const char *location;
	const struct backend_ops *ops = backend_for(url, &location);

	return ops && ops->location_is_file ? location : NULL;
}

static uint64_t hook_model_count(void *ctx)
{
	struct store *st = ctx;

	return atomic_load(&st->count);
}

static void ask_committer(struct store *st, bool *flag)
{
	pthread_mutex_lock(&st->qlock);
	*flag = true;
	pthread_cond_signal(&st->qcond);
	pthread_mutex_unlock(&st->qlock);
}

static void hook_behind(void *ctx)
{
	struct store *st = ctx;

	ask_committer(st, &st->behind);
}

static void hook_leases_moved(void *ctx)
{
	struct store *st = ctx;

	ask_committer(st, &st->retouch);
}

static size_t hook_env_ids(void *ctx, uint64_t **ids)
{
	struct store *st = ctx;
	size_t n;

	model_rdlock(&st->model);
	n = st->model.envs.n;
	*ids = xcalloc(n ? n : 1, sizeof(**ids));
	for (size_t i = 0; i < n; i++)
		(*ids)[i] = st->model.envs.v[i]->id;
	model_unlock(&st->model);
	return n;
}

static void hook_heard(void *ctx, const char *message)
{
	struct store *st = ctx;

	pthread_mutex_lock(&st->message_lock);
	if (st->message_fn)
		st->message_fn(st->message_ctx, message);
	pthread_mutex_unlock(&st->message_lock);
}

void store_set_message_handler(struct store *st, store_message_fn fn,
			       void *ctx)
{
	pthread_mutex_lock(&st->message_lock);
	st->message_fn = fn;
	st->message_ctx = ctx;
	pthread_mutex_unlock(&st->message_lock);
}

int store_put_observations(struct store *st,
			   const struct observation_row *rows, size_t n)
{
	if (!st->ops->put_observations)
		return -EOPNOTSUPP;
	return st->ops->put_observations(st->be, rows, n);
}

int store_observations_after(struct store *st, uint64_t after,
			     void (*each)(void *ctx,
					  const struct observation_row *row),
			     void *ctx)
{
	if (!st->ops->observations_after)
		return -EOPNOTSUPP;
	return st->ops->observations_after(st->be, after, each, ctx);
}

int store_announce(struct store *st, const char *message)
{
	if (!st->ops->announce)
		return -EOPNOTSUPP;
	return st->ops->announce(st->be, message);
}

static int start_watching(struct store *st)
{
	const struct watcher_hooks hooks = {
		.ctx = st,
		.model_count = hook_model_count,
		.behind = hook_behind,
		.leases_moved = hook_leases_moved,
		.env_ids = hook_env_ids,
		.heard = hook_heard,
	};
	int rc;

	if (!st->ops->wait_commit)
		return 0;
	rc = watcher_start(&st->watcher, st->ops, st->be, &hooks);
	st->watching = !rc;
	return rc;
}

bool store_shared(const struct store *st)
{
	return st->ops->serialize != NULL;
}

bool store_leads(struct store *st, uint64_t env_id)
{
	return !st->watching || watcher_leads(&st->watcher, env_id);
}

void store_reconciler_of(struct store *st, uint64_t env_id, char *out,
			 size_t len)
{
	out[0] = '\0';
	/* Cut off from the store, who leads is not known. */
	if (st->watching && !watcher_unreachable_since(&st->watcher))
		watcher_holder(&st->watcher, env_id, out, len);
}

uint64_t store_sharing_gen(struct store *st)
{
	return st->watching ? watcher_epoch(&st->watcher) : 0;
}

double store_unreachable_since(struct store *st)
{
	return st->watching ? watcher_unreachable_since(&st->watcher) : 0;
}

int store_open(const struct store_options *opt, struct store **out, char *err,
	       size_t errlen)
{
	struct store *st = xcalloc(1, sizeof(*st));
	const char *location;
	int rc;

	url_without_password(opt->url, st->url, sizeof(st->url));
	snprintf(st->allow_config_keys, sizeof(st->allow_config_keys), "%s",
		 opt->allow_config_keys ? opt->allow_config_keys : "");
	st->ops = backend_for(opt->url, &location);
	if (!st->ops) {
		unknown_store(opt->url, err, errlen);
		free(st);
		return -EINVAL;
	}
	rc = st->ops->open(location, &st->be, err, errlen);
	if (rc) {
		free(st);
		return rc;
	}
	model_init(&st->model);
	rc = st->ops->load(st->be, &st->model);
	if (rc) {
		snprintf(err, errlen, "state store %s could not be loaded: %s",
			 st->url, strerror(-rc));
		store_close(st);
		return rc;
	}
	load_key(st, opt->key_file);
	pthread_mutex_init(&st->qlock, NULL);
	pthread_cond_init(&st->qcond, NULL);
	pthread_cond_init(&st->donecond, NULL);
	st->tail = &st->head;
	st->ev_tail = &st->ev_head;
	pthread_mutex_init(&st->message_lock, NULL);
	pthread_create(&st->thread, NULL, committer, st);
	st->started = true;
	if (start_watching(st))
		log_warn("state store: cannot watch for other daemons' "
			 "commits; this daemon reconciles nothing");
	*out = st;
	return 0;
}

/* The key file against the fingerprint the store recorded, read only:
 * a missing key is made at start only for a store that sealed nothing. */
static int check_key(const char *path, const char *recorded, struct buf *report,
		     char *err, size_t errlen)
{
	struct secret_key key;
	char why[512];
	char fp[17];
	int rc;

	if (!path)
		return 0;
	rc = secret_key_load(path, false, &key, why, sizeof(why));
	if (rc == -ENOENT && !*recorded) {
		buf_printf(report, "key: %s missing; made at the next start\n",
			   path);
		return 0;
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s", why);
		return rc;
	}
	key_fingerprint(&key, fp);
	OPENSSL_cleanse(&key, sizeof(key));
	if (*recorded && strcmp(recorded, fp) != 0) {
		snprintf(err, errlen,
			 "the key file %s is not the key that sealed this "
			 "store's secrets (fingerprint %s, sealed with %s)",
			 path, fp, recorded);
		return -EKEYREJECTED;
	}
	buf_printf(report, "key: %s fingerprint %s%s\n", path, fp,
		   *recorded ? ", the store's"
			     : ", recorded at the next start");
	return 0;
}

int store_check(const struct store_options *opt, struct buf *report, char *err,
		size_t errlen)
{
	BUF_AUTO fingerprint = BUF_INIT;
	const struct backend_ops *ops;
	const char *location;
	int rc;

	ops = backend_for(opt->url, &location);
	if (!ops) {
		unknown_store(opt->url, err, errlen);
		return -EINVAL;
	}
	rc = ops->check(location, report, &fingerprint, err, errlen);
	if (rc < 0)
		return rc;
	if (rc > 0) {
		char shown[sizeof(((struct store *)0)->url)];

		url_without_password(opt->url, shown, sizeof(shown));
		buf_printf(report,
			   "store: %s does not exist yet; made at the "
			   "next start\n",
			   shown);
	}
	return check_key(opt->key_file, buf_str(&fingerprint), report, err,
			 errlen);
}

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->watching)
		watcher_stop(&st->watcher);
	if (st->started) {
		pthread_mutex_lock(&st->qlock);
		st->stopping = true;
		pthread_cond_signal(&st->qcond);
		pthread_mutex_unlock(&st->qlock);
		pthread_join(st->thread, NULL);
		pthread_mutex_destroy(&st->qlock);
		pthread_cond_destroy(&st->qcond);
		pthread_cond_destroy(&st->donecond);
	}
	if (st->started)
		pthread_mutex_destroy(&st->message_lock);
	st->ops->close(st->be);
	model_destroy(&st->model);
	drop_unstored(st);
	free(st->touched);
	memset(&st->key, 0, sizeof(st->key));
	free(st);
}
