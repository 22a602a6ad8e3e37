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
 * each, 32 at a time, then the look that follows a step. */
static void scale_all(void *state, struct world *w)
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
	spec_free(two);
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

int main(int argc, char **argv)
{
	struct provider_host host = { .wake = wake };
	char config_text[1024], body[128], cold_dir[4096];
	struct spec *spec, *config;
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
	scale_all(state, &w);
	aws_provider.stop(state);
	spec_free(spec);
	spec_free(config);
	free(w.t);
	free(w.want);
	free(w.names);
	return 0;
}
