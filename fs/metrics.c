// SPDX-License-Identifier: MIT
/*
 * Cardinality is bounded by what the tree holds: per-environment series
 * are one set per environment; per-resource series stop at
 * METRICS_RESOURCES_PER_ENV resources of an environment (in the order of
 * their kind and creation), and infrafs_env_resources_unlisted says how
 * many more there are. The state gauge carries the current state only,
 * so a resource is one series, not one per state.
 */
#include "metrics.h"

#include "build_info.h"
#include "fs.h"
#include "providers/provider.h"
#include "util/log.h"
#include "util/text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_LIBMICROHTTPD
#include <microhttpd.h>
#endif

static const char *const op_names[FOP_COUNT] = {
	[FOP_LOOKUP] = "lookup",
	[FOP_FORGET] = "forget",
	[FOP_GETATTR] = "getattr",
	[FOP_SETATTR] = "setattr",
	[FOP_MKDIR] = "mkdir",
	[FOP_RMDIR] = "rmdir",
	[FOP_UNLINK] = "unlink",
	[FOP_RENAME] = "rename",
	[FOP_OPEN] = "open",
	[FOP_READ] = "read",
	[FOP_WRITE] = "write",
	[FOP_FLUSH] = "flush",
	[FOP_RELEASE] = "release",
	[FOP_FSYNC] = "fsync",
	[FOP_OPENDIR] = "opendir",
	[FOP_READDIR] = "readdir",
	[FOP_RELEASEDIR] = "releasedir",
	[FOP_CREATE] = "create",
	[FOP_MKNOD] = "mknod",
	[FOP_STATFS] = "statfs",
	[FOP_POLL] = "poll",
	[FOP_SYMLINK] = "symlink",
	[FOP_LINK] = "link",
};

/* ---- per resource ------------------------------------------------------ */

struct res_row {
	const struct resource *r;
	bool have; /* the reconciler has looked */
	enum res_state state;
	const char *state_word;
	bool replicas; /* the provider reports replicas */
	unsigned ready, wanted;
	double cost;
	bool ok;
	double age;
};

/* A label value: names are plain, but a scraper must never be handed a
 * broken line, whatever a name holds. */
static void label_value(struct buf *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			buf_printf(out, "\\%c", *v);
		else if (*v == '\n')
			buf_adds(out, "\\n");
		else
			buf_addc(out, *v);
	}
}

static void res_labels(struct buf *out, const struct res_row *row)
{
	buf_adds(out, "{env=\"");
	label_value(out, row->r->env->name);
	buf_printf(out, "\",kind=\"%s\",name=\"", kind_at(row->r->kind)->name);
	label_value(out, row->r->name);
	buf_adds(out, "\"");
}

/* "replicas: R/W ready, N running" in the provider's details. */
static bool replicas_of(const char *details, unsigned *ready, unsigned *wanted)
{
	const char *p = details;

	while (p && *p) {
		unsigned running;

		if (sscanf(p, "replicas: %u/%u ready, %u running", ready,
			   wanted, &running) == 3)
			return true;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return false;
}

static void row_of(struct fs *fs, const struct resource *r, double now,
		   struct res_row *row)
{
	struct observed_res o;

	memset(row, 0, sizeof(*row));
	row->r = r;
	row->state = RS_PENDING;
	row->state_word = r->spec.text ? "pending" : "draft";
	if (!r->spec.text || !observed_get_res(&fs->observed, r->id, &o))
		return;
	row->have = true;
	row->state = o.state;
	row->state_word = res_state_word(o.state);
	row->replicas = replicas_of(o.details, &row->ready, &row->wanted);
	row->cost = o.hourly_cost_usd;
	row->ok = !o.error || !o.error[0];
	row->age =
		o.observed_at && now > o.observed_at ? now - o.observed_at : 0;
	observed_res_free(&o);
}

static void family(struct buf *out, const char *name, const char *type,
		   const char *help)
{
	buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

enum res_series { S_STATE, S_DESIRED, S_READY, S_COST, S_OK, S_AGE, S_COUNT };

static const char *const res_family[S_COUNT][2] = {
	{ "infrafs_resource_state",
	  "Current state of a resource (the state label), always 1." },
	{ "infrafs_resource_replicas_desired", "Replicas declared." },
	{ "infrafs_resource_replicas_ready", "Replicas ready." },
	{ "infrafs_resource_hourly_cost_usd",
	  "What the provider says the resource costs per hour, in USD." },
	{ "infrafs_resource_last_reconcile_success",
	  "1 if the provider's last look found no error, else 0." },
	{ "infrafs_resource_last_reconcile_age_seconds",
	  "Seconds since the provider last looked at the resource." },
};

static void res_sample(struct buf *out, int s, const struct res_row *row)
{
	if (s != S_STATE && !row->have)
		return;
	if ((s == S_DESIRED || s == S_READY) && !row->replicas)
		return;
	buf_adds(out, res_family[s][0]);
	res_labels(out, row);
	switch (s) {
	case S_STATE:
		buf_printf(out, ",state=\"%s\"} 1\n", row->state_word);
		break;
	case S_DESIRED:
		buf_printf(out, "} %u\n", row->wanted);
		break;
	case S_READY:
		buf_printf(out, "} %u\n", row->ready);
		break;
	case S_COST:
		buf_printf(out, "} %.4f\n", row->cost);
		break;
	case S_OK:
		buf_printf(out, "} %d\n", row->ok);
		break;
	default:
		buf_printf(out, "} %.3f\n", row->age);
	}
}

struct env_rows {
	struct res_row *v;
	size_t n; /* listed */
	size_t unlisted;
	size_t by_state[RS_DELETING + 1];
	size_t drafts;
	double cost;
};

static void env_rows(struct fs *fs, const struct env *e, double now,
		     struct env_rows *er)
{
	memset(er, 0, sizeof(*er));
	er->v = xcalloc(METRICS_RESOURCES_PER_ENV, sizeof(*er->v));
	for (int k = 0; k < NKINDS; k++) {
		for (size_t i = 0; i < e->list[k].n; i++) {
			struct res_row row;

			row_of(fs, e->list[k].v[i], now, &row);
			if (!row.r->spec.text)
				er->drafts++;
			else
				er->by_state[row.state]++;
			er->cost += row.cost;
			if (er->n < METRICS_RESOURCES_PER_ENV)
				er->v[er->n++] = row;
			else
				er->unlisted++;
		}
	}
}

static void env_label(struct buf *out, const char *name, const struct env *e)
{
	buf_printf(out, "%s{env=\"", name);
	label_value(out, e->name);
	buf_adds(out, "\"");
}

static void render_env_series(const struct model *m, struct env_rows *rows,
			      struct buf *out)
{
	family(out, "infrafs_env_resources", "gauge",
	       "Resources of an environment by state (draft: no spec yet).");
	for (size_t i = 0; i < m->envs.n; i++) {
		for (int st = RS_PENDING; st <= RS_DELETING; st++) {
			env_label(out, "infrafs_env_resources", m->envs.v[i]);
			buf_printf(out, ",state=\"%s\"} %zu\n",
				   res_state_word(st), rows[i].by_state[st]);
		}
		env_label(out, "infrafs_env_resources", m->envs.v[i]);
		buf_printf(out, ",state=\"draft\"} %zu\n", rows[i].drafts);
	}
	family(out, "infrafs_env_hourly_cost_usd", "gauge",
	       "Hourly cost of an environment's resources, in USD.");
	for (size_t i = 0; i < m->envs.n; i++) {
		env_label(out, "infrafs_env_hourly_cost_usd", m->envs.v[i]);
		buf_printf(out, "} %.4f\n", rows[i].cost);
	}
	family(out, "infrafs_env_resources_unlisted", "gauge",
	       "Resources past the per-resource series limit.");
	for (size_t i = 0; i < m->envs.n; i++) {
		env_label(out, "infrafs_env_resources_unlisted", m->envs.v[i]);
		buf_printf(out, "} %zu\n", rows[i].unlisted);
	}
}

/* The caller holds the model's read lock. */
void metrics_render_resources(struct fs *fs, struct buf *out)
{
	const struct model *m = fs->model;
	struct env_rows *rows = xcalloc(m->envs.n + 1, sizeof(*rows));
	double now = time_now();

	for (size_t i = 0; i < m->envs.n; i++)
		env_rows(fs, m->envs.v[i], now, &rows[i]);
	render_env_series(m, rows, out);
	for (int s = 0; s < S_COUNT; s++) {
		family(out, res_family[s][0], "gauge", res_family[s][1]);
		for (size_t i = 0; i < m->envs.n; i++)
			for (size_t j = 0; j < rows[i].n; j++)
				res_sample(out, s, &rows[i].v[j]);
	}
	for (size_t i = 0; i < m->envs.n; i++)
		free(rows[i].v);
	free(rows);
}

/* ---- build ----------------------------------------------------------- */

/* The Prometheus convention for what is running: one series, always 1,
 * whose labels are the build, so a dashboard can join on them and an
 * upgrade shows as the series changing. */
void metrics_render_build_info(struct buf *out)
{
	struct build_facts f = build_facts();
	const struct {
		const char *name, *value;
	} labels[] = {
		{ "version", f.version },     { "commit", f.commit },
		{ "buildtype", f.buildtype }, { "sanitize", f.sanitize },
		{ "compiler", f.compiler },
	};

	family(out, "infrafs_build_info", "gauge",
	       "The running build, in its labels; always 1.");
	buf_adds(out, "infrafs_build_info{");
	for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
		buf_printf(out, "%s%s=\"", i ? "," : "", labels[i].name);
		label_value(out, labels[i].value);
		buf_adds(out, "\"");
	}
	buf_adds(out, "} 1\n");
}

/* ---- provider call outcomes ------------------------------------------- */

#define CALL_ROWS 64

static void render_call_family(struct buf *out, bool throttles)
{
	const char *name = throttles ? "infrafs_provider_throttles_total"
				     : "infrafs_provider_errors_total";

	family(out, name, "counter",
	       throttles ? "Answers that asked a provider to slow down, "
			   "retries included, by service and operation."
			 : "Provider calls that ended in an error after "
			   "retries, by service and operation.");
	for (int i = 0; builtin_providers[i]; i++) {
		const struct provider_ops *p = builtin_providers[i];
		struct provider_call_stat rows[CALL_ROWS];
		size_t n;

		if (!p->call_stats)
			continue;
		n = p->call_stats(rows, CALL_ROWS);
		for (size_t j = 0; j < n; j++) {
			buf_printf(out, "%s{provider=\"%s\",service=\"", name,
				   p->info->name);
			label_value(out, rows[j].service);
			buf_adds(out, "\",operation=\"");
			label_value(out, rows[j].operation);
			buf_printf(out, "\"} %" PRIu64 "\n",
				   throttles ? rows[j].throttles
					     : rows[j].errors);
		}
	}
}

void metrics_render_provider_outcomes(struct buf *out)
{
	render_call_family(out, false);
	render_call_family(out, true);
}

/* ---- latency ----------------------------------------------------------- */

void metrics_render_latency(struct fs *fs, struct buf *out)
{
	family(out, "infrafs_commit_duration_seconds", "histogram",
	       "How long a change waited to be committed: queue, checks "
	       "and the store's fsync, refused changes included.");
	hist_render(store_commit_hist(fs->store),
		    "infrafs_commit_duration_seconds", "", out);
	family(out, "infrafs_fuse_request_duration_seconds", "histogram",
	       "Time a FUSE request took in its handler, by operation.");
	for (int op = 0; op < FOP_COUNT; op++) {
		char labels[40];

		/* Operations never asked for would be 19 lines of zeros. */
		if (!atomic_load_explicit(&fs->op_hist[op].count,
					  memory_order_relaxed))
			continue;
		snprintf(labels, sizeof(labels), "op=\"%s\"", op_names[op]);
		hist_render(&fs->op_hist[op],
			    "infrafs_fuse_request_duration_seconds", labels,
			    out);
	}
}

/* ---- HTTP -------------------------------------------------------------- */

/* "ADDR:PORT", "[ADDR6]:PORT" or "PORT"; loopback when no address. */
static int parse_listen(const char *spec, struct sockaddr_storage *ss,
			char *msg, size_t len)
{
	char host[64] = "127.0.0.1";
	const char *colon = strrchr(spec, ':');
	const char *port_text = colon ? colon + 1 : spec;
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	char *end;
	long port = strtol(port_text, &end, 10);

	if (!port_text[0] || *end || port < 1 || port > 65535) {
		snprintf(msg, len, "--metrics-listen %s: no port 1-65535",
			 spec);
		return -EINVAL;
	}
	if (colon && colon > spec) {
		size_t n = (size_t)(colon - spec);

		if (spec[0] == '[' && colon[-1] == ']') {
			spec++;
			n -= 2;
		}
		if (n >= sizeof(host)) {
			snprintf(msg, len,
				 "--metrics-listen: address too long");
			return -EINVAL;
		}
		memcpy(host, spec, n);
		host[n] = '\0';
	}
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
	} else {
		snprintf(msg, len,
			 "--metrics-listen %s: not a numeric IPv4 or IPv6 "
			 "address",
			 host);
		return -EINVAL;
	}
	return 0;
}

#ifdef HAVE_LIBMICROHTTPD

static enum MHD_Result answer_text(struct MHD_Connection *conn, unsigned status,
				   const char *text, size_t len,
				   const char *type)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		len, (void *)text, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result rc;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, "Allow", "GET");
	rc = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return rc;
}

/*
 * Runs in the listener's own thread, never in a FUSE worker: it reads
 * the same one-second snapshot a `cat metrics` does, under the same read
 * lock, so a scraper costs the mount what one more reader would.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *data,
				  size_t *data_len, void **con_cls)
{
	static const char plain[] = "text/plain; charset=utf-8";
	struct fs *fs = cls;
	struct blob *b;
	enum MHD_Result rc;
	int err = 0;

	(void)version;
	(void)data;
	(void)con_cls;
	if (*data_len)
		return answer_text(conn, MHD_HTTP_BAD_REQUEST, "no body\n", 8,
				   plain);
	if (strcmp(method, "GET") != 0)
		return answer_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
				   "GET only\n", 9, plain);
	if (strcmp(url, "/metrics") != 0)
		return answer_text(conn, MHD_HTTP_NOT_FOUND,
				   "only /metrics is served\n", 24, plain);
	model_rdlock(fs->model);
	b = file_metrics(fs, &err);
	model_unlock(fs->model);
	if (!b)
		return answer_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
				   "cannot render\n", 14, plain);
	rc = answer_text(conn, MHD_HTTP_OK, b->data, b->len,
			 "text/plain; version=0.0.4; charset=utf-8");
	blob_unref(b);
	return rc;
}

int metrics_http_start(struct fs *fs, const char *listen, char *msg, size_t len)
{
	struct sockaddr_storage ss;
	struct MHD_Daemon *d;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	int rc = parse_listen(listen, &ss, msg, len);

	if (rc)
		return rc;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* One thread, a few connections, short timeouts: a scraper, not a
	 * public server. */
	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, fs,
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
			     MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
			     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
			     MHD_OPTION_END);
	if (!d) {
		snprintf(msg, len, "--metrics-listen %s: cannot listen: %s",
			 listen, strerror(errno));
		return -EADDRNOTAVAIL;
	}
	fs->metrics_http = d;
	return 0;
}

void metrics_http_stop(struct fs *fs)
{
	if (fs->metrics_http)
		MHD_stop_daemon(fs->metrics_http);
	fs->metrics_http = NULL;
}

#else

int metrics_http_start(struct fs *fs, const char *listen, char *msg, size_t len)
{
	struct sockaddr_storage ss;
	int rc = parse_listen(listen, &ss, msg, len);

	(void)fs;
	if (rc)
		return rc;
	snprintf(msg, len,
		 "--metrics-listen: built without libmicrohttpd; rebuild "
		 "with libmicrohttpd-dev installed, or read the mount's "
		 "metrics file");
	return -ENOTSUP;
}

void metrics_http_stop(struct fs *fs)
{
	(void)fs;
}

#endif
