// SPDX-License-Identifier: MIT
/*
 * Local pools reserve devices of this machine: GPUs of the pool's
 * accelerator, exclusively among the pools of this daemon, or CPU slots
 * for accelerator = cpu. A reservation is bookkeeping, not a lock the
 * kernel enforces: endpoints placed on the pool get the devices through
 * CUDA_VISIBLE_DEVICES.
 */
#include "local.h"

#include "store/policy.h"

extern const struct provider_ops local_provider;

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static struct pool_res *pool_get(struct local *l, const char *env,
				 const char *name, bool make)
{
	char key[140];
	struct pool_res *p;

	snprintf(key, sizeof(key), "%s/%s", env, name);
	p = map_get(&l->pools, key, strlen(key));
	if (!p && make) {
		p = xcalloc(1, sizeof(*p));
		snprintf(p->key, sizeof(p->key), "%s", key);
		map_put(&l->pools, p->key, strlen(p->key), p);
	}
	return p;
}

static bool gpu_taken(struct local *l, unsigned index,
		      const struct pool_res *except)
{
	void *v;

	for (size_t pos = 0; map_next(&l->pools, &pos, &v);) {
		const struct pool_res *p = v;

		if (p == except || !strcmp(p->accelerator, "cpu"))
			continue;
		for (size_t i = 0; i < p->ndev; i++) {
			if (p->devices[i] == index)
				return true;
		}
	}
	return false;
}

static unsigned cpu_slots_taken(struct local *l, const struct pool_res *except)
{
	unsigned n = 0;
	void *v;

	for (size_t pos = 0; map_next(&l->pools, &pos, &v);) {
		const struct pool_res *p = v;

		if (p != except && !strcmp(p->accelerator, "cpu") && p->ndev)
			n += p->devices[0];
	}
	return n;
}

static int reserve_cpu(struct local *l, struct pool_res *p, unsigned need)
{
	unsigned taken = cpu_slots_taken(l, p);
	unsigned free_slots = l->cpus > taken ? l->cpus - taken : 0;

	if (need > free_slots) {
		snprintf(p->error, sizeof(p->error),
			 "insufficient capacity: %u cpu slots requested, %u "
			 "free",
			 need, free_slots);
		return -ENOSPC;
	}
	snprintf(p->accelerator, sizeof(p->accelerator), "cpu");
	p->devices[0] = need;
	p->ndev = 1;
	return 0;
}

static int reserve_gpus(struct local *l, struct pool_res *p, const char *acc,
			unsigned need)
{
	unsigned picked[64];
	size_t n = 0, free_n = 0;

	for (size_t i = 0; i < l->gpus.n; i++) {
		const struct gpu *g = &l->gpus.v[i];

		if (strcmp(g->accelerator, acc) != 0 ||
		    gpu_taken(l, g->index, p))
			continue;
		free_n++;
		if (n < need && n < 64)
			picked[n++] = g->index;
	}
	if (need > free_n || need > 64) {
		snprintf(p->error, sizeof(p->error),
			 "insufficient capacity: %u %s requested, %zu free",
			 need, acc, free_n);
		return -ENOSPC;
	}
	snprintf(p->accelerator, sizeof(p->accelerator), "%s", acc);
	memcpy(p->devices, picked, n * sizeof(*picked));
	p->ndev = n;
	return 0;
}

int pool_step(struct local *l, struct target *t)
{
	struct pool_res *p = pool_get(l, t->env, t->name, t->want != NULL);
	char acc[32];
	unsigned need;
	int rc;

	if (!t->want) {
		if (p) {
			map_del(&l->pools, p->key, strlen(p->key));
			local_forget(l, "pool", p->key);
			free(p);
		}
		return 0;
	}
	spec_text(t->want->spec, "accelerator", acc, sizeof(acc));
	need = (unsigned)(spec_int(t->want->spec, "nodes", 1) *
			  spec_int(t->want->spec, "accelerators_per_node", 1));
	/* Keep what is held when it still fits: endpoints use it. */
	if (p->ndev && !strcmp(p->accelerator, acc) &&
	    (strcmp(acc, "cpu") ? p->ndev == need : p->devices[0] == need)) {
		rc = 0;
	} else {
		struct pool_res trial = *p;

		trial.ndev = 0;
		rc = !strcmp(acc, "cpu") ? reserve_cpu(l, &trial, need)
					 : reserve_gpus(l, &trial, acc, need);
		if (rc == 0)
			*p = trial;
		else
			snprintf(p->error, sizeof(p->error), "%s", trial.error);
	}
	if (rc == 0) {
		p->error[0] = '\0';
		p->rev = t->want->rev;
		local_save_pool(l, p);
	} else {
		snprintf(t->obs.error, sizeof(t->obs.error), "%s", p->error);
		return rc;
	}
	return 0;
}

static void gpu_lines(const struct gpu *g, struct buf *out)
{
	buf_printf(out, "device.%u: %s %s", g->index, g->uuid, g->name);
	if (g->memory_total_mib >= 0)
		buf_printf(out, ", memory %" PRId64 "/%" PRId64 " MiB",
			   g->memory_used_mib, g->memory_total_mib);
	if (g->utilization_pct >= 0)
		buf_printf(out, ", utilization %d%%", g->utilization_pct);
	buf_addc(out, '\n');
}

void pool_observe(struct local *l, struct target *t)
{
	struct pool_res *p = pool_get(l, t->env, t->name, false);
	struct observation *o = &t->obs;

	o->exists = p && p->ndev;
	o->settled = o->exists && !p->error[0];
	o->applied_rev = o->exists ? p->rev : 0;
	o->hourly_cost_usd =
		o->exists && t->want ? local_provider.hourly_cost(t->want) : 0;
	if (p && p->error[0]) {
		snprintf(o->error, sizeof(o->error), "%s", p->error);
		o->state = RS_FAILED;
	} else {
		o->state = o->exists ? RS_READY : RS_PENDING;
	}
	if (!o->exists)
		return;
	buf_printf(&o->details, "accelerator: %s\n", p->accelerator);
	if (!strcmp(p->accelerator, "cpu")) {
		buf_printf(&o->details, "cpu_slots: %u of %u\n", p->devices[0],
			   l->cpus);
		return;
	}
	buf_adds(&o->details, "devices: ");
	for (size_t i = 0; i < p->ndev; i++)
		buf_printf(&o->details, "%s%u", i ? "," : "", p->devices[i]);
	buf_addc(&o->details, '\n');
	for (size_t i = 0; i < p->ndev; i++) {
		for (size_t j = 0; j < l->gpus.n; j++) {
			if (l->gpus.v[j].index == p->devices[i])
				gpu_lines(&l->gpus.v[j], &o->details);
		}
	}
}

void pool_visible_devices(struct local *l, const char *env, const char *pool,
			  char *out, size_t len)
{
	struct pool_res *p = pool_get(l, env, pool, false);
	size_t used = 0;

	out[0] = '\0';
	if (!p || !strcmp(p->accelerator, "cpu"))
		return;
	for (size_t i = 0; i < p->ndev && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%u",
					 i ? "," : "", p->devices[i]);
}
