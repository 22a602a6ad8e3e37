// SPDX-License-Identifier: MIT
/*
 * Endpoints: a Deployment, a Service, a HorizontalPodAutoscaler when
 * min_replicas < max_replicas, and a Secret for env.NAME = secret:S,
 * all named after the endpoint in the environment's namespace.
 *
 * What the endpoint's state says is read from the Deployment's status
 * and its pods (the first reason a pod cannot run: ImagePullBackOff,
 * CrashLoopBackOff, Unschedulable with the scheduler's message). Drift
 * is a field infrafs declares whose live value differs, named with the
 * field manager that changed it (managedFields).
 */
#include "kube.h"

#include "store/policy.h"
#include "util/log.h"
#include "util/map.h"
#include "util/wipe.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Why the endpoint's pods do not run: the first waiting reason found. */
static uint64_t secrets_version(struct kprov *k, const struct desired *want);

struct pod_trouble {
	char text[400];
};

static void container_trouble(json_t *pod, struct pod_trouble *t)
{
	json_t *statuses = json_object_get(json_object_get(pod, "status"),
					   "containerStatuses");
	json_t *cs;
	size_t i;

	json_array_foreach(statuses, i, cs)
	{
		json_t *waiting = json_object_get(json_object_get(cs, "state"),
						  "waiting");
		const char *reason =
			json_string_value(json_object_get(waiting, "reason"));
		const char *msg =
			json_string_value(json_object_get(waiting, "message"));

		if (reason && strcmp(reason, "ContainerCreating") &&
		    strcmp(reason, "PodInitializing")) {
			snprintf(t->text, sizeof(t->text), "%s%s%s", reason,
				 msg ? ": " : "", msg ? msg : "");
			return;
		}
	}
}

static void pod_trouble(json_t *pod, struct pod_trouble *t)
{
	json_t *sched = kube_condition(pod, "PodScheduled");
	const char *s = json_string_value(json_object_get(sched, "status"));
	const char *reason =
		json_string_value(json_object_get(sched, "reason"));

	if (kube_meta(pod, "deletionTimestamp"))
		return;
	if (s && !strcmp(s, "False") && reason) {
		const char *msg =
			json_string_value(json_object_get(sched, "message"));

		snprintf(t->text, sizeof(t->text), "%s: %s", reason,
			 msg ? msg : "");
		return;
	}
	container_trouble(pod, t);
}

/* One pass over the pods: the first trouble of each endpoint's. */
static void note_trouble(void *ctx, json_t *pod)
{
	const char *ep = kube_meta_in(pod, "labels", KUBE_LABEL_ENDPOINT);
	struct pod_trouble t = { 0 };

	if (!ep || json_object_get(ctx, ep))
		return;
	pod_trouble(pod, &t);
	if (t.text[0])
		json_object_set_new(ctx, ep, json_string(t.text));
}

/*
 * Why each endpoint's pods cannot run, from one walk over the pods per
 * observation (walking them for every endpoint cost endpoints x pods).
 */
static const char *trouble_of(struct kprov *k, struct kenv *e,
			      const char *endpoint)
{
	if (!e->troubles || e->troubles_at != k->observations) {
		json_decref(e->troubles);
		e->troubles = json_object();
		e->troubles_at = k->observations;
		kube_watch_each(e->watch, KK_POD, NULL, NULL, note_trouble,
				e->troubles);
	}
	return json_string_value(json_object_get(e->troubles, endpoint));
}

/* Every leaf of want has the same value in live: what infrafs declares
 * is what runs. Lists are compared item by item. path gets the first
 * field that differs, as ".spec.replicas". */
static bool declared_holds(json_t *want, json_t *live, char *path, size_t len)
{
	size_t used = strlen(path);

	if (json_is_object(want)) {
		const char *key;
		json_t *v;

		json_object_foreach(want, key, v)
		{
			snprintf(path + used, len - used, ".%s", key);
			if (!declared_holds(v, json_object_get(live, key), path,
					    len))
				return false;
		}
	} else if (json_is_array(want)) {
		json_t *v;
		size_t i;

		if (!json_is_array(live) ||
		    json_array_size(live) != json_array_size(want))
			return false;
		json_array_foreach(want, i, v)
		{
			snprintf(path + used, len - used, "[%zu]", i);
			if (!declared_holds(v, json_array_get(live, i), path,
					    len))
				return false;
		}
	} else if (!json_equal(want, live)) {
		return false;
	}
	path[used] = '\0';
	return true;
}

/* The manager, other than infrafs, whose fields hold the last key of
 * path (".spec.replicas": one with f:replicas under f:spec). */
static const char *changed_by(json_t *live, const char *path)
{
	json_t *entries = json_object_get(json_object_get(live, "metadata"),
					  "managedFields");
	const char *first = path[0] == '.' ? path + 1 : path;
	char top[64];
	json_t *e;
	size_t i;

	snprintf(top, sizeof(top), "f:%.*s", (int)strcspn(first, ".["), first);
	json_array_foreach(entries, i, e)
	{
		const char *m =
			json_string_value(json_object_get(e, "manager"));
		json_t *fields = json_object_get(e, "fieldsV1");
		const char *second = first + strcspn(first, ".[");
		char sub[64];

		if (!m || !strcmp(m, KUBE_MANAGER))
			continue;
		fields = json_object_get(fields, top);
		if (!fields)
			continue;
		if (*second == '.') {
			second++;
			snprintf(sub, sizeof(sub), "f:%.*s",
				 (int)strcspn(second, ".["), second);
			if (!json_object_get(fields, sub))
				continue;
		}
		return m;
	}
	return NULL;
}

static void find_drift(json_t *want, json_t *live, struct observation *o)
{
	char path[160] = "", full[200];
	json_t *spec = json_object_get(want, "spec");
	const char *who;

	if (!live || declared_holds(spec, json_object_get(live, "spec"), path,
				    sizeof(path)))
		return;
	snprintf(full, sizeof(full), ".spec%s", path);
	who = changed_by(live, full);
	snprintf(o->drift, sizeof(o->drift), "%s changed%s%s", full,
		 who ? " by " : " outside infrafs", who ? who : "");
}

static void service_url(const struct kenv *e, json_t *svc,
			const struct desired *want, struct buf *out)
{
	json_t *ingress = json_array_get(
		json_object_get(json_object_get(json_object_get(svc, "status"),
						"loadBalancer"),
				"ingress"),
		0);
	const char *ip = json_string_value(json_object_get(ingress, "ip"));
	const char *host =
		json_string_value(json_object_get(ingress, "hostname"));
	int64_t port = want ? spec_int(want->spec, "port", 8080) : 8080;

	if (ip || host)
		buf_printf(out, "url: http://%s:%" PRId64 "\n", ip ? ip : host,
			   port);
	else
		buf_printf(out, "url: http://%s.%s.svc:%" PRId64 "\n",
			   kube_meta(svc, "name") ?: "", e->ns, port);
}

static enum res_state deployment_state(json_t *dep, int64_t want_replicas,
				       const struct pod_trouble *trouble,
				       struct observation *o)
{
	int64_t ready = kube_status_int(dep, "readyReplicas");
	int64_t updated = kube_status_int(dep, "updatedReplicas");
	int64_t available = kube_status_int(dep, "availableReplicas");
	int64_t gen = json_integer_value(json_object_get(
		json_object_get(dep, "metadata"), "generation"));
	json_t *progressing = kube_condition(dep, "Progressing");
	const char *preason =
		json_string_value(json_object_get(progressing, "reason"));
	bool rolling;

	if (kube_meta(dep, "deletionTimestamp"))
		return RS_DELETING;
	if (trouble->text[0])
		snprintf(o->error, sizeof(o->error), "%s", trouble->text);
	if (preason && !strcmp(preason, "ProgressDeadlineExceeded")) {
		if (!o->error[0])
			snprintf(o->error, sizeof(o->error), "%s",
				 json_string_value(json_object_get(progressing,
								   "message"))
					 ?: preason);
		return RS_FAILED;
	}
	/* A rollout is finished as kubectl rollout status says: every
	 * replica is of the new template, available, and no old one is
	 * left. */
	rolling = kube_status_int(dep, "observedGeneration") < gen ||
		  updated < want_replicas ||
		  kube_status_int(dep, "replicas") > updated ||
		  available < updated;
	if (!rolling && ready >= want_replicas)
		return RS_READY;
	if (available > 0)
		return rolling ? RS_UPDATING : RS_DEGRADED;
	return RS_CREATING;
}

static void fill_details(struct kenv *e, const struct target *t, json_t *dep,
			 json_t *svc, json_t *hpa, struct observation *o)
{
	struct buf *d = &o->details;

	buf_printf(d, "namespace: %s\n", e->ns);
	if (dep) {
		json_t *progressing = kube_condition(dep, "Progressing");
		const char *msg = json_string_value(
			json_object_get(progressing, "message"));

		buf_printf(d,
			   "deployment: %s\nreplicas: %" PRId64
			   " ready, %" PRId64 " updated, %" PRId64
			   " available of %" PRId64 "\n",
			   t->name, kube_status_int(dep, "readyReplicas"),
			   kube_status_int(dep, "updatedReplicas"),
			   kube_status_int(dep, "availableReplicas"),
			   (int64_t)json_integer_value(json_object_get(
				   json_object_get(dep, "spec"), "replicas")));
		if (msg)
			text_line(d, "rollout", msg);
	}
	if (svc)
		service_url(e, svc, t->want, d);
	if (hpa)
		buf_printf(
			d,
			"autoscaler: %" PRId64 " to %" PRId64 ", now %" PRId64
			", wants %" PRId64 "\n",
			(int64_t)json_integer_value(json_object_get(
				json_object_get(hpa, "spec"), "minReplicas")),
			(int64_t)json_integer_value(json_object_get(
				json_object_get(hpa, "spec"), "maxReplicas")),
			kube_status_int(hpa, "currentReplicas"),
			kube_status_int(hpa, "desiredReplicas"));
}

/* The revision every object the spec needs carries, 0 when one lacks. */
static uint64_t applied_revision(const struct desired *want, json_t *dep,
				 json_t *svc, json_t *hpa)
{
	uint64_t rev = dep ? kube_revision(dep) : 0;

	if (!svc || kube_revision(svc) != rev)
		return 0;
	if (want && kube_autoscaled(want->spec) != (hpa != NULL))
		return 0;
	if (hpa && kube_revision(hpa) != rev)
		return 0;
	return rev;
}

/* Whether the Deployment's pods look for the pool's nodes the way they
 * are found now: the first node an administrator labels for a pool that
 * ran on GPU feature discovery's nodes moves its pods there. */
static bool placed_as(json_t *dep, const struct kube_placement *where)
{
	const char *now = kube_placement_word(where->nodes);
	const char *then = kube_meta_in(dep, "annotations", KUBE_ANN_NODES);

	return now ? then && !strcmp(now, then) : !then;
}

static bool kserve(const struct desired *want)
{
	return want &&
	       !strcmp(kube_config_value(want->config, "serving", "deployment"),
		       "kserve");
}

#define NO_KSERVE                                                    \
	"kubernetes.serving = kserve: this cluster does not serve "  \
	"serving.kserve.io/v1beta1 InferenceService (KServe is not " \
	"installed); set kubernetes.serving = deployment or install KServe"

#define NO_CUSTOM_METRICS                                                  \
	"scale_metric: this cluster serves no custom.metrics.k8s.io API, " \
	"which a HorizontalPodAutoscaler reads pod metrics from (install " \
	"a metrics adapter such as prometheus-adapter, or drop "           \
	"min_replicas < max_replicas)"

/* Whether objects of the other way of serving are left over. */
static bool leftovers(struct kenv *e, const char *name, bool isvc_mode)
{
	if (isvc_mode)
		return kube_known(e, KK_DEPLOYMENT, name) ||
		       kube_known(e, KK_SERVICE, name) ||
		       kube_known(e, KK_HPA, name);
	return kube_known(e, KK_ISVC, name);
}

static void observe_isvc(struct kprov *k, struct kenv *e, struct target *t)
{
	struct observation *o = &t->obs;
	json_t *isvc = kube_get(e, KK_ISVC, t->name);
	bool left = leftovers(e, t->name, true);
	json_t *ready = kube_condition(isvc, "Ready");
	const char *status =
		json_string_value(json_object_get(ready, "status"));
	const char *url = json_string_value(
		json_object_get(json_object_get(isvc, "status"), "url"));

	o->exists = isvc || left;
	o->applied_rev = isvc && !left ? kube_revision(isvc) : 0;
	o->settled = t->want && o->applied_rev == t->want->rev;
	if (!kube_watch_served(e->watch, KK_ISVC)) {
		o->state = RS_FAILED;
		snprintf(o->error, sizeof(o->error), "%s", NO_KSERVE);
	} else if (!isvc) {
		o->state = o->exists ? RS_UPDATING : RS_PENDING;
	} else if (kube_meta(isvc, "deletionTimestamp")) {
		o->state = RS_DELETING;
	} else if (status && !strcmp(status, "True")) {
		o->state = RS_READY;
	} else {
		const char *reason =
			json_string_value(json_object_get(ready, "reason"));
		const char *msg =
			json_string_value(json_object_get(ready, "message"));

		o->state = status && !strcmp(status, "False") && reason
				   ? RS_FAILED
				   : RS_CREATING;
		if (reason)
			snprintf(o->error, sizeof(o->error), "%s%s%s", reason,
				 msg ? ": " : "", msg ? msg : "");
	}
	buf_printf(&o->details, "namespace: %s\ninferenceservice: %s\n", e->ns,
		   t->name);
	if (url)
		text_line(&o->details, "url", url);
	if (t->want && isvc && o->settled) {
		json_t *desired = kube_inference_service(
			t->want, e->ns, secrets_version(k, t->want));

		find_drift(desired, isvc, o);
		json_decref(desired);
	}
	json_decref(isvc);
}

void kube_endpoint_observe(struct kprov *k, struct kenv *e, struct target *t)
{
	struct observation *o = &t->obs;
	struct pod_trouble trouble = { 0 };
	struct kube_placement where = { 0 };
	json_t *dep, *svc, *hpa;
	int64_t want_replicas;

	if (kserve(t->want) || (!t->want && kube_known(e, KK_ISVC, t->name))) {
		observe_isvc(k, e, t);
		return;
	}
	dep = kube_get(e, KK_DEPLOYMENT, t->name);
	svc = kube_get(e, KK_SERVICE, t->name);
	hpa = kube_get(e, KK_HPA, t->name);
	o->exists = dep || svc || hpa;
	snprintf(trouble.text, sizeof(trouble.text), "%s",
		 trouble_of(k, e, t->name) ?: "");
	o->applied_rev = applied_revision(t->want, dep, svc, hpa);
	if (leftovers(e, t->name, false)) {
		o->exists = true;
		o->applied_rev = 0;
	}
	o->settled = t->want && o->applied_rev == t->want->rev;
	want_replicas = t->want ? spec_int(t->want->spec, "replicas", 1) : 0;
	if (hpa)
		want_replicas = json_integer_value(json_object_get(
			json_object_get(dep, "spec"), "replicas"));
	if (dep)
		o->state = deployment_state(dep, want_replicas, &trouble, o);
	else
		o->state = o->exists ? RS_DELETING : RS_PENDING;
	fill_details(e, t, dep, svc, hpa, o);
	if (t->want)
		kube_pool_placement(e, spec_str(t->want->spec, "pool", ""),
				    &where);
	if (t->want && dep && o->settled && !placed_as(dep, &where))
		o->settled = false;
	if (t->want && dep && o->settled) {
		json_t *desired = kube_deployment(
			t->want, e->ns, secrets_version(k, t->want), &where);

		find_drift(desired, dep, o);
		json_decref(desired);
	}
	if (!o->error[0])
		kube_watch_error(e->watch, o->error, sizeof(o->error));
	json_decref(dep);
	json_decref(svc);
	json_decref(hpa);
}

static uint64_t secrets_version(struct kprov *k, const struct desired *want)
{
	const struct spec_value *env = spec_field(want->spec, "env");
	uint64_t h = 0;

	for (size_t i = 0; env && i < env->npairs; i++) {
		const char *v = env->pairs[i].value;
		uint64_t ver;

		if (strncmp(v, "secret:", 7) || !k->host.secret_version)
			continue;
		ver = k->host.secret_version(k->host.ctx, want->env, v + 7);
		h = h * 1099511628211ULL + map_hash(v, strlen(v)) + ver;
	}
	return h;
}

static bool had_secrets(struct kenv *e, const char *name)
{
	json_t *dep = kube_get(e, KK_DEPLOYMENT, name);
	json_t *isvc = kube_get(e, KK_ISVC, name);
	json_t *template = json_object_get(
		json_object_get(json_object_get(dep, "spec"), "template"),
		"metadata");
	json_t *predictor =
		json_object_get(json_object_get(isvc, "spec"), "predictor");
	bool had = json_object_get(json_object_get(template, "annotations"),
				   KUBE_ANN_SECRETS) ||
		   json_object_get(json_object_get(predictor, "annotations"),
				   KUBE_ANN_SECRETS);

	json_decref(dep);
	json_decref(isvc);
	return had;
}

static int apply_secret(struct kprov *k, struct kenv *e,
			const struct desired *want, bool force,
			struct observation *o)
{
	WIPEBUF_AUTO body = BUF_INIT;
	char name[80];
	int rc;

	kube_secret_name(want->name, name, sizeof(name));
	/* A Secret was made only for a template that names one: the live
	 * template's annotation says whether there is one to remove. */
	if (!kube_uses_secrets(want->spec))
		return had_secrets(e, want->name)
			       ? kube_delete(e, KK_SECRET, name, false, o)
			       : 0;
	rc = kube_secret_body(want, e->ns, &k->host, &body, o->error,
			      sizeof(o->error));
	if (rc < 0)
		return rc;
	return kube_apply(e, KK_SECRET, name, body.data, force, false, o);
}

static int step_isvc(struct kprov *k, struct kenv *e, struct target *t)
{
	static const enum kube_kind others[] = { KK_HPA, KK_SERVICE,
						 KK_DEPLOYMENT };
	const struct desired *want = t->want;
	struct observation *o = &t->obs;
	bool force = kube_force(want);
	json_t *obj;
	int rc;

	if (!kube_watch_served(e->watch, KK_ISVC)) {
		snprintf(o->error, sizeof(o->error), "%s", NO_KSERVE);
		return -EINVAL;
	}
	rc = kube_ensure_namespace(e, o);
	if (!rc)
		rc = apply_secret(k, e, want, force, o);
	if (!rc) {
		obj = kube_inference_service(want, e->ns,
					     secrets_version(k, want));
		rc = kube_apply_json(e, KK_ISVC, want->name, obj, force,
				     kube_known(e, KK_ISVC, want->name), o);
		json_decref(obj);
	}
	/* What the endpoint was before it was served by KServe. */
	for (size_t i = 0; i < 3 && !rc; i++) {
		if (kube_known(e, others[i], want->name))
			rc = kube_delete(e, others[i], want->name, true, o);
	}
	return rc;
}

static int step_apply(struct kprov *k, struct kenv *e, struct target *t)
{
	const struct desired *want = t->want;
	struct observation *o = &t->obs;
	bool force = kube_force(want);
	struct kube_placement where;
	json_t *obj;
	int rc = kube_ensure_namespace(e, o);

	if (!rc)
		rc = apply_secret(k, e, want, force, o);
	if (!rc) {
		kube_pool_placement(e, spec_str(want->spec, "pool", ""),
				    &where);
		obj = kube_deployment(want, e->ns, secrets_version(k, want),
				      &where);
		rc = kube_apply_json(e, KK_DEPLOYMENT, want->name, obj, force,
				     kube_known(e, KK_DEPLOYMENT, want->name),
				     o);
		json_decref(obj);
	}
	if (!rc) {
		obj = kube_service(want, e->ns,
				   kube_config_value(want->config,
						     "service_type",
						     "ClusterIP"));
		rc = kube_apply_json(e, KK_SERVICE, want->name, obj, force,
				     kube_known(e, KK_SERVICE, want->name), o);
		json_decref(obj);
	}
	if (!rc && kube_autoscaled(want->spec) &&
	    kube_custom_metrics(e) == KF_NOT_SERVED) {
		snprintf(o->error, sizeof(o->error), "%s", NO_CUSTOM_METRICS);
		rc = -EINVAL;
	} else if (!rc && kube_autoscaled(want->spec)) {
		obj = kube_hpa(want, e->ns, o->error, sizeof(o->error));
		rc = obj ? kube_apply_json(e, KK_HPA, want->name, obj, force,
					   kube_known(e, KK_HPA, want->name), o)
			 : -EINVAL;
		json_decref(obj);
	} else if (!rc && kube_known(e, KK_HPA, want->name)) {
		rc = kube_delete(e, KK_HPA, want->name, true, o);
	}
	if (!rc && kube_known(e, KK_ISVC, want->name))
		rc = kube_delete(e, KK_ISVC, want->name, true, o);
	return rc;
}

static int step_delete(struct kenv *e, struct target *t)
{
	static const enum kube_kind order[] = { KK_ISVC, KK_HPA, KK_SERVICE,
						KK_DEPLOYMENT };
	char secret[80];
	int rc = 0;
	bool waiting = false;

	for (size_t i = 0; i < 4 && !rc; i++) {
		json_t *obj = kube_watch_get(e->watch, order[i], t->name);

		/* Asked to go already: the cluster is finishing it. */
		if (obj && (kube_meta(obj, "deletionTimestamp") ||
			    kube_delete_sent(e, order[i], t->name)))
			waiting = true;
		else if (obj && kube_ours(obj, e->env))
			rc = kube_delete(e, order[i], t->name, true, &t->obs);
		json_decref(obj);
	}
	if (waiting)
		t->obs.retry_in_s = 1.0;
	/* The Secret went with the first delete; it is not watched. */
	kube_secret_name(t->name, secret, sizeof(secret));
	if (!rc && !waiting)
		rc = kube_delete(e, KK_SECRET, secret, false, &t->obs);
	return rc;
}

int kube_endpoint_step(struct kprov *k, struct kenv *e, struct target *t)
{
	if (!t->want)
		return step_delete(e, t);
	return kserve(t->want) ? step_isvc(k, e, t) : step_apply(k, e, t);
}

static void name_of_deployment(void *ctx, json_t *obj)
{
	const char *name = kube_meta_in(obj, "labels", KUBE_LABEL_ENDPOINT);

	if (name && name_is_valid(name))
		buf_printf(ctx, "endpoint/%s\n", name);
}

void kube_endpoint_list(struct kenv *e, struct buf *out)
{
	kube_watch_each(e->watch, KK_DEPLOYMENT, NULL, NULL, name_of_deployment,
			out);
}

static int refuse(char *msg, size_t len, const char *key, const char *why)
{
	snprintf(msg, len, "%s: %s", key, why);
	return -EINVAL;
}

/* KServe scales on concurrency or rps, to a whole number per replica. */
static int check_kserve(const struct spec *s, char *msg, size_t len)
{
	const char *metric = spec_str(s, "scale_metric", "");
	const struct spec_value *target = spec_field(s, "scale_target");

	if (metric[0] && !kube_kserve_metric(metric))
		return refuse(msg, len, "scale_metric",
			      "KServe scales on concurrency or rps "
			      "(kubernetes.serving = kserve)");
	if (target && target->set && target->d != (double)(int64_t)target->d)
		return refuse(msg, len, "scale_target",
			      "KServe's scaleTarget is a whole number");
	return 0;
}

/* What the cluster is known not to serve, refused at close(2). */
static int check_cluster(const struct desired *want, char *msg, size_t len)
{
	struct kube_facts facts;
	char cluster[1100];

	kube_cluster_key(want->config, cluster, sizeof(cluster));
	kube_facts_get(cluster, &facts);
	if (kserve(want) && facts.kserve == KF_NOT_SERVED) {
		snprintf(msg, len, "%s", NO_KSERVE);
		return -EINVAL;
	}
	if (!kserve(want) && kube_autoscaled(want->spec) &&
	    facts.custom_metrics == KF_NOT_SERVED) {
		snprintf(msg, len, "%s", NO_CUSTOM_METRICS);
		return -EINVAL;
	}
	return 0;
}

int kube_endpoint_check(const struct desired *want, char *msg, size_t len)
{
	const struct spec *s = want->spec;
	int64_t replicas = spec_int(s, "replicas", 1);
	int rc = check_cluster(want, msg, len);

	if (rc < 0)
		return rc;

	if (!spec_str(s, "image", "")[0])
		return refuse(msg, len, "image",
			      "required by the kubernetes provider (the "
			      "container image that serves the model)");
	if (spec_field_set(s, "instance_type"))
		return refuse(msg, len, "instance_type",
			      "not supported by the kubernetes provider: the "
			      "scheduler picks nodes (use pool and "
			      "accelerators)");
	if (kserve(want))
		return check_kserve(s, msg, len);
	if (!kube_autoscaled(s))
		return 0;
	if (spec_int(s, "min_replicas", replicas) < 1)
		return refuse(msg, len, "min_replicas",
			      "a HorizontalPodAutoscaler keeps at least 1 "
			      "replica");
	if (!kube_metric_name(spec_str(s, "scale_metric", "")) ||
	    !spec_field_set(s, "scale_target"))
		return refuse(msg, len, "scale_metric",
			      "min_replicas < max_replicas needs "
			      "scale_metric and scale_target");
	return 0;
}
