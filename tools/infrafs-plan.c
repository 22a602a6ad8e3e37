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
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
	EXIT_NO_CHANGES = 0,
	EXIT_ERROR = 1,
	EXIT_CHANGES = 2,
	EXIT_USAGE = 64, /* EX_USAGE of sysexits.h; 1 and 2 are taken */
};

/* A plan of ten thousand steps is a few MiB; past this, something is off. */
#define MAX_FILE_BYTES (64u << 20)

struct options {
	const char *dir;
	bool json;
};

struct bytes {
	char *data;
	size_t len;
};

static void usage(FILE *to)
{
	fprintf(to, "usage: infrafs-plan ENV_DIR [--json]\n"
		    "\n"
		    "Prints the pending plan of an infrafs environment.\n"
		    "\n"
		    "  -j, --json   print plan.json instead of the text\n"
		    "  -h, --help   print this help\n"
		    "\n"
		    "Exit status: 0 nothing pending, 2 changes pending, "
		    "1 error, 64 usage.\n"
		    "See infrafs-plan(1).\n");
}

__attribute__((format(printf, 1, 2))) static int error(const char *fmt, ...)
{
	va_list ap;

	fputs("infrafs-plan: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_ERROR;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			o->json = true;
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

/*
 * Reads all of PATH; 0 or -errno. read() to the end rather than
 * trusting st_size, which FUSE files may report as 0.
 */
static int read_all(const char *path, struct bytes *out)
{
	size_t cap = 4096;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int err = 0;

	out->len = 0;
	out->data = NULL;
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n;

		if (!out->data || out->len == cap) {
			size_t want = out->data ? cap * 2 : cap;
			char *p = want > MAX_FILE_BYTES
					  ? NULL
					  : realloc(out->data, want);

			if (!p) {
				err = want > MAX_FILE_BYTES ? -EFBIG : -ENOMEM;
				break;
			}
			out->data = p;
			cap = want;
		}
		n = read(fd, out->data + out->len, cap - out->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : 0;
			break;
		}
		out->len += (size_t)n;
	}
	close(fd);
	if (err) {
		free(out->data);
		out->data = NULL;
	}
	return err;
}

/* ENV_DIR must be a folder holding plan.json; say which part is missing. */
static int read_plan_json(const char *dir, struct bytes *out)
{
	char path[PATH_MAX + 16];
	struct stat st;
	int err;

	if (stat(dir, &st) != 0)
		return error("%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return error("%s: not a directory", dir);
	snprintf(path, sizeof(path), "%s/plan.json", dir);
	err = read_all(path, out);
	if (err == -ENOENT)
		return error("%s is not an infrafs environment folder "
			     "(no plan.json)",
			     dir);
	if (err)
		return error("cannot read %s: %s", path, strerror(-err));
	return 0;
}

/*
 * 1 if the plan has steps, 0 if not, -1 if it is not a plan. Parses the
 * very bytes that --json prints, so the output and the exit status
 * cannot disagree even if the plan changes between two reads.
 */
static int plan_pending(const char *dir, const struct bytes *text)
{
	json_error_t jerr;
	json_t *root = json_loadb(text->data, text->len, 0, &jerr);
	json_t *steps;
	int pending;

	if (!root) {
		error("%s/plan.json: line %d column %d: %s", dir, jerr.line,
		      jerr.column, jerr.text);
		return -1;
	}
	steps = json_object_get(root, "steps");
	if (!json_is_array(steps)) {
		error("%s/plan.json: no \"steps\" array", dir);
		pending = -1;
	} else {
		pending = json_array_size(steps) > 0;
	}
	json_decref(root);
	return pending;
}

static int write_out(const struct bytes *b)
{
	if (b->len && fwrite(b->data, 1, b->len, stdout) != b->len)
		return error("writing the plan: %s", strerror(errno));
	if (fflush(stdout) != 0)
		return error("writing the plan: %s", strerror(errno));
	return 0;
}

static int print_text(const char *dir)
{
	char path[PATH_MAX + 16];
	struct bytes text;
	int err, rc;

	snprintf(path, sizeof(path), "%s/plan", dir);
	err = read_all(path, &text);
	if (err)
		return error("cannot read %s: %s", path, strerror(-err));
	rc = write_out(&text);
	free(text.data);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct bytes json;
	int rc = parse_options(argc, argv, &o);
	int pending;

	if (rc)
		return rc;
	rc = read_plan_json(o.dir, &json);
	if (rc)
		return rc;
	pending = plan_pending(o.dir, &json);
	if (pending >= 0)
		rc = o.json ? write_out(&json) : print_text(o.dir);
	free(json.data);
	if (pending < 0 || rc)
		return EXIT_ERROR;
	return pending ? EXIT_CHANGES : EXIT_NO_CHANGES;
}
