/* SPDX-License-Identifier: MIT */
/*
 * Rules on config keys that choose the daemon's authority rather than an
 * environment's own settings: which credentials it signs with and where
 * it sends them. Config is owner-or-root already; these keys are root's
 * (or the daemon's user's), because the credentials are theirs.
 */
#ifndef INFRAFS_STORE_CONFIG_KEYS_H
#define INFRAFS_STORE_CONFIG_KEYS_H

#include "spec/spec.h"

#include <stddef.h>
#include <sys/types.h>

/*
 * Checks a proposed config against the one in force (NULL: none yet).
 * A committer other than root or the daemon's user may not set or change
 * a privileged key (spec/schema.c) unless allowed lists it
 * (",aws.profile,aws.endpoint_url,", from --allow-config-key); removing
 * one falls back to the daemon's own settings and is always allowed.
 * Then the provider the config names checks its own keys. Returns 0,
 * -EACCES or -EINVAL, with msg naming the key and the rule.
 */
int config_keys_check(const struct spec *current, const struct spec *proposed,
		      uid_t committer, const char *allowed, char *msg,
		      size_t len);

#endif
