/* SPDX-License-Identifier: MIT */
/*
 * Guardrails from an environment's policy, checked when a resource's spec
 * is committed. The check looks at the whole environment as it would be
 * with the proposed spec in place.
 */
#ifndef INFRAFS_STORE_POLICY_H
#define INFRAFS_STORE_POLICY_H

#include "model.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Returns 0 when the environment with `proposed` as the spec of kind/name
 * keeps its policy; -EDQUOT for a quantity over its limit, -EACCES for
 * anything else a rule forbids, with msg naming the rule, the limit and
 * the value, e.g. "policy max_accelerators: 40 requested in dev, limit 32".
 */
int policy_check(const struct env *e, int kind, const char *name,
		 const struct spec *proposed, const struct spec *current,
		 char *msg, size_t msglen);

struct provider_ops;

/* The provider the environment's config names (local when unset), or
 * NULL when none built in goes by that name. */
const struct provider_ops *env_provider(const struct env *e);

/*
 * The provider's estimate of what the environment costs an hour once all
 * it declares runs, in USD, with proposed in place of kind/name's spec
 * (proposed NULL: kind/name left out; name NULL: as declared). A negative
 * value when the provider makes no estimate.
 */
double policy_env_cost(const struct env *e, int kind, const char *name,
		       const struct spec *proposed);

/*
 * max_hourly_cost_usd: 0, or -EDQUOT with msg naming the rule, the total
 * and the limit. Like the other quantities, refused only when the total
 * grows past the limit: current is kind/name's spec in force (NULL for
 * none), whatever the model holds for it.
 */
int policy_check_cost(const struct env *e, int kind, const char *name,
		      const struct spec *proposed, const struct spec *current,
		      char *msg, size_t msglen);

/*
 * max_hourly_cost_usd for a whole environment made equal to another
 * (promote, a followed folder, rollback): after's policy holds the limit,
 * and the total is refused only when it grows past it.
 */
int policy_check_env_cost(const struct env *before, const struct env *after,
			  char *msg, size_t msglen);

/*
 * Whether a declared spec breaks the policy as it stands now (after a
 * policy was tightened): 0, or a negative errno with msg naming the rule
 * only ("policy max_accelerators"). For status; no commit is refused.
 */
int policy_violation(const struct env *e, int kind, const char *name,
		     const struct spec *s, char *msg, size_t msglen);

/*
 * secrets_use: whoever sets what an endpoint runs with a secret can read
 * the secret, so using one is the environment's owner's (and root's)
 * decision unless the policy opens it to the group. A spec uses a secret
 * when it passes secret:NAME to its replicas; committing one that does
 * needs that right when there was no spec before or its command, image or
 * env differ from the spec in force. Returns 0, or -EACCES with msg
 * naming the rule and the key.
 */
int policy_check_secrets_use(const struct env *e, int kind, const char *name,
			     const struct spec *proposed,
			     const struct spec *current, uid_t uid, char *msg,
			     size_t msglen);
/* Whether uid may set or remove secrets under secrets_use: 0, or -EACCES
 * with msg naming the rule and the key. */
int policy_check_secret_write(const struct env *e, uid_t uid, char *msg,
			      size_t msglen);
/* Whether secrets_use = group: the folder's group may use secrets. */
bool policy_secrets_open_to_group(const struct env *e);
/* Whether a field of a resource's spec in force is one that only those
 * who may use secrets may change (command of an endpoint using one). */
bool policy_field_needs_secrets_use(const struct resource *r,
				    const char *field);

/* The effective integer value of a field (default applied), or dflt. */
int64_t spec_int(const struct spec *s, const char *field, int64_t dflt);
/* The effective value of a scalar field as text, without the newline. */
void spec_text(const struct spec *s, const char *field, char *out,
	       size_t outlen);
/* The value of KEY in a map field (config's `aws.KEY = VALUE` is field
 * "aws", key "KEY"); NULL when s is NULL or the key is not set. */
const char *spec_map_get(const struct spec *s, const char *field,
			 const char *key);

#endif
