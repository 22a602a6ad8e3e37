/* SPDX-License-Identifier: MIT */
/* The local provider's parts: replicas (processes) and device pools. */
#ifndef INFRAFS_PROVIDERS_LOCAL_LOCAL_H
#define INFRAFS_PROVIDERS_LOCAL_LOCAL_H

#include "devices.h"
#include "providers/provider.h"
#include "store/policy.h"
#include "util/map.h"
#include "util/text.h"

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

/* A replica process found running with our marker in its environment. */
struct replica {
	char env[NAME_MAX_LEN + 1];
	char name[NAME_MAX_LEN + 1];
	unsigned idx;
	pid_t pid;
	unsigned long long start_time; /* /proc/PID/stat field 22 */
	int port;
	uint64_t rev;
	/* What the process was made from (command, env, devices): replicas
	 * are replaced only when it changes, so scaling keeps the rest. */
	uint64_t template;
	uid_t uid; /* the user it runs as, from /proc/PID/status */
	bool healthy;
};

struct replica_set {
	struct replica *v;
	size_t n, cap;
};

/* What infrafs knows of one replica slot across its processes. */
struct slot {
	char key[160]; /* env/name/idx */
	uint64_t rev; /* the revision it was last started for */
	pid_t pid; /* the last process started or adopted */
	unsigned starts; /* starts since it was last healthy */
	unsigned restarts; /* all restarts */
	int last_exit; /* exit status, 128+signal, or -1 unknown */
	double next_start; /* backoff: not before */
	double term_sent; /* when SIGTERM went, 0 none */
	bool ever_healthy;
};

struct pool_res {
	char key[140]; /* env/name */
	char accelerator[32];
	unsigned devices[64]; /* GPU indexes, or count of CPU slots in [0] */
	size_t ndev;
	uint64_t rev;
	char error[256];
};

struct endpoint_rec {
	char key[140];
	uint64_t rev; /* applied */
	/* The owner its replicas were started as: a process of that user
	 * (or of the owner now declared) may be one of its replicas. */
	uid_t uid;
	bool uid_known;
};

/* Pids of replicas this daemon started and has not reaped yet. */
struct pid_set {
	pid_t *v;
	size_t n, cap;
};

struct local {
	struct provider_host host;
	char dir[PATH_MAX]; /* state folder of the provider */
	int dir_fd; /* the same, opened once it was found to be ours */
	char owner[24]; /* marks this daemon's replicas */
	struct gpu_list gpus;
	double gpus_at;
	unsigned cpus;
	struct map pools; /* env/name -> struct pool_res */
	struct map endpoints; /* env/name -> struct endpoint_rec */
	struct map slots; /* env/name/idx -> struct slot */
	struct map exits; /* pid -> int status, of our reaped children */
	struct pid_set children;
	struct replica_set running;
	void *curl;
};

/* replicas.c */
/* Fields of /proc/PID/stat: state letter, session id, start time. */
bool proc_stat(pid_t pid, char *state, pid_t *session,
	       unsigned long long *start);
void replicas_scan(struct local *l);
void replicas_reap(struct local *l);
void replicas_probe(struct local *l, const char *health_path,
		    struct replica *r);
int replica_start(struct local *l, const struct desired *want, unsigned idx,
		  const char *visible_devices, char *err, size_t errlen);
uint64_t replica_template(const struct local *l, const struct desired *want,
			  const char *devices);
/* Asks a replica to stop; true once it has. */
bool replica_stop(struct local *l, struct replica *r);
struct slot *slot_of(struct local *l, const char *env, const char *name,
		     unsigned idx);
void replica_log_path(const struct local *l, const char *env, const char *name,
		      unsigned idx, char *out, size_t len);

/* pools.c */
void pool_observe(struct local *l, struct target *t);
int pool_step(struct local *l, struct target *t);
/* CUDA_VISIBLE_DEVICES of a pool's reservation, "" when none. */
void pool_visible_devices(struct local *l, const char *env, const char *pool,
			  char *out, size_t len);

/* provider.c: the records that outlive the daemon */
int local_save_pool(struct local *l, const struct pool_res *p);
void local_forget(struct local *l, const char *kind, const char *key);
/* Whether r may be a replica of env/name declared as want (NULL: no
 * longer declared): only processes of the user it runs as count. */
bool replica_trusted(struct local *l, const struct replica *r,
		     const struct desired *want);

#endif
