// SPDX-License-Identifier: MIT
/*
 * List+watch, as client-go's reflector does it: list (in pages) and keep
 * the list's resourceVersion, watch from it with bookmarks so that a
 * quiet kind still moves its resourceVersion forward, end each watch
 * after a random 5 to 10 minutes (so that many daemons do not reconnect
 * at once), list again only when the server says the resourceVersion is
 * too old (410 Gone), and wait a jittered, doubling time after failures.
 */
#include "watch.h"
#include "objects.h"

#include "util/log.h"
#include "util/map.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define LIST_PAGE 500
#define LIST_BUDGET_S 30.0
#define BACKOFF_BASE_S 0.5
#define BACKOFF_CAP_S 30.0
/* How often a kind the server does not serve is asked for again, so
 * that installing Karpenter needs no restart. */
#define ABSENT_RETRY_S 30.0
/* The environment's namespace is made by the first step. */
#define NO_NAMESPACE_RETRY_S 1.0

struct cached {
	char *name;
	json_t *obj;
};

struct kind_watch {
	struct kube_watch *w;
	enum kube_kind kind;
	pthread_t thread;
	bool started;
	/* Below: guarded by the watch's lock. */
	struct map objects; /* name -> struct cached */
	bool synced;
	bool absent; /* the server answered 404: not installed */
	char error[512];
	/* The watch thread's own. */
	char rv[64];
	bool expired; /* the server said rv is too old */
	atomic_bool relist; /* `refresh`: list again */
};

struct kube_watch {
	struct kube_api *api;
	char ns[64];
	char selector[512]; /* escaped for a query */
	char node_selector[64];
	char gpu_node_selector[96];
	void (*changed)(void *ctx, enum kube_kind k, json_t *obj);
	void *ctx;
	atomic_bool stop;
	/*
	 * Guards every kind's objects, synced and error. Held only to read
	 * or swap them, never across a request, so observe() never waits
	 * on the network.
	 */
	pthread_mutex_t lock;
	struct kind_watch kinds[KK_WATCHED];
};

enum selection {
	SEL_OURS, /* the environment's own labels */
	SEL_POOL_NODES, /* nodes that carry infrafs.dev/pool */
	SEL_GPU_NODES, /* nodes with a GPU product label and no pool */
};

static const struct {
	const char *name, *group_version, *plural;
	bool cluster; /* cluster-scoped: no namespace in the path */
	enum selection selection;
	bool optional; /* a custom resource, maybe not installed */
} kinds[] = {
	[KK_DEPLOYMENT] = { .name = "deployment",
			    .group_version = "apis/apps/v1",
			    .plural = "deployments" },
	[KK_SERVICE] = { .name = "service",
			 .group_version = "api/v1",
			 .plural = "services" },
	[KK_HPA] = { .name = "horizontalpodautoscaler",
		     .group_version = "apis/autoscaling/v2",
		     .plural = "horizontalpodautoscalers" },
	[KK_POD] = { .name = "pod",
		     .group_version = "api/v1",
		     .plural = "pods" },
	[KK_QUOTA] = { .name = "resourcequota",
		       .group_version = "api/v1",
		       .plural = "resourcequotas" },
	[KK_NODE] = { .name = "node",
		      .group_version = "api/v1",
		      .plural = "nodes",
		      .cluster = true,
		      .selection = SEL_POOL_NODES },
	[KK_GPU_NODE] = { .name = "node",
			  .group_version = "api/v1",
			  .plural = "nodes",
			  .cluster = true,
			  .selection = SEL_GPU_NODES },
	[KK_NODEPOOL] = { .name = "nodepool",
			  .group_version = "apis/karpenter.sh/v1",
			  .plural = "nodepools",
			  .cluster = true,
			  .selection = SEL_OURS,
			  .optional = true },
	[KK_ISVC] = { .name = "inferenceservice",
		      .group_version = "apis/serving.kserve.io/v1beta1",
		      .plural = "inferenceservices",
		      .selection = SEL_OURS,
		      .optional = true },
	[KK_SECRET] = { .name = "secret",
			.group_version = "api/v1",
			.plural = "secrets" },
	[KK_NAMESPACE] = { .name = "namespace",
			   .group_version = "api/v1",
			   .plural = "namespaces",
			   .cluster = true },
};

void kube_kind_path(enum kube_kind k, const char *ns, char *out, size_t len)
{
	if (kinds[k].cluster)
		snprintf(out, len, "/%s/%s", kinds[k].group_version,
			 kinds[k].plural);
	else
		snprintf(out, len, "/%s/namespaces/%s/%s",
			 kinds[k].group_version, ns, kinds[k].plural);
}

const char *kube_kind_name(enum kube_kind k)
{
	return kinds[k].name;
}

bool kube_kind_cluster_scoped(enum kube_kind k)
{
	return kinds[k].cluster;
}

static void cached_free(struct cached *c)
{
	json_decref(c->obj);
	free(c->name);
	free(c);
}

static void objects_free(struct map *m)
{
	void *v;

	for (size_t i = 0; map_next(m, &i, &v);)
		cached_free(v);
	map_free(m);
}

static const char *name_of(json_t *obj)
{
	return json_string_value(
		json_object_get(json_object_get(obj, "metadata"), "name"));
}

static const char *rv_of(json_t *obj)
{
	return json_string_value(json_object_get(
		json_object_get(obj, "metadata"), "resourceVersion"));
}

/*
 * Drops what no observation reads, before an object is kept: the field
 * managers of pods and nodes (drift is named by manager only on objects
 * infrafs applies), kubectl's client-side copy of a whole object, and a
 * node's list of cached images, often most of a real node's bytes.
 */
static void trim(enum kube_kind k, json_t *obj)
{
	json_t *meta = json_object_get(obj, "metadata");

	json_object_del(json_object_get(meta, "annotations"),
			"kubectl.kubernetes.io/last-applied-configuration");
	if (k == KK_POD || k == KK_NODE || k == KK_GPU_NODE)
		json_object_del(meta, "managedFields");
	if (k == KK_NODE || k == KK_GPU_NODE)
		json_object_del(json_object_get(obj, "status"), "images");
}

/* Puts obj (a reference taken over) as its name, replacing any before. */
static void objects_put(struct map *m, json_t *obj)
{
	const char *name = name_of(obj);
	struct cached *c, *old;

	if (!name) {
		json_decref(obj);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->name = xstrdup(name);
	c->obj = obj;
	old = map_put(m, c->name, strlen(c->name), c);
	if (old)
		cached_free(old);
}

static void objects_del(struct map *m, const char *name)
{
	struct cached *c = name ? map_del(m, name, strlen(name)) : NULL;

	if (c)
		cached_free(c);
}

static void set_error(struct kind_watch *kw, const char *text)
{
	struct kube_watch *w = kw->w;
	bool news;

	pthread_mutex_lock(&w->lock);
	news = strcmp(kw->error, text) != 0;
	snprintf(kw->error, sizeof(kw->error), "%s", text);
	pthread_mutex_unlock(&w->lock);
	if (news) {
		if (text[0])
			log_msg(LOG_LVL_WARN, "kubernetes: watch %s in %s: %s",
				kinds[kw->kind].plural, w->ns, text);
		w->changed(w->ctx, kw->kind, NULL);
	}
}

static bool stopping(const struct kube_watch *w)
{
	return atomic_load(&w->stop);
}

/* Sleeps s seconds, waking early when the watch stops. */
static void pause_s(const struct kube_watch *w, double s)
{
	struct timespec step = { 0, 100 * 1000 * 1000 };

	for (double slept = 0; slept < s && !stopping(w); slept += 0.1)
		nanosleep(&step, NULL);
}

/* The same, waking early for a relist too. */
static void pause_kind(struct kind_watch *kw, double s)
{
	struct timespec step = { 0, 100 * 1000 * 1000 };

	for (double slept = 0;
	     slept < s && !stopping(kw->w) && !atomic_load(&kw->relist);
	     slept += 0.1)
		nanosleep(&step, NULL);
	atomic_store(&kw->relist, false);
}

static double random_unit(void)
{
	uint32_t x = 0;

	if (getrandom(&x, sizeof(x), 0) != sizeof(x))
		x = (uint32_t)rand();
	return (double)x / 4294967296.0;
}

static void back_off(const struct kube_watch *w, int attempt)
{
	double cap = fmin(BACKOFF_CAP_S, BACKOFF_BASE_S * pow(2, attempt));

	pause_s(w, cap / 2 + random_unit() * cap / 2);
}

static const char *selector_of(const struct kind_watch *kw)
{
	switch (kinds[kw->kind].selection) {
	case SEL_POOL_NODES:
		return kw->w->node_selector;
	case SEL_GPU_NODES:
		return kw->w->gpu_node_selector;
	case SEL_OURS:
		break;
	}
	return kw->w->selector;
}

/* One page of a list into objects; the continue token into cont. */
static int list_page(struct kind_watch *kw, struct kube_handle *h,
		     struct map *objects, char *cont, size_t contlen)
{
	struct kube_watch *w = kw->w;
	struct kube_reply r = { 0 };
	char path[2048], base[256];
	json_t *doc, *items, *item;
	size_t i;
	int rc;

	kube_kind_path(kw->kind, w->ns, base, sizeof(base));
	snprintf(path, sizeof(path), "%s?labelSelector=%s&limit=%d%s%s", base,
		 selector_of(kw), LIST_PAGE, cont[0] ? "&continue=" : "", cont);
	rc = kube_call(w->api, h, "GET", path, NULL, NULL, LIST_BUDGET_S, &r);
	if (rc == 0 && r.code == 404 && !cont[0]) {
		/* A custom resource that is not installed, or (from servers
		 * that answer so) a namespace not made yet: nothing there. */
		kube_reply_free(&r);
		return -ENOENT;
	}
	if (rc == 0 && r.code != 200)
		rc = -EIO;
	if (rc < 0) {
		set_error(kw, r.error);
		kube_reply_free(&r);
		return rc;
	}
	doc = json_loadb(r.body.data, r.body.len, 0, NULL);
	kube_reply_free(&r);
	items = json_object_get(doc, "items");
	if (!json_is_array(items)) {
		set_error(kw, "Kubernetes: a list answer without items");
		json_decref(doc);
		return -EIO;
	}
	json_array_foreach(items, i, item)
	{
		trim(kw->kind, item);
		objects_put(objects, json_incref(item));
	}
	snprintf(kw->rv, sizeof(kw->rv), "%s",
		 json_string_value(json_object_get(
			 json_object_get(doc, "metadata"), "resourceVersion"))
			 ?: "");
	snprintf(cont, contlen, "%s",
		 json_string_value(json_object_get(
			 json_object_get(doc, "metadata"), "continue"))
			 ?: "");
	json_decref(doc);
	return 0;
}

/* Lists every page, then takes the result whole. */
static int list(struct kind_watch *kw, struct kube_handle *h)
{
	struct kube_watch *w = kw->w;
	struct map objects = { 0 }, old;
	char cont[1024] = "";
	int rc;

	do {
		rc = list_page(kw, h, &objects, cont, sizeof(cont));
	} while (rc == 0 && cont[0] && !stopping(w));
	if (rc < 0 && rc != -ENOENT) {
		objects_free(&objects);
		return rc;
	}
	pthread_mutex_lock(&w->lock);
	old = kw->objects;
	kw->objects = objects;
	kw->synced = true;
	kw->absent = rc == -ENOENT;
	kw->error[0] = '\0';
	pthread_mutex_unlock(&w->lock);
	objects_free(&old);
	kw->expired = false;
	w->changed(w->ctx, kw->kind, NULL);
	return rc;
}

static int take_event(struct kind_watch *kw, const char *type, json_t *obj)
{
	struct kube_watch *w = kw->w;
	const char *rv = rv_of(obj);

	if (!strcmp(type, "ERROR")) {
		char text[512];
		long code =
			(long)json_integer_value(json_object_get(obj, "code"));
		char *body = json_dumps(obj, JSON_COMPACT);

		if (code == 410) {
			kw->expired = true;
		} else {
			kube_status_text(code, body, body ? strlen(body) : 0,
					 text, sizeof(text));
			set_error(kw, text);
		}
		free(body);
		return 1;
	}
	if (rv)
		snprintf(kw->rv, sizeof(kw->rv), "%s", rv);
	if (!strcmp(type, "BOOKMARK"))
		return 0;
	if (strcmp(type, "DELETED"))
		trim(kw->kind, obj);
	pthread_mutex_lock(&w->lock);
	if (!strcmp(type, "DELETED"))
		objects_del(&kw->objects, name_of(obj));
	else
		objects_put(&kw->objects, json_incref(obj));
	pthread_mutex_unlock(&w->lock);
	w->changed(w->ctx, kw->kind, obj);
	return 0;
}

static int on_line(void *ctx, const char *line, size_t len)
{
	struct kind_watch *kw = ctx;
	json_t *ev = json_loadb(line, len, 0, NULL);
	const char *type = json_string_value(json_object_get(ev, "type"));
	json_t *obj = json_object_get(ev, "object");
	int rc = 0;

	if (type && json_is_object(obj))
		rc = take_event(kw, type, obj);
	json_decref(ev);
	return rc || atomic_load(&kw->relist);
}

/* One watch from kw->rv, until the server ends it. */
static int watch_once(struct kind_watch *kw, struct kube_handle *h)
{
	struct kube_watch *w = kw->w;
	struct kube_reply r = { 0 };
	char path[2048], base[256];
	int timeout = 300 + (int)(random_unit() * 300);
	int rc;

	kube_kind_path(kw->kind, w->ns, base, sizeof(base));
	snprintf(path, sizeof(path),
		 "%s?watch=1&allowWatchBookmarks=true&resourceVersion=%s"
		 "&labelSelector=%s&timeoutSeconds=%d",
		 base, kw->rv, selector_of(kw), timeout);
	rc = kube_stream(w->api, h, path, on_line, kw, &w->stop, &r);
	if (rc == 0 && r.code == 410)
		kw->expired = true;
	else if (rc == 0 && r.code != 200)
		rc = -EIO;
	if (rc < 0)
		set_error(kw, r.error);
	kube_reply_free(&r);
	return rc;
}

static void *watch_main(void *arg)
{
	struct kind_watch *kw = arg;
	struct kube_watch *w = kw->w;
	struct kube_handle h = { 0 };
	int failures = 0;

	while (!stopping(w)) {
		int rc = list(kw, &h);

		if (rc == -ENOENT) {
			pause_kind(kw, kinds[kw->kind].optional
					       ? ABSENT_RETRY_S
					       : NO_NAMESPACE_RETRY_S);
			continue;
		}
		if (rc < 0) {
			back_off(w, failures++);
			continue;
		}
		failures = 0;
		while (!stopping(w) && !kw->expired &&
		       !atomic_load(&kw->relist)) {
			if (watch_once(kw, &h) < 0)
				back_off(w, failures++);
			else
				failures = 0;
		}
		atomic_store(&kw->relist, false);
	}
	kube_handle_close(&h);
	return NULL;
}

/* "a=b,c=d" as a query value. */
static void escape_selector(const char *sel, char *out, size_t len)
{
	size_t o = 0;

	for (; *sel && o + 4 < len; sel++) {
		if (*sel == '=' || *sel == ',' || *sel == '/' || *sel == '!') {
			o += (size_t)snprintf(out + o, len - o, "%%%02X",
					      (unsigned char)*sel);
		} else {
			out[o++] = *sel;
		}
	}
	out[o] = '\0';
}

struct kube_watch *
kube_watch_start(struct kube_api *api, const char *ns, const char *selector,
		 void (*changed)(void *ctx, enum kube_kind k, json_t *obj),
		 void *ctx)
{
	struct kube_watch *w = xcalloc(1, sizeof(*w));

	w->api = api;
	snprintf(w->ns, sizeof(w->ns), "%s", ns);
	escape_selector(selector, w->selector, sizeof(w->selector));
	escape_selector(KUBE_LABEL_POOL, w->node_selector,
			sizeof(w->node_selector));
	escape_selector(KUBE_LABEL_GPU_PRODUCT ",!" KUBE_LABEL_POOL,
			w->gpu_node_selector, sizeof(w->gpu_node_selector));
	w->changed = changed;
	w->ctx = ctx;
	pthread_mutex_init(&w->lock, NULL);
	for (int k = 0; k < KK_WATCHED; k++) {
		struct kind_watch *kw = &w->kinds[k];

		kw->w = w;
		kw->kind = (enum kube_kind)k;
		kw->started =
			pthread_create(&kw->thread, NULL, watch_main, kw) == 0;
		if (!kw->started)
			snprintf(kw->error, sizeof(kw->error),
				 "cannot start a watch thread");
	}
	return w;
}

void kube_watch_stop(struct kube_watch *w)
{
	if (!w)
		return;
	atomic_store(&w->stop, true);
	for (int k = 0; k < KK_WATCHED; k++) {
		if (w->kinds[k].started)
			pthread_join(w->kinds[k].thread, NULL);
		objects_free(&w->kinds[k].objects);
	}
	pthread_mutex_destroy(&w->lock);
	free(w);
}

json_t *kube_watch_get(struct kube_watch *w, enum kube_kind k, const char *name)
{
	struct cached *c;
	json_t *obj = NULL;

	if (k >= KK_WATCHED)
		return NULL;
	pthread_mutex_lock(&w->lock);
	c = map_get(&w->kinds[k].objects, name, strlen(name));
	/* A copy, not a reference: jansson's reference counts are not
	 * safe to share between threads (json_decref reads the count
	 * unlocked). */
	if (c)
		obj = json_deep_copy(c->obj);
	pthread_mutex_unlock(&w->lock);
	return obj;
}

void kube_watch_version(struct kube_watch *w, enum kube_kind k,
			const char *name, char *out, size_t len)
{
	struct cached *c;

	out[0] = '\0';
	if (!w || k >= KK_WATCHED)
		return;
	pthread_mutex_lock(&w->lock);
	c = map_get(&w->kinds[k].objects, name, strlen(name));
	if (c)
		snprintf(out, len, "%s", rv_of(c->obj) ? rv_of(c->obj) : "");
	pthread_mutex_unlock(&w->lock);
}

static bool has_label(json_t *obj, const char *key, const char *value)
{
	const char *v = json_string_value(json_object_get(
		json_object_get(json_object_get(obj, "metadata"), "labels"),
		key));

	return v && !strcmp(v, value);
}

void kube_watch_each(struct kube_watch *w, enum kube_kind k, const char *key,
		     const char *value, void (*fn)(void *ctx, json_t *obj),
		     void *ctx)
{
	void *v;

	if (k >= KK_WATCHED)
		return;
	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; map_next(&w->kinds[k].objects, &i, &v);) {
		struct cached *c = v;

		if (!key || has_label(c->obj, key, value))
			fn(ctx, c->obj);
	}
	pthread_mutex_unlock(&w->lock);
}

bool kube_watch_served(struct kube_watch *w, enum kube_kind k)
{
	bool served;

	if (k >= KK_WATCHED)
		return true;
	pthread_mutex_lock(&w->lock);
	served = w->kinds[k].synced && !w->kinds[k].absent;
	pthread_mutex_unlock(&w->lock);
	return served;
}

bool kube_watch_synced(struct kube_watch *w)
{
	bool all = true;

	pthread_mutex_lock(&w->lock);
	for (int k = 0; k < KK_WATCHED; k++)
		all = all && w->kinds[k].synced;
	pthread_mutex_unlock(&w->lock);
	return all;
}

void kube_watch_error(struct kube_watch *w, char *out, size_t len)
{
	out[0] = '\0';
	pthread_mutex_lock(&w->lock);
	for (int k = 0; k < KK_WATCHED && !out[0]; k++) {
		if (w->kinds[k].error[0])
			snprintf(out, len, "%s", w->kinds[k].error);
	}
	pthread_mutex_unlock(&w->lock);
}

void kube_watch_relist(struct kube_watch *w)
{
	for (int k = 0; k < KK_WATCHED; k++)
		atomic_store(&w->kinds[k].relist, true);
}
