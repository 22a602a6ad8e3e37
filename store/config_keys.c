// SPDX-License-Identifier: MIT
#include "config_keys.h"

#include "policy.h"
#include "providers/provider.h"
#include "spec/schema.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static bool allowed_key(const char *allowed, const char *field, const char *key)
{
	char item[160];

	snprintf(item, sizeof(item), ",%s.%s,", field, key);
	return allowed && strstr(allowed, item);
}

/* A privileged key set to a value it did not have before. */
static bool newly_set(const struct spec *current, const struct spec *proposed,
		      const char *field, const char *key)
{
	const char *now = spec_map_get(proposed, field, key);
	const char *was = spec_map_get(current, field, key);

	return now && (!was || strcmp(was, now));
}

static int check_privileged(const struct spec *current,
			    const struct spec *proposed, const char *allowed,
			    char *msg, size_t len)
{
	for (size_t i = 0; i < kind_config.nfields; i++) {
		const struct field_def *f = &kind_config.fields[i];

		for (size_t k = 0; f->privileged && f->privileged[k]; k++) {
			const char *key = f->privileged[k];

			if (!newly_set(current, proposed, f->name, key) ||
			    allowed_key(allowed, f->name, key))
				continue;
			snprintf(msg, len,
				 "%s.%s: chooses the daemon's credentials or "
				 "where they are sent; only root or the "
				 "daemon's user may set it (infrafs "
				 "--allow-config-key %s.%s lets owners)",
				 f->name, key, f->name, key);
			return -EACCES;
		}
	}
	return 0;
}

int config_keys_check(const struct spec *current, const struct spec *proposed,
		      uid_t committer, const char *allowed, char *msg,
		      size_t len)
{
	const struct provider_ops *p;
	char name[32];
	int rc = 0;

	if (committer != 0 && committer != geteuid())
		rc = check_privileged(current, proposed, allowed, msg, len);
	if (rc)
		return rc;
	spec_text(proposed, "provider", name, sizeof(name));
	p = provider_by_name(name);
	return p && p->check_config ? p->check_config(proposed, msg, len) : 0;
}
