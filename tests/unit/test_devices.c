// SPDX-License-Identifier: MIT
/*
 * Device discovery: the accelerator table, the CSV parser on recorded
 * nvidia-smi outputs and on broken ones, and gpu_discover() against fake
 * nvidia-smi scripts (failing, absent, killed, chatty, run concurrently).
 * The 10 s time-out is not exercised: it is fixed, and a test that waits
 * for it would dominate the suite's run time.
 */
#include "providers/local/devices.h"
#include "check.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Found from this file's path, so the test runs from the tree's root
 * (tests/unit/...) and from a meson build directory (../tests/unit/...). */
static char data_dir[4096];
static char tmp_dir[] = "/tmp/infrafs-test-devices-XXXXXX";

static const char *data_path(const char *name)
{
	static char path[4200];

	snprintf(path, sizeof(path), "%s/%s", data_dir, name);
	return path;
}

static void find_data_dir(void)
{
	const char *env = getenv("INFRAFS_TEST_DATA");
	const char *slash = strrchr(__FILE__, '/');

	if (env && *env)
		snprintf(data_dir, sizeof(data_dir), "%s/nvidia-smi", env);
	else if (slash)
		snprintf(data_dir, sizeof(data_dir), "%.*s/../data/nvidia-smi",
			 (int)(slash - __FILE__), __FILE__);
	else
		snprintf(data_dir, sizeof(data_dir), "../data/nvidia-smi");
}

/* Writes an executable script into tmp_dir and returns its path. */
static const char *script(const char *name, const char *body)
{
	static char path[8][256];
	static int next;
	char *p = path[next++ % 8];
	FILE *f;

	snprintf(p, sizeof(path[0]), "%s/%s", tmp_dir, name);
	f = fopen(p, "w");
	if (!f) {
		perror(p);
		exit(2);
	}
	fprintf(f, "#!/bin/sh\n%s", body);
	fclose(f);
	chmod(p, 0755);
	return p;
}

/* The schema's accelerator words (spec/schema.c), less "cpu". */
static bool schema_word(const char *w)
{
	static const char *const words[] = {
		"nvidia-t4",	     "nvidia-l4",	 "nvidia-a10g",
		"nvidia-a100-40gb",  "nvidia-a100-80gb", "nvidia-h100-80gb",
		"nvidia-h200-141gb", "nvidia-b200",
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(words[i], w) == 0)
			return true;
	return false;
}

static void test_accelerators(void)
{
	static const struct {
		const char *name, *word;
	} known[] = {
		{ "Tesla T4", "nvidia-t4" },
		{ "NVIDIA T4", "nvidia-t4" },
		{ "NVIDIA L4", "nvidia-l4" },
		{ "NVIDIA A10G", "nvidia-a10g" },
		{ "NVIDIA A100-SXM4-40GB", "nvidia-a100-40gb" },
		{ "NVIDIA A100-PCIE-40GB", "nvidia-a100-40gb" },
		{ "NVIDIA A100-SXM4-80GB", "nvidia-a100-80gb" },
		{ "NVIDIA A100 80GB PCIe", "nvidia-a100-80gb" },
		{ "NVIDIA H100 80GB HBM3", "nvidia-h100-80gb" },
		{ "NVIDIA H100 PCIe", "nvidia-h100-80gb" },
		{ "NVIDIA H200", "nvidia-h200-141gb" },
		{ "NVIDIA H200 NVL", "nvidia-h200-141gb" },
		{ "NVIDIA B200", "nvidia-b200" },
		/* Case and spacing do not matter. */
		{ "nvidia h100 80gb hbm3", "nvidia-h100-80gb" },
		{ "  NVIDIA  L4  ", "nvidia-l4" },
	};
	/* Near misses: other boards whose names contain a known one. */
	static const char *const unknown[] = {
		"NVIDIA H100 NVL", /* 94 GB */
		"NVIDIA H100", /* size unknown */
		"NVIDIA H800",
		"NVIDIA H800 PCIe",
		"NVIDIA H20",
		"NVIDIA GH200 480GB",
		"NVIDIA GB200",
		"NVIDIA B100",
		"NVIDIA L40S",
		"NVIDIA L40",
		"NVIDIA A10",
		"NVIDIA A100",
		"NVIDIA A800-SXM4-80GB",
		"Quadro T4000",
		"NVIDIA T400",
		"NVIDIA GB10",
		"NVIDIA GeForce RTX 4090",
		"Tesla V100-SXM2-32GB",
		"",
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		const char *w = gpu_accelerator_of(known[i].name);

		CHECK_STR(w, known[i].word);
		CHECK(w && schema_word(w));
	}
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		const char *w = gpu_accelerator_of(unknown[i]);

		if (w)
			fprintf(stderr, "\"%s\" mapped to %s\n", unknown[i], w);
		CHECK(w == NULL);
	}
	CHECK(gpu_accelerator_of(NULL) == NULL);
	CHECK(gpu_accelerator_of("cpu") == NULL);
}

static void test_query_args(void)
{
	CHECK_STR(gpu_query_args[0], "--query-gpu=index,uuid,name,"
				     "memory.total,memory.used,"
				     "utilization.gpu");
	CHECK_STR(gpu_query_args[1], "--format=csv,noheader,nounits");
	CHECK(gpu_query_args[2] == NULL);
}

struct want {
	unsigned index;
	const char *uuid, *name, *accel;
	int64_t total, used;
	int util;
};

static void check_gpu(const struct gpu *g, const struct want *w)
{
	CHECK_INT(g->index, w->index);
	CHECK_STR(g->uuid, w->uuid);
	CHECK_STR(g->name, w->name);
	CHECK_STR(g->accelerator, w->accel);
	CHECK_INT(g->memory_total_mib, w->total);
	CHECK_INT(g->memory_used_mib, w->used);
	CHECK_INT(g->utilization_pct, w->util);
}

/* Reads a recorded file through the INFRAFS_NVIDIA_SMI override. */
static void discover_recorded(const char *file, struct gpu_list *l)
{
	char err[256] = "x";

	setenv("INFRAFS_NVIDIA_SMI", data_path(file), 1);
	/* The command must not run: the file stands in for it. */
	CHECK_INT(
		gpu_discover("/nonexistent/must-not-run", l, err, sizeof(err)),
		0);
	CHECK_STR(err, "");
	unsetenv("INFRAFS_NVIDIA_SMI");
}

static void test_recorded(void)
{
	struct gpu_list l;

	discover_recorded("h100x1.csv", &l);
	CHECK_INT(l.n, 1);
	if (l.n == 1)
		check_gpu(&l.v[0],
			  &(struct want){ 0,
					  "GPU-a84bba07-931d-b925-306a-"
					  "0799dc6ebd71",
					  "NVIDIA H100 80GB HBM3",
					  "nvidia-h100-80gb", 81559, 0, 0 });
	gpu_list_free(&l);
	CHECK(l.v == NULL && l.n == 0);

	discover_recorded("h100x8.csv", &l);
	CHECK_INT(l.n, 8);
	for (size_t i = 0; i < l.n; i++) {
		CHECK_INT(l.v[i].index, i);
		CHECK_STR(l.v[i].name, "NVIDIA H100 80GB HBM3");
		CHECK_STR(l.v[i].accelerator, "nvidia-h100-80gb");
		CHECK_INT(l.v[i].memory_total_mib, 81559);
		CHECK_INT(strlen(l.v[i].uuid), 40);
		CHECK(strncmp(l.v[i].uuid, "GPU-", 4) == 0);
	}
	if (l.n == 8) {
		check_gpu(&l.v[2],
			  &(struct want){ 2,
					  "GPU-cbd390b6-56a4-d2ba-d821-"
					  "df997d529975",
					  "NVIDIA H100 80GB HBM3",
					  "nvidia-h100-80gb", 81559, 70890,
					  100 });
		check_gpu(&l.v[7],
			  &(struct want){ 7,
					  "GPU-ebc57f45-9064-1e1f-0378-"
					  "60cf29ae3656",
					  "NVIDIA H100 80GB HBM3",
					  "nvidia-h100-80gb", 81559, 0, 0 });
		for (size_t i = 0; i < l.n; i++)
			for (size_t j = i + 1; j < l.n; j++)
				CHECK(strcmp(l.v[i].uuid, l.v[j].uuid) != 0);
	}
	gpu_list_free(&l);

	discover_recorded("a100x2.csv", &l);
	CHECK_INT(l.n, 2);
	if (l.n == 2) {
		check_gpu(&l.v[0],
			  &(struct want){ 0,
					  "GPU-3d8b6da2-5a43-a846-eb31-"
					  "e7ea468c6414",
					  "NVIDIA A100-SXM4-80GB",
					  "nvidia-a100-80gb", 81920, 4, 0 });
		check_gpu(&l.v[1],
			  &(struct want){ 1,
					  "GPU-ce9da201-e0c0-d1a0-dc00-"
					  "f0e71a714a16",
					  "NVIDIA A100-SXM4-80GB",
					  "nvidia-a100-80gb", 81920, 35762,
					  61 });
	}
	gpu_list_free(&l);

	discover_recorded("t4-l4.csv", &l);
	CHECK_INT(l.n, 2);
	if (l.n == 2) {
		check_gpu(&l.v[0],
			  &(struct want){ 0,
					  "GPU-e81c1aad-236d-31de-f0b9-"
					  "d2993134b65a",
					  "Tesla T4", "nvidia-t4", 15360, 0,
					  0 });
		check_gpu(&l.v[1],
			  &(struct want){ 1,
					  "GPU-b3adf32b-1cc8-fa65-0bdf-"
					  "6593d1b61b4b",
					  "NVIDIA L4", "nvidia-l4", 23034, 1260,
					  7 });
	}
	gpu_list_free(&l);

	/* Listed, every reading -1, and no accelerator word. */
	discover_recorded("unsupported.csv", &l);
	CHECK_INT(l.n, 1);
	if (l.n == 1)
		check_gpu(&l.v[0],
			  &(struct want){ 0,
					  "GPU-171b2f3a-9f88-9eea-f77e-"
					  "e09a4496e0ed",
					  "NVIDIA GB10", "", -1, -1, -1 });
	gpu_list_free(&l);
}

static struct gpu_list parse(const char *text, size_t *skipped)
{
	struct gpu_list l = { (struct gpu *)1, 99 };

	CHECK_INT(gpu_parse_csv(text, strlen(text), &l, skipped), 0);
	return l;
}

static void test_parse_robust(void)
{
	struct gpu_list l;
	size_t skipped;

	/* CRLF, blanks around fields and at line ends, blank lines, tabs,
	 * no final newline. Blank lines are not counted as skipped. */
	l = parse("\r\n  0 , GPU-a ,  NVIDIA A10G  , 23028 , 0 , 0  \r\n"
		  "\n   \n\t1,\tGPU-b,\tNVIDIA H200, 143771,1,2\t\r\n"
		  "2, GPU-c, NVIDIA B200, 183359, 0, 100",
		  &skipped);
	CHECK_INT(skipped, 0);
	CHECK_INT(l.n, 3);
	if (l.n == 3) {
		check_gpu(&l.v[0],
			  &(struct want){ 0, "GPU-a", "NVIDIA A10G",
					  "nvidia-a10g", 23028, 0, 0 });
		check_gpu(&l.v[1],
			  &(struct want){ 1, "GPU-b", "NVIDIA H200",
					  "nvidia-h200-141gb", 143771, 1, 2 });
		check_gpu(&l.v[2],
			  &(struct want){ 2, "GPU-c", "NVIDIA B200",
					  "nvidia-b200", 183359, 0, 100 });
	}
	gpu_list_free(&l);

	/* Every spelling of "not reported", in every numeric field. */
	l = parse("0, GPU-a, NVIDIA H100 NVL, [N/A], [Not Supported], N/A\n"
		  "1, GPU-b, NVIDIA GB10, N/A, [N/A], [Not Supported]\n"
		  "2, GPU-c, Tesla T4, [Unknown Error], "
		  "[Insufficient Permissions], [N/A]\n",
		  &skipped);
	CHECK_INT(skipped, 0);
	CHECK_INT(l.n, 3);
	if (l.n == 3) {
		check_gpu(&l.v[0],
			  &(struct want){ 0, "GPU-a", "NVIDIA H100 NVL", "", -1,
					  -1, -1 });
		check_gpu(&l.v[1], &(struct want){ 1, "GPU-b", "NVIDIA GB10",
						   "", -1, -1, -1 });
		check_gpu(&l.v[2], &(struct want){ 2, "GPU-c", "Tesla T4",
						   "nvidia-t4", -1, -1, -1 });
	}
	gpu_list_free(&l);

	/* Nothing at all. */
	l = parse("", &skipped);
	CHECK_INT(l.n, 0);
	CHECK(l.v == NULL);
	CHECK_INT(skipped, 0);
	l = parse("\n\r\n  \n", &skipped);
	CHECK_INT(l.n, 0);
	CHECK_INT(skipped, 0);
	{
		struct gpu_list e = { NULL, 5 };

		CHECK_INT(gpu_parse_csv(NULL, 0, &e, NULL), 0);
		CHECK_INT(e.n, 0);
	}

	/* len is the end, not the NUL: the second line is cut off. */
	{
		const char *t = "0, GPU-a, NVIDIA L4, 23034, 0, 0\n"
				"1, GPU-b, NVIDIA L4, 23034, 0, 0\n";

		size_t first = (size_t)(strchr(t, '\n') - t) + 1;

		CHECK_INT(gpu_parse_csv(t, first, &l, &skipped), 0);
		CHECK_INT(l.n, 1);
		CHECK_INT(skipped, 0);
		gpu_list_free(&l);
		CHECK_INT(gpu_parse_csv(t, first + 10, &l, &skipped), 0);
		CHECK_INT(l.n, 1);
		CHECK_INT(skipped, 1);
		gpu_list_free(&l);
	}
}

static void test_parse_malformed(void)
{
	static const char *const bad[] = {
		"index, uuid, name, memory.total [MiB], memory.used [MiB], "
		"utilization.gpu [%]", /* a header */
		"0, GPU-a, NVIDIA L4, 23034 MiB, 0 MiB, 0 %", /* units */
		"0, GPU-a, NVIDIA L4, 23034, 0", /* five fields */
		"0, GPU-a, NVIDIA L4, 23034, 0, 0, 0", /* seven */
		"0, GPU-a, NVIDIA A100, Rev 2, 81920, 0, 0", /* comma */
		"x, GPU-a, NVIDIA L4, 23034, 0, 0",
		"-1, GPU-a, NVIDIA L4, 23034, 0, 0",
		"[N/A], GPU-a, NVIDIA L4, 23034, 0, 0", /* index is needed */
		"4294967296, GPU-a, NVIDIA L4, 23034, 0, 0",
		"0, , NVIDIA L4, 23034, 0, 0",
		"0, [N/A], NVIDIA L4, 23034, 0, 0",
		"0, GPU-a, , 23034, 0, 0",
		"0, GPU-a, NVIDIA L4, -23034, 0, 0",
		"0, GPU-a, NVIDIA L4, 23034, 0, 101",
		"0, GPU-a, NVIDIA L4, 23034, 0, 7.5",
		"0, GPU-a, NVIDIA L4, 99999999999999999999, 0, 0",
		"0, GPU-a, NVIDIA L4, , 0, 0",
		"0, GPU-a, NVIDIA\tL4, 23034, 0, 0", /* control character */
		"Unable to determine the device handle for GPU0000:41:00.0: "
		"Unknown Error",
		"No devices were found",
	};
	struct gpu_list l;
	size_t skipped;
	char text[4096];
	char longname[200];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text),
			 "0, GPU-ok, NVIDIA L4, 23034, 0, 0\n%s\n"
			 "1, GPU-ok2, NVIDIA L4, 23034, 0, 0\n",
			 bad[i]);
		l = parse(text, &skipped);
		if (skipped != 1)
			fprintf(stderr, "not skipped: %s\n", bad[i]);
		CHECK_INT(skipped, 1);
		CHECK_INT(l.n, 2);
		if (l.n == 2) {
			CHECK_STR(l.v[0].uuid, "GPU-ok");
			CHECK_STR(l.v[1].uuid, "GPU-ok2");
		}
		gpu_list_free(&l);
	}

	/* A name or uuid that does not fit is skipped, not truncated. */
	memset(longname, 'A', sizeof(longname));
	longname[95] = '\0';
	snprintf(text, sizeof(text), "0, GPU-a, %s, 1, 0, 0\n", longname);
	l = parse(text, &skipped);
	CHECK_INT(l.n, 1);
	CHECK_INT(skipped, 0);
	if (l.n == 1)
		CHECK_INT(strlen(l.v[0].name), 95);
	gpu_list_free(&l);
	longname[95] = 'A';
	longname[96] = '\0';
	snprintf(text, sizeof(text), "0, GPU-a, %s, 1, 0, 0\n", longname);
	l = parse(text, &skipped);
	CHECK_INT(l.n, 0);
	CHECK_INT(skipped, 1);
	gpu_list_free(&l);
	longname[64] = '\0';
	snprintf(text, sizeof(text), "0, %s, NVIDIA L4, 1, 0, 0\n", longname);
	l = parse(text, &skipped);
	CHECK_INT(l.n, 0);
	CHECK_INT(skipped, 1);
	gpu_list_free(&l);

	/* Many GPUs: the array grows. */
	{
		size_t off = 0;

		for (int i = 0; i < 40; i++)
			off += (size_t)snprintf(text + off, sizeof(text) - off,
						"%d, GPU-%d, NVIDIA L4, 23034, "
						"%d, %d\n",
						i, i, i, i);
		l = parse(text, &skipped);
		CHECK_INT(l.n, 40);
		CHECK_INT(skipped, 0);
		if (l.n == 40) {
			CHECK_INT(l.v[39].index, 39);
			CHECK_STR(l.v[39].uuid, "GPU-39");
			CHECK_INT(l.v[39].memory_used_mib, 39);
			CHECK_INT(l.v[39].utilization_pct, 39);
		}
		gpu_list_free(&l);
	}
	gpu_list_free(NULL);
}

static const char *query_check =
	/* The exact query, nothing more, and stdin at end of file. */
	"[ $# -eq 2 ] || exit 3\n"
	"[ \"$1\" = \"--query-gpu=index,uuid,name,memory.total,memory.used,"
	"utilization.gpu\" ] || exit 3\n"
	"[ \"$2\" = \"--format=csv,noheader,nounits\" ] || exit 3\n"
	"if read line; then exit 4; fi\n";

static void test_discover_runs(void)
{
	struct gpu_list l;
	char err[512];
	char body[1024];
	const char *ok;
	int r;

	snprintf(body, sizeof(body),
		 "%s"
		 "echo '0, GPU-x, NVIDIA A100-PCIE-40GB, 40960, 3, 1'\n"
		 "echo '1, GPU-y, NVIDIA A100 80GB PCIe, 81920, 0, 0'\n",
		 query_check);
	ok = script("ok", body);
	strcpy(err, "stale");
	r = gpu_discover(ok, &l, err, sizeof(err));
	CHECK_INT(r, 0);
	CHECK_STR(err, "");
	CHECK_INT(l.n, 2);
	if (l.n == 2) {
		check_gpu(&l.v[0],
			  &(struct want){ 0, "GPU-x", "NVIDIA A100-PCIE-40GB",
					  "nvidia-a100-40gb", 40960, 3, 1 });
		check_gpu(&l.v[1],
			  &(struct want){ 1, "GPU-y", "NVIDIA A100 80GB PCIe",
					  "nvidia-a100-80gb", 81920, 0, 0 });
	}
	gpu_list_free(&l);

	/* An override that names no readable file runs the command. */
	setenv("INFRAFS_NVIDIA_SMI", "/nonexistent/recorded.csv", 1);
	r = gpu_discover(ok, &l, err, sizeof(err));
	CHECK_INT(r, 0);
	CHECK_INT(l.n, 2);
	gpu_list_free(&l);
	setenv("INFRAFS_NVIDIA_SMI", tmp_dir, 1); /* a directory */
	r = gpu_discover(ok, &l, err, sizeof(err));
	CHECK_INT(r, 0);
	CHECK_INT(l.n, 2);
	gpu_list_free(&l);
	setenv("INFRAFS_NVIDIA_SMI", "", 1);
	r = gpu_discover(ok, &l, err, sizeof(err));
	CHECK_INT(r, 0);
	CHECK_INT(l.n, 2);
	gpu_list_free(&l);
	unsetenv("INFRAFS_NVIDIA_SMI");

	/* NULL means nvidia-smi from PATH. */
	{
		char *old = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
		char path[600];

		script("nvidia-smi", body);
		snprintf(path, sizeof(path), "%s:%s", tmp_dir,
			 old ? old : "/usr/bin:/bin");
		setenv("PATH", path, 1);
		r = gpu_discover(NULL, &l, err, sizeof(err));
		CHECK_INT(r, 0);
		CHECK_INT(l.n, 2);
		gpu_list_free(&l);

		/* Not installed: no error, no GPUs, whether or not this
		 * machine has a real nvidia-smi. */
		unlink(ok);
		snprintf(path, sizeof(path), "%s/nvidia-smi", tmp_dir);
		unlink(path);
		setenv("PATH", tmp_dir, 1);
		strcpy(err, "stale");
		r = gpu_discover(NULL, &l, err, sizeof(err));
		CHECK_INT(r, 0);
		CHECK_INT(l.n, 0);
		CHECK(l.v == NULL);
		CHECK_STR(err, "");
		if (old)
			setenv("PATH", old, 1);
		else
			unsetenv("PATH");
		free(old);
	}
	r = gpu_discover("/nonexistent/nvidia-smi", &l, err, sizeof(err));
	CHECK_INT(r, 0);
	CHECK_INT(l.n, 0);
	r = gpu_discover("infrafs-no-such-nvidia-smi", &l, err, sizeof(err));
	CHECK_INT(r, 0);
	CHECK_INT(l.n, 0);

	/* No output and success: a machine with no GPUs. */
	r = gpu_discover(script("empty", "exit 0\n"), &l, NULL, 0);
	CHECK_INT(r, 0);
	CHECK_INT(l.n, 0);
}

static void test_discover_fails(void)
{
	static const char msg[] =
		"NVIDIA-SMI has failed because it couldn't communicate with "
		"the NVIDIA driver. Make sure that the latest NVIDIA driver "
		"is installed and running.";
	struct gpu_list l;
	char err[512], body[1024];
	const char *cmd;
	int r;

	/* The driver is missing: exit 9, the reason on stderr. */
	snprintf(body, sizeof(body),
		 "echo 'partial' \n"
		 "echo \"%s\" >&2\n"
		 "echo 'second line' >&2\n"
		 "exit 9\n",
		 msg);
	cmd = script("exit9", body);
	r = gpu_discover(cmd, &l, err, sizeof(err));
	CHECK_INT(r, -EIO);
	CHECK_STR(err, msg);
	CHECK_INT(l.n, 0);
	CHECK(l.v == NULL);

	/* A short err buffer is cut, and still terminated. */
	{
		char small[8];

		r = gpu_discover(cmd, &l, small, sizeof(small));
		CHECK_INT(r, -EIO);
		CHECK_STR(small, "NVIDIA-");
		r = gpu_discover(cmd, &l, NULL, 0);
		CHECK_INT(r, -EIO);
	}

	/* The reason on stdout only, after blank lines. */
	snprintf(body, sizeof(body), "echo\necho \"%s\"\nexit 9\n", msg);
	r = gpu_discover(script("stdout9", body), &l, err, sizeof(err));
	CHECK_INT(r, -EIO);
	CHECK_STR(err, msg);

	/* No reason at all. */
	cmd = script("silent", "exit 18\n");
	r = gpu_discover(cmd, &l, err, sizeof(err));
	CHECK_INT(r, -EIO);
	CHECK(strstr(err, "exited with status 18") != NULL);

	/* Killed. */
	r = gpu_discover(script("killed", "kill -9 $$\n"), &l, err,
			 sizeof(err));
	CHECK_INT(r, -EIO);
	CHECK(strstr(err, "signal 9") != NULL);

	/* Success, but nothing in the output is a GPU line. */
	r = gpu_discover(
		script("garbage", "echo 'Tesla T4, 15360 MiB'\nexit 0\n"), &l,
		err, sizeof(err));
	CHECK_INT(r, -EIO);
	CHECK(strstr(err, "Tesla T4, 15360 MiB") != NULL);
	CHECK_INT(l.n, 0);

	/* There, but not executable. */
	cmd = script("noexec", "exit 0\n");
	chmod(cmd, 0644);
	r = gpu_discover(cmd, &l, err, sizeof(err));
	CHECK_INT(r, -EACCES);
	CHECK(strstr(err, "cannot run") != NULL);

	/* A recorded file with no GPU line is an error too. */
	{
		char path[300];
		FILE *f;

		snprintf(path, sizeof(path), "%s/garbage.csv", tmp_dir);
		f = fopen(path, "w");
		fputs("index, uuid, name\n", f);
		fclose(f);
		setenv("INFRAFS_NVIDIA_SMI", path, 1);
		r = gpu_discover(NULL, &l, err, sizeof(err));
		CHECK_INT(r, -EIO);
		CHECK(strstr(err, "index, uuid, name") != NULL);
		unsetenv("INFRAFS_NVIDIA_SMI");
	}
}

/* More than a pipe holds, on both streams at once: no deadlock. */
static void test_discover_chatty(void)
{
	struct gpu_list l;
	char err[512];
	int r;

	r = gpu_discover(
		script("chatty",
		       "i=0\n"
		       "while [ $i -lt 3000 ]; do\n"
		       "  echo \"$i, GPU-$i, NVIDIA L4, 23034, 0, 0\"\n"
		       "  echo \"warning $i: lots of text on stderr\" "
		       ">&2\n"
		       "  i=$((i + 1))\n"
		       "done\n"),
		&l, err, sizeof(err));
	CHECK_INT(r, 0);
	CHECK_INT(l.n, 3000);
	if (l.n == 3000)
		CHECK_STR(l.v[2999].uuid, "GPU-2999");
	gpu_list_free(&l);
}

static const char *concurrent_cmd;

static void *discover_thread(void *arg)
{
	int *fails = arg;

	for (int i = 0; i < 10; i++) {
		struct gpu_list l;
		char err[256];

		if (gpu_discover(concurrent_cmd, &l, err, sizeof(err)) != 0 ||
		    l.n != 2 || strcmp(l.v[1].uuid, "GPU-b") != 0)
			(*fails)++;
		gpu_list_free(&l);
	}
	return NULL;
}

static void test_discover_concurrent(void)
{
	pthread_t t[6];
	int fails[6] = { 0 };

	concurrent_cmd =
		script("two", "echo '0, GPU-a, NVIDIA H200, 143771, 0, 0'\n"
			      "echo '1, GPU-b, NVIDIA H200, 143771, 0, 0'\n");
	for (int i = 0; i < 6; i++)
		CHECK_INT(
			pthread_create(&t[i], NULL, discover_thread, &fails[i]),
			0);
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		CHECK_INT(fails[i], 0);
	}
}

static void test_cpu_slots(void)
{
	cpu_set_t old, one;
	unsigned n = cpu_slots();
	long online = sysconf(_SC_NPROCESSORS_ONLN);

	CHECK(n >= 1);
	CHECK(online < 1 || n <= (unsigned)online);
	if (sched_getaffinity(0, sizeof(old), &old) != 0)
		return;
	CHECK_INT(n, CPU_COUNT(&old));
	/* Pinned to one CPU, there is one slot. */
	for (int c = 0; c < CPU_SETSIZE; c++) {
		if (!CPU_ISSET(c, &old))
			continue;
		CPU_ZERO(&one);
		CPU_SET(c, &one);
		if (sched_setaffinity(0, sizeof(one), &one) == 0) {
			CHECK_INT(cpu_slots(), 1);
			sched_setaffinity(0, sizeof(old), &old);
		}
		break;
	}
	CHECK_INT(cpu_slots(), n);
}

static void cleanup(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp_dir);
}

int main(void)
{
	find_data_dir();
	if (access(data_path("h100x1.csv"), R_OK) != 0) {
		fprintf(stderr,
			"no recorded outputs in %s: run from the tree's root "
			"or the build directory, or set INFRAFS_TEST_DATA\n",
			data_dir);
		return 2;
	}
	if (!mkdtemp(tmp_dir)) {
		perror("mkdtemp");
		return 2;
	}
	unsetenv("INFRAFS_NVIDIA_SMI");

	test_accelerators();
	test_query_args();
	test_recorded();
	test_parse_robust();
	test_parse_malformed();
	test_discover_runs();
	test_discover_fails();
	test_discover_chatty();
	test_discover_concurrent();
	test_cpu_slots();

	cleanup();
	return check_report("devices");
}
