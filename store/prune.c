// SPDX-License-Identifier: MIT
/*
 * What prune removes, in the SQL both backends share; each backend runs
 * the statements and reads the audit lines in its own way.
 */
#include "backend.h"

#include <stdlib.h>
#include <string.h>

struct cut {
	uint64_t keep_from;
	bool (*keep_line)(const char *line, uint64_t keep_from);
	int64_t id; /* the oldest line kept, 0 until found */
	char *last; /* the newest line before it */
};

static bool find_cut(int64_t id, const char *line, void *ctx)
{
	struct cut *c = ctx;

	if (c->keep_line(line, c->keep_from)) {
		c->id = id;
		return false;
	}
	free(c->last);
	c->last = xstrdup(line);
	return true;
}

int backend_prune(struct backend *be, const struct prune_steps *steps,
		  uint64_t env_id, uint64_t keep_from,
		  bool (*keep_line)(const char *line, uint64_t keep_from),
		  struct prune_result *out)
{
	struct cut cut = { .keep_from = keep_from, .keep_line = keep_line };
	int rc;

	memset(out, 0, sizeof(*out));
	rc = steps->delete_before(be,
				  "DELETE FROM revisions WHERE env_id = $1"
				  " AND rev < $2",
				  env_id, keep_from, &out->revisions);
	/* A text is needed while it is the newest of its object at some
	 * kept revision: drop those a newer one replaced by keep_from,
	 * then the records of objects already destroyed before it. */
	if (!rc)
		rc = steps->delete_before(
			be,
			"DELETE FROM history AS h WHERE env_id = $1"
			" AND rev < $2 AND EXISTS (SELECT 1 FROM"
			" history n WHERE n.env_id = h.env_id AND"
			" n.kind = h.kind AND n.name = h.name AND"
			" n.rev > h.rev AND n.rev <= $2)",
			env_id, keep_from, &out->history_rows);
	if (!rc)
		rc = steps->delete_before(
			be,
			"DELETE FROM history WHERE env_id = $1"
			" AND rev < $2 AND text IS NULL",
			env_id, keep_from, &out->history_rows);
	if (!rc)
		rc = steps->each_audit_line(be, env_id, find_cut, &cut);
	/* No line to keep: the newest revision's line is always kept, so
	 * this is a store whose audit lines were lost; prune none. */
	if (!rc && cut.id)
		rc = steps->delete_before(be,
					  "DELETE FROM audit WHERE env_id = $1"
					  " AND id < $2",
					  env_id, (uint64_t)cut.id,
					  &out->audit_lines);
	if (!rc && cut.id)
		out->last_audit_line = cut.last;
	else
		free(cut.last);
	return rc;
}
