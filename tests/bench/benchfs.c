// SPDX-License-Identifier: MIT
/*
 * benchfs: the tight loops behind tests/bench/run.sh. Shell and Python add
 * a fork or an interpreter to every operation and would measure themselves;
 * these loops make exactly the system calls a client makes and nothing
 * else. Each subcommand prints one line of `key=value` pairs on stdout for
 * the script to parse, and exits non-zero when it could not do its job (a
 * slow result is not an error: judging it is the script's business).
 *
 *   benchfs readloop FILE SECONDS
 *	open, read to EOF, close, in a loop on one thread for SECONDS.
 *   benchfs populate DIR COUNT THREADS PREFIX
 *	mkdir DIR/PREFIX00000 .. PREFIX(COUNT-1) and write one spec in each
 *	(the first write of a draft commits it), spread over THREADS threads.
 *   benchfs commit DIR PREFIX WRITERS SECONDS BASE
 *	WRITERS threads, writer i committing DIR/PREFIX<i, 5 digits>/spec
 *	again and again (open O_WRONLY|O_CREAT|O_TRUNC, write, close) with the values
 *	BASE, BASE+1, ...; counts successful closes.
 *   benchfs statall DIR PREFIX COUNT
 *	stat(2) DIR/PREFIX00000 .. PREFIX(COUNT-1).
 *   benchfs readall DIR PREFIX COUNT FILE...
 *	open, read to EOF and close DIR/PREFIXnnnnn/FILE once each.
 *   benchfs count DIR
 *	the entries of DIR ("." and ".." left out), from getdents64 and from
 *	readdir(3).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Larger than any generated file read here, so EOF is one more read. */
#define READ_BUF (64 * 1024)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "benchfs: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

static long parse_long(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < min || v > max) {
		fprintf(stderr, "benchfs: bad number '%s'\n", s);
		exit(2);
	}
	return v;
}

/* Returns bytes read, or -1 with errno set. */
static ssize_t read_whole(const char *path, char *buf)
{
	ssize_t n, total = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	while ((n = read(fd, buf, READ_BUF)) > 0)
		total += n;
	if (n < 0) {
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	if (close(fd) < 0)
		return -1;
	return total;
}

/* ---- readloop ------------------------------------------------------------ */

static int cmd_readloop(int argc, char **argv)
{
	static char buf[READ_BUF];
	double secs, start, end, t;
	unsigned long ops = 0;
	ssize_t size = 0;

	if (argc != 2)
		return 2;
	secs = (double)parse_long(argv[1], 1, 600);
	start = now();
	end = start + secs;
	do {
		/* Checking the clock every 64 rounds keeps it out of the
		 * figure; 64 rounds take well under a millisecond. */
		for (int i = 0; i < 64; i++) {
			size = read_whole(argv[0], buf);
			if (size <= 0)
				die("reading", argv[0]);
		}
		ops += 64;
		t = now();
	} while (t < end);
	printf("ops=%lu seconds=%.3f per_sec=%.0f bytes=%zd\n", ops, t - start,
	       (double)ops / (t - start), size);
	return 0;
}

/* ---- directory listings -------------------------------------------------- */

/*
 * Counts a folder's entries twice: as the getdents64 system call returns
 * them, and as glibc's readdir(3) hands them to programs like ls. glibc
 * skips entries whose d_ino is 0, so the two differ when a file system
 * leaves inode numbers out of a listing: the script reports that.
 */
struct linux_dirent64 {
	unsigned long long d_ino;
	long long d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

static int cmd_count(int argc, char **argv)
{
	static char buf[32768];
	unsigned long raw = 0, no_ino = 0, seen = 0;
	struct dirent *de;
	long n;
	DIR *d;
	int fd;

	if (argc != 1)
		return 2;
	fd = open(argv[0], O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		die("opening", argv[0]);
	while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
		for (long pos = 0; pos < n;) {
			struct linux_dirent64 *e = (void *)(buf + pos);

			pos += e->d_reclen;
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			raw++;
			if (!e->d_ino)
				no_ino++;
		}
	}
	if (n < 0)
		die("listing", argv[0]);
	close(fd);
	d = opendir(argv[0]);
	if (!d)
		die("opening", argv[0]);
	errno = 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			seen++;
		errno = 0;
	}
	if (errno)
		die("reading", argv[0]);
	closedir(d);
	printf("entries=%lu readdir_entries=%lu zero_ino=%lu\n", raw, seen,
	       no_ino);
	return 0;
}

/*
 * statall and readall name the resources the way populate made them
 * (PREFIX00000 up to COUNT) instead of listing the folder, so their figures
 * stand even when a listing is incomplete.
 */
static void res_path(char *out, size_t len, const char *dir,
		     const char *prefix, long i, const char *file)
{
	snprintf(out, len, "%s/%s%05ld%s%s", dir, prefix, i, file ? "/" : "",
		 file ? file : "");
}

static int cmd_statall(int argc, char **argv)
{
	char path[PATH_MAX];
	struct stat st;
	double t0, t1;
	long count;

	if (argc != 3)
		return 2;
	count = parse_long(argv[2], 1, 99999);
	t0 = now();
	for (long i = 0; i < count; i++) {
		res_path(path, sizeof(path), argv[0], argv[1], i, NULL);
		if (stat(path, &st) < 0)
			die("stat", path);
	}
	t1 = now();
	printf("entries=%ld ms=%.1f per_sec=%.0f\n", count, (t1 - t0) * 1e3,
	       (double)count / (t1 - t0));
	return 0;
}

static int cmd_readall(int argc, char **argv)
{
	static char buf[READ_BUF];
	char path[PATH_MAX];
	double t0, t1;
	long count, files = 0;

	if (argc < 4)
		return 2;
	count = parse_long(argv[2], 1, 99999);
	t0 = now();
	for (long i = 0; i < count; i++) {
		for (int f = 3; f < argc; f++) {
			res_path(path, sizeof(path), argv[0], argv[1], i,
				 argv[f]);
			/* Some files (events of a quiet pool) may be empty. */
			if (read_whole(path, buf) < 0)
				die("reading", path);
			files++;
		}
	}
	t1 = now();
	printf("files=%ld ms=%.1f per_sec=%.0f\n", files, (t1 - t0) * 1e3,
	       (double)files / (t1 - t0));
	return 0;
}

/* ---- writers ------------------------------------------------------------- */

/* One spec commit, as `echo "nodes = N" > spec` makes it: the commit is
 * durable, or refused, when close(2) returns. */
static int commit_spec(const char *path, long nodes)
{
	char line[32];
	int len = snprintf(line, sizeof(line), "nodes = %ld\n", nodes);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0)
		return -1;
	if (write(fd, line, (size_t)len) != len) {
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	return close(fd);
}

struct populate_job {
	const char *dir, *prefix;
	atomic_long *next;
	long count;
	int err;
};

static void *populate_worker(void *arg)
{
	struct populate_job *j = arg;
	char path[PATH_MAX];
	long i;

	while ((i = atomic_fetch_add(j->next, 1)) < j->count) {
		snprintf(path, sizeof(path), "%s/%s%05ld", j->dir, j->prefix,
			 i);
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			j->err = errno;
			fprintf(stderr, "benchfs: mkdir %s: %s\n", path,
				strerror(errno));
			break;
		}
		strncat(path, "/spec", sizeof(path) - strlen(path) - 1);
		if (commit_spec(path, i % 8 + 1) < 0) {
			j->err = errno;
			fprintf(stderr, "benchfs: committing %s: %s\n", path,
				strerror(errno));
			break;
		}
	}
	return NULL;
}

static int cmd_populate(int argc, char **argv)
{
	struct populate_job jobs[64];
	pthread_t threads[64];
	atomic_long next = 0;
	long count, nthreads;
	double t0, t1;
	int failed = 0;

	if (argc != 4)
		return 2;
	count = parse_long(argv[1], 1, 99999);
	nthreads = parse_long(argv[2], 1, 64);
	t0 = now();
	for (long t = 0; t < nthreads; t++) {
		jobs[t] = (struct populate_job){ .dir = argv[0],
						 .prefix = argv[3],
						 .next = &next,
						 .count = count };
		if (pthread_create(&threads[t], NULL, populate_worker,
				   &jobs[t]))
			die("starting a thread for", argv[0]);
	}
	for (long t = 0; t < nthreads; t++) {
		pthread_join(threads[t], NULL);
		failed |= jobs[t].err;
	}
	t1 = now();
	if (failed)
		return 1;
	printf("resources=%ld threads=%ld seconds=%.2f per_sec=%.0f\n", count,
	       nthreads, t1 - t0, (double)count / (t1 - t0));
	return 0;
}

struct writer {
	pthread_t thread;
	char path[PATH_MAX];
	long base;
	pthread_barrier_t *go;
	double deadline;
	unsigned long ok, failed;
	double *lat; /* seconds per successful commit */
	size_t nlat, caplat;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	long n = 0;

	pthread_barrier_wait(w->go);
	while (now() < w->deadline) {
		double t = now();

		/* The store makes no revision for a spec written back
		 * unchanged; a value never used before on this resource
		 * makes every commit a real change, so each success must
		 * show up as one revision. */
		if (commit_spec(w->path, w->base + n++) < 0) {
			/* A refused commit is a bug worth seeing, not a
			 * figure: report it and stop this writer. */
			w->failed++;
			fprintf(stderr, "benchfs: committing %s: %s\n",
				w->path, strerror(errno));
			break;
		}
		w->ok++;
		if (w->nlat == w->caplat) {
			w->caplat = w->caplat ? w->caplat * 2 : 4096;
			w->lat = realloc(w->lat, w->caplat * sizeof(*w->lat));
			if (!w->lat)
				die("recording latency for", w->path);
		}
		w->lat[w->nlat++] = now() - t;
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int cmd_commit(int argc, char **argv)
{
	struct writer *w;
	pthread_barrier_t go;
	unsigned long ok = 0, failed = 0;
	double *lat = NULL, t0, t1, p50 = 0, p99 = 0;
	size_t nlat = 0;
	long nw, secs, base;

	if (argc != 5)
		return 2;
	nw = parse_long(argv[2], 1, 256);
	secs = parse_long(argv[3], 1, 600);
	base = parse_long(argv[4], 1, 1L << 40);
	w = calloc((size_t)nw, sizeof(*w));
	if (!w)
		die("allocating writers for", argv[0]);
	pthread_barrier_init(&go, NULL, (unsigned)nw + 1);
	for (long i = 0; i < nw; i++) {
		w[i].base = base;
		w[i].go = &go;
		snprintf(w[i].path, sizeof(w[i].path), "%s/%s%05ld/spec",
			 argv[0], argv[1], i);
		if (pthread_create(&w[i].thread, NULL, writer_main, &w[i]))
			die("starting a writer for", argv[0]);
	}
	/* Writers start together; a commit still in flight at the deadline
	 * finishes and counts, so the time runs until the last one joins. */
	t0 = now();
	for (long i = 0; i < nw; i++)
		w[i].deadline = t0 + (double)secs;
	pthread_barrier_wait(&go);
	for (long i = 0; i < nw; i++) {
		pthread_join(w[i].thread, NULL);
		ok += w[i].ok;
		failed += w[i].failed;
		nlat += w[i].nlat;
	}
	t1 = now();
	lat = malloc((nlat + 1) * sizeof(*lat));
	if (!lat)
		die("allocating latencies for", argv[0]);
	nlat = 0;
	for (long i = 0; i < nw; i++) {
		memcpy(lat + nlat, w[i].lat, w[i].nlat * sizeof(*lat));
		nlat += w[i].nlat;
		free(w[i].lat);
	}
	if (nlat) {
		qsort(lat, nlat, sizeof(*lat), cmp_double);
		p50 = lat[nlat / 2];
		p99 = lat[(nlat * 99) / 100];
	}
	printf("writers=%ld ok=%lu failed=%lu seconds=%.3f per_sec=%.0f "
	       "p50_ms=%.2f p99_ms=%.2f\n",
	       nw, ok, failed, t1 - t0, (double)ok / (t1 - t0), p50 * 1e3,
	       p99 * 1e3);
	free(lat);
	free(w);
	pthread_barrier_destroy(&go);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int argc, char **argv);
	} cmds[] = {
		{ "readloop", cmd_readloop }, { "populate", cmd_populate },
		{ "commit", cmd_commit },     { "statall", cmd_statall },
		{ "readall", cmd_readall },   { "count", cmd_count },
	};

	for (size_t i = 0; argc > 1 && i < sizeof(cmds) / sizeof(cmds[0]);
	     i++) {
		int rc;

		if (strcmp(argv[1], cmds[i].name) != 0)
			continue;
		rc = cmds[i].fn(argc - 2, argv + 2);
		if (rc == 2)
			break;
		return rc;
	}
	fprintf(stderr, "usage: benchfs readloop FILE SECONDS\n"
			"       benchfs populate DIR COUNT THREADS PREFIX\n"
			"       benchfs commit DIR PREFIX WRITERS SECONDS BASE\n"
			"       benchfs statall DIR PREFIX COUNT\n"
			"       benchfs readall DIR PREFIX COUNT FILE...\n"
			"       benchfs count DIR\n");
	return 2;
}
