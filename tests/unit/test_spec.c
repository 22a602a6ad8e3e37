// SPDX-License-Identifier: MIT
/* Unit tests of the spec language: schema, parser, checks, rendering, edits. */
#include "spec/spec.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct field_def *field(const struct kind_def *k, const char *name)
{
	return kind_field(k, name, strlen(name));
}

static struct spec *parse(const struct kind_def *k, const char *text,
			  struct spec_error *err)
{
	struct spec *s = NULL;
	int rc = spec_parse(k, text, strlen(text), &s, err);

	CHECK(rc == 0 || (rc == -EINVAL && !s));
	return s;
}

/* Parses text that must be valid; says why when it was not. */
static struct spec *parse_ok(const struct kind_def *k, const char *text)
{
	struct spec_error e = { 0 };
	struct spec *s = parse(k, text, &e);

	CHECK(s != NULL);
	if (!s)
		fprintf(stderr, "  parsing \"%.60s\": %s\n", text, e.msg);
	return s;
}

#define PARSE_OK parse_ok

/* Parses text that must fail with exactly want; checks line and key too. */
#define PARSE_ERR(k, text, want_line, want_key, want)      \
	do {                                               \
		struct spec_error e_ = { 0 };              \
		struct spec *s_ = parse((k), (text), &e_); \
		CHECK(s_ == NULL);                         \
		spec_free(s_);                             \
		CHECK_STR(e_.msg, (want));                 \
		CHECK_INT(e_.line, (want_line));           \
		CHECK_STR(e_.key, (want_key));             \
	} while (0)

/* The field file text of name, as a string the caller frees. */
static char *ftext(const struct spec *s, const char *name)
{
	struct buf b = BUF_INIT;

	spec_field_text(s, field(s->kind, name), &b);
	return buf_steal(&b);
}

#define FIELD_IS(s, name, want)                \
	do {                                   \
		char *t_ = ftext((s), (name)); \
		CHECK_STR(t_, (want));         \
		free(t_);                      \
	} while (0)

#define JSON_IS(s, want)                                 \
	do {                                             \
		json_t *j_ = spec_to_json(s);            \
		char *t_ = json_dumps(j_, JSON_COMPACT); \
		CHECK_STR(t_, (want));                   \
		free(t_);                                \
		json_decref(j_);                         \
	} while (0)

#define RULES_ERR(s, want_line, want_key, want)                 \
	do {                                                    \
		struct spec_error e_ = { 0 };                   \
		CHECK_INT(spec_check_rules((s), &e_), -EINVAL); \
		CHECK_STR(e_.msg, (want));                      \
		CHECK_INT(e_.line, (want_line));                \
		CHECK_STR(e_.key, (want_key));                  \
	} while (0)

#define VALUE_OK(k, name, value)                                        \
	do {                                                            \
		struct spec_error e_ = { 0 };                           \
		int rc_ = spec_check_value(field((k), (name)), (value), \
					   strlen(value), &e_);         \
		CHECK_STR(rc_ ? e_.msg : "", "");                       \
	} while (0)

#define VALUE_ERR(k, name, value, want_line, want_key, want)            \
	do {                                                            \
		struct spec_error e_ = { 0 };                           \
		CHECK_INT(spec_check_value(field((k), (name)), (value), \
					   strlen(value), &e_),         \
			  -EINVAL);                                     \
		CHECK_STR(e_.msg, (want));                              \
		CHECK_INT(e_.line, (want_line));                        \
		CHECK_STR(e_.key, (want_key));                          \
	} while (0)

/* spec_set_field on NUL-terminated strings; the result is the caller's. */
static char *set_field(const struct kind_def *k, const char *text,
		       const char *name, const char *value,
		       struct spec_error *err)
{
	struct buf out = BUF_INIT;
	int rc = spec_set_field(k, text, strlen(text), field(k, name), value,
				strlen(value), &out, err);

	if (rc) {
		CHECK(rc == -EINVAL);
		buf_free(&out);
		return NULL;
	}
	return buf_steal(&out);
}

#define SET_IS(k, text, name, value, want)                               \
	do {                                                             \
		struct spec_error e_ = { 0 };                            \
		char *t_ = set_field((k), (text), (name), (value), &e_); \
		CHECK_STR(t_ ? t_ : e_.msg, (want));                     \
		free(t_);                                                \
	} while (0)

static double now(void)
{
	struct timespec ts;

	timespec_get(&ts, TIME_UTC);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Schema ---- */

static void test_schema_lookup(void)
{
	CHECK(kind_by_name("pool") == &kind_pool);
	CHECK(kind_by_name("endpoint") == &kind_endpoint);
	CHECK(kind_by_name("config") == &kind_config);
	CHECK(kind_by_name("policy") == &kind_policy);
	CHECK(kind_by_name("pools") == NULL);
	CHECK(kind_by_name(NULL) == NULL);
	CHECK(kind_by_dir("pools") == &kind_pool);
	CHECK(kind_by_dir("endpoints") == &kind_endpoint);
	CHECK(kind_by_dir("config") == NULL);
	CHECK(kind_by_dir("pool") == NULL);
	CHECK(resource_kinds[0] == &kind_pool);
	CHECK(resource_kinds[1] == &kind_endpoint);
	CHECK(resource_kinds[2] == NULL);
	CHECK(kind_pool.dir && strcmp(kind_pool.dir, "pools") == 0);
	CHECK(kind_config.dir == NULL && kind_policy.dir == NULL);

	/* The name need not be NUL-terminated. */
	CHECK(kind_field(&kind_pool, "nodes = 4", 5) ==
	      field(&kind_pool, "nodes"));
	CHECK(kind_field(&kind_pool, "node", 4) == NULL);
	CHECK(kind_field(&kind_pool, "nodesx", 6) == NULL);
	CHECK_INT(kind_field_index(&kind_pool, field(&kind_pool, "nodes")), 2);
}

static void test_schema_accelerators(void)
{
	static const char *const want[] = {
		"cpu",
		"nvidia-t4",
		"nvidia-l4",
		"nvidia-a10g",
		"nvidia-a100-40gb",
		"nvidia-a100-80gb",
		"nvidia-h100-80gb",
		"nvidia-h200-141gb",
		"nvidia-b200",
	};
	size_t n = 0;

	while (accelerator_names[n])
		n++;
	CHECK_INT(n, 9);
	for (size_t i = 0; i < n && i < 9; i++)
		CHECK_STR(accelerator_names[i], want[i]);
	CHECK(field(&kind_pool, "accelerator")->choices == accelerator_names);
	CHECK(field(&kind_endpoint, "accelerator")->choices ==
	      accelerator_names);
	CHECK(field(&kind_policy, "allowed_accelerators")->choices ==
	      accelerator_names);
}

static void check_field_def(const struct kind_def *k, const struct field_def *f)
{
	struct spec_error e = { 0 };

	CHECK(f->help && strlen(f->help) > 10);
	CHECK(kind_field(k, f->name, strlen(f->name)) == f);
	if (f->type == FT_ENUM || f->type == FT_URI)
		CHECK(f->choices && f->choices[0]);
	if (f->type == FT_INT)
		CHECK(f->min <= f->max);
	/* Every free-form text has a length limit; a map, one per key too. */
	if (f->type == FT_STRING || f->type == FT_URI || f->type == FT_LIST ||
	    f->type == FT_MAP)
		CHECK(f->max_len > 0 && f->max_len <= SPEC_MAX_BYTES);
	CHECK(!!f->max_key_len == (f->type == FT_MAP));
	/* At most one way of describing the default. */
	CHECK(!!f->def + !!f->def_from + !!f->def_doc <= 1);
	if (f->def) {
		int rc = spec_check_value(f, f->def, strlen(f->def), &e);

		CHECK_STR(rc ? e.msg : "", "");
	}
	if (f->def_from) {
		const struct field_def *g =
			kind_field(k, f->def_from, strlen(f->def_from));

		CHECK(g && g->type == f->type);
	}
}

static void test_schema_fields(void)
{
	static const struct kind_def *const kinds[] = {
		&kind_pool, &kind_endpoint, &kind_config, &kind_policy
	};

	for (size_t i = 0; i < 4; i++) {
		for (size_t j = 0; j < kinds[i]->nfields; j++)
			check_field_def(kinds[i], &kinds[i]->fields[j]);
	}
	CHECK_INT(kind_pool.nfields, 9);
	CHECK_INT(kind_endpoint.nfields, 15);
	CHECK_INT(kind_config.nfields, 13);
	CHECK_INT(kind_policy.nfields, 8);
	CHECK_INT(field(&kind_pool, "accelerators_per_node")->min, 1);
	CHECK_INT(field(&kind_pool, "accelerators_per_node")->max, 16);
	CHECK_INT(field(&kind_endpoint, "port")->max, 65535);
	CHECK_INT(field(&kind_config, "settle_ms")->max, 3600000);
	CHECK_INT(field(&kind_config, "refresh_s")->min, 1);
	CHECK_INT(field(&kind_config, "refresh_s")->max, 86400);
	CHECK(field(&kind_endpoint, "scale_target")->nmin_exclusive);
	CHECK(!field(&kind_policy, "max_hourly_cost_usd")->nmin_exclusive);
	CHECK(field(&kind_endpoint, "pool")->type == FT_NAME);
	CHECK(field(&kind_config, "aws")->type == FT_MAP);
	CHECK_STR(field(&kind_pool, "min_nodes")->def_from, "nodes");
	CHECK_STR(field(&kind_endpoint, "max_replicas")->def_from, "replicas");
	CHECK_STR(field(&kind_policy, "max_accelerators")->def_doc,
		  "unlimited");
}

/* ---- Parsing: the line form ---- */

static void test_empty_means_defaults(void)
{
	static const char *const texts[] = {
		"", "\n\n", "# just a comment\n", "   \t\n# a\n  # b", "\r\n",
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct spec *s = PARSE_OK(&kind_pool, texts[i]);

		if (!s)
			continue;
		for (size_t j = 0; j < kind_pool.nfields; j++)
			CHECK(!s->v[j].set);
		FIELD_IS(s, "accelerator", "cpu\n");
		FIELD_IS(s, "accelerators_per_node", "1\n");
		FIELD_IS(s, "nodes", "1\n");
		FIELD_IS(s, "min_nodes", "1\n");
		FIELD_IS(s, "max_nodes", "1\n");
		FIELD_IS(s, "capacity", "on-demand\n");
		FIELD_IS(s, "zones", "");
		FIELD_IS(s, "instance_type", "");
		FIELD_IS(s, "labels", "");
		CHECK_INT(spec_check_rules(s, NULL), 0);
		spec_free(s);
	}
}

static void test_values_and_comments(void)
{
	struct spec *s = PARSE_OK(
		&kind_pool, "# a training pool\n"
			    "accelerator = nvidia-h100-80gb   # the big one\n"
			    "  accelerators_per_node=8\n"
			    "\n"
			    "nodes\t=\t4\t\n"
			    "capacity = spot\t# tab, then comment\n"
			    "instance_type = p5.48xlarge #\tcomment\n"
			    "zones = us-east-1a,us-east-1b , , us-east-1c,\n");

	if (!s)
		return;
	FIELD_IS(s, "accelerator", "nvidia-h100-80gb\n");
	FIELD_IS(s, "accelerators_per_node", "8\n");
	FIELD_IS(s, "nodes", "4\n");
	FIELD_IS(s, "instance_type", "p5.48xlarge\n");
	FIELD_IS(s, "zones", "us-east-1a, us-east-1b, us-east-1c\n");
	CHECK_INT(s->v[2].i, 4);
	CHECK_INT(s->v[2].line, 5);
	CHECK(s->v[2].set);
	CHECK_STR(s->v[2].text, "4");
	CHECK_INT(s->v[6].nitems, 3);
	CHECK_INT(s->v[6].line, 8);
	spec_free(s);

	/* "spot#not-a-comment" is not a capacity: the '#' was kept. */
	PARSE_ERR(&kind_pool, "capacity = spot#x\n", 1, "capacity",
		  "line 1: capacity: expected one of on-demand, spot, got "
		  "\"spot#x\"");

	/* A '#' inside a value is not a comment; after a blank it is. */
	s = PARSE_OK(&kind_endpoint, "image = repo/x#1\n"
				     "command = serve --port $PORT # local\n"
				     "model = hf://org/m#rev\n");
	if (s) {
		FIELD_IS(s, "image", "repo/x#1\n");
		FIELD_IS(s, "command", "serve --port $PORT\n");
		FIELD_IS(s, "model", "hf://org/m#rev\n");
		spec_free(s);
	}

	/* '=' in a value belongs to the value. */
	s = PARSE_OK(&kind_endpoint, "command = env A=1 serve\n");
	if (s) {
		FIELD_IS(s, "command", "env A=1 serve\n");
		spec_free(s);
	}
}

static void test_crlf(void)
{
	struct spec *s = PARSE_OK(&kind_pool, "nodes = 3\r\n"
					      "capacity = spot\r\n"
					      "labels.team = nlp\r\n"
					      "zones = a, b\r\n");

	if (!s)
		return;
	FIELD_IS(s, "nodes", "3\n");
	FIELD_IS(s, "capacity", "spot\n");
	FIELD_IS(s, "labels", "team = nlp\n");
	FIELD_IS(s, "zones", "a, b\n");
	spec_free(s);
	PARSE_ERR(&kind_pool, "nodes = 3\r\nnodes = x\r\n", 2, "nodes",
		  "line 2: nodes: expected an integer >= 0, got \"x\"");
}

static void test_later_wins(void)
{
	struct spec *s = PARSE_OK(&kind_pool, "nodes = 2\n"
					      "capacity = spot\n"
					      "nodes = 7\n"
					      "zones = a\n"
					      "zones = b, c\n");

	if (!s)
		return;
	FIELD_IS(s, "nodes", "7\n");
	CHECK_INT(s->v[2].line, 3);
	FIELD_IS(s, "zones", "b, c\n");
	FIELD_IS(s, "min_nodes", "7\n");
	spec_free(s);

	/* Even a bad value earlier on is an error: every line is checked. */
	PARSE_ERR(&kind_pool, "nodes = x\nnodes = 2\n", 1, "nodes",
		  "line 1: nodes: expected an integer >= 0, got \"x\"");
}

static void test_empty_value_unsets(void)
{
	struct spec *s = PARSE_OK(&kind_pool, "nodes = 5\n"
					      "capacity = spot\n"
					      "nodes =\n"
					      "zones = , ,\n"
					      "instance_type = x\n"
					      "instance_type =   \n");

	if (!s)
		return;
	CHECK(!s->v[2].set);
	FIELD_IS(s, "nodes", "1\n");
	FIELD_IS(s, "capacity", "spot\n");
	CHECK(!s->v[6].set);
	FIELD_IS(s, "zones", "");
	FIELD_IS(s, "instance_type", "");
	spec_free(s);
}

static void test_error_messages(void)
{
	PARSE_ERR(&kind_pool, "accelerator = cpu\n\nnodes = four\n", 3, "nodes",
		  "line 3: nodes: expected an integer >= 0, got \"four\"");
	PARSE_ERR(&kind_pool, "nodes = 2\naccelerators_per_node = 32\n", 2,
		  "accelerators_per_node",
		  "line 2: accelerators_per_node: expected an integer from 1 "
		  "to 16, got \"32\"");
	PARSE_ERR(&kind_pool, "accelerators_per_node = 0\n", 1,
		  "accelerators_per_node",
		  "line 1: accelerators_per_node: expected an integer from 1 "
		  "to 16, got \"0\"");
	PARSE_ERR(&kind_pool, "colour = red\n", 1, "colour",
		  "line 1: colour: unknown key; pool keys are accelerator, "
		  "accelerators_per_node, nodes, min_nodes, max_nodes, "
		  "capacity, zones, instance_type, labels.KEY");
	PARSE_ERR(&kind_pool, "a = cpu\n#\n\n\naccelerator = h100\n", 1, "a",
		  "line 1: a: unknown key; pool keys are accelerator, "
		  "accelerators_per_node, nodes, min_nodes, max_nodes, "
		  "capacity, zones, instance_type, labels.KEY");
	PARSE_ERR(&kind_pool, "#\n#\n#\n#\naccelerator = h100\n", 5,
		  "accelerator",
		  "line 5: accelerator: expected one of cpu, nvidia-t4, "
		  "nvidia-l4, nvidia-a10g, nvidia-a100-40gb, nvidia-a100-80gb, "
		  "nvidia-h100-80gb, nvidia-h200-141gb, nvidia-b200, got "
		  "\"h100\"");
	PARSE_ERR(&kind_pool, "\ncapacity = cheap\n", 2, "capacity",
		  "line 2: capacity: expected one of on-demand, spot, got "
		  "\"cheap\"");
	PARSE_ERR(&kind_endpoint, "\n\n\n\n\n\nmodel = /models/x\n", 7, "model",
		  "line 7: model: expected a URI starting with s3://, gs://, "
		  "file:// or hf://, got \"/models/x\"");
	PARSE_ERR(&kind_endpoint, "model = s3://\n", 1, "model",
		  "line 1: model: expected a URI starting with s3://, gs://, "
		  "file:// or hf://, got \"s3://\"");
	PARSE_ERR(&kind_endpoint, "model = s3://a b\n", 1, "model",
		  "line 1: model: expected a URI starting with s3://, gs://, "
		  "file:// or hf://, got \"s3://a b\"");
	PARSE_ERR(&kind_endpoint, "image = x\npool = Big_Pool\n", 2, "pool",
		  "line 2: pool: expected a name of lowercase letters, digits "
		  "and '-' (at most 63), got \"Big_Pool\"");
	PARSE_ERR(&kind_endpoint, "pool = -a\n", 1, "pool",
		  "line 1: pool: expected a name of lowercase letters, digits "
		  "and '-' (at most 63), got \"-a\"");
	PARSE_ERR(&kind_pool, "\n\nlabels = x\n", 3, "labels",
		  "line 3: labels: expected labels.KEY = value");
	PARSE_ERR(&kind_endpoint, "env = x\n", 1, "env",
		  "line 1: env: expected env.KEY = value");
	PARSE_ERR(&kind_pool, "nodes = 1\n\n\nnodes 4\n", 4, "",
		  "line 4: expected key = value, got \"nodes 4\"");
	PARSE_ERR(&kind_pool, "nodes 4 # four\n", 1, "",
		  "line 1: expected key = value, got \"nodes 4\"");
	PARSE_ERR(&kind_pool, " = 4\n", 1, "",
		  "line 1: expected key = value, got \"= 4\"");
	PARSE_ERR(&kind_pool, "nodes.x = 4\n", 1, "nodes.x",
		  "line 1: nodes.x: unknown key; pool keys are accelerator, "
		  "accelerators_per_node, nodes, min_nodes, max_nodes, "
		  "capacity, zones, instance_type, labels.KEY");
	PARSE_ERR(&kind_endpoint, "health_path = health\n", 1, "health_path",
		  "line 1: health_path: expected a path starting with \"/\", "
		  "got \"health\"");
	PARSE_ERR(&kind_endpoint, "env.TOKEN = secret:\n", 1, "env.TOKEN",
		  "line 1: env.TOKEN: expected secret:NAME with NAME a "
		  "secret's name, got \"secret:\"");
	PARSE_ERR(&kind_endpoint, "env.TOKEN = secret:Bad\n", 1, "env.TOKEN",
		  "line 1: env.TOKEN: expected secret:NAME with NAME a "
		  "secret's name, got \"secret:Bad\"");
	PARSE_ERR(&kind_endpoint, "scale_target = 0\n", 1, "scale_target",
		  "line 1: scale_target: expected a number > 0, got \"0\"");
	PARSE_ERR(&kind_endpoint, "port = 0\n", 1, "port",
		  "line 1: port: expected an integer from 1 to 65535, got "
		  "\"0\"");
	PARSE_ERR(&kind_endpoint, "port = 65536\n", 1, "port",
		  "line 1: port: expected an integer from 1 to 65535, got "
		  "\"65536\"");
	PARSE_ERR(&kind_endpoint, "scale_metric = qps\n", 1, "scale_metric",
		  "line 1: scale_metric: expected one of concurrency, rps, "
		  "invocations_per_replica, gpu_utilization, got \"qps\"");
	PARSE_ERR(&kind_config, "provider = azure\n", 1, "provider",
		  "line 1: provider: expected one of local, aws, kubernetes, "
		  "gcp, got \"azure\"");
	PARSE_ERR(&kind_config, "settle_ms = -1\n", 1, "settle_ms",
		  "line 1: settle_ms: expected an integer from 0 to 3600000, "
		  "got \"-1\"");
	PARSE_ERR(&kind_config, "refresh_s = 0\n", 1, "refresh_s",
		  "line 1: refresh_s: expected an integer from 1 to 86400, "
		  "got \"0\"");
	PARSE_ERR(&kind_config, "region = a\nbogus = 1\n", 2, "bogus",
		  "line 2: bogus: unknown key; config keys are provider, "
		  "region, approval, settle_ms, refresh_s, drift, "
		  "history_keep, history_keep_days, source, aws.KEY, "
		  "kubernetes.KEY, gcp.KEY, local.KEY");
	PARSE_ERR(&kind_policy, "allowed_accelerators = cpu, h100\n", 1,
		  "allowed_accelerators",
		  "line 1: allowed_accelerators: expected each item to be one "
		  "of cpu, nvidia-t4, nvidia-l4, nvidia-a10g, "
		  "nvidia-a100-40gb, nvidia-a100-80gb, nvidia-h100-80gb, "
		  "nvidia-h200-141gb, nvidia-b200, got \"h100\"");
	PARSE_ERR(&kind_policy, "allowed_capacity = spot,cheap\n", 1,
		  "allowed_capacity",
		  "line 1: allowed_capacity: expected each item to be one of "
		  "on-demand, spot, got \"cheap\"");
	PARSE_ERR(&kind_policy, "max_hourly_cost_usd = -0.5\n", 1,
		  "max_hourly_cost_usd",
		  "line 1: max_hourly_cost_usd: expected a number >= 0, got "
		  "\"-0.5\"");
	PARSE_ERR(&kind_policy, "protect = all\n", 1, "protect",
		  "line 1: protect: expected one of none, destroy, got "
		  "\"all\"");
}

static void test_long_values_are_shortened(void)
{
	struct buf text = BUF_INIT;
	struct spec_error e = { 0 };
	struct spec *s = NULL;

	buf_adds(&text, "nodes = ");
	for (int i = 0; i < 200; i++)
		buf_adds(&text, "é");
	buf_adds(&text, "\n");
	CHECK_INT(spec_parse(&kind_pool, text.data, text.len, &s, &e), -EINVAL);
	CHECK(strncmp(e.msg,
		      "line 1: nodes: expected an integer >= 0, got "
		      "\"ééé",
		      strlen("line 1: nodes: expected an integer >= 0, got "
			     "\"ééé")) == 0);
	CHECK(strstr(e.msg, "...\"") != NULL);
	CHECK(strlen(e.msg) < 200);

	/* A long unknown key fits err->key, cut on a character boundary. */
	buf_truncate(&text, 0);
	for (int i = 0; i < 100; i++)
		buf_adds(&text, "ü");
	buf_adds(&text, " = 1\n");
	CHECK_INT(spec_parse(&kind_pool, text.data, text.len, &s, &e), -EINVAL);
	CHECK(strlen(e.key) == 62);
	CHECK(strncmp(e.key, "üüü", 6) == 0);
	CHECK(strstr(e.msg, "...: unknown key; pool keys are") != NULL);
	buf_free(&text);
}

/* n bytes of c, as a string the caller frees. */
static char *repeat(char c, size_t n)
{
	char *p = malloc(n + 1);

	memset(p, c, n);
	p[n] = '\0';
	return p;
}

static void test_length_limits(void)
{
	char *at = repeat('x', 65536), *past = repeat('x', 65537);
	struct buf text = BUF_INIT;
	struct spec_error e = { 0 };
	struct spec *s;

	/* The whole value is kept, however close to the limit. */
	buf_printf(&text, "command = %s\n", at);
	s = PARSE_OK(&kind_endpoint, buf_str(&text));
	if (s)
		CHECK_INT(strlen(spec_field(s, "command")->text), 65536);
	spec_free(s);
	/* One byte more is refused, naming the limit, in every path. */
	buf_truncate(&text, 0);
	buf_printf(&text, "command = %s\n", past);
	PARSE_ERR(&kind_endpoint, buf_str(&text), 1, "command",
		  "line 1: command: longer than 65536 bytes (the limit), got "
		  "65537");
	CHECK_INT(spec_check_lines(&kind_endpoint, text.data, text.len, 0,
				   text.len, &e),
		  -EINVAL);
	CHECK_STR(e.msg, "line 1: command: longer than 65536 bytes (the "
			 "limit), got 65537");
	VALUE_ERR(&kind_endpoint, "command", past, 0, "command",
		  "command: longer than 65536 bytes (the limit), got 65537");
	buf_truncate(&text, 0);
	buf_printf(&text, "{\"image\": \"%.*s\"}", 2049, past);
	PARSE_ERR(&kind_endpoint, buf_str(&text), 0, "image",
		  "image: longer than 2048 bytes (the limit), got 2049");
	/* A map limits each value, and each key. */
	buf_truncate(&text, 0);
	buf_printf(&text, "labels.team = %.*s\n", 257, past);
	PARSE_ERR(&kind_pool, buf_str(&text), 1, "labels.team",
		  "line 1: labels.team: longer than 256 bytes (the limit), "
		  "got 257");
	buf_truncate(&text, 0);
	buf_printf(&text, "labels.%.*s = v\n", 129, past);
	CHECK_INT(spec_parse(&kind_pool, text.data, text.len, &s, &e), -EINVAL);
	CHECK_HAS(e.msg, "...: KEY longer than 128 bytes (the limit), got 129");
	buf_free(&text);
	free(at);
	free(past);
}

/* Messages become lines of status and events: what they quote of the
 * user's text is escaped, and so is the key at fault. */
static void test_messages_escape_what_they_quote(void)
{
	PARSE_ERR(&kind_pool, "nodes = 1\x1b[2J\n", 1, "nodes",
		  "line 1: nodes: expected an integer >= 0, got "
		  "\"1\\x1b[2J\"");
	PARSE_ERR(&kind_pool, "{\"labels.a\\nstate: ready\": \"x\"}", 0,
		  "labels.a\\nstate: ready",
		  "labels.a\\nstate: ready: expected labels.KEY with KEY of "
		  "letters, digits, '.', '_', '/' and '-', got "
		  "\"a\\nstate: ready\"");
	PARSE_ERR(&kind_pool, "{\"labels\": {\"a\\r\\u009b\": \"x\"}}", 0,
		  "labels.a\\r\\xc2\\x9b",
		  "labels.a\\r\\xc2\\x9b: expected labels.KEY with KEY of "
		  "letters, digits, '.', '_', '/' and '-', got "
		  "\"a\\r\\xc2\\x9b\"");
	{
		static const char text[] = "{\"nodes\\u001b\": 1}";
		struct spec_error e = { 0 };
		struct spec *s = NULL;

		CHECK_INT(spec_parse(&kind_pool, text, strlen(text), &s, &e),
			  -EINVAL);
		CHECK_HAS(e.msg, "nodes\\x1b: unknown key; pool keys are ");
	}
	PARSE_ERR(&kind_config, "{\"aws\": {\"pro\\tfile\": \"x\"}}", 0,
		  "aws.pro\\tfile",
		  "aws.pro\\tfile: expected aws.KEY with KEY of lowercase "
		  "letters, digits, '_', '.' and '-', got \"pro\\tfile\"");
}

static void test_integers(void)
{
	static const struct {
		const char *text;
		long long want;
	} good[] = {
		{ "nodes = 0", 0 },
		{ "nodes = +4", 4 },
		{ "nodes = 007", 7 },
		{ "nodes = 9223372036854775807", 9223372036854775807LL },
	};
	static const char *const bad[] = {
		"4.0",
		"0x10",
		"1e3",
		"4 nodes",
		"- 1",
		"+",
		"-",
		"--1",
		"9223372036854775808",
		"-9223372036854775809",
		"-1",
		"١",
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct spec *s = PARSE_OK(&kind_pool, good[i].text);

		if (s)
			CHECK_INT(s->v[2].i, good[i].want);
		spec_free(s);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128], want[160];

		snprintf(text, sizeof(text), "nodes = %s\n", bad[i]);
		snprintf(want, sizeof(want),
			 "line 1: nodes: expected an integer >= 0, got \"%s\"",
			 bad[i]);
		PARSE_ERR(&kind_pool, text, 1, "nodes", want);
	}
}

static void test_numbers(void)
{
	static const struct {
		const char *text, *shown;
		double want;
	} good[] = {
		{ "0.5", "0.5\n", 0.5 },
		{ ".25", "0.25\n", 0.25 },
		{ "1e3", "1000\n", 1000 },
		{ "+2.", "2\n", 2 },
		{ "100", "100\n", 100 },
		{ "0.1", "0.1\n", 0.1 },
		{ "1e-9", "1e-09\n", 1e-9 },
		{ "123456.789", "123456.789\n", 123456.789 },
	};
	static const char *const bad[] = {
		"0",   "-1", "inf", "nan", "0x1p3", "1e999",
		"1,5", "e",  ".",   "1e",  "five",
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char text[64];
		struct spec *s;

		snprintf(text, sizeof(text), "scale_target = %s", good[i].text);
		s = PARSE_OK(&kind_endpoint, text);
		if (!s)
			continue;
		CHECK(s->v[11].d == good[i].want);
		FIELD_IS(s, "scale_target", good[i].shown);
		spec_free(s);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[64], want[128];

		snprintf(text, sizeof(text), "scale_target = %s", bad[i]);
		snprintf(want, sizeof(want),
			 "line 1: scale_target: expected a number > 0, got "
			 "\"%s\"",
			 bad[i]);
		PARSE_ERR(&kind_endpoint, text, 1, "scale_target", want);
	}
	/* >= 0 includes 0. */
	struct spec *s = PARSE_OK(&kind_policy, "max_hourly_cost_usd = 0");

	if (s)
		FIELD_IS(s, "max_hourly_cost_usd", "0\n");
	spec_free(s);
}

static void test_lists(void)
{
	struct spec *s = PARSE_OK(&kind_policy,
				  "allowed_accelerators = cpu,nvidia-b200 ,\t"
				  "nvidia-t4\n"
				  "allowed_capacity = spot\n"
				  "require_labels = team, cost-center\n");

	if (!s)
		return;
	CHECK_INT(s->v[2].nitems, 3);
	CHECK_STR(s->v[2].items[1], "nvidia-b200");
	FIELD_IS(s, "allowed_accelerators", "cpu, nvidia-b200, nvidia-t4\n");
	FIELD_IS(s, "allowed_capacity", "spot\n");
	FIELD_IS(s, "require_labels", "team, cost-center\n");
	FIELD_IS(s, "max_accelerators", "");
	FIELD_IS(s, "protect", "none\n");
	JSON_IS(s, "{\"allowed_accelerators\":[\"cpu\",\"nvidia-b200\","
		   "\"nvidia-t4\"],\"allowed_capacity\":[\"spot\"],"
		   "\"protect\":\"none\",\"require_labels\":[\"team\","
		   "\"cost-center\"],\"secrets_use\":\"owner\"}");
	spec_free(s);
}

static void test_maps(void)
{
	struct spec *s =
		PARSE_OK(&kind_pool, "labels.team = nlp\n"
				     "labels.example.com/owner = ana\n"
				     "labels.tier = gold\n"
				     "labels.team = cv\n"
				     "labels.tier =\n"
				     "labels.Cost_Center-1 = 42 # a comment\n");

	if (!s)
		return;
	CHECK_INT(s->v[8].npairs, 3);
	CHECK_STR(s->v[8].pairs[0].key, "team");
	CHECK_STR(s->v[8].pairs[0].value, "cv");
	CHECK_INT(s->v[8].pairs[0].line, 4);
	FIELD_IS(s, "labels",
		 "team = cv\n"
		 "example.com/owner = ana\n"
		 "Cost_Center-1 = 42\n");
	spec_free(s);

	/* Unsetting every key leaves the map unset. */
	s = PARSE_OK(&kind_pool, "labels.a = 1\nlabels.a = \n");
	if (s) {
		CHECK(!s->v[8].set);
		CHECK_INT(s->v[8].npairs, 0);
		FIELD_IS(s, "labels", "");
		JSON_IS(s, "{\"accelerator\":\"cpu\",\"accelerators_per_node\":"
			   "1,\"nodes\":1,\"min_nodes\":1,\"max_nodes\":1,"
			   "\"capacity\":\"on-demand\"}");
		spec_free(s);
	}

	PARSE_ERR(&kind_pool, "labels.bad key = x\n", 1, "labels.bad key",
		  "line 1: labels.bad key: expected labels.KEY with KEY of "
		  "letters, digits, '.', '_', '/' and '-', got \"bad key\"");
	PARSE_ERR(&kind_pool, "labels. = x\n", 1, "labels.",
		  "line 1: labels.: expected labels.KEY with KEY of letters, "
		  "digits, '.', '_', '/' and '-', got \"\"");
	PARSE_ERR(&kind_endpoint, "env.1X = a\n", 1, "env.1X",
		  "line 1: env.1X: expected env.NAME with NAME a shell "
		  "variable name, got \"1X\"");
	PARSE_ERR(&kind_endpoint, "env.A-B = a\n", 1, "env.A-B",
		  "line 1: env.A-B: expected env.NAME with NAME a shell "
		  "variable name, got \"A-B\"");
	PARSE_ERR(&kind_endpoint, "env.PORT = 80\n", 1, "env.PORT",
		  "line 1: env.PORT: env.* cannot set PORT, "
		  "CUDA_VISIBLE_DEVICES or INFRAFS_*, which infrafs sets "
		  "itself");
	PARSE_ERR(&kind_endpoint, "env.INFRAFS_REV = 1\n", 1, "env.INFRAFS_REV",
		  "line 1: env.INFRAFS_REV: env.* cannot set PORT, "
		  "CUDA_VISIBLE_DEVICES or INFRAFS_*, which infrafs sets "
		  "itself");
	PARSE_ERR(&kind_config, "aws.Profile = x\n", 1, "aws.Profile",
		  "line 1: aws.Profile: expected aws.KEY with KEY of lowercase "
		  "letters, digits, '_', '.' and '-', got \"Profile\"");

	s = PARSE_OK(&kind_endpoint, "env.LOG_LEVEL = debug\n"
				     "env._x9 = a b c\n"
				     "env.TOKEN = secret:hf-token\n"
				     "env.PLAIN = secretive\n");
	if (s) {
		FIELD_IS(s, "env",
			 "LOG_LEVEL = debug\n_x9 = a b c\n"
			 "TOKEN = secret:hf-token\nPLAIN = secretive\n");
		spec_free(s);
	}

	s = PARSE_OK(&kind_config, "provider = aws\n"
				   "aws.profile = prod\n"
				   "aws.endpoint_url = http://localhost:4566\n"
				   "kubernetes.context = kind-dev\n"
				   "gcp.project = p-1\n"
				   "local.work_dir = /var/tmp/x\n");
	if (s) {
		FIELD_IS(s, "aws",
			 "profile = prod\n"
			 "endpoint_url = http://localhost:4566\n");
		FIELD_IS(s, "kubernetes", "context = kind-dev\n");
		FIELD_IS(s, "gcp", "project = p-1\n");
		FIELD_IS(s, "local", "work_dir = /var/tmp/x\n");
		FIELD_IS(s, "settle_ms", "500\n");
		FIELD_IS(s, "refresh_s", "30\n");
		FIELD_IS(s, "region", "");
		spec_free(s);
	}
}

static void test_encoding(void)
{
	static const char nul[] = "nodes = 1\ncapacity = sp\0t\n";
	static const char bad_utf8[] = "nodes = 1\n\ninstance_type = \xff\n";
	static const char overlong[] = "instance_type = \xc0\xaf\n";
	struct spec_error e = { 0 };
	struct spec *s = NULL;

	CHECK_INT(spec_parse(&kind_pool, nul, sizeof(nul) - 1, &s, &e),
		  -EINVAL);
	CHECK_STR(e.msg, "line 2: NUL byte");
	CHECK_INT(e.line, 2);
	CHECK_STR(e.key, "");
	CHECK_INT(
		spec_parse(&kind_pool, bad_utf8, sizeof(bad_utf8) - 1, &s, &e),
		-EINVAL);
	CHECK_STR(e.msg, "line 3: invalid UTF-8");
	CHECK_INT(
		spec_parse(&kind_pool, overlong, sizeof(overlong) - 1, &s, &e),
		-EINVAL);
	CHECK_STR(e.msg, "line 1: invalid UTF-8");
	CHECK(s == NULL);

	/* Even inside a comment. */
	CHECK_INT(spec_parse(&kind_pool, "# \xfe\n", 4, &s, &e), -EINVAL);
	CHECK_STR(e.msg, "line 1: invalid UTF-8");

	/* And in JSON, with the line counted. */
	CHECK_INT(spec_parse(&kind_pool, "{\n\"nodes\": \"\xff\"}", 15, &s, &e),
		  -EINVAL);
	CHECK_STR(e.msg, "line 2: invalid UTF-8");
	CHECK_INT(spec_parse(&kind_pool, "{\"nodes\":\n\n1\0}", 14, &s, &e),
		  -EINVAL);
	CHECK_STR(e.msg, "line 3: NUL byte");

	/* Valid UTF-8 is fine anywhere text is. */
	s = PARSE_OK(&kind_pool, "labels.team = équipe-ñ 日本\n# ✓\n");
	if (s)
		FIELD_IS(s, "labels", "team = équipe-ñ 日本\n");
	spec_free(s);
}

static void test_size_limit(void)
{
	size_t len = SPEC_MAX_BYTES + 1;
	char *text = malloc(len);
	struct spec_error e = { 0 };
	struct spec *s = NULL;

	memset(text, '\n', len);
	CHECK_INT(spec_parse(&kind_pool, text, len, &s, &e), -EINVAL);
	CHECK_STR(e.msg, "the text is 1048577 bytes, more than the 1048576 "
			 "allowed");
	CHECK_INT(spec_check_lines(&kind_pool, text, len, 0, len, &e), -EINVAL);
	CHECK_INT(spec_parse(&kind_pool, text, len - 1, &s, &e), 0);
	spec_free(s);
	free(text);
}

/* ---- Parsing: JSON ---- */

static void test_json(void)
{
	struct spec *s = PARSE_OK(
		&kind_pool,
		"  \n{\"accelerator\": \"nvidia-a10g\","
		" \"nodes\": 3, \"max_nodes\": \"6\","
		" \"zones\": [\"a\", \" b \", \"\"],"
		" \"labels\": {\"team\": \"nlp\", \"n\": 2},"
		" \"labels.owner\": \"ana\","
		" \"instance_type\": null,"
		" \"capacity\": \"spot\", \"capacity\": \"on-demand\"}");

	if (!s)
		return;
	FIELD_IS(s, "accelerator", "nvidia-a10g\n");
	FIELD_IS(s, "nodes", "3\n");
	FIELD_IS(s, "min_nodes", "3\n");
	FIELD_IS(s, "max_nodes", "6\n");
	FIELD_IS(s, "zones", "a, b\n");
	FIELD_IS(s, "labels", "team = nlp\nn = 2\nowner = ana\n");
	FIELD_IS(s, "capacity", "on-demand\n");
	CHECK_INT(s->v[2].line, 0);
	CHECK(!s->v[7].set);
	JSON_IS(s, "{\"accelerator\":\"nvidia-a10g\",\"accelerators_per_node\":"
		   "1,\"nodes\":3,\"min_nodes\":3,\"max_nodes\":6,\"capacity\":"
		   "\"on-demand\",\"zones\":[\"a\",\"b\"],\"labels\":{\"team\":"
		   "\"nlp\",\"n\":\"2\",\"owner\":\"ana\"}}");
	spec_free(s);

	s = PARSE_OK(&kind_endpoint, "{\"scale_target\": 0.5, "
				     "\"replicas\": 4.0, \"env\": null}");
	if (s) {
		FIELD_IS(s, "scale_target", "0.5\n");
		FIELD_IS(s, "replicas", "4\n");
		spec_free(s);
	}
	s = PARSE_OK(&kind_pool, "{}");
	if (s) {
		FIELD_IS(s, "nodes", "1\n");
		spec_free(s);
	}

	PARSE_ERR(&kind_pool, "{\"nodes\": \"four\"}", 0, "nodes",
		  "nodes: expected an integer >= 0, got \"four\"");
	PARSE_ERR(&kind_pool, "{\"nodes\": -2}", 0, "nodes",
		  "nodes: expected an integer >= 0, got \"-2\"");
	PARSE_ERR(&kind_pool, "{\"nodes\": 2.5}", 0, "nodes",
		  "nodes: expected an integer >= 0, got \"2.5\"");
	PARSE_ERR(&kind_pool, "{\"nodes\": true}", 0, "nodes",
		  "nodes: expected a JSON string or number, got true");
	PARSE_ERR(&kind_pool, "{\"capacity\": false}", 0, "capacity",
		  "capacity: expected a JSON string or number, got false");
	PARSE_ERR(&kind_pool, "{\"nodes\": [1]}", 0, "nodes",
		  "nodes: expected a JSON string or number, got an array");
	PARSE_ERR(&kind_pool, "{\"nodes\": {\"a\": 1}}", 0, "nodes",
		  "nodes: expected a JSON string or number, got an object");
	PARSE_ERR(&kind_pool, "{\"zones\": [\"a\", [\"b\"]]}", 0, "zones",
		  "zones: expected a JSON string or number, got an array");
	PARSE_ERR(&kind_pool, "{\"labels\": \"x\"}", 0, "labels",
		  "labels: expected a JSON object, got a string");
	PARSE_ERR(&kind_pool, "{\"labels\": [\"x\"]}", 0, "labels",
		  "labels: expected a JSON object, got an array");
	PARSE_ERR(&kind_pool, "{\"labels\": {\"a b\": \"x\"}}", 0, "labels.a b",
		  "labels.a b: expected labels.KEY with KEY of letters, "
		  "digits, '.', '_', '/' and '-', got \"a b\"");
	PARSE_ERR(&kind_pool, "{\"labels\": {\"a\": true}}", 0, "labels.a",
		  "labels.a: expected a JSON string or number, got true");
	PARSE_ERR(&kind_pool, "{\"colour\": \"red\"}", 0, "colour",
		  "colour: unknown key; pool keys are accelerator, "
		  "accelerators_per_node, nodes, min_nodes, max_nodes, "
		  "capacity, zones, instance_type, labels.KEY");
	PARSE_ERR(&kind_endpoint, "{\"command\": \"a\\nb\"}", 0, "command",
		  "command: expected a single line of text");
	PARSE_ERR(&kind_pool, "{\"nodes\": 1,\n \"capacity\": }", 2, "",
		  "line 2: invalid JSON: unexpected token near '}'");
	PARSE_ERR(&kind_pool, "{\"nodes\": 1} x", 1, "",
		  "line 1: invalid JSON: end of file expected near 'x'");

	/* A '#' in a JSON string is just a character. */
	s = PARSE_OK(&kind_endpoint, "{\"command\": \"serve # x\"}");
	if (s) {
		FIELD_IS(s, "command", "serve # x\n");
		spec_free(s);
	}
	/* Text that only mentions JSON later is the line form. */
	PARSE_ERR(&kind_pool, "# {\nx = {}\n", 2, "x",
		  "line 2: x: unknown key; pool keys are accelerator, "
		  "accelerators_per_node, nodes, min_nodes, max_nodes, "
		  "capacity, zones, instance_type, labels.KEY");
}

/* ---- Cross-field rules ---- */

static void test_rules(void)
{
	struct spec *s;

	s = PARSE_OK(&kind_pool,
		     "nodes = 3\n\nmin_nodes = 1\nmax_nodes = 10\n");
	CHECK_INT(spec_check_rules(s, NULL), 0);
	spec_free(s);

	s = PARSE_OK(&kind_pool, "nodes = 3\n# x\n\nmin_nodes = 5\n");
	RULES_ERR(s, 4, "min_nodes",
		  "line 4: min_nodes: must be <= nodes "
		  "(5 > 3)");
	spec_free(s);

	s = PARSE_OK(&kind_pool, "max_nodes = 2\nnodes = 3\n");
	RULES_ERR(s, 1, "max_nodes",
		  "line 1: max_nodes: must be >= nodes "
		  "(2 < 3)");
	spec_free(s);

	/* Against the default of nodes, 1. */
	s = PARSE_OK(&kind_pool, "min_nodes = 2\n");
	RULES_ERR(s, 1, "min_nodes",
		  "line 1: min_nodes: must be <= nodes "
		  "(2 > 1)");
	spec_free(s);

	/* The bounds default to nodes, so nodes alone always passes. */
	s = PARSE_OK(&kind_pool, "nodes = 100\n");
	CHECK_INT(spec_check_rules(s, NULL), 0);
	spec_free(s);

	s = PARSE_OK(&kind_pool, "{\"nodes\": 3, \"min_nodes\": 4}");
	RULES_ERR(s, 0, "min_nodes", "min_nodes: must be <= nodes (4 > 3)");
	spec_free(s);

	s = PARSE_OK(&kind_endpoint, "replicas = 2\nmin_replicas = 3\n");
	RULES_ERR(s, 2, "min_replicas",
		  "line 2: min_replicas: must be <= "
		  "replicas (3 > 2)");
	spec_free(s);
	s = PARSE_OK(&kind_endpoint, "replicas = 2\nmax_replicas = 1\n");
	RULES_ERR(s, 2, "max_replicas",
		  "line 2: max_replicas: must be >= "
		  "replicas (1 < 2)");
	spec_free(s);
	s = PARSE_OK(&kind_endpoint, "replicas = 0\nmax_replicas = 5\n"
				     "scale_metric = rps\nscale_target = 10\n");
	CHECK_INT(spec_check_rules(s, NULL), 0);
	spec_free(s);

	s = PARSE_OK(&kind_endpoint, "scale_metric = rps\n");
	RULES_ERR(s, 0, "scale_target",
		  "scale_target: required when "
		  "scale_metric is set");
	spec_free(s);
	s = PARSE_OK(&kind_endpoint, "scale_target = 2.5\n");
	RULES_ERR(s, 0, "scale_metric",
		  "scale_metric: required when "
		  "scale_target is set");
	spec_free(s);

	/* Kinds without such fields have no rules to break. */
	s = PARSE_OK(&kind_config, "provider = gcp\n");
	CHECK_INT(spec_check_rules(s, NULL), 0);
	spec_free(s);
	s = PARSE_OK(&kind_policy, "");
	CHECK_INT(spec_check_rules(s, NULL), 0);
	spec_free(s);
}

/* ---- Rendering ---- */

static void test_field_text_and_json(void)
{
	struct spec *s = PARSE_OK(&kind_endpoint, "model = s3://bucket/llama\n"
						  "replicas = 2\n"
						  "max_replicas = 8\n"
						  "scale_metric = concurrency\n"
						  "scale_target = 1e2\n"
						  "env.A = 1\n");

	if (!s)
		return;
	FIELD_IS(s, "model", "s3://bucket/llama\n");
	FIELD_IS(s, "image", "");
	FIELD_IS(s, "accelerator", "");
	FIELD_IS(s, "accelerators", "0\n");
	FIELD_IS(s, "replicas", "2\n");
	FIELD_IS(s, "min_replicas", "2\n");
	FIELD_IS(s, "max_replicas", "8\n");
	FIELD_IS(s, "scale_target", "100\n");
	FIELD_IS(s, "port", "8080\n");
	FIELD_IS(s, "health_path", "/health\n");
	FIELD_IS(s, "env", "A = 1\n");
	JSON_IS(s, "{\"model\":\"s3://bucket/llama\",\"accelerators\":0,"
		   "\"replicas\":2,\"min_replicas\":2,\"max_replicas\":8,"
		   "\"scale_metric\":\"concurrency\",\"scale_target\":100.0,"
		   "\"port\":8080,\"health_path\":\"/health\",\"env\":{\"A\":"
		   "\"1\"}}");

	/* A field of another kind with the same name works by name. */
	FIELD_IS(s, field(&kind_pool, "accelerator")->name, "");
	spec_free(s);

	s = PARSE_OK(&kind_config, "");
	if (s) {
		JSON_IS(s, "{\"provider\":\"local\",\"approval\":\"auto\","
			   "\"settle_ms\":500,\"refresh_s\":30,\"drift\":"
			   "\"heal\"}");
		spec_free(s);
	}
}

/* ---- spec_check_value ---- */

static void test_check_value(void)
{
	VALUE_OK(&kind_pool, "nodes", "4\n");
	VALUE_OK(&kind_pool, "nodes", "  4  \r\n");
	VALUE_OK(&kind_pool, "nodes", "");
	VALUE_OK(&kind_pool, "nodes", "\n");
	VALUE_OK(&kind_pool, "zones", "a, b\n");
	VALUE_OK(&kind_pool, "instance_type", "repo/x#1\n");
	VALUE_OK(&kind_endpoint, "health_path", "/ready\n");
	VALUE_OK(&kind_endpoint, "scale_target", "0.75\n");
	VALUE_ERR(&kind_pool, "nodes", "four\n", 0, "nodes",
		  "nodes: expected an integer >= 0, got \"four\"");
	VALUE_ERR(&kind_pool, "accelerators_per_node", "32\n", 0,
		  "accelerators_per_node",
		  "accelerators_per_node: expected an integer from 1 to 16, "
		  "got \"32\"");
	VALUE_ERR(&kind_pool, "nodes", "4\n5\n", 0, "nodes",
		  "nodes: expected a single line of text");
	VALUE_ERR(&kind_pool, "capacity", "cheap", 0, "capacity",
		  "capacity: expected one of on-demand, spot, got \"cheap\"");
	VALUE_ERR(&kind_endpoint, "health_path", "health\n", 0, "health_path",
		  "health_path: expected a path starting with \"/\", got "
		  "\"health\"");
	VALUE_ERR(&kind_endpoint, "command", "serve # x\n", 0, "command",
		  "command: a '#' at the start or after a space would start a "
		  "comment, got \"serve # x\"");
	VALUE_ERR(&kind_endpoint, "image", "#1\n", 0, "image",
		  "image: a '#' at the start or after a space would start a "
		  "comment, got \"#1\"");
	VALUE_ERR(&kind_pool, "instance_type", "a\xff", 0, "instance_type",
		  "instance_type: invalid UTF-8");

	/* A map's field file: KEY = VALUE lines, comments allowed. */
	VALUE_OK(&kind_pool, "labels", "team = nlp\n# c\n\nowner = ana\n");
	VALUE_OK(&kind_pool, "labels", "");
	VALUE_OK(&kind_endpoint, "env", "TOKEN = secret:hf\nA = b c\n");
	VALUE_ERR(&kind_pool, "labels", "team = nlp\nbad key = x\n", 2,
		  "labels.bad key",
		  "line 2: labels.bad key: expected labels.KEY with KEY of "
		  "letters, digits, '.', '_', '/' and '-', got \"bad key\"");
	VALUE_ERR(&kind_pool, "labels", "a = 1\nteam =#nlp\n", 2, "labels.team",
		  "line 2: labels.team: a '#' at the start or after a space "
		  "would start a comment, got \"#nlp\"");
	VALUE_ERR(&kind_pool, "labels", "nlp\n", 1, "",
		  "line 1: expected key = value, got \"nlp\"");
	VALUE_ERR(&kind_endpoint, "env", "A = 1\nTOKEN = secret:\n", 2,
		  "env.TOKEN",
		  "line 2: env.TOKEN: expected secret:NAME with NAME a "
		  "secret's name, got \"secret:\"");

	/* A NULL err is allowed. */
	CHECK_INT(spec_check_value(field(&kind_pool, "nodes"), "x", 1, NULL),
		  -EINVAL);
}

/* ---- spec_check_lines ---- */

/* Writes text in chunks of size n, checking each as write(2) would. */
static int write_chunks(const char *text, size_t n, struct spec_error *err)
{
	size_t len = strlen(text);

	for (size_t off = 0; off < len; off += n) {
		size_t end = off + n < len ? off + n : len;
		int rc = spec_check_lines(&kind_pool, text, end, off, end, err);

		if (rc)
			return rc;
	}
	return 0;
}

static void test_check_lines(void)
{
	static const char good[] = "# pool\nnodes = 4\n\ncapacity = spot\n"
				   "labels.team = nlp\nzones = a, b\n";
	static const char bad[] = "nodes = 4\ncapacity = spot\n# c\n"
				  "nodes = four\naccelerator = cpu\n";
	struct spec_error e = { 0 };

	for (size_t n = 1; n <= sizeof(good); n++)
		CHECK_INT(write_chunks(good, n, &e), 0);
	for (size_t n = 1; n <= sizeof(bad); n++) {
		memset(&e, 0, sizeof(e));
		CHECK_INT(write_chunks(bad, n, &e), -EINVAL);
		CHECK_STR(e.msg, "line 4: nodes: expected an integer >= 0, got "
				 "\"four\"");
	}

	/* The line is checked when its '\n' arrives, not before. */
	CHECK_INT(spec_check_lines(&kind_pool, "nodes = fo", 10, 0, 10, &e), 0);
	CHECK_INT(
		spec_check_lines(&kind_pool, "nodes = four\n", 13, 10, 13, &e),
		-EINVAL);
	CHECK_STR(e.msg, "line 1: nodes: expected an integer >= 0, got "
			 "\"four\"");
	CHECK_INT(e.line, 1);
	CHECK_STR(e.key, "nodes");

	/* Only lines overlapping [start, end) are looked at. */
	static const char mixed[] = "colour = red\nnodes = 2\nnodes = x\n";

	CHECK_INT(spec_check_lines(&kind_pool, mixed, sizeof(mixed) - 1, 13, 23,
				   &e),
		  0);
	CHECK_INT(spec_check_lines(&kind_pool, mixed, sizeof(mixed) - 1, 23, 24,
				   &e),
		  -EINVAL);
	CHECK_STR(e.msg, "line 3: nodes: expected an integer >= 0, got \"x\"");
	CHECK_INT(spec_check_lines(&kind_pool, mixed, sizeof(mixed) - 1, 12, 13,
				   &e),
		  -EINVAL);
	CHECK_STR(e.key, "colour");
	CHECK_INT(spec_check_lines(&kind_pool, mixed, sizeof(mixed) - 1, 5, 5,
				   &e),
		  0);
	CHECK_INT(spec_check_lines(&kind_pool, "nodes\n", 6, 0, 6, &e),
		  -EINVAL);
	CHECK_STR(e.msg, "line 1: expected key = value, got \"nodes\"");
	CHECK_INT(spec_check_lines(&kind_pool, "#\r\nx\r\n", 6, 0, 6, &e),
		  -EINVAL);
	CHECK_STR(e.msg, "line 2: expected key = value, got \"x\"");
	CHECK_INT(spec_check_lines(&kind_pool, "a\0b\n", 4, 0, 4, &e), -EINVAL);
	CHECK_STR(e.msg, "line 1: NUL byte");

	/* JSON is checked whole, at close. */
	CHECK_INT(spec_check_lines(&kind_pool, " {\n\"nodes\": \"x\",\n", 17, 0,
				   17, &e),
		  0);
	/* end past len is clamped; start past it checks nothing. */
	CHECK_INT(spec_check_lines(&kind_pool, "nodes = 2\n", 10, 0, 99, &e),
		  0);
	CHECK_INT(spec_check_lines(&kind_pool, "x\n", 2, 5, 9, &e), 0);
	/* Values that unset (key =) are fine, as in a whole parse. */
	CHECK_INT(spec_check_lines(&kind_pool, "nodes =\n", 8, 0, 8, &e), 0);
	CHECK_INT(spec_check_lines(&kind_pool, "labels = x\n", 11, 0, 11, &e),
		  -EINVAL);
	CHECK_STR(e.msg, "line 1: labels: expected labels.KEY = value");
}

/* ---- spec_set_field ---- */

static void test_set_field(void)
{
	static const char text[] = "# training pool\n"
				   "accelerator = nvidia-a100-80gb\n"
				   "nodes = 2   # two for now\n"
				   "\n"
				   "labels.team = nlp # owners\n"
				   "nodes = 3\n"
				   "capacity = spot\n";

	SET_IS(&kind_pool, text, "nodes", "4\n",
	       "# training pool\n"
	       "accelerator = nvidia-a100-80gb\n"
	       "nodes = 4   # two for now\n"
	       "\n"
	       "labels.team = nlp # owners\n"
	       "capacity = spot\n");
	SET_IS(&kind_pool, text, "nodes", "",
	       "# training pool\n"
	       "accelerator = nvidia-a100-80gb\n"
	       "\n"
	       "labels.team = nlp # owners\n"
	       "capacity = spot\n");
	SET_IS(&kind_pool, text, "zones", " us-east-1a, us-east-1b \n",
	       "# training pool\n"
	       "accelerator = nvidia-a100-80gb\n"
	       "nodes = 2   # two for now\n"
	       "\n"
	       "labels.team = nlp # owners\n"
	       "nodes = 3\n"
	       "capacity = spot\n"
	       "zones = us-east-1a, us-east-1b\n");
	SET_IS(&kind_pool, text, "labels", "team = cv\n# x\nowner = ana\n",
	       "# training pool\n"
	       "accelerator = nvidia-a100-80gb\n"
	       "nodes = 2   # two for now\n"
	       "\n"
	       "labels.team = cv\n"
	       "labels.owner = ana\n"
	       "nodes = 3\n"
	       "capacity = spot\n");
	SET_IS(&kind_pool, text, "labels", "team = cv",
	       "# training pool\n"
	       "accelerator = nvidia-a100-80gb\n"
	       "nodes = 2   # two for now\n"
	       "\n"
	       "labels.team = cv # owners\n"
	       "nodes = 3\n"
	       "capacity = spot\n");
	SET_IS(&kind_pool, "labels.a = 1\nnodes = 1\nlabels.b = 2\n", "labels",
	       "", "nodes = 1\n");
	SET_IS(&kind_pool, "labels.a = 1\n", "labels", "\n", "");

	/* Appending to a text without a final newline. */
	SET_IS(&kind_pool, "nodes = 1", "capacity", "spot",
	       "nodes = 1\ncapacity = spot\n");
	SET_IS(&kind_pool, "nodes = 1", "accelerator", "", "nodes = 1\n");
	SET_IS(&kind_pool, "", "nodes", "5\n", "nodes = 5\n");
	SET_IS(&kind_pool, "", "nodes", "", "");
	SET_IS(&kind_pool, "# only\n", "labels", "a = b\nc = d\n",
	       "# only\nlabels.a = b\nlabels.c = d\n");

	/* A comment after an empty value stays a comment. */
	SET_IS(&kind_pool, "nodes = # four nodes\n", "nodes", "4",
	       "nodes = 4 # four nodes\n");

	/* Lines that only look like the field stay. */
	SET_IS(&kind_pool, "# nodes = 9\nnodes_x = 1\nmin_nodes = 1\n", "nodes",
	       "2",
	       "# nodes = 9\nnodes_x = 1\nmin_nodes = 1\n"
	       "nodes = 2\n");
	/* A bad line of the field itself is replaced, others are kept. */
	SET_IS(&kind_pool, "labels = x\nfoo bar\n", "labels", "a = b",
	       "labels.a = b\nfoo bar\n");

	/* CRLF line ends stay as they were. */
	SET_IS(&kind_pool, "nodes = 1\r\ncapacity = spot\r\n", "nodes", "3",
	       "nodes = 3\r\ncapacity = spot\r\n");
	SET_IS(&kind_pool, "labels.x = 1\r\n", "labels", "a = 1\nb = 2",
	       "labels.a = 1\r\nlabels.b = 2\r\n");

	/* JSON is turned into lines first. */
	SET_IS(&kind_pool,
	       "{\"labels\": {\"t\": \"x\"}, \"nodes\": 2, "
	       "\"zones\": [\"a\", \"b\"]}",
	       "capacity", "spot",
	       "nodes = 2\nzones = a, b\nlabels.t = x\ncapacity = spot\n");
	SET_IS(&kind_pool, "{\"nodes\": 2}", "nodes", "3", "nodes = 3\n");
	SET_IS(&kind_endpoint, "{\"command\": \"a # b\"}", "command", "c",
	       "command = c\n");
	SET_IS(&kind_endpoint, "{\"command\": \"a # b\"}", "port", "80",
	       "command: the value has a '#' at its start or after a space, "
	       "which a key = value line would read as a comment");
	SET_IS(&kind_endpoint, "{\"env\": {\"A\": \"#x\"}}", "port", "80",
	       "env: the value has a '#' at its start or after a space, which "
	       "a key = value line would read as a comment");
	SET_IS(&kind_pool, "{\"nodes\": true}", "capacity", "spot",
	       "nodes: expected a JSON string or number, got true");

	/* The value is checked first. */
	struct spec_error e = { 0 };
	char *t = set_field(&kind_pool, "nodes = 1\n", "nodes", "four\n", &e);

	CHECK(t == NULL);
	CHECK_STR(e.msg, "nodes: expected an integer >= 0, got \"four\"");
	free(t);
	t = set_field(&kind_pool, "", "labels", "x y = 1", &e);
	CHECK(t == NULL);
	CHECK_STR(e.key, "labels.x y");

	/* Appends to what out already holds. */
	struct buf out = BUF_INIT;

	buf_adds(&out, "x");
	CHECK_INT(spec_set_field(&kind_pool, "", 0, field(&kind_pool, "nodes"),
				 "1", 1, &out, NULL),
		  0);
	CHECK_STR(buf_str(&out), "xnodes = 1\n");
	buf_free(&out);

	/* What it writes parses back to the value. */
	t = set_field(&kind_pool, "nodes = 9\n# c\nnodes = 8\n", "nodes", "7",
		      &e);
	if (t) {
		struct spec *s = PARSE_OK(&kind_pool, t);

		if (s)
			FIELD_IS(s, "nodes", "7\n");
		spec_free(s);
	}
	free(t);
}

/* ---- kinds/ ---- */

static void check_doc_lines(const char *doc)
{
	const char *p = doc;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t cols = 0;

		CHECK(nl != NULL);
		if (!nl)
			return;
		/* Count characters, not bytes. */
		for (const char *c = p; c < nl; c++)
			cols += ((unsigned char)*c & 0xc0) != 0x80;
		CHECK(cols <= 80);
		CHECK(!(nl > p && nl[-1] == ' '));
		p = nl + 1;
	}
}

static void test_doc(void)
{
	static const struct kind_def *const kinds[] = {
		&kind_pool, &kind_endpoint, &kind_config, &kind_policy
	};
	static const char *const pool_has[] = {
		"pool - a group of machines with the same accelerator\n",
		"ENV/pools/NAME/spec",
		"\n    accelerators_per_node\n        integer 1..16\n"
		"        default: 1\n        How many accelerators each node "
		"carries.\n",
		"one of: cpu, nvidia-t4, nvidia-l4,",
		"default: = nodes\n",
		"default: derived from accelerator\n",
		"default: provider default\n",
		("map: labels.KEY = value; KEY at most 128 bytes, value at "
		 "most 256\n        bytes\n"),
		"list, comma-separated, at most 4096 bytes\n",
		"one of: on-demand, spot\n",
		"integer >= 0\n",
	};
	static const char *const endpoint_has[] = {
		"number > 0\n",
		"URI (s3://, gs://, file://, hf://), at most 2048 bytes\n",
		"\n    command\n        text, at most 65536 bytes\n",
		"integer 1..65535\n",
		"default: /health\n",
		"default: = replicas\n",
		"default: the pool's, else cpu\n",
		("map: env.KEY = value; KEY at most 256 bytes, value at most "
		 "32768 bytes\n"),
	};
	static const char *const policy_has[] = {
		"ENV/policy",
		"list of: on-demand, spot, at most 4096 bytes\n",
		"number >= 0\n",
		"default: unlimited\n",
		"default: all\n",
	};
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < 4; i++) {
		buf_truncate(&b, 0);
		kind_render_doc(kinds[i], &b);
		check_doc_lines(buf_str(&b));
		for (size_t j = 0; j < kinds[i]->nfields; j++) {
			char name[80];

			snprintf(name, sizeof(name), "\n    %s\n",
				 kinds[i]->fields[j].name);
			CHECK(strstr(buf_str(&b), name) != NULL);
		}
	}
	buf_truncate(&b, 0);
	kind_render_doc(&kind_pool, &b);
	for (size_t i = 0; i < sizeof(pool_has) / sizeof(pool_has[0]); i++) {
		CHECK(strstr(buf_str(&b), pool_has[i]) != NULL);
		if (!strstr(buf_str(&b), pool_has[i]))
			fprintf(stderr, "  missing: %s\n", pool_has[i]);
	}
	buf_truncate(&b, 0);
	kind_render_doc(&kind_endpoint, &b);
	for (size_t i = 0; i < sizeof(endpoint_has) / sizeof(endpoint_has[0]);
	     i++)
		CHECK(strstr(buf_str(&b), endpoint_has[i]) != NULL);
	buf_truncate(&b, 0);
	kind_render_doc(&kind_policy, &b);
	for (size_t i = 0; i < sizeof(policy_has) / sizeof(policy_has[0]); i++)
		CHECK(strstr(buf_str(&b), policy_has[i]) != NULL);
	CHECK(strstr(buf_str(&b), "map") == NULL);
	buf_free(&b);
}

/* ---- Size and speed ---- */

/* A 1 MiB text of n-byte distinct label lines. */
static char *big_labels(size_t *len)
{
	struct buf b = BUF_INIT;

	for (unsigned i = 0; b.len < SPEC_MAX_BYTES - 64; i++)
		buf_printf(&b, "labels.k%u = v%u\n", i, i);
	*len = b.len;
	return buf_steal(&b);
}

static void test_big_specs(void)
{
	size_t len;
	char *text = big_labels(&len);
	struct spec_error e = { 0 };
	struct spec *s = NULL;
	double t0 = now();

	CHECK_INT(spec_parse(&kind_pool, text, len, &s, &e), 0);
	CHECK(s && s->v[8].npairs > 40000);
	spec_free(s);
	/* Linear work is milliseconds even under sanitizers; quadratic
	 * work on 50000 keys is minutes. */
	CHECK(now() - t0 < 3.0);

	/* Written in 4 KiB chunks, each write checked. */
	t0 = now();
	for (size_t off = 0; off < len; off += 4096) {
		size_t end = off + 4096 < len ? off + 4096 : len;

		CHECK_INT(spec_check_lines(&kind_pool, text, end, off, end, &e),
			  0);
	}
	CHECK(now() - t0 < 3.0);

	free(text);

	/* The same key a million times over stays one value. */
	struct buf b = BUF_INIT;

	while (b.len < SPEC_MAX_BYTES - 32)
		buf_printf(&b, "nodes = %zu\nlabels.a = %zu\n", b.len, b.len);
	t0 = now();
	s = PARSE_OK(&kind_pool, buf_str(&b));
	CHECK(s && s->v[8].npairs == 1);
	spec_free(s);

	struct buf out = BUF_INIT;

	CHECK_INT(spec_set_field(&kind_pool, b.data, b.len,
				 field(&kind_pool, "labels"), "z = 1", 5, &out,
				 &e),
		  0);
	CHECK(out.len < b.len / 2);
	CHECK(now() - t0 < 3.0);
	buf_free(&out);
	buf_free(&b);
}

static void test_check_lines_line_numbers_when_big(void)
{
	struct buf b = BUF_INIT;
	struct spec_error e = { 0 };
	unsigned lines = 0;

	while (b.len < 512 * 1024) {
		buf_adds(&b, "nodes = 1\n");
		lines++;
	}
	buf_adds(&b, "nodes = x\n");
	CHECK_INT(spec_check_lines(&kind_pool, b.data, b.len, b.len - 3, b.len,
				   &e),
		  -EINVAL);
	CHECK_INT(e.line, lines + 1);
	buf_free(&b);
}

int main(void)
{
	test_schema_lookup();
	test_schema_accelerators();
	test_schema_fields();
	test_empty_means_defaults();
	test_values_and_comments();
	test_crlf();
	test_later_wins();
	test_empty_value_unsets();
	test_error_messages();
	test_long_values_are_shortened();
	test_length_limits();
	test_messages_escape_what_they_quote();
	test_integers();
	test_numbers();
	test_lists();
	test_maps();
	test_encoding();
	test_size_limit();
	test_json();
	test_rules();
	test_field_text_and_json();
	test_check_value();
	test_check_lines();
	test_set_field();
	test_doc();
	test_big_specs();
	test_check_lines_line_numbers_when_big();
	return check_report("spec");
}
