// SPDX-License-Identifier: MIT
/*
 * infrafs-plan --against DIR ENV: two in-memory models of one
 * environment, "before" from what the mount shows and "after" with the
 * folder's specs (and its policy, when it has one) in their place, then
 * the same code the committer and the reconciler run: the spec parser and
 * rules, the policy checks of store/policy.c, the provider's own checks
 * and cost estimate, the unified diffs of history/, and the field changes
 * a plan step shows. Nothing is written anywhere.
 *
 * The report is built once as JSON; the text and markdown forms are
 * rendered from that object, so the three can never disagree.
 */
#include "plan_against.h"

#include "providers/provider.h"
#include "spec/folder.h"
#include "spec/spec.h"
#include "store/diff.h"
#include "store/model.h"
#include "store/policy.h"
#include "util/text.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* status.json of one resource: a spec's worth of provider lines at most. */
#define STATUS_MAX_BYTES (4u << 20)

/* One resource (or the policy) as the two sides have it. */
struct item {
	const struct kind_def *kind;
	char name[NAME_MAX_LEN + 1];
	char path[FOLDER_DOC_PATH_MAX]; /* "pools/train/spec", "policy" */
	const struct doc *before; /* NULL, or text NULL for a draft */
	const struct doc *after; /* NULL when the folder lacks it */
	const char *change; /* "create", "update", ... */
	const char *verdict; /* the policy's word on it, NULL: none asked */
};

struct plan {
	const char *env_dir, *folder;
	struct model before, after;
	struct env *eb, *ea;
	struct folder dir;
	bool policy_from_folder;
	bool secrets_known;
	/* The folder broke the layout: nothing to compare. */
	bool unread;
	struct item *items;
	size_t n, cap;
	json_t *problems, *verdicts, *notes;
};

/* ---- small helpers -------------------------------------------------- */

int plan_read_file(const char *path, size_t max, struct buf *out)
{
	char chunk[16384];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int err = 0;

	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : 0;
			break;
		}
		if (out->len + (size_t)n > max) {
			err = -EFBIG;
			break;
		}
		buf_add(out, chunk, (size_t)n);
	}
	close(fd);
	return err;
}

int plan_error(const char *fmt, ...)
{
	va_list ap;

	fputs("infrafs-plan: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_ERROR;
}

/* A JSON string of anyone's bytes: escaped, so always valid UTF-8. */
static json_t *jtext(const char *s, size_t n, unsigned flags)
{
	BUF_AUTO b = BUF_INIT;

	text_escape(&b, s, n, flags);
	return json_string(buf_str(&b));
}

static json_t *jstr(const char *s)
{
	return jtext(s, strlen(s), 0);
}

/* The path of a file under the environment folder. */
static void env_path(const struct plan *p, char *out, size_t len,
		     const char *rel)
{
	snprintf(out, len, "%s/%s", p->env_dir, rel);
}

/* Records what keeps the folder from checking. */
static void problem(struct plan *p, const char *file, unsigned line,
		    const char *key, const char *rule, const char *msg)
{
	json_array_append_new(p->problems,
			      json_pack("{s:o, s:i, s:o, s:s, s:o}", "file",
					jstr(file), "line", (int)line, "key",
					jstr(key ? key : ""), "rule", rule,
					"message", jstr(msg)));
}

/* "line 3: nodes: expected ..." -> "nodes: expected ...". */
static const char *without_line(const struct spec_error *err)
{
	const char *m = err->msg;

	if (err->line && !strncmp(m, "line ", 5)) {
		const char *colon = strstr(m, ": ");

		if (colon)
			return colon + 2;
	}
	return m;
}

/* ---- the environment, as the mount shows it ------------------------- */

/* Parses a committed text; a text the mount shows should always parse. */
static struct spec *parse_quiet(const struct kind_def *k, const char *text,
				size_t len)
{
	struct spec *s;
	struct spec_error err;

	spec_parse(k, text, len, &s, &err); /* NULL when it does not */
	return s;
}

static int read_doc(const struct plan *p, const char *rel,
		    const struct kind_def *k, struct doc *d)
{
	char path[PATH_MAX];
	BUF_AUTO text = BUF_INIT;
	int rc;

	env_path(p, path, sizeof(path), rel);
	rc = plan_read_file(path, SPEC_MAX_BYTES, &text);
	if (rc)
		return plan_error("cannot read %s: %s", path, strerror(-rc));
	doc_set(d, buf_steal(&text), text.len, NULL, 0, 0);
	d->parsed = parse_quiet(k, d->text, d->len);
	return 0;
}

/* An empty spec is a draft's or an all-defaults one: status.json says. */
static bool is_draft(const struct plan *p, const struct kind_def *k,
		     const char *name)
{
	char path[PATH_MAX];
	BUF_AUTO text = BUF_INIT;
	json_t *root, *draft;
	bool yes;

	snprintf(path, sizeof(path), "%s/%s/%s/status.json", p->env_dir, k->dir,
		 name);
	if (plan_read_file(path, STATUS_MAX_BYTES, &text))
		return false;
	root = json_loadb(buf_str(&text), text.len, 0, NULL);
	draft = json_object_get(root, "draft");
	yes = json_is_true(draft);
	json_decref(root);
	return yes;
}

static int read_resource(struct plan *p, int kind, const char *name,
			 uint64_t id)
{
	const struct kind_def *k = kind_at(kind);
	struct resource *r = model_add_res(&p->before, p->eb, id, kind, name);
	char rel[PATH_MAX];

	snprintf(rel, sizeof(rel), "%s/%s/spec", k->dir, name);
	if (read_doc(p, rel, k, &r->spec))
		return EXIT_ERROR;
	if (r->spec.len == 0 && is_draft(p, k, name)) {
		free(r->spec.text);
		spec_free(r->spec.parsed);
		r->spec.text = NULL;
		r->spec.parsed = NULL;
	}
	return 0;
}

static int read_kind(struct plan *p, int kind, uint64_t *id)
{
	const struct kind_def *k = kind_at(kind);
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int rc = 0;

	env_path(p, path, sizeof(path), k->dir);
	d = opendir(path);
	if (!d)
		return plan_error("cannot list %s: %s", path, strerror(errno));
	while (!rc && (de = readdir(d))) {
		if (name_is_valid(de->d_name))
			rc = read_resource(p, kind, de->d_name, ++*id);
	}
	closedir(d);
	return rc;
}

/* Secret names, when the mount lets this user list them. */
static void read_secrets(struct plan *p)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	env_path(p, path, sizeof(path), "secrets");
	d = opendir(path);
	p->secrets_known = d != NULL;
	while (d && (de = readdir(d))) {
		struct secret_meta *s;

		if (!name_is_valid(de->d_name))
			continue;
		/* A valid name fits. */
		s = xcalloc(1, sizeof(*s));
		memcpy(s->name, de->d_name, strlen(de->d_name));
		map_put(&p->eb->secrets, s->name, strlen(s->name), s);
	}
	if (d)
		closedir(d);
}

/*
 * The environment's name, as plan.json says it: the path may be "." or
 * lead through folders this user cannot look at by name, so neither
 * realpath() nor the path's text would do.
 */
static int env_name(const struct plan *p, char *out, size_t len)
{
	char path[PATH_MAX];
	BUF_AUTO text = BUF_INIT;
	json_t *root;
	const char *name;
	int rc;

	env_path(p, path, sizeof(path), "plan.json");
	rc = plan_read_file(path, STATUS_MAX_BYTES, &text);
	if (rc == -ENOENT || rc == -ENOTDIR)
		return plan_error("%s is not an infrafs environment folder (no "
				  "plan.json)",
				  p->env_dir);
	if (rc)
		return plan_error("cannot read %s: %s", path, strerror(-rc));
	root = json_loadb(buf_str(&text), text.len, 0, NULL);
	name = json_string_value(json_object_get(root, "environment"));
	rc = name && name_is_valid(name) ? 0 : -EINVAL;
	if (!rc)
		snprintf(out, len, "%s", name);
	json_decref(root);
	if (rc)
		return plan_error("%s: no environment's name in it", path);
	return 0;
}

static int read_env(struct plan *p)
{
	char name[NAME_MAX_LEN + 1];
	uint64_t id = 0;
	int rc = env_name(p, name, sizeof(name));

	if (rc)
		return rc;
	p->eb = model_add_env(&p->before, 1, name);
	rc = read_doc(p, "config", &kind_config, &p->eb->config);
	if (!rc)
		rc = read_doc(p, "policy", &kind_policy, &p->eb->policy);
	for (int k = 0; !rc && k < NKINDS; k++)
		rc = read_kind(p, k, &id);
	if (!rc)
		read_secrets(p);
	return rc;
}

/* ---- the environment, as the folder would make it ------------------- */

static void copy_doc(struct doc *to, const struct kind_def *k,
		     const struct doc *from)
{
	doc_set(to, xstrndup(from->text, from->len), from->len,
		parse_quiet(k, from->text, from->len), 0, 0);
}

/* Parses a folder's text as the committer would, rules included. */
static void parse_folder_doc(struct plan *p, const struct folder_doc *fd,
			     struct doc *d)
{
	struct spec *s = NULL;
	struct spec_error err;

	if (spec_parse(fd->kind, fd->text, fd->len, &s, &err) < 0 ||
	    spec_check_rules(s, &err) < 0) {
		problem(p, fd->path, err.line, err.key, "spec",
			without_line(&err));
		spec_free(s);
		s = NULL;
	}
	doc_set(d, xstrndup(fd->text, fd->len), fd->len, s, 0, 0);
}

static void read_folder(struct plan *p)
{
	struct folder_error err;
	int rc = folder_read(p->folder, &p->dir, &err);
	uint64_t id = 0;

	p->ea = model_add_env(&p->after, 1, p->eb->name);
	copy_doc(&p->ea->config, &kind_config, &p->eb->config);
	if (rc) {
		size_t n = strlen(err.path);
		bool prefixed = n && !strncmp(err.msg, err.path, n) &&
				!strncmp(err.msg + n, ": ", 2);

		problem(p, err.path, 0, NULL, "layout",
			prefixed ? err.msg + n + 2 : err.msg);
		copy_doc(&p->ea->policy, &kind_policy, &p->eb->policy);
		p->unread = true;
		return;
	}
	for (size_t i = 0; i < p->dir.n; i++) {
		const struct folder_doc *fd = &p->dir.docs[i];
		struct resource *r;

		if (fd->kind == &kind_policy) {
			parse_folder_doc(p, fd, &p->ea->policy);
			p->policy_from_folder = true;
			continue;
		}
		r = model_add_res(&p->after, p->ea, ++id, kind_index(fd->kind),
				  fd->name);
		parse_folder_doc(p, fd, &r->spec);
	}
	if (!p->policy_from_folder)
		copy_doc(&p->ea->policy, &kind_policy, &p->eb->policy);
}

/* ---- what changes ---------------------------------------------------- */

static struct item *add_item(struct plan *p, const struct kind_def *k,
			     const char *name)
{
	struct item *it;

	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		p->items = xrealloc(p->items, p->cap * sizeof(*p->items));
	}
	it = &p->items[p->n++];
	memset(it, 0, sizeof(*it));
	it->kind = k;
	snprintf(it->name, sizeof(it->name), "%s", name);
	if (k->dir)
		snprintf(it->path, sizeof(it->path), "%s/%s/spec", k->dir,
			 name);
	else
		snprintf(it->path, sizeof(it->path), "%s", k->name);
	return it;
}

static bool same_text(const struct doc *a, const struct doc *b)
{
	return a->len == b->len && !memcmp(a->text, b->text, a->len);
}

/* The reconciler's word for a resource going from before to after. */
static const char *change_of(const struct item *it, struct buf *fields,
			     json_t *changes)
{
	bool was = it->before && it->before->text;

	if (!it->after)
		return was ? "destroy" : "remove-draft";
	if (!was)
		return "create";
	if (same_text(it->before, it->after))
		return NULL;
	if (it->after->parsed)
		spec_changes(it->before->parsed, it->after->parsed, fields,
			     changes);
	/* Comments, order, a value written as its default: a revision
	 * but nothing for the provider to do. */
	return fields->len || !it->after->parsed ? "update" : "revise";
}

/* The plan's order, as the reconciler sorts its steps: KIND_DIR/NAME. */
static int cmp_items(const void *a, const void *b)
{
	const struct item *x = a, *y = b;
	int c = strcmp(x->kind->dir, y->kind->dir);

	return c ? c : strcmp(x->name, y->name);
}

static void collect_items(struct plan *p)
{
	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < p->eb->list[k].n; i++) {
			const struct resource *r = p->eb->list[k].v[i];
			const struct resource *a = model_res(p->ea, k, r->name);
			struct item *it = add_item(p, kind_at(k), r->name);

			it->before = &r->spec;
			it->after = a ? &a->spec : NULL;
		}
		for (size_t i = 0; i < p->ea->list[k].n; i++) {
			const struct resource *a = p->ea->list[k].v[i];

			if (!model_res(p->eb, k, a->name))
				add_item(p, kind_at(k), a->name)->after =
					&a->spec;
		}
	}
	if (p->n > 1)
		qsort(p->items, p->n, sizeof(*p->items), cmp_items);
	if (p->policy_from_folder) {
		struct item *it = add_item(p, &kind_policy, "");

		it->before = &p->eb->policy;
		it->after = &p->ea->policy;
	}
}

/* ---- checks ---------------------------------------------------------- */

/* The line of the first of fields the spec sets, 0 when none. */
static unsigned field_line(const struct spec *s, const char *const *fields)
{
	for (size_t i = 0; s && fields[i]; i++) {
		const struct spec_value *v = spec_field(s, fields[i]);

		if (v && v->set)
			return v->line;
	}
	return 0;
}

/* Where in a spec a policy rule looks: the fields it counts. */
static unsigned rule_line(const struct spec *s, const char *rule)
{
	static const char *const acc[] = { "accelerator", NULL };
	static const char *const cap[] = { "capacity", NULL };
	static const char *const nodes[] = { "max_nodes", "nodes", NULL };
	static const char *const qty[] = { "max_nodes",
					   "nodes",
					   "accelerators_per_node",
					   "max_replicas",
					   "replicas",
					   "accelerators",
					   NULL };
	static const char *const none[] = { NULL };

	if (!strcmp(rule, "policy allowed_accelerators"))
		return field_line(s, acc);
	if (!strcmp(rule, "policy allowed_capacity"))
		return field_line(s, cap);
	if (!strcmp(rule, "policy max_nodes_per_pool"))
		return field_line(s, nodes);
	if (!strcmp(rule, "policy max_accelerators") ||
	    !strcmp(rule, "policy max_hourly_cost_usd"))
		return field_line(s, qty);
	return field_line(s, none);
}

/* "policy max_accelerators: 40 requested ..." -> "policy max_accelerators". */
static void rule_of(const char *msg, char *out, size_t len)
{
	snprintf(out, len, "%.*s", (int)strcspn(msg, ":"), msg);
}

/* Appends where the rule is set: " (policy line 3)". */
static void where_set(const struct plan *p, const char *rule, char *msg,
		      size_t len)
{
	const struct spec *pol = p->ea->policy.parsed;
	const char *field = strchr(rule, ' ');
	const struct spec_value *v =
		pol && field ? spec_field(pol, field + 1) : NULL;
	size_t used = strlen(msg);

	if (v && v->set && v->line && used < len)
		snprintf(msg + used, len - used, " (%s%s line %u)",
			 p->policy_from_folder ? "" : p->eb->name,
			 p->policy_from_folder ? "policy" : "/policy", v->line);
}

static void verdict(struct plan *p, struct item *it, const char *word,
		    const char *rule, const char *msg)
{
	it->verdict = word;
	json_array_append_new(
		p->verdicts,
		json_pack("{s:s, s:s, s:o, s:o}", "path", it->path, "verdict",
			  word, "rule", rule ? json_string(rule) : json_null(),
			  "message", msg ? jstr(msg) : json_null()));
}

/* The same checks, in the same order, as a commit of the resource. */
static void check_policy(struct plan *p, struct item *it)
{
	int kind = kind_index(it->kind);
	const struct spec *cur = it->before ? it->before->parsed : NULL;
	const struct spec *s = it->after->parsed;
	char msg[512], rule[64];
	int rc = policy_check(p->ea, kind, it->name, s, cur, msg, sizeof(msg));

	if (!rc)
		rc = policy_check_cost(p->ea, kind, it->name, s, cur, msg,
				       sizeof(msg));
	if (!rc) {
		verdict(p, it, "ok", NULL, NULL);
		return;
	}
	rule_of(msg, rule, sizeof(rule));
	where_set(p, rule, msg, sizeof(msg));
	verdict(p, it, "breach", rule, msg);
	problem(p, it->path, rule_line(s, rule), NULL, rule, msg);
}

/* What the environment's provider cannot run. Refusals that hang on the
 * daemon's own identity (-EPERM) are the commit's to judge, not ours. */
static void check_provider(struct plan *p, const struct item *it)
{
	const struct provider_ops *prov = env_provider(p->ea);
	struct desired want = {
		.env = p->ea->name,
		.kind = kind_index(it->kind),
		.name = it->name,
		.spec = it->after->parsed,
		.config = p->ea->config.parsed,
	};
	char msg[512] = "";
	int rc = prov && prov->check ? prov->check(&want, msg, sizeof(msg)) : 0;

	if (rc && rc != -EPERM)
		problem(p, it->path, 0, NULL, "provider", msg);
}

/* The pool an endpoint runs on must be in the folder: it declares the
 * whole environment, so a pool it lacks is one the folder removes. */
static void check_pool(struct plan *p, const struct item *it)
{
	const struct spec_value *v = spec_field(it->after->parsed, "pool");
	char msg[512];

	if (!v || !v->set || !v->text[0] ||
	    model_res(p->ea, KIND_POOL_IDX, v->text))
		return;
	if (model_res(p->eb, KIND_POOL_IDX, v->text))
		snprintf(msg, sizeof(msg),
			 "pool: no pools/%s in the folder; %s has it, and "
			 "applying the folder would destroy it under this "
			 "endpoint",
			 v->text, p->eb->name);
	else
		snprintf(msg, sizeof(msg),
			 "pool: no pools/%s in the folder or in %s", v->text,
			 p->eb->name);
	problem(p, it->path, v->line, "pool", "reference", msg);
}

static void check_secrets(struct plan *p, const struct item *it)
{
	const struct spec_value *v = spec_field(it->after->parsed, "env");
	char msg[512];

	if (!p->secrets_known && v && v->npairs) {
		json_array_append_new(
			p->notes,
			json_sprintf("%s: secret references not checked: "
				     "%s/secrets/ cannot be listed by this "
				     "user",
				     it->path, p->eb->name));
		return;
	}
	for (size_t i = 0; v && i < v->npairs; i++) {
		const char *val = v->pairs[i].value;
		char key[80];

		if (strncmp(val, "secret:", 7) ||
		    map_get(&p->eb->secrets, val + 7, strlen(val + 7)))
			continue;
		snprintf(key, sizeof(key), "env.%s", v->pairs[i].key);
		snprintf(msg, sizeof(msg),
			 "%s: no secret named \"%s\" in %s (write it to "
			 "secrets/%s first)",
			 key, val + 7, p->eb->name, val + 7);
		problem(p, it->path, v->pairs[i].line, key, "reference", msg);
	}
}

static bool protected_destroy(const struct env *e)
{
	char word[16] = "";

	if (e->policy.parsed)
		spec_text(e->policy.parsed, "protect", word, sizeof(word));
	return !strcmp(word, "destroy");
}

static void check_item(struct plan *p, struct item *it)
{
	if (!it->change || it->kind == &kind_policy)
		return;
	if (!it->after) {
		if (!strcmp(it->change, "destroy") &&
		    protected_destroy(p->ea)) {
			verdict(p, it, "approval", "policy protect", NULL);
			json_array_append_new(
				p->notes,
				json_sprintf("%s: protect = destroy: the "
					     "destroy waits for the owner's "
					     "approval (echo approve > ctl)",
					     it->path));
		}
		return;
	}
	if (!it->after->parsed)
		return; /* its own problem is reported */
	if (it->kind == &kind_endpoint) {
		check_pool(p, it);
		check_secrets(p, it);
	}
	check_policy(p, it);
	check_provider(p, it);
}

/* ---- the report ------------------------------------------------------ */

static json_t *step_json(const struct item *it, struct buf *fields,
			 json_t *changes)
{
	BUF_AUTO shown = BUF_INIT;
	BUF_AUTO line = BUF_INIT;
	char mark = !strcmp(it->change, "create")    ? '+'
		    : !strcmp(it->change, "destroy") ? '-'
						     : '~';

	/* The reconciler's plan line, to the byte. */
	text_escape(&shown, fields->data, fields->len, 0);
	buf_printf(&line, "%c %s %s/%s%s%s", mark, it->change, it->kind->dir,
		   it->name, fields->len ? ": " : "", buf_str(&shown));
	return json_pack("{s:s, s:s, s:s, s:s++, s:o, s:s}", "action",
			 it->change, "kind", it->kind->name, "name", it->name,
			 "path", it->kind->dir, "/", it->name, "changes",
			 changes, "line", buf_str(&line));
}

static json_t *diff_json(const struct item *it)
{
	char a[FOLDER_DOC_PATH_MAX + 2], b[FOLDER_DOC_PATH_MAX + 2];
	bool was = it->before && it->before->text;
	BUF_AUTO diff = BUF_INIT;

	snprintf(a, sizeof(a), "a/%s", it->path);
	snprintf(b, sizeof(b), "b/%s", it->path);
	diff_unified(was ? it->before->text : "", was ? it->before->len : 0,
		     it->after ? it->after->text : "",
		     it->after ? it->after->len : 0, was ? a : "/dev/null",
		     it->after ? b : "/dev/null", &diff);
	return jtext(buf_str(&diff), diff.len, TEXT_KEEP_NEWLINE);
}

static bool is_step(const char *change)
{
	return !strcmp(change, "create") || !strcmp(change, "update") ||
	       !strcmp(change, "destroy");
}

/* Walks the items: their changes, steps, diffs and checks. */
static void compare(struct plan *p, json_t *resources, json_t *steps,
		    json_t *counts)
{
	for (size_t i = 0; i < p->n; i++) {
		struct item *it = &p->items[i];
		BUF_AUTO fields = BUF_INIT;
		json_t *changes = json_array();
		json_t *n;

		it->change = change_of(it, &fields, changes);
		if (!it->change) {
			json_decref(changes);
			continue;
		}
		n = json_object_get(counts, it->change);
		json_object_set_new(counts, it->change,
				    json_integer(json_integer_value(n) + 1));
		json_array_append_new(
			resources,
			json_pack("{s:s, s:s, s:s, s:s, s:o}", "path", it->path,
				  "kind", it->kind->name, "name", it->name,
				  "change", it->change, "diff", diff_json(it)));
		if (it->kind != &kind_policy && is_step(it->change) &&
		    (!it->after || it->after->parsed))
			json_array_append_new(steps,
					      step_json(it, &fields, changes));
		else
			json_decref(changes);
		check_item(p, it);
	}
}

static json_t *cost_json(const struct plan *p)
{
	const struct provider_ops *prov = env_provider(p->eb);
	double before = policy_env_cost(p->eb, 0, NULL, NULL);
	double after = policy_env_cost(p->ea, 0, NULL, NULL);
	const struct spec_value *limit =
		p->ea->policy.parsed ? spec_field(p->ea->policy.parsed,
						  "max_hourly_cost_usd")
				     : NULL;

	if (!prov || before < 0 || after < 0)
		return json_null();
	return json_pack("{s:s, s:s, s:f, s:f, s:o}", "provider",
			 prov->info->name, "currency", "USD", "hourly_before",
			 before, "hourly_after", after, "hourly_limit",
			 limit && limit->set ? json_real(limit->d)
					     : json_null());
}

static json_t *policy_json(const struct plan *p)
{
	char file[PATH_MAX];

	if (p->policy_from_folder)
		snprintf(file, sizeof(file), "policy");
	else
		snprintf(file, sizeof(file), "%s/policy", p->eb->name);
	return json_pack("{s:s, s:s, s:O, s:O}", "from",
			 p->policy_from_folder ? "folder" : "environment",
			 "file", file, "verdicts", p->verdicts, "notes",
			 p->notes);
}

/* Every change word, in the order a summary names them. */
static const char *const change_words[] = { "create", "update",	      "destroy",
					    "revise", "remove-draft", NULL };

static json_t *build_report(struct plan *p)
{
	json_t *resources = json_array(), *steps = json_array();
	json_t *counts = json_object(), *root;
	bool changes, valid;

	for (size_t i = 0; change_words[i]; i++)
		json_object_set_new(counts, change_words[i], json_integer(0));
	compare(p, resources, steps, counts);
	changes = json_array_size(resources) > 0;
	valid = json_array_size(p->problems) == 0;
	root = json_pack("{s:s, s:o, s:b, s:b, s:b, s:o, s:o, s:o, s:o, s:o, "
			 "s:O}",
			 "environment", p->eb->name, "against", jstr(p->folder),
			 "compared", !p->unread, "changes", changes, "valid",
			 valid, "counts", counts, "resources", resources,
			 "steps", steps, "cost", cost_json(p), "policy",
			 policy_json(p), "problems", p->problems);
	return root;
}

/* ---- text ------------------------------------------------------------ */

static const char *jget(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static void counts_text(const json_t *r, struct buf *out)
{
	const json_t *counts = json_object_get(r, "counts");

	if (!json_is_true(json_object_get(r, "compared"))) {
		buf_adds(out, "not compared: the folder does not fit the "
			      "layout");
		return;
	}
	for (size_t i = 0; change_words[i]; i++) {
		json_int_t n = json_integer_value(
			json_object_get(counts, change_words[i]));

		if (n)
			buf_printf(out, "%s%" JSON_INTEGER_FORMAT " to %s",
				   out->len ? ", " : "", n, change_words[i]);
	}
	if (!out->len)
		buf_adds(out, "no changes");
}

static void cost_text(const json_t *cost, struct buf *out)
{
	const json_t *limit = json_object_get(cost, "hourly_limit");

	if (!json_is_object(cost)) {
		buf_adds(out, "not estimated");
		return;
	}
	buf_printf(out, "%.2f -> %.2f USD an hour (provider %s",
		   json_real_value(json_object_get(cost, "hourly_before")),
		   json_real_value(json_object_get(cost, "hourly_after")),
		   jget(cost, "provider"));
	if (json_is_real(limit))
		buf_printf(out, ", limit %.2f", json_real_value(limit));
	buf_addc(out, ')');
}

static size_t breaches(const json_t *policy)
{
	const json_t *v;
	size_t i, n = 0;

	json_array_foreach(json_object_get(policy, "verdicts"), i, v) n +=
		!strcmp(jget(v, "verdict"), "breach");
	return n;
}

static void policy_text(const json_t *policy, struct buf *out)
{
	size_t n = breaches(policy);

	if (n)
		buf_printf(out, "%zu breach%s", n, n == 1 ? "" : "es");
	else
		buf_adds(out, "ok");
	buf_printf(out, " (%s, from the %s)", jget(policy, "file"),
		   jget(policy, "from"));
}

static void problem_line(const char *folder, const json_t *pr, struct buf *out)
{
	json_int_t line = json_integer_value(json_object_get(pr, "line"));

	buf_printf(out, "%s/%s", folder, jget(pr, "file"));
	if (line)
		buf_printf(out, ":%" JSON_INTEGER_FORMAT, line);
	buf_printf(out, ": %s [%s]\n", jget(pr, "message"), jget(pr, "rule"));
}

static void render_text(const json_t *r, struct buf *out)
{
	const json_t *v, *policy = json_object_get(r, "policy");
	BUF_AUTO line = BUF_INIT;
	size_t i;

	buf_printf(out, "plan for %s against %s\n", jget(r, "environment"),
		   jget(r, "against"));
	json_array_foreach(json_object_get(r, "resources"), i, v)
		buf_printf(out, "\n%s", jget(v, "diff"));
	if (json_array_size(json_object_get(r, "steps")))
		buf_adds(out, "\nsteps:\n");
	json_array_foreach(json_object_get(r, "steps"), i, v)
		buf_printf(out, "%s\n", jget(v, "line"));
	counts_text(r, &line);
	buf_printf(out, "\nchanges: %s\n", buf_str(&line));
	buf_truncate(&line, 0);
	cost_text(json_object_get(r, "cost"), &line);
	buf_printf(out, "cost: %s\n", buf_str(&line));
	buf_truncate(&line, 0);
	policy_text(policy, &line);
	buf_printf(out, "policy: %s\n", buf_str(&line));
	json_array_foreach(json_object_get(policy, "notes"), i, v)
		buf_printf(out, "note: %s\n", json_string_value(v));
	if (json_array_size(json_object_get(r, "problems")))
		buf_adds(out, "\nproblems:\n");
	json_array_foreach(json_object_get(r, "problems"), i, v)
		problem_line(jget(r, "against"), v, out);
}

/* ---- markdown ------------------------------------------------------- */

/* Text in a table cell or a paragraph: ASCII punctuation escaped, so a
 * value cannot open a link, an image, HTML or another cell. */
static void md_text(struct buf *out, const char *s)
{
	for (; *s; s++) {
		if (strchr("\\`*_[]<>|&~", *s))
			buf_addc(out, '\\');
		buf_addc(out, *s);
	}
}

/* A fence longer than any run of backticks in text. */
static void md_fence(struct buf *out, const char *text)
{
	size_t run = 0, longest = 2;

	for (const char *s = text; *s; s++) {
		run = *s == '`' ? run + 1 : 0;
		if (run > longest)
			longest = run;
	}
	for (size_t i = 0; i <= longest; i++)
		buf_addc(out, '`');
}

void plan_md_code(struct buf *out, const char *lang, const char *text)
{
	md_fence(out, text);
	buf_printf(out, "%s\n%s", lang, text);
	if (text[0] && text[strlen(text) - 1] != '\n')
		buf_addc(out, '\n');
	md_fence(out, text);
	buf_addc(out, '\n');
}

static void md_steps(const json_t *r, struct buf *out)
{
	const json_t *v, *c;
	size_t i, j;

	if (!json_array_size(json_object_get(r, "steps")))
		return;
	buf_adds(out, "\n| step | resource | changes |\n|---|---|---|\n");
	json_array_foreach(json_object_get(r, "steps"), i, v)
	{
		buf_printf(out, "| %s | `%s` | ", jget(v, "action"),
			   jget(v, "path"));
		json_array_foreach(json_object_get(v, "changes"), j, c)
		{
			BUF_AUTO one = BUF_INIT;

			buf_printf(&one, "%s: %s -> %s", jget(c, "field"),
				   jget(c, "from")[0] ? jget(c, "from")
						      : "(unset)",
				   jget(c, "to")[0] ? jget(c, "to")
						    : "(unset)");
			if (j)
				buf_adds(out, "<br>");
			md_text(out, buf_str(&one));
		}
		buf_adds(out, " |\n");
	}
}

static void md_diffs(const json_t *r, struct buf *out)
{
	const json_t *v;
	size_t i;

	json_array_foreach(json_object_get(r, "resources"), i, v)
	{
		buf_printf(out,
			   "\n<details><summary><code>%s</code>: %s"
			   "</summary>\n\n",
			   jget(v, "path"), jget(v, "change"));
		plan_md_code(out, "diff", jget(v, "diff"));
		buf_adds(out, "\n</details>\n");
	}
}

static void md_problems(const json_t *r, struct buf *out)
{
	const json_t *v;
	size_t i;

	if (!json_array_size(json_object_get(r, "problems")))
		return;
	buf_adds(out, "\n#### Problems\n\n");
	json_array_foreach(json_object_get(r, "problems"), i, v)
	{
		json_int_t line =
			json_integer_value(json_object_get(v, "line"));

		buf_printf(out, "- `%s", jget(v, "file"));
		if (line)
			buf_printf(out, ":%" JSON_INTEGER_FORMAT, line);
		buf_printf(out, "` **%s**: ", jget(v, "rule"));
		md_text(out, jget(v, "message"));
		buf_addc(out, '\n');
	}
}

static void render_markdown(const json_t *r, struct buf *out)
{
	const json_t *v, *policy = json_object_get(r, "policy");
	BUF_AUTO line = BUF_INIT;
	size_t i;

	buf_printf(out, "### infrafs plan for `%s`\n\nAgainst ",
		   jget(r, "environment"));
	md_text(out, jget(r, "against"));
	buf_printf(out, ": **%s**\n\n",
		   json_is_true(json_object_get(r, "valid"))
			   ? "checks"
			   : "does not check");
	counts_text(r, &line);
	buf_adds(out, "- changes: ");
	md_text(out, buf_str(&line));
	buf_truncate(&line, 0);
	cost_text(json_object_get(r, "cost"), &line);
	buf_adds(out, "\n- hourly cost: ");
	md_text(out, buf_str(&line));
	buf_truncate(&line, 0);
	policy_text(policy, &line);
	buf_adds(out, "\n- policy: ");
	md_text(out, buf_str(&line));
	buf_addc(out, '\n');
	json_array_foreach(json_object_get(policy, "notes"), i, v)
	{
		buf_adds(out, "- note: ");
		md_text(out, json_string_value(v));
		buf_addc(out, '\n');
	}
	md_steps(r, out);
	md_problems(r, out);
	md_diffs(r, out);
}

/* ---- the whole run --------------------------------------------------- */

static int print_report(const json_t *report, enum plan_format format)
{
	BUF_AUTO out = BUF_INIT;

	if (format == FORMAT_JSON) {
		char *s = json_dumps(report,
				     JSON_INDENT(2) | JSON_PRESERVE_ORDER);

		buf_adds(&out, s ? s : "{}");
		buf_addc(&out, '\n');
		free(s);
	} else if (format == FORMAT_MARKDOWN) {
		render_markdown(report, &out);
	} else {
		render_text(report, &out);
	}
	if ((out.len && fwrite(out.data, 1, out.len, stdout) != out.len) ||
	    fflush(stdout) != 0)
		return plan_error("writing the plan: %s", strerror(errno));
	return 0;
}

/*
 * The text report lists the problems itself; JSON and markdown are for
 * programs and comments, so the problems go to standard error as well,
 * one per line as a compiler's do, for the CI log.
 */
static void tell_problems(const struct plan *p, enum plan_format format)
{
	const json_t *v;
	size_t i, n = json_array_size(p->problems);

	if (format == FORMAT_TEXT) {
		fprintf(stderr,
			"infrafs-plan: %s does not check: %zu "
			"problem%s\n",
			p->folder, n, n == 1 ? "" : "s");
		return;
	}
	json_array_foreach(p->problems, i, v)
	{
		BUF_AUTO line = BUF_INIT;

		problem_line(p->folder, v, &line);
		fprintf(stderr, "infrafs-plan: %s", buf_str(&line));
	}
}

static void plan_free(struct plan *p)
{
	model_destroy(&p->before);
	model_destroy(&p->after);
	folder_free(&p->dir);
	free(p->items);
	json_decref(p->problems);
	json_decref(p->verdicts);
	json_decref(p->notes);
}

int plan_against(const char *env_dir, const char *folder,
		 enum plan_format format)
{
	struct plan p = { .env_dir = env_dir, .folder = folder };
	json_t *report = NULL;
	int rc;

	model_init(&p.before);
	model_init(&p.after);
	p.problems = json_array();
	p.verdicts = json_array();
	p.notes = json_array();
	rc = read_env(&p);
	if (!rc) {
		read_folder(&p);
		if (!p.unread)
			collect_items(&p);
		report = build_report(&p);
		rc = print_report(report, format);
	}
	if (!rc && json_array_size(p.problems)) {
		tell_problems(&p, format);
		rc = EXIT_ERROR;
	} else if (!rc) {
		rc = json_is_true(json_object_get(report, "changes"))
			     ? EXIT_CHANGES
			     : EXIT_NO_CHANGES;
	}
	json_decref(report);
	plan_free(&p);
	return rc;
}
