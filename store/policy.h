/* SPDX-License-Identifier: MIT */
/*
 * Guardrails from an environment's policy, checked when a resource's spec
 * is committed. The check looks at the whole environment as it would be
 * with the proposed spec in place.
 */
#ifndef INFRAFS_STORE_POLICY_H
#define INFRAFS_STORE_POLICY_H

#include "model.h"

#include <stddef.h>

/*
 * Returns 0 when the environment with `proposed` as the spec of kind/name
 * keeps its policy; -EDQUOT for a quantity over its limit, -EACCES for
 * anything else a rule forbids, with msg naming the rule, the limit and
 * the value, e.g. "policy max_accelerators: 40 requested in dev, limit 32".
 */
int policy_check(const struct env *e, int kind, const char *name,
		 const struct spec *proposed, const struct spec *current,
		 char *msg, size_t msglen);

/*
 * Whether a declared spec breaks the policy as it stands now (after a
 * policy was tightened): 0, or a negative errno with msg naming the rule
 * only ("policy max_accelerators"). For status; no commit is refused.
 */
int policy_violation(const struct env *e, int kind, const char *name,
		     const struct spec *s, char *msg, size_t msglen);

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
