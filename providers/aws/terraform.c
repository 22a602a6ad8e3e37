// SPDX-License-Identifier: MIT
/*
 * An environment as Terraform JSON configuration for hashicorp/aws: what
 * a team that leaves infrafs, or checks it, hands to `terraform import`.
 * Names and tags are the ones this provider gives what it makes (taken
 * from its records where it has made something, so a model of an earlier
 * revision keeps its name), so that importing the live objects plans no
 * change. Credentials stay out: Terraform finds its own.
 */
#include "res.h"

#include "store/policy.h"
#include "util/text.h"

#include <stdlib.h>

#include <stdio.h>
#include <string.h>

#define TF_AWS_VERSION ">= 5.0"

/* Terraform names start with a letter or an underscore; infrafs names
 * are [a-z0-9-] and may start with a digit. */
static void local_name(const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s%s", name[0] >= '0' && name[0] <= '9' ? "_" : "",
		 name);
}

static json_t *provider_block(const struct spec *config)
{
	const char *url = aws_config(config, "endpoint_url", "");
	const char *profile = aws_config(config, "profile", "");
	json_t *aws =
		json_pack("{s:s}", "region", spec_str(config, "region", ""));

	if (url[0])
		json_object_set_new(aws, "endpoints",
				    json_pack("[{s:s, s:s}]", "sagemaker", url,
					      "applicationautoscaling", url));
	if (profile[0])
		json_object_set_new(aws, "profile", json_string(profile));
	return json_pack("{s:o}", "aws", aws);
}

/* The record of an endpoint infrafs made, or one that names it as a
 * first apply would (caller frees it when *fresh). */
static struct aws_res *record_of(struct aws *a, const struct desired *want,
				 bool *fresh)
{
	char id[150];
	struct aws_res *r;

	snprintf(id, sizeof(id), "endpoint:%s/%s", want->env, want->name);
	r = map_get(&a->res, id, strlen(id));
	*fresh = !r;
	if (r)
		return r;
	r = xcalloc(1, sizeof(*r));
	r->kind = want->kind;
	snprintf(r->key, sizeof(r->key), "%s/%s", want->env, want->name);
	aws_resource_name(r, "", r->aws_name, sizeof(r->aws_name));
	return r;
}

static void add_endpoint(struct aws *a, const struct desired *want,
			 json_t *resource, json_t *variables)
{
	char local[NAME_MAX_LEN + 2];
	bool fresh;
	struct aws_res *r = record_of(a, want, &fresh);

	local_name(want->name, local, sizeof(local));
	endpoint_terraform(a, r, want, local, resource, variables);
	if (fresh)
		free(r);
}

static int by_kind_and_name(const void *x, const void *y)
{
	const struct desired *a = x, *b = y;

	return a->kind != b->kind ? a->kind - b->kind
				  : strcmp(a->name, b->name);
}

/* What hashicorp/aws cannot hold, said where a reader of the file sees
 * it first. */
static json_t *comment(const char *env, const struct desired *want, size_t n)
{
	struct buf text = BUF_INIT;
	json_t *s;

	buf_printf(&text,
		   "infrafs environment %s as Terraform configuration for "
		   "hashicorp/aws; generated, read-only",
		   env);
	for (size_t i = 0; i < n; i++) {
		if (want[i].kind == KIND_POOL_IDX)
			buf_printf(&text,
				   "; pools/%s (a HyperPod cluster) is left "
				   "out: hashicorp/aws has no resource for "
				   "it",
				   want[i].name);
	}
	s = json_string(buf_str(&text));
	buf_free(&text);
	return s;
}

void aws_export_terraform(void *state, const char *env,
			  const struct spec *config, const struct desired *want,
			  size_t n, struct buf *out)
{
	struct aws *a = state;
	struct desired *sorted = xcalloc(n ? n : 1, sizeof(*sorted));
	json_t *resource = json_object(), *variables = json_object(), *doc;
	char *text;

	memcpy(sorted, want, n * sizeof(*want));
	qsort(sorted, n, sizeof(*sorted), by_kind_and_name);
	for (size_t i = 0; i < n; i++) {
		if (sorted[i].kind == KIND_ENDPOINT_IDX && sorted[i].spec)
			add_endpoint(a, &sorted[i], resource, variables);
	}
	doc = json_pack("{s:o, s:{s:{s:{s:s, s:s}}}, s:o}", "//",
			comment(env, sorted, n), "terraform",
			"required_providers", "aws", "source", "hashicorp/aws",
			"version", TF_AWS_VERSION, "provider",
			provider_block(config));
	if (json_object_size(variables))
		json_object_set(doc, "variable", variables);
	if (json_object_size(resource))
		json_object_set(doc, "resource", resource);
	json_decref(variables);
	json_decref(resource);
	text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	buf_adds(out, text);
	buf_addc(out, '\n');
	free(text);
	json_decref(doc);
	free(sorted);
}
