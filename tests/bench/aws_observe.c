// SPDX-License-Identifier: MIT
/*
 * How long the aws provider takes to observe many endpoints, driven
 * through its provider_ops exactly as the reconciler drives it, against
 * the fake SageMaker (tests/fake/aws_fake.py) that tests/bench/aws.sh
 * starts. The fake adds a fixed latency to every call and throttles
 * anything over its rate limit, set equal to the provider's, so
 * "throttled: 0" means the limit was respected.
 *
 *   bench_aws_observe URL STATE_DIR COUNT LATENCY_MS RPS
 *
 * Phases: make COUNT endpoints (no latency), then with LATENCY_MS:
 *   cold      a provider that knows nothing (no records): list + describe
 *   restart   a provider started on the records the first one kept
 *   refresh   the same provider once every look is due again
 * and prints one line per phase with seconds, calls and throttled calls.
 *
 * Then the pace of looks, as calls per endpoint per minute, with the
 * reconciler's loop played here (a pass every 0.5 s observes every
 * endpoint and steps up to 32 unfinished ones, each no sooner than its
 * last step's retry_in_s), poll_s = 5 and refresh_s = 10:
 *   at rest   every endpoint InService
 *   updating  every endpoint in a long UpdateEndpointWeightsAndCapacities
 *   creating  COUNT more endpoints in a long Creating
 */
#include "providers/aws/aws.h"
#include "providers/provider.h"
#include "spec/spec.h"
#include "store/model.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern const struct provider_ops aws_provider;

static const char *fake_url;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t keep(char *data, size_t size, size_t n, void *arg)
{
	buf_add(arg, data, size * n);
	return size * n;
}

/* One request to the fake's control API; the answer in out if given. */
static int control(const char *path, const char *body, struct buf *out)
{
	char url[512];
	CURL *c = curl_easy_init();
	struct buf sink = BUF_INIT;
	CURLcode rc;

	snprintf(url, sizeof(url), "%s/_fake/%s", fake_url, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out ? out : &sink);
	rc = curl_easy_perform(c);
	curl_easy_cleanup(c);
	buf_free(&sink);
	return rc == CURLE_OK ? 0 : -EIO;
}

/* Calls the fake answered since the last clear, and how many throttled. */
static void calls_since(size_t *calls, size_t *throttled)
{
	struct buf out = BUF_INIT;
	json_t *doc, *c;
	size_t i;

	*calls = *throttled = 0;
	if (control("calls", NULL, &out) == 0 &&
	    (doc = json_loadb(out.data, out.len, 0, NULL))) {
		json_array_foreach(doc, i, c)
		{
			const char *err =
				json_string_value(json_object_get(c, "error"));

			(*calls)++;
			*throttled +=
				err && !strcmp(err, "ThrottlingException");
		}
		json_decref(doc);
	}
	buf_free(&out);
	control("calls/clear", "{}", NULL);
}

/* The fake's calls since the last clear, by operation. */
struct tally {
	size_t all, describe, list, throttled;
};

static void tally_calls(struct tally *t)
{
	struct buf out = BUF_INIT;
	json_t *doc, *c;
	size_t i;

	memset(t, 0, sizeof(*t));
	if (control("calls", NULL, &out) == 0 &&
	    (doc = json_loadb(out.data, out.len, 0, NULL))) {
		json_array_foreach(doc, i, c)
		{
			const char *op =
				json_string_value(json_object_get(c, "op"));
			const char *err =
				json_string_value(json_object_get(c, "error"));

			t->all++;
			t->describe += op && !strcmp(op, "DescribeEndpoint");
			t->list += op && !strcmp(op, "ListEndpoints");
			t->throttled +=
				err && !strcmp(err, "ThrottlingException");
		}
		json_decref(doc);
	}
	buf_free(&out);
	control("calls/clear", "{}", NULL);
}

static void wake(void *ctx)
{
	(void)ctx;
}

static struct spec *parse(const struct kind_def *k, const char *text)
{
	struct spec *s = NULL;
	struct spec_error err;

	if (spec_parse(k, text, strlen(text), &s, &err) < 0) {
		fprintf(stderr, "bench: %s\n", err.msg);
		exit(1);
	}
	return s;
}

struct world {
	struct target *t;
	struct desired *want;
	char (*names)[24];
	size_t n;
};

static void make_world(struct world *w, size_t n, const struct spec *spec,
		       const struct spec *config)
{
	w->n = n;
	w->t = calloc(n, sizeof(*w->t));
	w->want = calloc(n, sizeof(*w->want));
	w->names = calloc(n, sizeof(*w->names));
	for (size_t i = 0; i < n; i++) {
		snprintf(w->names[i], sizeof(w->names[i]), "e%05zu", i);
		w->want[i] = (struct desired){ .env = "bench",
					       .kind = KIND_ENDPOINT_IDX,
					       .name = w->names[i],
					       .rev = 1,
					       .spec = spec,
					       .config = config };
		w->t[i] = (struct target){ .env = "bench",
					   .kind = KIND_ENDPOINT_IDX,
					   .name = w->names[i],
					   .want = &w->want[i] };
	}
}

static size_t ready(const struct world *w)
{
	size_t k = 0;

	for (size_t i = 0; i < w->n; i++)
		k += w->t[i].obs.state == RS_READY;
	return k;
}

/* As the reconciler steps them: at most 32 a pass, together. */
static void step_all(void *state, struct world *w)
{
	struct target *batch[32];
	int rcs[32];

	for (size_t i = 0; i < w->n;) {
		size_t k = 0;

		while (k < 32 && i < w->n)
			batch[k++] = &w->t[i++];
		aws_provider.step_many(state, batch, rcs, k);
	}
}

/* Every endpoint to two instances: one UpdateEndpointWeightsAndCapacities
 * each, 32 at a time, then the look that follows a step. Returns the
 * spec they now point to. */
static struct spec *scale_all(void *state, struct world *w)
{
	struct spec *two = parse(&kind_endpoint, "image = example.com/llm:1\n"
						 "model = s3://bench/model/\n"
						 "replicas = 2\n");
	size_t calls, throttled;
	double t0;

	for (size_t i = 0; i < w->n; i++) {
		w->want[i].spec = two;
		w->want[i].rev = 2;
	}
	t0 = now_s();
	step_all(state, w);
	printf("%-8s %6zu endpoints %7.2f s ", "scale", w->n, now_s() - t0);
	calls_since(&calls, &throttled);
	printf("%6zu calls %4zu throttled\n", calls, throttled);
	return two;
}

static void phase(const char *name, void *state, struct world *w)
{
	size_t calls, throttled;
	double t0 = now_s();

	aws_provider.observe(state, w->t, w->n);
	double took = now_s() - t0;

	calls_since(&calls, &throttled);
	printf("%-8s %6zu endpoints %7.2f s %6zu calls %4zu throttled "
	       "%6zu ready\n",
	       name, w->n, took, calls, throttled, ready(w));
}

/* The reconciler's loop for SECONDS: what the pace of looks costs. */
static void run_passes(void *state, struct world *w, double seconds)
{
	double end = now_s() + seconds;
	double *due = calloc(w->n, sizeof(*due));
	struct target **batch = calloc(32, sizeof(*batch));
	size_t at[32];
	int rcs[32];

	while (now_s() < end) {
		double t0 = now_s(), left;
		size_t k = 0;

		aws_provider.observe(state, w->t, w->n);
		for (size_t i = 0; i < w->n && k < 32; i++) {
			if (w->t[i].obs.state == RS_READY || due[i] > t0)
				continue;
			at[k] = i;
			batch[k++] = &w->t[i];
		}
		if (k)
			aws_provider.step_many(state, batch, rcs, k);
		for (size_t j = 0; j < k; j++)
			due[at[j]] = now_s() +
				     (rcs[j] ? 1.0 : batch[j]->obs.retry_in_s);
		left = t0 + 0.5 - now_s();
		if (left > 0)
			usleep((useconds_t)(left * 1e6));
	}
	free(batch);
	free(due);
}

static void pace(const char *name, void *state, struct world *w, double seconds)
{
	struct tally t;

	control("calls/clear", "{}", NULL);
	run_passes(state, w, seconds);
	tally_calls(&t);
	printf("%-9s %6zu endpoints %4.0f s %6zu calls (%zu List, %zu "
	       "Describe) %4zu throttled  %.3f calls per endpoint per "
	       "minute, %.3f Describes\n",
	       name, w->n, seconds, t.all, t.list, t.describe, t.throttled,
	       (double)t.all / (double)w->n * 60.0 / seconds,
	       (double)t.describe / (double)w->n * 60.0 / seconds);
}

static void set_config(struct world *w, const struct spec *config)
{
	for (size_t i = 0; i < w->n; i++)
		w->want[i].config = config;
}

/* The pace phases; the world's endpoints are all InService. */
static void paces(void *state, struct world *w, const char *url,
		  const char *rps, double seconds)
{
	char text[1024];
	struct spec *config, *three;
	struct world more;
	const struct spec *spec = w->want[0].spec;

	snprintf(text, sizeof(text),
		 "provider = aws\nregion = us-east-1\nrefresh_s = 10\n"
		 "aws.poll_s = 5\naws.endpoint_url = %s\n"
		 "aws.execution_role = arn:aws:iam::123456789012:role/bench\n"
		 "aws.requests_per_second = %s\n",
		 url, rps);
	config = parse(&kind_config, text);
	set_config(w, config);
	printf("pace of looks: poll_s = 5, refresh_s = 10, a pass every "
	       "0.5 s\n");
	/* Until the last of the scaling has been seen: at rest means so. */
	run_passes(state, w, 12);
	pace("at rest", state, w, seconds);

	control("config", "{\"update_s\": 600}", NULL);
	three = parse(&kind_endpoint, "image = example.com/llm:1\n"
				      "model = s3://bench/model/\n"
				      "replicas = 3\n");
	for (size_t i = 0; i < w->n; i++) {
		w->want[i].spec = three;
		w->want[i].rev = 3;
	}
	step_all(state, w);
	aws_provider.observe(state, w->t, w->n);
	pace("updating", state, w, seconds);

	control("config", "{\"create_s\": 600}", NULL);
	make_world(&more, w->n, spec, config);
	for (size_t i = 0; i < more.n; i++)
		snprintf(more.names[i], sizeof(more.names[i]), "n%05zu", i);
	aws_provider.observe(state, more.t, more.n);
	step_all(state, &more);
	aws_provider.observe(state, more.t, more.n);
	pace("creating", state, &more, seconds);
	spec_free(three);
	spec_free(config);
	free(more.t);
	free(more.want);
	free(more.names);
}

int main(int argc, char **argv)
{
	struct provider_host host = { .wake = wake };
	char config_text[1024], body[128], cold_dir[4096];
	struct spec *spec, *config, *two;
	struct world w;
	void *state;

	if (argc != 6) {
		fprintf(stderr,
			"usage: %s URL STATE_DIR COUNT LATENCY_MS "
			"RPS\n",
			argv[0]);
		return 2;
	}
	fake_url = argv[1];
	snprintf(config_text, sizeof(config_text),
		 "provider = aws\nregion = us-east-1\nrefresh_s = 1\n"
		 "aws.endpoint_url = %s\n"
		 "aws.execution_role = arn:aws:iam::123456789012:role/bench\n"
		 "aws.requests_per_second = %s\n",
		 argv[1], argv[5]);
	config = parse(&kind_config, config_text);
	spec = parse(&kind_endpoint, "image = example.com/llm:1\n"
				     "model = s3://bench/model/\n");
	make_world(&w, strtoul(argv[3], NULL, 10), spec, config);
	host.state_dir = argv[2];

	/* Make them, quickly: no latency, no rate limit at the fake. */
	control("config",
		"{\"latency_ms\": 0, \"rate_limit_rps\": 0, \"create_s\": 0}",
		NULL);
	aws_provider.start(&host, &state);
	aws_provider.observe(state, w.t, w.n);
	step_all(state, &w);
	/* As the daemon would, until it has seen them all InService. */
	while (ready(&w) < w.n) {
		sleep(1);
		aws_provider.observe(state, w.t, w.n);
	}
	aws_provider.stop(state);
	control("calls/clear", "{}", NULL);

	snprintf(body, sizeof(body),
		 "{\"latency_ms\": %s, \"rate_limit_rps\": %s}", argv[4],
		 argv[5]);
	control("config", body, NULL);

	/* Nothing known: another state folder, no records. */
	snprintf(cold_dir, sizeof(cold_dir), "%s/cold", argv[2]);
	host.state_dir = cold_dir;
	aws_provider.start(&host, &state);
	phase("cold", state, &w);
	aws_provider.stop(state);

	host.state_dir = argv[2];
	aws_provider.start(&host, &state);
	phase("restart", state, &w);
	sleep(1); /* refresh_s = 1: every look is due again */
	phase("refresh", state, &w);
	two = scale_all(state, &w);
	/* Until the scaling is over: the pace phases start at rest. */
	while (ready(&w) < w.n) {
		sleep(1);
		aws_provider.observe(state, w.t, w.n);
	}
	paces(state, &w, argv[1], argv[5],
	      getenv("BENCH_AWS_PACE_S") ? atof(getenv("BENCH_AWS_PACE_S"))
					 : 30.0);
	aws_provider.stop(state);
	spec_free(two);
	spec_free(spec);
	spec_free(config);
	free(w.t);
	free(w.want);
	free(w.names);
	return 0;
}
