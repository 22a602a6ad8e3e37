/* SPDX-License-Identifier: MIT */
/*
 * The lexical rules of the spec language, shared by the parser (parse.c)
 * and the field rewriter (edit.c) so that both read a line the same way.
 * Private to spec/.
 */
#ifndef INFRAFS_SPEC_LEX_H
#define INFRAFS_SPEC_LEX_H

#include <stdbool.h>
#include <stddef.h>

struct span {
	const char *p;
	size_t n;
};

static inline bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
	       c == '\f';
}

static inline struct span trim(const char *p, size_t n)
{
	while (n && is_space(*p)) {
		p++;
		n--;
	}
	while (n && is_space(p[n - 1]))
		n--;
	return (struct span){ p, n };
}

/* A text whose first non-blank byte is '{' is a JSON object. */
static inline bool opens_json(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (!is_space(text[i]))
			return text[i] == '{';
	}
	return false;
}

/*
 * A '#' starts a comment only at the start of a line or after white
 * space, so that image = repo/x#1 and URI fragments keep their '#'.
 * Returns the offset of the comment, or n when there is none.
 */
static inline size_t comment_at(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '#' &&
		    (i == 0 || p[i - 1] == ' ' || p[i - 1] == '\t'))
			return i;
	}
	return n;
}

#endif
