// SPDX-License-Identifier: MIT
/*
 * GPU and CPU discovery for the local provider.
 *
 * GPUs come from nvidia-smi's CSV query rather than from NVML: linking NVML
 * would tie the daemon to a driver version at build time, while nvidia-smi
 * ships with every driver and its query format has been stable for years.
 * nvidia-smi runs as a child with a time-out, because a wedged driver makes
 * it hang, and discovery must never hang the daemon.
 *
 * Nothing here keeps state between calls: every result is owned by the
 * caller, and the child process is run and reaped inside one call, so any
 * thread may call any function at any time.
 */
#include "providers/local/devices.h"
#include "providers/local/spawn.h"
#include "util/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The arguments after the program name, NULL-terminated. */
const char *const gpu_query_args[] = {
	"--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu",
	"--format=csv,noheader,nounits",
	NULL,
};

/* nvidia-smi answers in well under a second; a hung driver never does. */
#define SMI_TIMEOUT_MS 10000
/* Eight GPUs print under 1 KiB: more than this is not the query's answer. */
#define SMI_OUT_MAX (1u << 20)
/* Only the first line of stderr is reported. */
#define SMI_ERR_MAX 4096u

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* strerror() may share a static buffer between threads; this does not. */
static const char *errstr(int e, char *tmp, size_t len)
{
	return strerror_r(e, tmp, len);
}

/*
 * Accelerator names.
 *
 * nvidia-smi prints the marketing name the driver has for the board, and
 * one schema word covers several spellings of it. A rule matches when each
 * of its tokens is a whole token of the name (tokens split at spaces and
 * hyphens, compared without case). Whole tokens, not substrings, because
 * the names nest: "L4" is inside "L40S", "H200" inside "GH200", "B200"
 * inside "GB200", "A10" inside "A100". The memory size is a token of the
 * rule where a model comes in sizes that the schema tells apart.
 *
 * A name no rule matches gets no word: the GPU is still listed, but no
 * pool that asks for an accelerator by name can reserve it. That is the
 * safe failure for a board we do not know: a pool that asked for 80 GB
 * must not be handed 64 GB, and one that asked for an H100 must not get
 * an H800 with its cut-down NVLink.
 */
struct accel_rule {
	const char *word; /* as in spec/schema.c accelerator_names */
	const char *tokens[3]; /* all present; NULL-terminated */
};

static const struct accel_rule accel_rules[] = {
	/* "Tesla T4": drivers kept the Tesla brand for it. "T4" alone in
	 * case a later driver renames it "NVIDIA T4". */
	{ "nvidia-t4", { "T4", NULL } },
	/* "NVIDIA L4", 23034 MiB. Not L40 or L40S. */
	{ "nvidia-l4", { "L4", NULL } },
	/* "NVIDIA A10G", AWS's variant, 23028 MiB. The plain A10 is
	 * another board and is not in the schema. */
	{ "nvidia-a10g", { "A10G", NULL } },
	/* "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB", 40960 MiB. */
	{ "nvidia-a100-40gb", { "A100", "40GB", NULL } },
	/* "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", 81920 MiB. */
	{ "nvidia-a100-80gb", { "A100", "80GB", NULL } },
	/* "NVIDIA H100 80GB HBM3" is the SXM5 board, 81559 MiB. */
	{ "nvidia-h100-80gb", { "H100", "80GB", NULL } },
	/* "NVIDIA H100 PCIe" is 80 GB of HBM2e, also 81559 MiB, though its
	 * name does not say so. "NVIDIA H100 NVL" matches neither rule on
	 * purpose: it has 94 GB (95830 MiB), and nothing in the schema
	 * names it. */
	{ "nvidia-h100-80gb", { "H100", "PCIe", NULL } },
	/* "NVIDIA H200" (SXM) and "NVIDIA H200 NVL" (PCIe) both carry
	 * 141 GB, 143771 MiB, which is all the word promises. GH200 is a
	 * different token and a different machine. */
	{ "nvidia-h200-141gb", { "H200", NULL } },
	/* "NVIDIA B200", 183359 MiB. Not GB200, whose GPUs have more
	 * memory and sit on a Grace board. */
	{ "nvidia-b200", { "B200", NULL } },
};

static bool is_token_sep(char c)
{
	return c == ' ' || c == '-' || c == '\t';
}

static bool has_token(const char *name, const char *tok)
{
	size_t tlen = strlen(tok);
	const char *p = name;

	while (*p) {
		const char *start;

		while (*p && is_token_sep(*p))
			p++;
		start = p;
		while (*p && !is_token_sep(*p))
			p++;
		if ((size_t)(p - start) == tlen &&
		    strncasecmp(start, tok, tlen) == 0)
			return true;
	}
	return false;
}

const char *gpu_accelerator_of(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < sizeof(accel_rules) / sizeof(accel_rules[0]);
	     i++) {
		const struct accel_rule *r = &accel_rules[i];
		bool all = true;

		for (size_t t = 0; r->tokens[t] && all; t++)
			all = has_token(name, r->tokens[t]);
		if (all)
			return r->word;
	}
	return NULL;
}

/* CSV parsing. */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* Trims [*s, *e) of blanks at both ends; the \r of a CRLF goes too. */
static void trim(const char **s, const char **e)
{
	while (*s < *e && is_blank(**s))
		(*s)++;
	while (*e > *s && is_blank((*e)[-1]))
		(*e)--;
}

/*
 * nvidia-smi prints a value it cannot give in brackets: "[N/A]",
 * "[Not Supported]", and also "[Unknown Error]" or "[Insufficient
 * Permissions]"; older versions printed a bare "N/A". All of them mean
 * that the GPU is there and the value is not, so all of them read as -1.
 */
static bool not_reported(const char *s, size_t n)
{
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
		return true;
	return n == 3 && memcmp(s, "N/A", 3) == 0;
}

/*
 * A decimal count no larger than max. Digits only: no sign, no unit (the
 * query asks for nounits, so "81559 MiB" means someone ran another query).
 * Returns 0 with *v set, 1 when not reported, -1 when malformed.
 */
static int parse_count(const char *s, size_t n, int64_t max, int64_t *v)
{
	int64_t x = 0;

	if (not_reported(s, n))
		return 1;
	if (n == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (x > (max - (s[i] - '0')) / 10)
			return -1;
		x = x * 10 + (s[i] - '0');
	}
	*v = x;
	return 0;
}

/* Copies a text field that must be present, printable and fit. */
static bool copy_text(char *dst, size_t cap, const char *s, size_t n)
{
	if (n == 0 || n >= cap || not_reported(s, n))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return true;
}

enum { F_INDEX, F_UUID, F_NAME, F_MEM_TOTAL, F_MEM_USED, F_UTIL, F_COUNT };

/* Returns 1 with *g filled, 0 for a blank line, -1 for one that is wrong. */
static int parse_line(const char *s, const char *e, struct gpu *g)
{
	const char *fs[F_COUNT], *fe[F_COUNT];
	const char *p = s;
	int64_t v;
	int r;

	trim(&s, &e);
	if (s == e)
		return 0;
	p = s;
	/* Exactly six fields: names have spaces but never commas. */
	for (int f = 0; f < F_COUNT; f++) {
		const char *c = memchr(p, ',', (size_t)(e - p));

		if ((c != NULL) != (f < F_COUNT - 1))
			return -1;
		fs[f] = p;
		fe[f] = c ? c : e;
		trim(&fs[f], &fe[f]);
		p = c ? c + 1 : e;
	}

	memset(g, 0, sizeof(*g));
	if (parse_count(fs[F_INDEX], (size_t)(fe[F_INDEX] - fs[F_INDEX]),
			UINT_MAX, &v) != 0)
		return -1;
	g->index = (unsigned)v;
	if (!copy_text(g->uuid, sizeof(g->uuid), fs[F_UUID],
		       (size_t)(fe[F_UUID] - fs[F_UUID])) ||
	    !copy_text(g->name, sizeof(g->name), fs[F_NAME],
		       (size_t)(fe[F_NAME] - fs[F_NAME])))
		return -1;

	r = parse_count(fs[F_MEM_TOTAL],
			(size_t)(fe[F_MEM_TOTAL] - fs[F_MEM_TOTAL]), INT64_MAX,
			&v);
	if (r < 0)
		return -1;
	g->memory_total_mib = r ? -1 : v;
	r = parse_count(fs[F_MEM_USED],
			(size_t)(fe[F_MEM_USED] - fs[F_MEM_USED]), INT64_MAX,
			&v);
	if (r < 0)
		return -1;
	g->memory_used_mib = r ? -1 : v;
	r = parse_count(fs[F_UTIL], (size_t)(fe[F_UTIL] - fs[F_UTIL]), 100, &v);
	if (r < 0)
		return -1;
	g->utilization_pct = r ? -1 : (int)v;

	{
		const char *word = gpu_accelerator_of(g->name);

		snprintf(g->accelerator, sizeof(g->accelerator), "%s",
			 word ? word : "");
	}
	return 1;
}

int gpu_parse_csv(const char *text, size_t len, struct gpu_list *out,
		  size_t *skipped)
{
	const char *p = text, *end;
	size_t cap = 0, bad = 0;

	out->v = NULL;
	out->n = 0;
	if (skipped)
		*skipped = 0;
	/* An empty struct buf has no data: NULL + 0 is undefined in C. */
	if (!text)
		return 0;
	end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		struct gpu g;
		int r = parse_line(p, le, &g);

		p = nl ? nl + 1 : end;
		if (r < 0)
			bad++;
		if (r <= 0)
			continue;
		if (out->n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct gpu *nv = realloc(out->v, ncap * sizeof(*nv));

			if (!nv) {
				gpu_list_free(out);
				return -ENOMEM;
			}
			out->v = nv;
			cap = ncap;
		}
		out->v[out->n++] = g;
	}
	if (skipped)
		*skipped = bad;
	return 0;
}

void gpu_list_free(struct gpu_list *l)
{
	if (!l)
		return;
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* The first line of s that is not blank, without its line ending. */
static void first_line(const char *s, size_t n, char *dst, size_t cap)
{
	const char *e = s + n;

	for (;;) {
		const char *nl = memchr(s, '\n', (size_t)(e - s));
		const char *ls = s, *le = nl ? nl : e;

		trim(&ls, &le);
		if (ls < le || !nl) {
			snprintf(dst, cap, "%.*s", (int)(le - ls), ls);
			return;
		}
		s = nl + 1;
	}
}

/* Running nvidia-smi. */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads what is there; returns false at end of file or on an error. */
static bool drain(int fd, struct buf *b, size_t max)
{
	char tmp[4096];
	ssize_t r;

	do
		r = read(fd, tmp, sizeof(tmp));
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return false;
	/* Past max keep reading, so the child never blocks on a full pipe,
	 * but keep nothing. */
	if (b && b->len < max)
		buf_add(b, tmp,
			(size_t)r < max - b->len ? (size_t)r : max - b->len);
	return true;
}

static void kill_child(pid_t pid)
{
	/* The child leads its own group: a wrapper script's children go
	 * too. kill(pid) covers a child that had not reached setpgid. */
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
}

/*
 * The child between fork and exec: only async-signal-safe calls, since
 * another thread of the daemon may have held a lock (malloc's, stdio's)
 * at the moment of the fork.
 */
static void __attribute__((noreturn))
child(const char *cmd, char *const argv[], int in, int out, int errfd,
      int report)
{
	int e;

	setpgid(0, 0);
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(errfd, 2) < 0)
		goto fail;
	/* The daemon's own descriptors are none of nvidia-smi's business;
	 * without this every fd the daemon opened without O_CLOEXEC (FUSE's
	 * among them) would be inherited. Fails harmlessly on kernels before
	 * 5.11; `report` is O_CLOEXEC already. */
	close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
	child_signals_default();
	execvp(cmd, argv);
fail:
	e = errno;
	(void)!write(report, &e, sizeof(e));
	_exit(127);
}

struct run {
	struct buf out; /* stdout, up to SMI_OUT_MAX */
	struct buf err; /* stderr, up to SMI_ERR_MAX */
	int exec_errno; /* errno of a failed exec, else 0 */
	int status; /* from waitpid */
};

/*
 * Runs cmd with gpu_query_args, stdin on /dev/null, stdout and stderr
 * captured. Returns 0 when the child ran or failed to exec (see
 * exec_errno), -ETIMEDOUT when it was killed for taking longer than
 * timeout_ms, or another negative errno when it could not be started.
 */
static int run_query(const char *cmd, int timeout_ms, struct run *res)
{
	const char
		*argv[sizeof(gpu_query_args) / sizeof(gpu_query_args[0]) + 1];
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, rep[2] = { -1, -1 };
	int devnull = -1, ret = 0;
	sigset_t all, old;
	int64_t deadline;
	struct pollfd pfd[3];
	struct buf rbuf = BUF_INIT;
	pid_t pid;

	argv[0] = cmd;
	for (size_t i = 0; gpu_query_args[i]; i++) {
		argv[i + 1] = gpu_query_args[i];
		argv[i + 2] = NULL;
	}

	/* O_CLOEXEC everywhere: a child another thread forks meanwhile must
	 * not inherit a write end, or our read would not see end of file
	 * until that child exits. */
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
	    pipe2(rep, O_CLOEXEC) < 0) {
		ret = -errno;
		goto out;
	}
	/* A closed fd 0 would be reused by nvidia-smi's first open(), so
	 * stdin is /dev/null rather than closed: it reads end of file. */
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		ret = -errno;
		goto out;
	}

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0)
		child(cmd, (char *const *)argv, devnull, outp[1], errp[1],
		      rep[1]);
	ret = pid < 0 ? -errno : 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		goto out;
	/* Also here, so kill_child() finds the group even if the child has
	 * not run yet; fails harmlessly once it has exec'd. */
	setpgid(pid, pid);

	close(outp[1]);
	close(errp[1]);
	close(rep[1]);
	outp[1] = errp[1] = rep[1] = -1;

	deadline = now_ms() + timeout_ms;
	pfd[0] = (struct pollfd){ .fd = outp[0], .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = errp[0], .events = POLLIN };
	pfd[2] = (struct pollfd){ .fd = rep[0], .events = POLLIN };
	for (;;) {
		int64_t left = deadline - now_ms();
		int n;

		if (pfd[0].fd < 0 && pfd[1].fd < 0 && pfd[2].fd < 0)
			break;
		if (left <= 0) {
			ret = -ETIMEDOUT;
			break;
		}
		n = poll(pfd, 3, (int)left);
		if (n < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		for (int i = 0; i < 3 && n > 0; i++) {
			struct buf *b = i == 0	 ? &res->out
					: i == 1 ? &res->err
						 : &rbuf;
			size_t max = i == 0   ? SMI_OUT_MAX
				     : i == 1 ? SMI_ERR_MAX
					      : sizeof(int);

			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			if (!drain(pfd[i].fd, b, max)) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
			}
		}
	}
	if (rbuf.len == sizeof(int))
		memcpy(&res->exec_errno, rbuf.data, sizeof(int));

	/* Both pipes are closed, but a child may close them and linger. */
	while (ret == 0) {
		pid_t w = waitpid(pid, &res->status, WNOHANG);

		if (w == pid)
			goto reaped;
		if (w < 0 && errno != EINTR) {
			/* ECHILD: SIGCHLD set to SIG_IGN reaps children
			 * unasked, and the pid may be someone else's now. */
			ret = -errno;
			goto reaped;
		}
		if (now_ms() >= deadline)
			ret = -ETIMEDOUT;
		else
			poll(NULL, 0, 10);
	}
	{
		/* Timed out. WNOWAIT leaves a child that has exited a zombie,
		 * so its pid, which is also the group's id, cannot be reused
		 * before the kill reaches what it left running. */
		siginfo_t si;

		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) <
			    0 &&
		    errno == ECHILD)
			goto reaped;
	}
	kill_child(pid);
	/* Bounded: a child stuck in the driver (state D) dies only when the
	 * driver lets go, and the daemon must not wait for that. It is then
	 * left a zombie until the daemon exits: the local provider waits
	 * only for its own replicas, never for any child. */
	for (int i = 0; i < 100; i++) {
		pid_t w = waitpid(pid, &res->status, WNOHANG);

		if (w == pid || (w < 0 && errno != EINTR))
			break;
		poll(NULL, 0, 10);
	}
reaped:
	for (int i = 0; i < 3; i++)
		if (pfd[i].fd >= 0)
			close(pfd[i].fd);
	outp[0] = errp[0] = rep[0] = -1;
out:
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			close(outp[i]);
		if (errp[i] >= 0)
			close(errp[i]);
		if (rep[i] >= 0)
			close(rep[i]);
	}
	if (devnull >= 0)
		close(devnull);
	buf_free(&rbuf);
	return ret;
}

/* Reads a recorded output. Returns 1 when path is not a readable file. */
static int read_recorded(const char *path, struct buf *b, char *err,
			 size_t errlen)
{
	char tmp[4096], es[128];
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return 1;
	}
	for (;;) {
		ssize_t r = read(fd, tmp, sizeof(tmp));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;

			set_err(err, errlen, "%s: %s", path,
				errstr(e, es, sizeof(es)));
			close(fd);
			return -e;
		}
		if (r == 0)
			break;
		if (b->len + (size_t)r > SMI_OUT_MAX) {
			set_err(err, errlen, "%s: larger than %u bytes", path,
				SMI_OUT_MAX);
			close(fd);
			return -EFBIG;
		}
		buf_add(b, tmp, (size_t)r);
	}
	close(fd);
	return 0;
}

int gpu_discover(const char *command, struct gpu_list *out, char *err,
		 size_t errlen)
{
	const char *cmd = command ? command : "nvidia-smi";
	const char *recorded = getenv("INFRAFS_NVIDIA_SMI");
	struct run res = { BUF_INIT, BUF_INIT, 0, 0 };
	char es[128];
	size_t skipped = 0;
	int ret = 1;

	out->v = NULL;
	out->n = 0;
	set_err(err, errlen, "%s", "");

	if (recorded && *recorded) {
		ret = read_recorded(recorded, &res.out, err, errlen);
		if (ret < 0)
			goto done;
		if (ret == 0)
			cmd = recorded; /* for messages */
	}
	if (ret == 1) {
		ret = run_query(cmd, SMI_TIMEOUT_MS, &res);
		if (ret == -ETIMEDOUT) {
			set_err(err, errlen, "%s did not answer in %d s", cmd,
				SMI_TIMEOUT_MS / 1000);
			goto done;
		}
		if (ret < 0) {
			set_err(err, errlen, "cannot run %s: %s", cmd,
				errstr(-ret, es, sizeof(es)));
			goto done;
		}
		/* Not installed: a machine without GPUs, not a fault. */
		if (res.exec_errno == ENOENT)
			goto done;
		if (res.exec_errno) {
			ret = -res.exec_errno;
			set_err(err, errlen, "cannot run %s: %s", cmd,
				errstr(res.exec_errno, es, sizeof(es)));
			goto done;
		}
		if (WIFSIGNALED(res.status)) {
			ret = -EIO;
			set_err(err, errlen, "%s was killed by signal %d", cmd,
				WTERMSIG(res.status));
			goto done;
		}
		if (WEXITSTATUS(res.status) != 0) {
			/* nvidia-smi says why on stderr, or, for some
			 * failures, on stdout. */
			char line[512] = "";

			ret = -EIO;
			if (res.err.len)
				first_line(res.err.data, res.err.len, line,
					   sizeof(line));
			if (!line[0] && res.out.len)
				first_line(res.out.data, res.out.len, line,
					   sizeof(line));
			if (line[0])
				set_err(err, errlen, "%s", line);
			else
				set_err(err, errlen, "%s exited with status %d",
					cmd, WEXITSTATUS(res.status));
			goto done;
		}
	}

	ret = gpu_parse_csv(res.out.data, res.out.len, out, &skipped);
	if (ret == 0 && out->n == 0 && skipped > 0) {
		/* Output that has lines but no GPU in them is a format we do
		 * not know, not a machine without GPUs: saying "no GPUs"
		 * would make pools give up devices that are there. */
		char line[256] = "";

		first_line(res.out.data, res.out.len, line, sizeof(line));
		set_err(err, errlen,
			"%s printed no GPU line infrafs can read: %s", cmd,
			line);
		ret = -EIO;
	}
done:
	if (ret < 0)
		gpu_list_free(out);
	buf_free(&res.out);
	buf_free(&res.err);
	return ret < 0 ? ret : 0;
}

/* CPU slots. */

unsigned cpu_slots(void)
{
	long n;

	/* The affinity mask, not the machine's CPU count: under taskset,
	 * cpusets or a container's cpuset only the mask's CPUs run us. The
	 * set grows until the kernel's fits (EINVAL says it is too small). */
	for (size_t ncpu = 1024; ncpu <= (1u << 20); ncpu *= 2) {
		cpu_set_t *set = CPU_ALLOC(ncpu);
		size_t size = CPU_ALLOC_SIZE(ncpu);
		int e;

		if (!set)
			break;
		if (sched_getaffinity(0, size, set) == 0) {
			int count = CPU_COUNT_S(size, set);

			CPU_FREE(set);
			if (count > 0)
				return (unsigned)count;
			break;
		}
		e = errno;
		CPU_FREE(set);
		if (e != EINVAL)
			break;
	}
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}
