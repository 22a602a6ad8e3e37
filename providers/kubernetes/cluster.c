// SPDX-License-Identifier: MIT
/*
 * The writes every step makes, and reading what the watch keeps. Every
 * write is one of two: a server-side apply as field manager infrafs
 * (idempotent: applying twice changes nothing, so a step repeated after
 * a crash is harmless), or a delete with foreground propagation (the
 * object shows deleting until its pods are gone). Neither touches an
 * object of that name that infrafs did not make.
 */
#include "kube.h"

#include "store/policy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *kube_config_value(const struct spec *config, const char *key,
			      const char *dflt)
{
	const char *v = config ? spec_map_get(config, "kubernetes", key) : NULL;

	return v && v[0] ? v : dflt;
}

bool kube_force(const struct desired *want)
{
	return strcmp(spec_str(want->config, "drift", "heal"), "report") != 0;
}

const char *kube_meta(json_t *obj, const char *key)
{
	return json_string_value(
		json_object_get(json_object_get(obj, "metadata"), key));
}

const char *kube_meta_in(json_t *obj, const char *section, const char *key)
{
	return json_string_value(json_object_get(
		json_object_get(json_object_get(obj, "metadata"), section),
		key));
}

uint64_t kube_revision(json_t *obj)
{
	const char *v = kube_meta_in(obj, "annotations", KUBE_ANN_REVISION);

	return v ? strtoull(v, NULL, 10) : 0;
}

int64_t kube_status_int(json_t *obj, const char *key)
{
	return json_integer_value(
		json_object_get(json_object_get(obj, "status"), key));
}

json_t *kube_condition(json_t *obj, const char *type)
{
	json_t *conds =
		json_object_get(json_object_get(obj, "status"), "conditions");
	json_t *c;
	size_t i;

	json_array_foreach(conds, i, c)
	{
		const char *t = json_string_value(json_object_get(c, "type"));

		if (t && !strcmp(t, type))
			return c;
	}
	return NULL;
}

bool kube_known(struct kenv *e, enum kube_kind kind, const char *name)
{
	json_t *obj = kube_watch_get(e->watch, kind, name);
	bool ours = obj && kube_ours(obj, e->env);

	json_decref(obj);
	return ours;
}

/* How long steps fail at once after a request got no answer. */
#define UNREACHABLE_S 10.0

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int kube_step_call(struct kenv *e, const char *method, const char *path,
		   const char *content_type, const char *body,
		   struct kube_reply *r)
{
	double now = mono_now();
	int rc;

	if (now < e->unreachable_until) {
		snprintf(r->error, sizeof(r->error), "%s", e->unreachable);
		return -EHOSTUNREACH;
	}
	rc = kube_call(e->api, &e->handle, method, path, content_type, body,
		       KUBE_STEP_BUDGET_S, r);
	if (rc < 0 && rc != -ENOMEM) {
		e->unreachable_until = mono_now() + UNREACHABLE_S;
		snprintf(e->unreachable, sizeof(e->unreachable), "%s",
			 r->error);
	}
	return rc;
}

static void object_path(struct kenv *e, enum kube_kind kind, const char *name,
			char *out, size_t len)
{
	char base[256];

	kube_kind_path(kind, e->ns, base, sizeof(base));
	snprintf(out, len, "%s/%s", base, name);
}

static void say_foreign(struct kenv *e, enum kube_kind kind, const char *name,
			struct observation *o)
{
	bool cluster = kube_kind_cluster_scoped(kind);

	snprintf(o->error, sizeof(o->error),
		 "Kubernetes: %s %s%s%s exists and was not made by infrafs "
		 "for this environment (no %s=%s and %s=%s labels); "
		 "infrafs leaves it alone",
		 kube_kind_name(kind), cluster ? "" : e->ns, cluster ? "" : "/",
		 name, KUBE_LABEL_MANAGED, KUBE_MANAGER, KUBE_LABEL_ENV,
		 e->env);
}

/*
 * Whether the object at path may be written by infrafs: it is absent
 * (1), or it carries infrafs's label (0). One GET, since the watch sees
 * only objects that carry the label.
 */
static int check_owner(struct kenv *e, const char *path, enum kube_kind kind,
		       const char *name, struct observation *o)
{
	struct kube_reply r = { 0 };
	json_t *doc;
	int rc = kube_step_call(e, "GET", path, NULL, NULL, &r);

	if (rc == 0 && r.code == 404) {
		kube_reply_free(&r);
		return 1;
	}
	if (rc < 0 || r.code != 200) {
		snprintf(o->error, sizeof(o->error), "%s", r.error);
		kube_reply_free(&r);
		return -EIO;
	}
	doc = json_loadb(r.body.data, r.body.len, 0, NULL);
	kube_reply_free(&r);
	rc = kube_ours(doc, e->env) ? 0 : -EEXIST;
	json_decref(doc);
	if (rc < 0)
		say_foreign(e, kind, name, o);
	return rc;
}

static int answered(int rc, struct kube_reply *r, bool gone_is_fine,
		    struct observation *o)
{
	if (rc == 0 && !(gone_is_fine && r->code == 404) &&
	    (r->code < 200 || r->code >= 300))
		rc = -EIO;
	if (rc < 0)
		snprintf(o->error, sizeof(o->error), "%s", r->error);
	kube_reply_free(r);
	return rc;
}

#define DELETE_PATIENCE_S 60.0

/* "KIND/NAME": how deletes_sent and applied name an object. */
static void object_key(enum kube_kind kind, const char *name, char *out,
		       size_t len)
{
	snprintf(out, len, "%s/%s", kube_kind_name(kind), name);
}

bool kube_delete_sent(struct kenv *e, enum kube_kind kind, const char *name)
{
	char key[160];
	json_t *at;

	object_key(kind, name, key, sizeof(key));
	at = json_object_get(e->deletes_sent, key);
	if (at && mono_now() - json_real_value(at) < DELETE_PATIENCE_S)
		return true;
	json_object_del(e->deletes_sent, key);
	return false;
}

static void note_delete_sent(struct kenv *e, enum kube_kind kind,
			     const char *name)
{
	char key[160];

	if (!e->deletes_sent)
		e->deletes_sent = json_object();
	object_key(kind, name, key, sizeof(key));
	json_object_set_new(e->deletes_sent, key, json_real(mono_now()));
	/* Going: what the last apply answered stands for it no more. */
	json_object_del(e->applied, key);
}

/*
 * Read-your-writes: an apply's answer stands for the object while the
 * watch still shows it as it was before the apply (absent, or at the
 * resourceVersion it had then), for at most APPLY_PATIENCE_S. An
 * object's events come in order, so the first that arrives after the
 * apply is the apply's own or a later one; resourceVersions are only
 * ever compared for equality, as the API asks.
 */
#define APPLY_PATIENCE_S 10.0

static void note_applied(struct kenv *e, enum kube_kind kind, const char *name,
			 const char *before, const struct buf *answer)
{
	char key[160];
	json_t *obj;

	/* A Secret's answer holds its values; and it is not watched. */
	if (kind >= KK_WATCHED)
		return;
	obj = json_loadb(answer->data, answer->len, 0, NULL);
	if (!obj)
		return;
	if (!e->applied)
		e->applied = json_object();
	object_key(kind, name, key, sizeof(key));
	json_object_set_new(e->applied, key,
			    json_pack("{s:o, s:s, s:f}", "obj", obj, "before",
				      before, "at", mono_now()));
}

json_t *kube_get(struct kenv *e, enum kube_kind kind, const char *name)
{
	json_t *seen = kube_watch_get(e->watch, kind, name);
	const char *seen_rv = seen ? kube_meta(seen, "resourceVersion") : "";
	const char *before;
	json_t *mine;
	char key[160];

	object_key(kind, name, key, sizeof(key));
	mine = json_object_get(e->applied, key);
	if (!mine)
		return seen;
	before = json_string_value(json_object_get(mine, "before"));
	if (!before || strcmp(before, seen_rv ? seen_rv : "") ||
	    mono_now() - json_real_value(json_object_get(mine, "at")) >=
		    APPLY_PATIENCE_S) {
		json_object_del(e->applied, key);
		return seen;
	}
	json_decref(seen);
	return json_deep_copy(json_object_get(mine, "obj"));
}

int kube_apply(struct kenv *e, enum kube_kind kind, const char *name,
	       const char *body, bool force, bool known, struct observation *o)
{
	char path[512], query[640];
	struct kube_reply r = { 0 };
	char before[64];
	int rc;

	object_path(e, kind, name, path, sizeof(path));
	if (!known) {
		rc = check_owner(e, path, kind, name, o);
		if (rc < 0)
			return rc;
	}
	kube_watch_version(e->watch, kind, name, before, sizeof(before));
	snprintf(query, sizeof(query),
		 "%s?fieldManager=%s&fieldValidation=Strict%s", path,
		 KUBE_MANAGER, force ? "&force=true" : "");
	rc = kube_step_call(e, "PATCH", query, "application/apply-patch+yaml",
			    body, &r);
	if (rc == 0 && r.code >= 200 && r.code < 300)
		note_applied(e, kind, name, before, &r.body);
	rc = answered(rc, &r, false, o);
	if (rc == 0 && e->deletes_sent) {
		char key[160];

		/* Made again: a later rmdir must ask again. */
		object_key(kind, name, key, sizeof(key));
		json_object_del(e->deletes_sent, key);
	}
	return rc;
}

int kube_apply_json(struct kenv *e, enum kube_kind kind, const char *name,
		    json_t *obj, bool force, bool known, struct observation *o)
{
	char *body = json_dumps(obj, JSON_COMPACT);
	int rc = kube_apply(e, kind, name, body, force, known, o);

	free(body);
	return rc;
}

int kube_delete(struct kenv *e, enum kube_kind kind, const char *name,
		bool known, struct observation *o)
{
	static const char options[] =
		"{\"kind\":\"DeleteOptions\",\"apiVersion\":\"v1\","
		"\"propagationPolicy\":\"Foreground\"}";
	struct kube_reply r = { 0 };
	char path[512];
	int rc;

	object_path(e, kind, name, path, sizeof(path));
	if (!known) {
		rc = check_owner(e, path, kind, name, o);
		if (rc == -EEXIST) {
			o->error[0] = '\0';
			return 0; /* not ours: never deleted */
		}
		if (rc != 0)
			return rc < 0 ? rc : 0; /* or gone already */
	}
	rc = kube_step_call(e, "DELETE", path, "application/json", options, &r);
	rc = answered(rc, &r, true, o);
	if (rc == 0)
		note_delete_sent(e, kind, name);
	return rc;
}

int kube_ensure_namespace(struct kenv *e, struct observation *o)
{
	struct kube_reply r = { 0 };
	char path[256], body[512];
	int rc;

	if (e->ns_ready)
		return 0;
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s", e->ns);
	rc = kube_step_call(e, "GET", path, NULL, NULL, &r);
	if (rc == 0 && r.code == 404) {
		snprintf(body, sizeof(body),
			 "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\","
			 "\"metadata\":{\"name\":\"%s\",\"labels\":"
			 "{\"%s\":\"%s\",\"%s\":\"%s\"}}}",
			 e->ns, KUBE_LABEL_MANAGED, KUBE_MANAGER,
			 KUBE_LABEL_ENV, e->env);
		snprintf(path, sizeof(path),
			 "/api/v1/namespaces/%s?fieldManager=%s", e->ns,
			 KUBE_MANAGER);
		rc = kube_step_call(e, "PATCH", path,
				    "application/apply-patch+yaml", body, &r);
	}
	rc = answered(rc, &r, false, o);
	e->ns_ready = rc == 0;
	/* The watches that found no namespace list again now. */
	if (rc == 0 && e->watch)
		kube_watch_relist(e->watch);
	return rc;
}
