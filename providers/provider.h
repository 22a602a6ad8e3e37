/* SPDX-License-Identifier: MIT */
/*
 * Providers carry declared resources to where they run: the local machine,
 * AWS, Kubernetes, GCP. This header describes each built-in provider: its
 * name, what it supports, and its health, as providers/NAME shows them.
 * The operations a provider performs (observe, create, update, delete,
 * estimate cost) join this table with the reconciler.
 */
#ifndef INFRAFS_PROVIDERS_PROVIDER_H
#define INFRAFS_PROVIDERS_PROVIDER_H

#include "util/buf.h"

struct provider_info {
	const char *name; /* as written in config: provider = NAME */
	const char *summary;
	/* The resource kinds it can run, NULL-terminated. */
	const char *const *kinds;
	/* Spec fields it ignores or refuses, with why, NULL-terminated
	 * pairs: "pool.zones", "one machine has no zones". */
	const char *const *unsupported;
};

/* The providers built into this daemon, NULL-terminated. */
extern const struct provider_info *const builtin_providers[];

const struct provider_info *provider_by_name(const char *name);
/* The text of providers/NAME. */
void provider_render_doc(const struct provider_info *p, struct buf *out);

#endif
