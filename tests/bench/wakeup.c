// SPDX-License-Identifier: MIT
/*
 * Wake-up latency of poll(2) waiters on a mounted infrafs: WAITERS
 * threads each open FILE (a status file) and sleep in poll(2) for
 * POLLPRI; the main thread then commits a change to SPEC, which changes
 * FILE, and every waiter notes when its poll(2) returned. Run by
 * tests/bench/wakeup.sh, which mounts the daemon; see docs/performance.md.
 *
 *	bench_wakeup FILE SPEC WAITERS ROUNDS [floor]
 *
 * With "floor", the same threads wait on an eventfd instead, the main
 * thread writes it where it would have committed, and each woken thread
 * then makes one FUSE round trip of its own (a read of the environment's
 * events, which bypasses the page cache) before noting the time: what
 * waking that many threads and answering one request from each costs on
 * this machine, with no poll(2) of the mount involved.
 *
 * A round: the waiters meet at a barrier, each reads FILE from offset 0
 * (so it has no news) and polls; the main thread waits until
 * all are in poll(2) (their counter, then SETTLE_MS more), notes the time
 * and close(2)s a new spec it wrote before, which commits it. Latency is
 * from that close(2) starting to each poll(2) returning, so it includes
 * the commit (fsync of the state store) as well as the wake itself; the
 * commit alone is printed too. Prints one line per round and a summary.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define SETTLE_MS 200
#define WAKE_TIMEOUT_MS 10000

static const char *file;
static int nwaiters;
static pthread_barrier_t ready, done;
static atomic_int polling;
static atomic_bool stop;
static double *woke; /* per waiter, this round */
static int floor_fd = -1; /* floor mode: the eventfd the waiters poll */
static const char *floor_read; /* floor mode: the file each one reads */

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void reread(int fd)
{
	char buf[65536];

	lseek(fd, 0, SEEK_SET);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* Floor mode: woken by the eventfd, then one round trip to the daemon. */
static double floor_wait(int fd)
{
	struct pollfd p = { .fd = floor_fd, .events = POLLIN };
	char buf[64];

	if (poll(&p, 1, WAKE_TIMEOUT_MS) != 1)
		return -1;
	if (pread(fd, buf, sizeof(buf), 0) < 0)
		return -1;
	return now();
}

static void *waiter(void *arg)
{
	int i = (int)(intptr_t)arg;
	const char *path = floor_read ? floor_read : file;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		perror(path);
		exit(1);
	}
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLPRI };

		pthread_barrier_wait(&ready);
		if (atomic_load(&stop))
			break;
		if (floor_read) {
			atomic_fetch_add(&polling, 1);
			woke[i] = floor_wait(fd);
			pthread_barrier_wait(&done);
			continue;
		}
		reread(fd);
		/* News this reader read from the page cache: told, it is
		 * not news to the poll(2) that is timed. */
		poll(&p, 1, 0);
		atomic_fetch_add(&polling, 1);
		woke[i] = poll(&p, 1, WAKE_TIMEOUT_MS) == 1 ? now() : -1;
		pthread_barrier_wait(&done);
	}
	close(fd);
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double pct(const double *sorted, size_t n, double p)
{
	size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);

	return sorted[i < n ? i : n - 1];
}

static void report_round(int r, double commit, double *v, size_t n)
{
	if (!n) {
		printf("round %d: commit %.2f ms, no wakes\n", r + 1,
		       commit * 1e3);
		return;
	}
	qsort(v, n, sizeof(*v), cmp);
	printf("round %d: commit %.2f ms, wake p50 %.2f ms, p99 %.2f ms, "
	       "max %.2f ms\n",
	       r + 1, commit * 1e3, pct(v, n, 50) * 1e3, pct(v, n, 99) * 1e3,
	       v[n - 1] * 1e3);
}

/* Writes a new spec to the open descriptor: the close commits it. A
 * label changes, which the pool's provider has nothing to do about. */
static int open_spec(const char *spec, int round)
{
	char text[64];
	int fd = open(spec, O_WRONLY | O_TRUNC | O_CLOEXEC);
	int n = snprintf(text, sizeof(text), "nodes = 1\nlabels.round = %d\n",
			 round + 1);

	if (fd < 0 || write(fd, text, (size_t)n) != n) {
		perror(spec);
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	pthread_attr_t attr;
	pthread_t *threads;
	double *all, *commits;
	size_t nall = 0, missed = 0;
	int rounds;

	if (argc != 5 && !(argc == 6 && !strcmp(argv[5], "floor"))) {
		fprintf(stderr, "usage: bench_wakeup FILE SPEC WAITERS ROUNDS "
				"[floor]\n");
		return 64;
	}
	file = argv[1];
	if (argc == 6) {
		static char events[4096];
		char *slash;

		/* FILE is ENV/pools/NAME/status: read ENV/events. */
		snprintf(events, sizeof(events), "%s", file);
		for (int up = 0; up < 3 && (slash = strrchr(events, '/')); up++)
			*slash = '\0';
		strncat(events, "/events", sizeof(events) - strlen(events) - 1);
		floor_read = events;
		floor_fd = eventfd(0, EFD_CLOEXEC);
	}
	nwaiters = atoi(argv[3]);
	rounds = atoi(argv[4]);
	if (nwaiters < 1 || rounds < 1)
		return 64;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	woke = calloc((size_t)nwaiters, sizeof(*woke));
	all = calloc((size_t)nwaiters * (size_t)rounds, sizeof(*all));
	commits = calloc((size_t)rounds, sizeof(*commits));
	threads = calloc((size_t)nwaiters, sizeof(*threads));
	pthread_barrier_init(&ready, NULL, (unsigned)nwaiters + 1);
	pthread_barrier_init(&done, NULL, (unsigned)nwaiters + 1);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	for (int i = 0; i < nwaiters; i++)
		if (pthread_create(&threads[i], &attr, waiter,
				   (void *)(intptr_t)i)) {
			fprintf(stderr, "thread %d: %s\n", i, strerror(errno));
			return 1;
		}
	for (int r = 0; r < rounds; r++) {
		int fd = open_spec(argv[2], r);
		double t0, t1;
		size_t first = nall;

		atomic_store(&polling, 0);
		pthread_barrier_wait(&ready);
		while (atomic_load(&polling) < nwaiters)
			usleep(1000);
		usleep(SETTLE_MS * 1000); /* from the counter into poll(2) */
		t0 = now();
		if (floor_read) {
			uint64_t one = 1;

			if (write(floor_fd, &one, sizeof(one)) != sizeof(one))
				perror("eventfd");
		} else if (close(fd) != 0) {
			perror("close");
		}
		t1 = now();
		pthread_barrier_wait(&done);
		if (floor_read) {
			uint64_t n;

			close(fd);
			if (read(floor_fd, &n, sizeof(n)) != sizeof(n))
				perror("eventfd");
		}
		commits[r] = t1 - t0;
		for (int i = 0; i < nwaiters; i++) {
			if (woke[i] < 0)
				missed++;
			else
				all[nall++] = woke[i] - t0;
		}
		report_round(r, commits[r], all + first, nall - first);
		fflush(stdout);
		/* The reconciler's own follow-up to the change: let it pass
		 * before the next round, whose rereads then consume it. */
		usleep(1500 * 1000);
	}
	atomic_store(&stop, true);
	pthread_barrier_wait(&ready);
	for (int i = 0; i < nwaiters; i++)
		pthread_join(threads[i], NULL);
	qsort(all, nall, sizeof(*all), cmp);
	qsort(commits, (size_t)rounds, sizeof(*commits), cmp);
	printf("waiters %d, rounds %d, wakes %zu, missed %zu\n", nwaiters,
	       rounds, nall, missed);
	if (nall)
		printf("wake latency: p50 %.2f ms, p99 %.2f ms, max %.2f ms "
		       "(the waking call itself: p50 %.2f ms)\n",
		       pct(all, nall, 50) * 1e3, pct(all, nall, 99) * 1e3,
		       all[nall - 1] * 1e3,
		       pct(commits, (size_t)rounds, 50) * 1e3);
	return missed ? 2 : 0;
}
