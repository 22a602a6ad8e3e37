// SPDX-License-Identifier: MIT
/*
 * infrafs-import-tfstate: every aws_sagemaker_endpoint of a Terraform
 * state file (format version 4) imported into an environment of a mount,
 *
 *	infrafs-import-tfstate terraform.tfstate mnt/dev
 *
 * one `import endpoints/NAME ID` written to ENV/ctl each, NAME made from
 * the Terraform resource's name. The daemon carries each out in its next
 * pass and says how in ENV/events; the tool waits for those lines and
 * prints one line per state entry: what was imported, and what was
 * skipped and why. It only reads the state file and talks to the mount.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
	EXIT_ALL = 0, /* every endpoint imported */
	EXIT_SOME_SKIPPED = 1,
	EXIT_TIMEOUT = 2,
	EXIT_USAGE = 64,
};

#define NAME_MAX_LEN 63
#define ID_MAX 256

struct request {
	char address[200]; /* aws_sagemaker_endpoint.chat[0] */
	char name[NAME_MAX_LEN + 1];
	char id[ID_MAX + 1];
	bool done;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* infrafs names are [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])? */
static bool infrafs_name(const char *from, char *out, size_t len)
{
	size_t n = 0;

	for (const char *c = from; *c; c++) {
		char ch = *c >= 'A' && *c <= 'Z' ? (char)(*c - 'A' + 'a') : *c;

		if (ch == '_' || ch == '.')
			ch = '-';
		if (!name_char(ch) && ch != '-')
			return false;
		if (n + 1 >= len)
			return false;
		out[n++] = ch;
	}
	out[n] = '\0';
	return n && n <= NAME_MAX_LEN && name_char(out[0]) &&
	       name_char(out[n - 1]);
}

static void say_skipped(const char *address, const char *why)
{
	printf("skipped %s: %s\n", address, why);
}

static void address_of(json_t *res, json_t *inst, char *out, size_t len)
{
	json_t *key = json_object_get(inst, "index_key");
	const char *type = json_string_value(json_object_get(res, "type"));
	const char *name = json_string_value(json_object_get(res, "name"));
	const char *module = json_string_value(json_object_get(res, "module"));
	const char *mode = json_string_value(json_object_get(res, "mode"));
	int n = snprintf(out, len, "%s%s%s%s.%s", module ? module : "",
			 module ? "." : "",
			 mode && !strcmp(mode, "data") ? "data." : "",
			 type ? type : "?", name ? name : "?");

	if (json_is_integer(key) && n > 0 && (size_t)n < len)
		snprintf(out + n, len - (size_t)n, "[%lld]",
			 (long long)json_integer_value(key));
	else if (json_is_string(key) && n > 0 && (size_t)n < len)
		snprintf(out + n, len - (size_t)n, "[\"%s\"]",
			 json_string_value(key));
}

/* The infrafs name of one instance: the resource's name, with the
 * instance's index after it when it has one. */
static bool instance_name(json_t *res, json_t *inst, char *out, size_t len)
{
	json_t *key = json_object_get(inst, "index_key");
	char base[300];
	const char *name = json_string_value(json_object_get(res, "name"));

	if (json_is_integer(key))
		snprintf(base, sizeof(base), "%s-%lld", name ? name : "",
			 (long long)json_integer_value(key));
	else if (json_is_string(key))
		snprintf(base, sizeof(base), "%s-%s", name ? name : "",
			 json_string_value(key));
	else
		snprintf(base, sizeof(base), "%s", name ? name : "");
	return infrafs_name(base, out, len);
}

/* What a skipped resource that is not an endpoint is. */
static const char *why_not_endpoint(const char *type)
{
	if (!strcmp(type, "aws_sagemaker_model") ||
	    !strcmp(type, "aws_sagemaker_endpoint_configuration"))
		return "read with the endpoint that runs on it";
	if (!strncmp(type, "aws_appautoscaling_", 19))
		return "read with the endpoint it scales";
	return "infrafs imports aws_sagemaker_endpoint resources only";
}

static int send_import(const char *env_dir, const struct request *q, char *why,
		       size_t len)
{
	char path[4200], line[400];
	int fd, n;
	ssize_t w;

	snprintf(path, sizeof(path), "%s/ctl", env_dir);
	n = snprintf(line, sizeof(line), "import endpoints/%s %s\n", q->name,
		     q->id);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, len, "%.200s: %s", path, strerror(errno));
		return -1;
	}
	w = write(fd, line, (size_t)n);
	if (w != n)
		snprintf(why, len, "%s",
			 errno == EEXIST ? "endpoints/NAME exists already"
			 : errno == EOPNOTSUPP
				 ? "the environment's provider imports nothing"
			 : errno == EINVAL
				 ? "refused by ctl (see its last line)"
				 : strerror(errno));
	close(fd);
	return w == n ? 0 : -1;
}

/* Each instance of an aws_sagemaker_endpoint as a request; the rest is
 * listed as skipped. */
static size_t collect(json_t *state, struct request **out)
{
	json_t *res, *inst;
	size_t i, j, n = 0;

	*out = calloc(1, sizeof(**out));
	json_array_foreach(json_object_get(state, "resources"), i, res)
	{
		const char *type =
			json_string_value(json_object_get(res, "type")) ?: "?";
		const char *mode =
			json_string_value(json_object_get(res, "mode")) ?: "";

		json_array_foreach(json_object_get(res, "instances"), j, inst)
		{
			struct request q = { 0 };
			json_t *attrs = json_object_get(inst, "attributes");
			const char *id = json_string_value(
				json_object_get(attrs, "name"));

			address_of(res, inst, q.address, sizeof(q.address));
			if (strcmp(mode, "managed")) {
				say_skipped(q.address, "a data source");
				continue;
			}
			if (strcmp(type, "aws_sagemaker_endpoint")) {
				say_skipped(q.address, why_not_endpoint(type));
				continue;
			}
			if (!instance_name(res, inst, q.name, sizeof(q.name))) {
				say_skipped(q.address,
					    "its name does not make an "
					    "infrafs name ([a-z0-9-], 1 to "
					    "63)");
				continue;
			}
			/* The daemon checks what ID may hold. */
			if (!id || !*id || strlen(id) > ID_MAX) {
				say_skipped(q.address,
					    "no endpoint name in its "
					    "attributes");
				continue;
			}
			snprintf(q.id, sizeof(q.id), "%s", id);
			*out = realloc(*out, (n + 1) * sizeof(**out));
			(*out)[n++] = q;
		}
	}
	return n;
}

static char *read_events(const char *env_dir)
{
	char path[4200];
	FILE *f;
	char *text = NULL;
	size_t cap = 0, len = 0, got;

	snprintf(path, sizeof(path), "%s/events", env_dir);
	f = fopen(path, "re");
	if (!f)
		return strdup("");
	do {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 65536;
			text = realloc(text, cap);
		}
		got = fread(text + len, 1, cap - len - 1, f);
		len += got;
	} while (got);
	fclose(f);
	text[len] = '\0';
	return text;
}

/* The outcome of q in the events written since `since` bytes, or NULL. */
static const char *outcome(const char *events, size_t since,
			   const struct request *q, char *out, size_t len)
{
	char head[400];
	const char *at;

	snprintf(head, sizeof(head), "import endpoints/%s %s: ", q->name,
		 q->id);
	at = strlen(events) > since ? strstr(events + since, head) : NULL;
	if (!at)
		return NULL;
	at += strlen(head);
	snprintf(out, len, "%.*s", (int)strcspn(at, "\n"), at);
	return out;
}

/* Waits for every request's line in events; returns how many failed or
 * -1 on timeout. */
static int wait_outcomes(const char *env_dir, size_t since, struct request *q,
			 size_t n, double timeout_s)
{
	double end = now_s() + timeout_s;
	size_t left = 0;
	int failed = 0;

	for (size_t i = 0; i < n; i++)
		left += !q[i].done;
	while (left) {
		char *events = read_events(env_dir), said[600];

		for (size_t i = 0; i < n; i++) {
			if (q[i].done ||
			    !outcome(events, since, &q[i], said, sizeof(said)))
				continue;
			q[i].done = true;
			left--;
			if (!strncmp(said, "adopted", 7)) {
				printf("imported %s as endpoints/%s (%s)\n",
				       q[i].address, q[i].name, said);
			} else {
				say_skipped(q[i].address, said);
				failed++;
			}
		}
		free(events);
		if (!left)
			break;
		if (now_s() > end) {
			for (size_t i = 0; i < n; i++)
				if (!q[i].done)
					printf("waiting %s: no answer in "
					       "%s/events yet\n",
					       q[i].address, env_dir);
			return -1;
		}
		usleep(200 * 1000);
	}
	return failed;
}

static int usage(void)
{
	fprintf(stderr, "usage: infrafs-import-tfstate [--timeout SECONDS] "
			"STATE_FILE ENV_DIR\n");
	return EXIT_USAGE;
}

static json_t *load_state(const char *path)
{
	json_error_t err;
	json_t *state = json_load_file(path, 0, &err);

	if (!state) {
		fprintf(stderr, "infrafs-import-tfstate: %s:%d: %s\n", path,
			err.line, err.text);
		return NULL;
	}
	if (json_integer_value(json_object_get(state, "version")) != 4) {
		fprintf(stderr,
			"infrafs-import-tfstate: %s: state format version %lld; "
			"this reads version 4 (Terraform 0.12 and later)\n",
			path,
			(long long)json_integer_value(
				json_object_get(state, "version")));
		json_decref(state);
		return NULL;
	}
	return state;
}

int main(int argc, char **argv)
{
	double timeout_s = 120;
	struct request *q;
	json_t *state;
	size_t n, since;
	int failed = 0, argi = 1;
	char *before;

	if (argc > 2 && !strcmp(argv[1], "--timeout")) {
		timeout_s = strtod(argv[2], NULL);
		argi = 3;
	}
	if (argc - argi != 2 || timeout_s <= 0)
		return usage();
	state = load_state(argv[argi]);
	if (!state)
		return EXIT_USAGE;
	n = collect(state, &q);
	json_decref(state);
	before = read_events(argv[argi + 1]);
	since = strlen(before);
	free(before);
	for (size_t i = 0; i < n; i++) {
		char why[400];

		if (send_import(argv[argi + 1], &q[i], why, sizeof(why)) < 0) {
			say_skipped(q[i].address, why);
			q[i].done = true;
			failed++;
		}
	}
	fflush(stdout);
	{
		int waited =
			wait_outcomes(argv[argi + 1], since, q, n, timeout_s);

		free(q);
		if (waited < 0)
			return EXIT_TIMEOUT;
		failed += waited;
	}
	return failed ? EXIT_SOME_SKIPPED : EXIT_ALL;
}
