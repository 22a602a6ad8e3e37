// SPDX-License-Identifier: MIT
/* Unit tests of the environment folder reader (spec/folder.c). */
#include "check.h"
#include "spec/folder.h"
#include "spec/spec.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];

/* Writes path (relative to the test folder) with text, making folders. */
static void put(const char *path, const char *text)
{
	char full[512], *slash;
	FILE *f;

	snprintf(full, sizeof(full), "%s/%s", root, path);
	for (slash = strchr(full + strlen(root) + 1, '/'); slash;
	     slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		mkdir(full, 0755);
		*slash = '/';
	}
	f = fopen(full, "w");
	if (!f) {
		perror(full);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

static void fresh(void)
{
	char cmd[128];

	if (root[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
		if (system(cmd) != 0)
			exit(1);
	}
	snprintf(root, sizeof(root), "/tmp/test_folder.XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		exit(1);
	}
}

static void in_root(const char *path, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", root, path);
}

/* A fresh folder where path's parents exist and path does not. */
static void fresh_slot(const char *path, char *out, size_t len)
{
	fresh();
	put(path, "");
	in_root(path, out, len);
	unlink(out);
}

/* Reads the test folder expecting rc; returns the error for checks. */
static struct folder_error read_expect(int want_rc, struct folder *f)
{
	struct folder_error err;
	int rc = folder_read(root, f, &err);

	CHECK_INT(rc, want_rc);
	if (rc)
		CHECK_INT(f->n, 0);
	return err;
}

static void test_layout_read_in_order(void)
{
	struct folder f;
	const struct folder_doc *d;

	fresh();
	put("endpoints/chat/spec", "pool = b\n");
	put("pools/b/spec", "nodes = 2\n");
	put("pools/a/spec", "");
	put("policy", "max_accelerators = 8\n");
	put(".git/config", "[core]\n");
	put(".github/workflows/plan.yml", "on: pull_request\n");
	put("pools/.hidden/spec", "not read\n");
	put("pools/a/.spec.swp", "an editor's\n");
	read_expect(0, &f);
	CHECK_INT(f.n, 4);
	if (f.n == 4) {
		CHECK_STR(f.docs[0].path, "pools/a/spec");
		CHECK(f.docs[0].kind == &kind_pool);
		CHECK_STR(f.docs[0].name, "a");
		CHECK_STR(f.docs[0].text, "");
		CHECK_INT(f.docs[0].len, 0);
		CHECK_STR(f.docs[1].path, "pools/b/spec");
		CHECK_STR(f.docs[1].text, "nodes = 2\n");
		CHECK_STR(f.docs[2].path, "endpoints/chat/spec");
		CHECK(f.docs[2].kind == &kind_endpoint);
		CHECK_STR(f.docs[3].path, "policy");
		CHECK(f.docs[3].kind == &kind_policy);
		CHECK_STR(f.docs[3].name, "");
	}
	d = folder_find(&f, &kind_pool, "b");
	CHECK(d && !strcmp(d->text, "nodes = 2\n"));
	CHECK(folder_find(&f, &kind_endpoint, "b") == NULL);
	CHECK(folder_find(&f, &kind_endpoint, "chat") != NULL);
	CHECK(folder_find(&f, &kind_policy, "") != NULL);
	folder_free(&f);
	CHECK_INT(f.n, 0);
}

static void test_empty_folder(void)
{
	struct folder f;

	fresh();
	read_expect(0, &f);
	CHECK_INT(f.n, 0);
	CHECK(folder_find(&f, &kind_policy, "") == NULL);
	folder_free(&f);
}

/* One folder that does not fit: its files, and what the refusal says. */
struct refusal_case {
	const char *files[2]; /* paths; each written with "" */
	const char *path;
	const char *says;
};

static const struct refusal_case refusal_cases[] = {
	{ { "pools/Train/spec" },
	  "pools/Train",
	  "pools/Train: not a valid name" },
	{ { "pool/train/spec" }, "pool", "not part of an environment folder" },
	{ { "README.md" }, "README.md", "README.md: not part of" },
	{ { "config" }, "config", "set in the mount" },
	{ { "secrets/token" }, "secrets", "never live in a folder" },
	{ { "pools/a/spec", "pools/a/nodes" },
	  "pools/a/nodes",
	  "holds only its spec" },
	{ { "pools/a/.gitkeep" }, "pools/a", "pools/a: no spec" },
	{ { "pools/a" }, "pools/a", "pools/a: not a folder" },
	{ { "policy/spec" }, "policy", "policy: not a regular file" },
};

static void test_refusals_name_the_path(void)
{
	for (size_t i = 0; i < sizeof(refusal_cases) / sizeof(*refusal_cases);
	     i++) {
		const struct refusal_case *c = &refusal_cases[i];
		struct folder f;
		struct folder_error e;

		fresh();
		for (size_t j = 0; j < 2 && c->files[j]; j++)
			put(c->files[j], "");
		e = read_expect(-EINVAL, &f);
		CHECK_STR(e.path, c->path);
		CHECK_HAS(e.msg, c->says);
	}
}

static void test_links_are_not_followed(void)
{
	char path[512], target[512];
	struct folder f;
	struct folder_error e;

	fresh_slot("pools/a/spec", path, sizeof(path));
	CHECK(symlink("/etc/passwd", path) == 0);
	e = read_expect(-ELOOP, &f);
	CHECK_STR(e.path, "pools/a/spec");
	CHECK_HAS(e.msg, "symbolic link");

	fresh();
	put(".elsewhere/spec", "nodes = 1\n");
	put("pools/.keep", "");
	in_root(".elsewhere", target, sizeof(target));
	in_root("pools/b", path, sizeof(path));
	CHECK(symlink(target, path) == 0);
	e = read_expect(-ELOOP, &f);
	CHECK_STR(e.path, "pools/b");

	fresh_slot("policy", path, sizeof(path));
	CHECK(symlink("/etc/hostname", path) == 0);
	e = read_expect(-ELOOP, &f);
	CHECK_STR(e.path, "policy");
}

/* A FIFO would block a reader that opened it; it is never opened. */
static void test_fifo_refused(void)
{
	char path[512];
	struct folder f;
	struct folder_error e;

	fresh_slot("pools/a/spec", path, sizeof(path));
	CHECK(mkfifo(path, 0644) == 0);
	e = read_expect(-EINVAL, &f);
	CHECK_STR(e.path, "pools/a/spec");
	CHECK_HAS(e.msg, "neither a regular file nor a folder");
}

static void test_size_bound(void)
{
	struct folder f;
	struct folder_error e;
	char *big = malloc(SPEC_MAX_BYTES + 2);

	memset(big, '#', SPEC_MAX_BYTES + 1);
	big[SPEC_MAX_BYTES + 1] = '\0';
	fresh();
	put("pools/a/spec", big);
	e = read_expect(-EFBIG, &f);
	CHECK_STR(e.path, "pools/a/spec");
	CHECK_HAS(e.msg, "larger than");
	big[SPEC_MAX_BYTES] = '\0';
	put("pools/a/spec", big);
	read_expect(0, &f);
	CHECK_INT(f.n, 1);
	if (f.n == 1)
		CHECK_INT(f.docs[0].len, SPEC_MAX_BYTES);
	folder_free(&f);
	free(big);
}

/* A name is anyone's bytes: the message cannot break a line. */
static void test_hostile_name_escaped(void)
{
	struct folder f;
	struct folder_error e;

	fresh();
	put("pools/a\nb\033[2J/spec", "");
	e = read_expect(-EINVAL, &f);
	CHECK(!strchr(e.msg, '\n') && !strchr(e.msg, '\033'));
	CHECK_HAS(e.msg, "pools/a\\nb\\x1b[2J");
}

static void test_missing_folder(void)
{
	struct folder f;
	struct folder_error e;

	CHECK_INT(folder_read("/nonexistent/infra", &f, &e), -ENOENT);
	CHECK_HAS(e.msg, "/nonexistent/infra");
	CHECK_INT(f.n, 0);
}

/* The same folder, read through a descriptor the caller opened. */
static void test_read_at(void)
{
	struct folder f;
	struct folder_error e;
	int fd;

	fresh();
	put("endpoints/x/spec", "replicas = 2\n");
	fd = open(root, O_RDONLY | O_DIRECTORY);
	CHECK_INT(folder_read_at(fd, &f, &e), 0);
	CHECK_INT(f.n, 1);
	folder_free(&f);
	/* Not closed by the reader: reading again works. */
	CHECK_INT(folder_read_at(fd, &f, &e), 0);
	CHECK_INT(f.n, 1);
	folder_free(&f);
	close(fd);
}

int main(void)
{
	char cmd[128];

	test_layout_read_in_order();
	test_empty_folder();
	test_refusals_name_the_path();
	test_links_are_not_followed();
	test_fifo_refused();
	test_size_bound();
	test_hostile_name_escaped();
	test_missing_folder();
	test_read_at();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0)
		return 1;
	return check_report("folder");
}
