/* SPDX-License-Identifier: MIT */
/*
 * Providers carry declared resources to where they run: this machine
 * (local), later AWS, Kubernetes and GCP. Each is one struct provider_ops.
 *
 * Writing a provider
 * ------------------
 * The reconciler owns the loop; a provider only answers two questions,
 * both level-triggered and idempotent:
 *
 *   observe  What runs now for these resources? Fill each target's
 *            observation from the live world. Batch them: one call gets
 *            every resource of an environment (one /proc scan, one List
 *            call). Return quickly: never wait for a resource to change.
 *
 *   step     Take the next step from what runs towards what is wanted
 *            (want == NULL: towards nothing). Start it and return: a step
 *            that takes minutes is reported as creating/updating/deleting
 *            by later observations. A step may run again after a crash at
 *            any point, so it must find what an earlier attempt made
 *            (deterministic names, describe-before-create) and never
 *            make a second one.
 *
 * Neither runs in a FUSE request: the reconciler calls them from its own
 * thread, and file reads only show the last observation. A provider says
 * what it supports in its provider_info; check() refuses a spec it cannot
 * run, at commit, with the reason (the user sees it at close(2)).
 */
#ifndef INFRAFS_PROVIDERS_PROVIDER_H
#define INFRAFS_PROVIDERS_PROVIDER_H

#include "spec/spec.h"
#include "util/buf.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* The state words of the contract, in one place. */
enum res_state {
	RS_PENDING,
	RS_CREATING,
	RS_READY,
	RS_UPDATING,
	RS_DEGRADED,
	RS_FAILED,
	RS_DELETING,
};

const char *res_state_word(enum res_state s);

/* What the user declared for one resource, as the reconciler hands it. */
struct desired {
	const char *env;
	int kind; /* KIND_POOL_IDX, KIND_ENDPOINT_IDX */
	const char *name;
	uint64_t rev; /* the revision that set this spec */
	const struct spec *spec;
	const struct spec *config; /* the environment's config */
	/* The environment folder's owner: what runs for it runs with this
	 * user's authority, never the daemon's. */
	uid_t owner_uid;
	gid_t owner_gid;
};

/* What a provider saw of one resource. */
struct observation {
	bool exists; /* anything live for it at all */
	/* What runs is all the wanted revision asks for; false while a step
	 * is unfinished (a crash mid-apply left two replicas of three). */
	bool settled;
	enum res_state state;
	uint64_t applied_rev; /* revision the live resource carries, 0 none */
	/* When the provider last asked the live world about it (wall clock,
	 * seconds); 0: just now, by this very call. A provider that answers
	 * from a cache says how old the answer is. */
	double observed_at;
	/* Set by a step that could do nothing (a change under way that only
	 * time finishes): the next step waits this many seconds, the
	 * provider's polling pace. 0: no wait. */
	double retry_in_s;
	struct buf details; /* provider's "key: value\n" lines for status */
	char error[512]; /* why it is not as wanted, "" when it is */
	char drift[256]; /* what changed outside infrafs, "" nothing */
	double hourly_cost_usd;
};

/* Back to "nothing seen", keeping the details buffer for reuse: what a
 * provider does before it fills an observation afresh. */
void observation_clear(struct observation *o);

struct target {
	const char *env;
	int kind;
	const char *name;
	const struct desired *want; /* NULL: declared no more */
	struct observation obs; /* filled by observe(), updated by step() */
};

/* Services the daemon offers a provider. */
struct provider_host {
	const char *state_dir; /* the provider's own folder, kept across runs */
	void (*wake)(void *ctx); /* something changed: observe again soon */
	/* What runs for env changed (a provider's watch saw it): observe
	 * every resource of env in the next pass, settled or not. Any
	 * thread. */
	void (*env_changed)(void *ctx, const char *env);
	/* Narrower, where the provider knows what its watch saw: observe
	 * resource name of folder dir ("endpoints", "pools") in the next
	 * pass, or every resource of dir when name is NULL. Any thread. */
	void (*res_changed)(void *ctx, const char *env, const char *dir,
			    const char *name);
	/* The plain value of secret:NAME in env, only while applying it: a
	 * locked buffer released with secret_wipe_free(*value, *len). Never
	 * put it in observations, errors or logs. */
	int (*secret)(void *ctx, const char *env, const char *name,
		      char **value, size_t *len);
	/* Its version, cheap: a new one must roll what uses it. */
	uint64_t (*secret_version)(void *ctx, const char *env,
				   const char *name);
	void *ctx;
};

struct provider_info {
	const char *name; /* as written in config: provider = NAME */
	const char *summary;
	/* The resource kinds it can run, NULL-terminated. */
	const char *const *kinds;
	/* Spec settings it refuses, with why: NULL-terminated pairs. */
	const char *const *unsupported;
	/* More for providers/NAME (tables a user looks up), or NULL. */
	void (*render_more)(struct buf *out);
	/* Its watches call the host's env_changed whenever what runs
	 * changes: a settled resource needs no look at every pass. */
	bool tells_changes;
};

/* Outcomes of a provider's calls to one operation of one service. */
struct provider_call_stat {
	char service[32];
	char operation[48];
	uint64_t errors; /* calls that ended in an error, after retries */
	uint64_t throttles; /* answers that said slow down, retries included */
};

struct provider_ops {
	const struct provider_info *info;
	int (*start)(const struct provider_host *host, void **state);
	/* The daemon stops; what runs keeps running. */
	void (*stop)(void *state);
	void (*observe)(void *state, struct target *targets, size_t n);
	/* Returns 0 when a step started or none was needed; a negative errno
	 * with obs.error saying why otherwise. */
	int (*step)(void *state, struct target *t);
	/* Optional: the steps of many resources of one environment at once,
	 * each as step() would take it, rcs[i] its result. A provider whose
	 * steps wait on a network runs them together. */
	void (*step_many)(void *state, struct target **t, int *rcs, size_t n);
	/* Optional: the next observe of env's resources asks the live world
	 * rather than any cache (`refresh` written to ctl). Only marks them:
	 * the looks happen in the next observe, batched as usual. */
	void (*refresh)(void *state, const char *env);
	/* Optional: how many calls it has made to the outside so far (API
	 * requests, retries included), for metrics. */
	uint64_t (*calls)(void *state);
	/* Optional: errors and throttles by service and operation, at most
	 * max rows; returns how many. Safe from any thread (metrics). */
	size_t (*call_stats)(struct provider_call_stat *out, size_t max);
	/* Names of everything it runs in env, one "kind/name\n" per line, so
	 * that what is no longer declared is found and removed. */
	void (*list)(void *state, const char *env, struct buf *out);
	/* At commit: 0, or a negative errno with msg saying why: -EINVAL
	 * naming the setting, -EPERM when it cannot run as want's owner. */
	int (*check)(const struct desired *want, char *msg, size_t len);
	/* Optional, at a config commit: 0, or -EINVAL with msg naming the
	 * key and the rule it breaks. */
	int (*check_config)(const struct spec *config, char *msg, size_t len);
	/* What the resource would cost per hour once running, in USD: the
	 * estimate the policy's max_hourly_cost_usd is checked against. */
	double (*hourly_cost)(const struct desired *want);
	/* Optional: an environment as Terraform JSON configuration for the
	 * cloud's own Terraform provider, into out. want holds every
	 * resource the environment declares (n of them); config is its
	 * config. What it names and tags must be what the provider makes,
	 * so that `terraform import` of those objects plans no change.
	 * Never a secret's value. The reconciler's thread, like observe.
	 * Without it the environment holds nothing Terraform can manage. */
	void (*export_terraform)(void *state, const char *env,
				 const struct spec *config,
				 const struct desired *want, size_t n,
				 struct buf *out);
	/* Optional: `import KIND/NAME ID` written to ctl. Reads the live
	 * object ID (the reconciler's thread; it may wait on the network),
	 * writes the spec that describes it into spec and keeps a record
	 * that owns it, not yet acted on. 0, or a negative errno with msg
	 * saying why. Without it nothing is importable. */
	int (*adopt)(void *state, const struct desired *at, const char *id,
		     struct buf *spec, char *msg, size_t len);
	/* After adopt: rev is the revision that committed the spec, or 0
	 * when the commit was refused and the record must go. */
	void (*adopted)(void *state, const struct desired *at, uint64_t rev);
};

/* The providers built into this daemon, NULL-terminated. */
extern const struct provider_ops *const builtin_providers[];

const struct provider_ops *provider_by_name(const char *name);
/* The text of providers/NAME. */
void provider_render_doc(const struct provider_ops *p, struct buf *out);

#endif
