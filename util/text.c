// SPDX-License-Identifier: MIT
#include "text.h"

#include "buf.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static bool name_char(char c, bool edge)
{
	if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		return true;
	return !edge && c == '-';
}

bool name_is_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > NAME_MAX_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!name_char(name[i], i == 0 || i == len - 1))
			return false;
	}
	return true;
}

/*
 * The length of the valid UTF-8 sequence at the start of p (len bytes
 * left), or 0 when it is not one: a stray continuation byte, a sequence
 * cut short, an overlong form, a surrogate or a code point past U+10FFFF.
 */
static size_t utf8_seq_len(const unsigned char *p, size_t len)
{
	unsigned char c = p[0];
	size_t n;
	unsigned long cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 1;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 2;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 3;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n >= len)
		return 0;
	for (size_t k = 1; k <= n; k++) {
		if ((p[k] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[k] & 0x3f);
	}
	if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return n + 1;
}

long utf8_invalid_at(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		size_t n = utf8_seq_len(p + i, len - i);

		if (!n)
			return (long)i;
		i += n;
	}
	return -1;
}

static void escape_byte(struct buf *out, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char e[4] = { '\\', 'x', hex[c >> 4], hex[c & 15] };

	buf_add(out, e, sizeof(e));
}

/* Whether the valid sequence of len bytes at p must be escaped. */
static bool needs_escape(const unsigned char *p, size_t len, unsigned flags)
{
	if (len == 2)
		return p[0] == 0xc2 && p[1] < 0xa0; /* C1 controls */
	if (len != 1)
		return false;
	if (p[0] == '\n')
		return !(flags & TEXT_KEEP_NEWLINE);
	if (p[0] == ' ')
		return flags & TEXT_ESCAPE_SPACE;
	return p[0] < 0x20 || p[0] == 0x7f;
}

static void escape_one(struct buf *out, const unsigned char *p, size_t len)
{
	if (len == 1 && p[0] == '\n')
		buf_adds(out, "\\n");
	else if (len == 1 && p[0] == '\r')
		buf_adds(out, "\\r");
	else if (len == 1 && p[0] == '\t')
		buf_adds(out, "\\t");
	else
		for (size_t k = 0; k < (len ? len : 1); k++)
			escape_byte(out, p[k]);
}

void text_escape(struct buf *out, const char *s, size_t n, unsigned flags)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0;

	/* Runs of plain text are copied whole: most text has nothing to
	 * escape, and events and audit files are escaped as they are read. */
	while (i < n) {
		size_t len = utf8_seq_len(p + i, n - i);

		if (len && !needs_escape(p + i, len, flags)) {
			i += len;
			continue;
		}
		buf_add(out, s + run, i - run);
		escape_one(out, p + i, len);
		i += len ? len : 1;
		run = i;
	}
	buf_add(out, s + run, n - run);
}

void text_line(struct buf *out, const char *key, const char *value)
{
	buf_printf(out, "%s: ", key);
	text_escape(out, value, strlen(value), 0);
	buf_addc(out, '\n');
}

double time_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void time_rfc3339(double t, char *out, size_t outlen)
{
	time_t secs = (time_t)t;
	int ms = (int)((t - (double)secs) * 1000.0);
	struct tm tm;
	char base[32];

	gmtime_r(&secs, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, outlen, "%s.%03dZ", base, ms);
}

/* Copies url[from, to) to out at *at, as far as it fits. */
static void url_copy(char *out, size_t outlen, size_t *at, const char *s,
		     size_t n)
{
	size_t room = outlen - 1 - *at;

	if (n > room)
		n = room;
	memcpy(out + *at, s, n);
	*at += n;
	out[*at] = '\0';
}

/* Where the value of a password= parameter at or after q starts, or NULL. */
static const char *password_param(const char *q)
{
	for (; q && *q; q = strchr(q, '&')) {
		q++;
		if (!strncmp(q, "password=", 9))
			return q + 9;
	}
	return NULL;
}

void url_without_password(const char *url, char *out, size_t outlen)
{
	const char *auth = strstr(url, "://");
	const char *end, *at, *colon, *q, *v;
	size_t pos = 0;

	if (!outlen)
		return;
	out[0] = '\0';
	if (!auth) {
		url_copy(out, outlen, &pos, url, strlen(url));
		return;
	}
	auth += 3;
	end = auth + strcspn(auth, "/?#");
	at = memrchr(auth, '@', (size_t)(end - auth));
	colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
	if (colon) {
		url_copy(out, outlen, &pos, url, (size_t)(colon - url) + 1);
		url_copy(out, outlen, &pos, "***", 3);
		url = at;
	}
	q = strchr(url, '?');
	for (v = password_param(q); v; v = password_param(q)) {
		url_copy(out, outlen, &pos, url, (size_t)(v - url));
		url_copy(out, outlen, &pos, "***", 3);
		url = v + strcspn(v, "&#");
		q = url;
	}
	url_copy(out, outlen, &pos, url, strlen(url));
}

double time_parse_rfc3339(const char *s)
{
	struct tm tm = { 0 };
	int n = 0, oh = 0, om = 0;
	double frac = 0;
	time_t t;

	if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year,
		   &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec,
		   &n) != 6 ||
	    n == 0)
		return -1;
	s += n;
	if (*s == '.') {
		double scale = 0.1;

		for (s++; *s >= '0' && *s <= '9'; s++, scale /= 10)
			frac += (*s - '0') * scale;
	}
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if ((*s == '+' || *s == '-') &&
		   sscanf(s + 1, "%2d:%2d", &oh, &om) == 2) {
		int sign = *s == '-' ? -1 : 1;

		oh *= sign;
		om *= sign;
		s += 6;
	} else {
		return -1;
	}
	if (*s)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	return (double)t + frac - oh * 3600.0 - om * 60.0;
}
