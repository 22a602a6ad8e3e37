// SPDX-License-Identifier: MIT
/*
 * What each cluster serves, shared between the reconciler's thread
 * (which learns it from watches and discovery) and commits (which refuse
 * at close(2) what the cluster cannot run, without asking it).
 */
#include "kube.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_CLUSTERS 32
/* Discovery is asked again this often: an adapter may be installed. */
#define DISCOVERY_AGAIN_S 60.0

struct cluster_facts {
	char key[1100];
	struct kube_facts facts;
	/* When custom_metrics was learnt: a refusal at commit must not
	 * outlive the next look, or a cluster that gained an adapter would
	 * be refused for ever (no step runs to ask again). */
	double custom_metrics_at;
};

/* Guards clusters and used: commits read them, the reconciler writes. */
static pthread_mutex_t facts_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cluster_facts clusters[MAX_CLUSTERS];
static size_t used;

/* The entry for key, made (or the oldest reused) when missing; under
 * facts_lock. */
static struct cluster_facts *entry(const char *key)
{
	struct cluster_facts *c;

	for (size_t i = 0; i < used; i++) {
		if (!strcmp(clusters[i].key, key))
			return &clusters[i];
	}
	if (used < MAX_CLUSTERS)
		c = &clusters[used++];
	else
		c = &clusters[0];
	memset(c, 0, sizeof(*c));
	snprintf(c->key, sizeof(c->key), "%s", key);
	return c;
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void kube_facts_get(const char *cluster, struct kube_facts *out)
{
	double now = mono_now();

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&facts_lock);
	for (size_t i = 0; i < used; i++) {
		if (strcmp(clusters[i].key, cluster) != 0)
			continue;
		*out = clusters[i].facts;
		if (now - clusters[i].custom_metrics_at >= DISCOVERY_AGAIN_S)
			out->custom_metrics = KF_UNKNOWN;
	}
	pthread_mutex_unlock(&facts_lock);
}

void kube_facts_set_custom_metrics(const char *cluster, bool served)
{
	struct cluster_facts *c;

	pthread_mutex_lock(&facts_lock);
	c = entry(cluster);
	c->facts.custom_metrics = served ? KF_SERVED : KF_NOT_SERVED;
	c->custom_metrics_at = mono_now();
	pthread_mutex_unlock(&facts_lock);
}

void kube_facts_set_kserve(const char *cluster, bool served)
{
	pthread_mutex_lock(&facts_lock);
	entry(cluster)->facts.kserve = served ? KF_SERVED : KF_NOT_SERVED;
	pthread_mutex_unlock(&facts_lock);
}

enum kube_fact kube_custom_metrics(struct kenv *e)
{
	struct kube_reply r = { 0 };
	double now = mono_now();

	if (e->custom_metrics != KF_UNKNOWN &&
	    now - e->custom_metrics_at < DISCOVERY_AGAIN_S)
		return e->custom_metrics;
	if (kube_step_call(e, "GET", "/apis/custom.metrics.k8s.io", NULL, NULL,
			   &r) == 0 &&
	    (r.code == 200 || r.code == 404)) {
		e->custom_metrics = r.code == 200 ? KF_SERVED : KF_NOT_SERVED;
		e->custom_metrics_at = now;
		kube_facts_set_custom_metrics(e->cluster, r.code == 200);
	}
	kube_reply_free(&r);
	return e->custom_metrics;
}
