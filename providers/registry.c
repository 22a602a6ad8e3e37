// SPDX-License-Identifier: MIT
#include "provider.h"

#include <stddef.h>
#include <string.h>

extern const struct provider_ops local_provider;
extern const struct provider_ops aws_provider;
extern const struct provider_ops kubernetes_provider;

const struct provider_ops *const builtin_providers[] = {
	&local_provider,
	&aws_provider,
	&kubernetes_provider,
	NULL,
};

static const char *const state_words[] = {
	[RS_PENDING] = "pending",   [RS_CREATING] = "creating",
	[RS_READY] = "ready",	    [RS_UPDATING] = "updating",
	[RS_DEGRADED] = "degraded", [RS_FAILED] = "failed",
	[RS_DELETING] = "deleting",
};

void observation_clear(struct observation *o)
{
	memset(o, 0, offsetof(struct observation, details));
	buf_truncate(&o->details, 0);
	o->error[0] = o->drift[0] = '\0';
}

const char *res_state_word(enum res_state s)
{
	return state_words[s];
}

const struct provider_ops *provider_by_name(const char *name)
{
	for (size_t i = 0; builtin_providers[i]; i++) {
		if (!strcmp(builtin_providers[i]->info->name, name))
			return builtin_providers[i];
	}
	return NULL;
}

void provider_render_doc(const struct provider_ops *p, struct buf *out)
{
	const struct provider_info *info = p->info;

	buf_printf(out, "provider: %s\n%s\n\nkinds:", info->name,
		   info->summary);
	for (size_t i = 0; info->kinds[i]; i++)
		buf_printf(out, " %s", info->kinds[i]);
	buf_adds(out, "\n");
	if (info->unsupported && info->unsupported[0]) {
		buf_adds(out, "not supported:\n");
		for (size_t i = 0; info->unsupported[i]; i += 2)
			buf_printf(out, "  %s: %s\n", info->unsupported[i],
				   info->unsupported[i + 1]);
	}
	if (info->render_more)
		info->render_more(out);
	buf_adds(out, "health: ok (built in)\n");
}
