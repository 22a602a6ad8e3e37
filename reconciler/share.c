// SPDX-License-Identifier: MIT
/*
 * Observations as JSON documents in the store, one per object. A follower
 * reads by the store's order of publication; the window below covers
 * publications whose transactions ended out of that order (two leaders
 * of two environments committing at once), and a document read twice
 * changes nothing the second time.
 */
#include "share.h"

#include "store/backend.h"
#include "util/buf.h"
#include "util/log.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* A second between publications: the leader's pace of writes. */
#define PUBLISH_PERIOD_S 1.0
/* Half a second between reads: a follower's staleness on top of it. */
#define READ_PERIOD_S 0.5
/* How far back each read looks again (see above). */
#define REREAD_WINDOW 256

void share_init(struct share *s, struct store *store,
		struct observed_cache *observed,
		void (*changed)(void *ctx, uint64_t env_id, uint64_t res_id),
		void *ctx)
{
	memset(s, 0, sizeof(*s));
	s->store = store;
	s->observed = observed;
	s->changed = changed;
	s->ctx = ctx;
}

void share_free(struct share *s)
{
	free(s->pending);
	s->pending = NULL;
	s->npending = s->cap = 0;
}

void share_note(struct share *s, uint64_t env_id, uint64_t res_id)
{
	if (!store_shared(s->store))
		return;
	for (size_t i = 0; i < s->npending; i += 2)
		if (s->pending[i] == env_id && s->pending[i + 1] == res_id)
			return;
	if (s->npending + 2 > s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->pending = xrealloc(s->pending, s->cap * sizeof(*s->pending));
	}
	s->pending[s->npending++] = env_id;
	s->pending[s->npending++] = res_id;
}

/* ---- documents ---------------------------------------------------------- */

static json_t *text_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static char *res_doc(struct share *s, uint64_t res_id)
{
	struct observed_res o;
	json_t *doc;
	char *out;

	if (!observed_get_res(s->observed, res_id, &o))
		return xstrdup("{\"gone\": true}");
	doc = json_pack("{s:i, s:b, s:I, s:f, s:f, s:f, s:o, s:o, s:o, s:o}",
			"state", (int)o.state, "synced", o.synced,
			"applied_rev", (json_int_t)o.applied_rev, "observed_at",
			o.observed_at, "changed_at", o.changed_at,
			"hourly_cost_usd", o.hourly_cost_usd, "details",
			text_or_null(o.details), "error", text_or_null(o.error),
			"drift", text_or_null(o.drift), "reason",
			text_or_null(o.reason));
	observed_res_free(&o);
	out = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	return out;
}

static char *env_doc(struct share *s, uint64_t env_id)
{
	struct observed_env o;
	json_t *doc;
	char *out;

	if (!observed_get_env(s->observed, env_id, &o))
		return NULL;
	doc = json_pack("{s:I, s:o, s:o, s:I, s:f}", "plan_no",
			(json_int_t)o.plan_no, "plan_text",
			text_or_null(o.plan_text), "plan_json",
			text_or_null(o.plan_json), "applied_rev",
			(json_int_t)o.applied_rev, "last_apply", o.last_apply);
	observed_env_free(&o);
	out = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	return out;
}

static const char *field_text(json_t *doc, const char *key)
{
	return json_string_value(json_object_get(doc, key));
}

static double field_real(json_t *doc, const char *key)
{
	return json_number_value(json_object_get(doc, key));
}

static uint64_t field_u64(json_t *doc, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(doc, key));

	return v > 0 ? (uint64_t)v : 0;
}

/* A document of another daemon: a state out of range is not shown. */
static bool take_res(struct share *s, uint64_t res_id, json_t *doc)
{
	json_int_t state = json_integer_value(json_object_get(doc, "state"));
	struct observed_res o = {
		.res_id = res_id,
		.synced = json_is_true(json_object_get(doc, "synced")),
		.applied_rev = field_u64(doc, "applied_rev"),
		.observed_at = field_real(doc, "observed_at"),
		.changed_at = field_real(doc, "changed_at"),
		.hourly_cost_usd = field_real(doc, "hourly_cost_usd"),
		.details = (char *)field_text(doc, "details"),
		.error = (char *)field_text(doc, "error"),
		.drift = (char *)field_text(doc, "drift"),
		.reason = (char *)field_text(doc, "reason"),
	};

	if (json_is_true(json_object_get(doc, "gone"))) {
		observed_drop_res(s->observed, res_id);
		return true;
	}
	if (state < RS_PENDING || state > RS_DELETING)
		return false;
	o.state = (enum res_state)state;
	return observed_put_res(s->observed, &o);
}

static bool take_env(struct share *s, uint64_t env_id, json_t *doc)
{
	struct observed_env o = {
		.env_id = env_id,
		.plan_no = field_u64(doc, "plan_no"),
		.plan_text = (char *)field_text(doc, "plan_text"),
		.plan_json = (char *)field_text(doc, "plan_json"),
		.applied_rev = field_u64(doc, "applied_rev"),
		.last_apply = field_real(doc, "last_apply"),
	};
	struct observed_env had;

	/* The Terraform export is made on every daemon, from the store. */
	if (observed_get_env(s->observed, env_id, &had)) {
		o.terraform = had.terraform;
		had.terraform = NULL;
		observed_env_free(&had);
	}
	bool changed = observed_put_env(s->observed, &o);

	free(o.terraform);
	return changed;
}

/* ---- publishing and reading --------------------------------------------- */

static void publish(struct share *s)
{
	struct observation_row *rows =
		xcalloc(s->npending / 2 + 1, sizeof(*rows));
	size_t n = 0;

	for (size_t i = 0; i < s->npending; i += 2) {
		uint64_t env_id = s->pending[i], res_id = s->pending[i + 1];
		char *doc;

		/* Another daemon leads it now: its observations count. */
		if (!store_leads(s->store, env_id))
			continue;
		doc = res_id ? res_doc(s, res_id) : env_doc(s, env_id);
		if (!doc)
			continue;
		rows[n++] = (struct observation_row){ env_id, res_id, doc, 0 };
	}
	if (n && store_put_observations(s->store, rows, n) < 0)
		log_warn("state store: could not publish %zu observations; "
			 "other mounts show older ones until the next try",
			 n);
	else
		s->npending = 0;
	for (size_t i = 0; i < n; i++)
		free((char *)rows[i].doc);
	free(rows);
}

static void take(void *ctx, const struct observation_row *row)
{
	struct share *s = ctx;
	json_t *doc;
	bool changed;

	if (row->seq > s->read_up_to)
		s->read_up_to = row->seq;
	/* This daemon's own observations are the freshest it has. */
	if (store_leads(s->store, row->env_id))
		return;
	doc = json_loads(row->doc, 0, NULL);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return;
	}
	changed = row->res_id ? take_res(s, row->res_id, doc)
			      : take_env(s, row->env_id, doc);
	json_decref(doc);
	if (changed && s->changed)
		s->changed(s->ctx, row->env_id, row->res_id);
}

void share_run(struct share *s, double now)
{
	uint64_t from;

	if (!store_shared(s->store))
		return;
	if (s->npending && now - s->published_at >= PUBLISH_PERIOD_S) {
		s->published_at = now;
		publish(s);
	}
	if (now - s->read_at < READ_PERIOD_S)
		return;
	s->read_at = now;
	from = s->read_up_to > REREAD_WINDOW ? s->read_up_to - REREAD_WINDOW
					     : 0;
	store_observations_after(s->store, from, take, s);
}
