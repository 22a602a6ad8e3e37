// SPDX-License-Identifier: MIT
/*
 * infrafs-plan: print an environment's pending plan and say by the exit
 * status whether anything is pending, as `terraform plan
 * -detailed-exitcode` does, so that CI can gate on it:
 *
 *	infrafs-plan /mnt/infra/prod; case $? in 0) ...; 2) ...; esac
 *
 * "Pending" is decided from plan.json's "steps", never from the text,
 * whose wording is for people and may change.
 *
 * With --against DIR it prints instead what a folder (a Git work tree
 * with the mount's layout) would change in the environment, and checks
 * it: plan_against.c.
 */
#include "plan_against.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A plan of ten thousand steps is a few MiB; past this, something is off. */
#define MAX_FILE_BYTES (64u << 20)

struct options {
	const char *dir;
	const char *against;
	enum plan_format format;
};

static void usage(FILE *to)
{
	fprintf(to,
		"usage: infrafs-plan [--against DIR] [--format FORMAT] "
		"ENV_DIR\n"
		"\n"
		"Prints the pending plan of an infrafs environment, or with\n"
		"--against what the folder DIR would change in it.\n"
		"\n"
		"  -a, --against DIR      compare DIR (pools/NAME/spec,\n"
		"                         endpoints/NAME/spec, policy) with "
		"ENV_DIR\n"
		"  -f, --format FORMAT    text (default), json or markdown\n"
		"  -j, --json             the same as --format json\n"
		"  -h, --help             print this help\n"
		"\n"
		"Exit status: 0 no changes, 2 changes, 1 error (or DIR does "
		"not\ncheck), 64 usage. See infrafs-plan(1).\n");
}

static int parse_format(const char *word, enum plan_format *out)
{
	static const char *const words[] = {
		[FORMAT_TEXT] = "text",
		[FORMAT_JSON] = "json",
		[FORMAT_MARKDOWN] = "markdown",
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(*words); i++) {
		if (!strcmp(word, words[i])) {
			*out = (enum plan_format)i;
			return 0;
		}
	}
	fprintf(stderr,
		"infrafs-plan: --format: want text, json or markdown, got "
		"\"%s\"\nTry 'infrafs-plan --help'.\n",
		word);
	return EXIT_USAGE;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "against", required_argument, NULL, 'a' },
		{ "format", required_argument, NULL, 'f' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "a:f:jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'a':
			o->against = optarg;
			break;
		case 'f':
			if (parse_format(optarg, &o->format))
				return EXIT_USAGE;
			break;
		case 'j':
			o->format = FORMAT_JSON;
			break;
		case 'h':
			usage(stdout);
			exit(EXIT_NO_CHANGES);
		default:
			/* getopt has said what was wrong. */
			fputs("Try 'infrafs-plan --help'.\n", stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr,
			"infrafs-plan: %s\nTry 'infrafs-plan --help'.\n",
			argc - optind ? "want one ENV_DIR" : "want ENV_DIR");
		return EXIT_USAGE;
	}
	o->dir = argv[optind];
	return 0;
}

/* ENV_DIR must be a folder holding plan.json; say which part is missing. */
static int read_plan_json(const char *dir, struct buf *out)
{
	char path[PATH_MAX + 16];
	struct stat st;
	int err;

	if (stat(dir, &st) != 0)
		return plan_error("%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return plan_error("%s: not a directory", dir);
	snprintf(path, sizeof(path), "%s/plan.json", dir);
	err = plan_read_file(path, MAX_FILE_BYTES, out);
	if (err == -ENOENT)
		return plan_error("%s is not an infrafs environment folder "
				  "(no plan.json)",
				  dir);
	if (err)
		return plan_error("cannot read %s: %s", path, strerror(-err));
	return 0;
}

/*
 * 1 if the plan has steps, 0 if not, -1 if it is not a plan. Parses the
 * very bytes that --json prints, so the output and the exit status
 * cannot disagree even if the plan changes between two reads.
 */
static int plan_pending(const char *dir, const struct buf *text)
{
	json_error_t jerr;
	json_t *root = json_loadb(buf_str(text), text->len, 0, &jerr);
	json_t *steps;
	int pending;

	if (!root) {
		plan_error("%s/plan.json: line %d column %d: %s", dir,
			   jerr.line, jerr.column, jerr.text);
		return -1;
	}
	steps = json_object_get(root, "steps");
	if (!json_is_array(steps)) {
		plan_error("%s/plan.json: no \"steps\" array", dir);
		pending = -1;
	} else {
		pending = json_array_size(steps) > 0;
	}
	json_decref(root);
	return pending;
}

static int write_out(const struct buf *b)
{
	if (b->len && fwrite(b->data, 1, b->len, stdout) != b->len)
		return plan_error("writing the plan: %s", strerror(errno));
	if (fflush(stdout) != 0)
		return plan_error("writing the plan: %s", strerror(errno));
	return 0;
}

/* The plan text, in a fence for a pull request's comment when asked. */
static int print_text(const char *dir, enum plan_format format)
{
	char path[PATH_MAX + 16];
	BUF_AUTO text = BUF_INIT;
	BUF_AUTO out = BUF_INIT;
	int err;

	snprintf(path, sizeof(path), "%s/plan", dir);
	err = plan_read_file(path, MAX_FILE_BYTES, &text);
	if (err)
		return plan_error("cannot read %s: %s", path, strerror(-err));
	if (format != FORMAT_MARKDOWN)
		return write_out(&text);
	buf_adds(&out, "### infrafs plan\n\n");
	plan_md_code(&out, "", buf_str(&text));
	return write_out(&out);
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	BUF_AUTO json = BUF_INIT;
	int rc = parse_options(argc, argv, &o);
	int pending;

	if (rc)
		return rc;
	if (o.against)
		return plan_against(o.dir, o.against, o.format);
	rc = read_plan_json(o.dir, &json);
	if (rc)
		return rc;
	pending = plan_pending(o.dir, &json);
	if (pending >= 0)
		rc = o.format == FORMAT_JSON ? write_out(&json)
					     : print_text(o.dir, o.format);
	if (pending < 0 || rc)
		return EXIT_ERROR;
	return pending ? EXIT_CHANGES : EXIT_NO_CHANGES;
}
