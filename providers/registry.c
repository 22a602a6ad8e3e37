// SPDX-License-Identifier: MIT
#include "provider.h"

#include <string.h>

extern const struct provider_info local_provider;

const struct provider_info *const builtin_providers[] = {
	&local_provider,
	NULL,
};

const struct provider_info *provider_by_name(const char *name)
{
	for (size_t i = 0; builtin_providers[i]; i++) {
		if (!strcmp(builtin_providers[i]->name, name))
			return builtin_providers[i];
	}
	return NULL;
}

void provider_render_doc(const struct provider_info *p, struct buf *out)
{
	buf_printf(out, "provider: %s\n%s\n\nkinds:", p->name, p->summary);
	for (size_t i = 0; p->kinds[i]; i++)
		buf_printf(out, " %s", p->kinds[i]);
	buf_adds(out, "\n");
	if (p->unsupported && p->unsupported[0]) {
		buf_adds(out, "not supported:\n");
		for (size_t i = 0; p->unsupported[i]; i += 2)
			buf_printf(out, "  %s: %s\n", p->unsupported[i],
				   p->unsupported[i + 1]);
	}
	buf_adds(out, "health: ok (built in)\n");
}
