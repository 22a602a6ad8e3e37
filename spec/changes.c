// SPDX-License-Identifier: MIT
/* What changes between two specs of one kind, field by field. */
#include "spec.h"

#include <string.h>

/* Map fields hold lines; a change shows them on one. */
static void one_line(struct buf *b)
{
	for (char *p = b->data; p && *p; p++)
		if (*p == '\n')
			*p = p[1] ? ';' : '\0';
}

void spec_changes(const struct spec *old, const struct spec *neu,
		  struct buf *text, json_t *changes)
{
	const struct kind_def *k = neu->kind;

	for (size_t i = 0; i < k->nfields; i++) {
		BUF_AUTO a = BUF_INIT;
		BUF_AUTO b = BUF_INIT;

		if (old)
			spec_field_text(old, &k->fields[i], &a);
		spec_field_text(neu, &k->fields[i], &b);
		if (!strcmp(buf_str(&a), buf_str(&b)))
			continue;
		one_line(&a);
		one_line(&b);
		buf_printf(text, "%s%s: %s -> %s", text->len ? ", " : "",
			   k->fields[i].name, a.len ? buf_str(&a) : "(unset)",
			   b.len ? buf_str(&b) : "(unset)");
		json_array_append_new(
			changes,
			json_pack("{s:s, s:s, s:s}", "field", k->fields[i].name,
				  "from", buf_str(&a), "to", buf_str(&b)));
	}
}
