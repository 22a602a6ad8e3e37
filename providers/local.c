// SPDX-License-Identifier: MIT
/*
 * The local provider: this machine. Endpoints become supervised processes
 * and pools become reservations of this machine's devices.
 */
#include "provider.h"

static const char *const local_kinds[] = { "pool", "endpoint", NULL };

static const char *const local_unsupported[] = {
	"pool.capacity = spot",
	"one machine has no spot market",
	"endpoint.image",
	"the local provider runs `command`, not images",
	NULL,
};

const struct provider_info local_provider = {
	.name = "local",
	.summary = "This machine: endpoints run as supervised processes "
		   "(`command` under sh -c with $PORT set), pools reserve "
		   "this machine's GPUs or CPU slots.",
	.kinds = local_kinds,
	.unsupported = local_unsupported,
};
