// SPDX-License-Identifier: MIT
/*
 * AWS Signature Version 4: the canonical request, the string to sign, the
 * derived signing key and the Authorization header value, as described in
 * "Create a signed AWS API request" and checked against AWS's own test
 * suite (tests/data/aws/sigv4-testsuite).
 *
 * The rules are those of every service but S3: the path is normalised and
 * its segments encoded once more, even where they already hold '%'.
 *
 * Nothing here logs: the secret and the keys derived from it must never
 * reach a log, and the rest is of no use without them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "aws.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define ALGORITHM "AWS4-HMAC-SHA256"
#define SHA256_BYTES 32
#define AMZ_DATE_LEN 16 /* "20150830T123600Z" */
#define DATE_STAMP_LEN 8 /* "20150830", the scope's date */

/* ---- encoding ----------------------------------------------------------- */

/* RFC 3986 unreserved characters: the only bytes SigV4 leaves as they are. */
static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	       c == '~';
}

/* Every other byte, '%' and '/' included, becomes %XX in upper case. */
static void uri_encode(struct buf *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_unreserved(c)) {
			buf_addc(out, (char)c);
		} else {
			buf_addc(out, '%');
			buf_addc(out, hex[c >> 4]);
			buf_addc(out, hex[c & 15]);
		}
	}
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Undoes %XX so that a query sent encoded and one sent raw sign the same.
 * A '%' not followed by two hex digits is kept as a literal '%', and '+'
 * stays '+': SigV4 treats the query as RFC 3986, not as a form body.
 */
static void uri_decode(struct buf *out, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		int hi = i + 2 < len && s[i] == '%' ? hex_value(s[i + 1]) : -1;
		int lo = hi >= 0 ? hex_value(s[i + 2]) : -1;

		if (lo >= 0) {
			buf_addc(out, (char)(hi << 4 | lo));
			i += 2;
		} else {
			buf_addc(out, s[i]);
		}
	}
}

/* Decodes then encodes a query name or value: its one canonical spelling. */
static char *canonical_query_part(const char *s, size_t len)
{
	BUF_AUTO raw = BUF_INIT;
	struct buf enc = BUF_INIT;

	uri_decode(&raw, s, len);
	uri_encode(&enc, buf_str(&raw), raw.len);
	return buf_steal(&enc);
}

/* ---- canonical URI ------------------------------------------------------ */

struct segment {
	const char *start;
	size_t len;
};

/*
 * Splits path into the segments that remain once empty segments and "."
 * are dropped and each ".." has removed the one before it (never past the
 * root). Returns how many are left in segs (which has room for one per
 * '/', the most there can be).
 */
static size_t path_segments(const char *path, struct segment *segs)
{
	size_t n = 0;
	const char *p = path;

	while (*p) {
		const char *end;
		size_t len;

		while (*p == '/')
			p++;
		end = strchrnul(p, '/');
		len = (size_t)(end - p);
		if (len == 2 && p[0] == '.' && p[1] == '.') {
			if (n > 0)
				n--;
		} else if (len > 0 && !(len == 1 && p[0] == '.')) {
			segs[n].start = p;
			segs[n].len = len;
			n++;
		}
		p = end;
	}
	return n;
}

/*
 * The normalised, encoded path. Like botocore (normpath, then the slash
 * back on), a trailing '/' is kept only where the path as sent ends with
 * one: "/a//b/" is "/a/b/", "/a/.." is "/".
 */
static int canonical_uri(struct buf *out, const char *path)
{
	size_t slashes = 0, n;
	struct segment *segs;

	if (!path || path[0] != '/')
		return -EINVAL;
	for (const char *p = path; *p; p++)
		slashes += *p == '/';
	segs = xcalloc(slashes, sizeof(*segs));
	n = path_segments(path, segs);
	buf_addc(out, '/');
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			buf_addc(out, '/');
		uri_encode(out, segs[i].start, segs[i].len);
	}
	if (n > 0 && path[strlen(path) - 1] == '/')
		buf_addc(out, '/');
	free(segs);
	return 0;
}

/* ---- canonical query ---------------------------------------------------- */

struct query_param {
	char *name; /* encoded */
	char *value; /* encoded, "" when the parameter had none */
};

/* Byte order of the encoded name, then of the encoded value, as AWS sorts. */
static int query_param_cmp(const void *a, const void *b)
{
	const struct query_param *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

/* Splits query on '&' into params (room for one per '&' plus one). */
static size_t query_params(const char *query, struct query_param *params)
{
	size_t n = 0;
	const char *p = query;

	while (*p) {
		const char *end = strchrnul(p, '&');
		const char *eq = memchr(p, '=', (size_t)(end - p));

		/* "a&&b" and a trailing '&' carry no parameter. */
		if (end > p) {
			const char *name_end = eq ? eq : end;
			const char *val = eq ? eq + 1 : end;

			params[n].name =
				canonical_query_part(p, (size_t)(name_end - p));
			params[n].value =
				canonical_query_part(val, (size_t)(end - val));
			n++;
		}
		p = *end ? end + 1 : end;
	}
	return n;
}

/* "a=1&b=" sorted; a key sent without '=' still signs as "key=". */
static void canonical_query(struct buf *out, const char *query)
{
	size_t room = 1, n;
	struct query_param *params;

	for (const char *p = query; *p; p++)
		room += *p == '&';
	params = xcalloc(room, sizeof(*params));
	n = query_params(query, params);
	qsort(params, n, sizeof(*params), query_param_cmp);
	for (size_t i = 0; i < n; i++) {
		buf_printf(out, "%s%s=%s", i ? "&" : "", params[i].name,
			   params[i].value);
		free(params[i].name);
		free(params[i].value);
	}
	free(params);
}

/* ---- canonical headers -------------------------------------------------- */

/* RFC 9110 token characters: what a method or a header name may hold. */
static bool is_tchar(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++) {
		if (!is_tchar((unsigned char)*s))
			return false;
	}
	return true;
}

/* Line breaks count as spaces so that folded (multi-line) values join. */
static bool is_lws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The value without outer white space, each inner run of it one space. */
static void add_trimmed_value(struct buf *out, const char *v)
{
	bool gap = false, any = false;

	for (; *v; v++) {
		if (is_lws(*v)) {
			gap = any;
			continue;
		}
		if (gap)
			buf_addc(out, ' ');
		buf_addc(out, *v);
		gap = false;
		any = true;
	}
}

struct header_ref {
	char *name; /* lower-cased copy */
	const char *value;
	size_t order; /* position given, so repeats keep their order */
};

/* By name; a name given twice keeps the order it was given in. */
static int header_ref_cmp(const void *a, const void *b)
{
	const struct header_ref *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static char *lower_dup(const char *s)
{
	char *d = xstrdup(s);

	for (char *p = d; *p; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	}
	return d;
}

/*
 * Writes the canonical header lines ("name:v1,v2\n" per distinct name, in
 * name order) to out and "name;name" to names.
 */
static void canonical_headers(struct buf *out, struct buf *names,
			      const struct sigv4_header *h, size_t n)
{
	struct header_ref *refs = xcalloc(n, sizeof(*refs));

	for (size_t i = 0; i < n; i++) {
		refs[i].name = lower_dup(h[i].name);
		refs[i].value = h[i].value;
		refs[i].order = i;
	}
	qsort(refs, n, sizeof(*refs), header_ref_cmp);
	for (size_t i = 0; i < n; i++) {
		bool repeat = i > 0 && !strcmp(refs[i].name, refs[i - 1].name);

		if (repeat) {
			buf_addc(out, ',');
		} else {
			if (i > 0) {
				buf_addc(out, '\n');
				buf_addc(names, ';');
			}
			buf_printf(out, "%s:", refs[i].name);
			buf_adds(names, refs[i].name);
		}
		add_trimmed_value(out, refs[i].value);
	}
	if (n > 0)
		buf_addc(out, '\n');
	for (size_t i = 0; i < n; i++)
		free(refs[i].name);
	free(refs);
}

/* "host;x-k8s-aws-id": the names canonical_headers would list. */
static void signed_names(const struct sigv4_header *h, size_t n,
			 struct buf *names)
{
	BUF_AUTO lines = BUF_INIT;

	canonical_headers(&lines, names, h, n);
}

/* ---- hashing ------------------------------------------------------------ */

static void hex_encode(const unsigned char *bin, size_t len, char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		hex[2 * i] = digits[bin[i] >> 4];
		hex[2 * i + 1] = digits[bin[i] & 15];
	}
	hex[2 * len] = '\0';
}

static int sha256_hex(const void *data, size_t len,
		      char hex[2 * SHA256_BYTES + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) ||
	    mdlen != SHA256_BYTES)
		return -EIO;
	hex_encode(md, SHA256_BYTES, hex);
	return 0;
}

static int hmac_sha256(const void *key, size_t keylen, const char *msg,
		       size_t msglen, unsigned char out[SHA256_BYTES])
{
	unsigned int len = 0;

	if (keylen > INT_MAX)
		return -EINVAL;
	if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg,
		  msglen, out, &len) ||
	    len != SHA256_BYTES)
		return -EIO;
	return 0;
}

/*
 * kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request"). Each step's key is wiped as soon as the next is made,
 * so only out (which the caller wipes) outlives the call.
 */
static int signing_key(const char *secret, const char *date, const char *region,
		       const char *service, unsigned char out[SHA256_BYTES])
{
	const char *const steps[] = { region, service, "aws4_request" };
	size_t seclen = strlen(secret);
	unsigned char k[SHA256_BYTES];
	/* Exact size, so no realloc leaves a copy of the secret behind. */
	char *first = xmalloc(4 + seclen);
	int rc;

	memcpy(first, "AWS4", 4);
	memcpy(first + 4, secret, seclen);
	rc = hmac_sha256(first, 4 + seclen, date, DATE_STAMP_LEN, k);
	OPENSSL_cleanse(first, 4 + seclen);
	free(first);
	for (size_t i = 0; !rc && i < sizeof(steps) / sizeof(steps[0]); i++) {
		rc = hmac_sha256(k, sizeof(k), steps[i], strlen(steps[i]), out);
		memcpy(k, out, sizeof(k));
	}
	OPENSSL_cleanse(k, sizeof(k));
	if (rc)
		OPENSSL_cleanse(out, SHA256_BYTES);
	return rc;
}

/* ---- checks ------------------------------------------------------------- */

/* "YYYYMMDDTHHMMSSZ": the scope's date is its first eight characters. */
static bool valid_amz_date(const char *d)
{
	if (!d || strlen(d) != AMZ_DATE_LEN || d[8] != 'T' || d[15] != 'Z')
		return false;
	for (int i = 0; i < 15; i++) {
		if (i != 8 && (d[i] < '0' || d[i] > '9'))
			return false;
	}
	return true;
}

/* Region, service and key id go into "akid/date/region/service/...": a
 * '/', ',' or white space there would change what the server parses. */
static bool valid_credential_part(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= ' ' || c == 0x7f || c == '/' || c == ',')
			return false;
	}
	return true;
}

static bool valid_headers(const struct sigv4_header *h, size_t n)
{
	if (n > 0 && !h)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_token(h[i].name) || !h[i].value)
			return false;
	}
	return true;
}

static int check_request(const struct sigv4_request *req,
			 const char *access_key_id,
			 const char *secret_access_key)
{
	if (!req || !is_token(req->method) || !req->path ||
	    req->path[0] != '/' ||
	    !valid_headers(req->headers, req->nheaders) ||
	    (req->payload_len > 0 && !req->payload) ||
	    !valid_credential_part(req->region) ||
	    !valid_credential_part(req->service) ||
	    !valid_amz_date(req->amz_date) ||
	    !valid_credential_part(access_key_id) || !secret_access_key)
		return -EINVAL;
	return 0;
}

/* ---- signing ------------------------------------------------------------ */

/* METHOD, URI, query, headers, signed names, payload hash; one per line. */
static int canonical_request(const struct sigv4_request *req, struct buf *out,
			     struct buf *names)
{
	char payload_hash[2 * SHA256_BYTES + 1];
	int rc;

	buf_printf(out, "%s\n", req->method);
	rc = canonical_uri(out, req->path);
	if (rc)
		return rc;
	buf_addc(out, '\n');
	canonical_query(out, req->query ? req->query : "");
	buf_addc(out, '\n');
	canonical_headers(out, names, req->headers, req->nheaders);
	buf_printf(out, "\n%s\n", buf_str(names));
	rc = sha256_hex(req->payload, req->payload_len, payload_hash);
	if (rc)
		return rc;
	buf_adds(out, payload_hash);
	return 0;
}

static int string_to_sign(const struct sigv4_request *req, const char *scope,
			  const struct buf *creq, struct buf *out)
{
	char creq_hash[2 * SHA256_BYTES + 1];
	int rc = sha256_hex(creq->data, creq->len, creq_hash);

	if (rc)
		return rc;
	buf_printf(out, ALGORITHM "\n%s\n%s\n%s", req->amz_date, scope,
		   creq_hash);
	return 0;
}

static int signature_hex(const char *secret, const struct sigv4_request *req,
			 const struct buf *sts, char hex[2 * SHA256_BYTES + 1])
{
	unsigned char key[SHA256_BYTES], sig[SHA256_BYTES];
	int rc = signing_key(secret, req->amz_date, req->region, req->service,
			     key);

	if (!rc)
		rc = hmac_sha256(key, sizeof(key), sts->data, sts->len, sig);
	OPENSSL_cleanse(key, sizeof(key));
	if (!rc)
		hex_encode(sig, sizeof(sig), hex);
	return rc;
}

/* Puts src's bytes in dst in place of what it held. */
static void replace(struct buf *dst, const struct buf *src)
{
	if (!dst)
		return;
	buf_truncate(dst, 0);
	buf_add(dst, buf_str(src), src->len);
}

/* "20150830/us-east-1/iam/aws4_request", appended to out. */
static void append_scope(struct buf *out, const struct sigv4_request *req)
{
	buf_printf(out, "%.*s/%s/%s/aws4_request", DATE_STAMP_LEN,
		   req->amz_date, req->region, req->service);
}

/*
 * The canonical request (with the signed header names), the string to
 * sign and the signature of req: the part both ways of signing share.
 */
static int sign_request(const struct sigv4_request *req, const char *secret,
			struct buf *creq, struct buf *names, struct buf *sts,
			char sig[2 * SHA256_BYTES + 1])
{
	BUF_AUTO scope = BUF_INIT;
	int rc = canonical_request(req, creq, names);

	if (rc)
		return rc;
	append_scope(&scope, req);
	rc = string_to_sign(req, buf_str(&scope), creq, sts);
	if (rc)
		return rc;
	return signature_hex(secret, req, sts, sig);
}

int sigv4_sign(const struct sigv4_request *req, const char *access_key_id,
	       const char *secret_access_key, struct buf *creq, struct buf *sts,
	       struct buf *authz)
{
	BUF_AUTO c = BUF_INIT;
	BUF_AUTO names = BUF_INIT;
	BUF_AUTO s = BUF_INIT;
	BUF_AUTO a = BUF_INIT;
	char sig[2 * SHA256_BYTES + 1];
	int rc = check_request(req, access_key_id, secret_access_key);

	if (!rc)
		rc = sign_request(req, secret_access_key, &c, &names, &s, sig);
	if (rc)
		return rc;
	buf_printf(&a, ALGORITHM " Credential=%s/", access_key_id);
	append_scope(&a, req);
	buf_printf(&a, ", SignedHeaders=%s, Signature=%s", buf_str(&names),
		   sig);
	/* Only now, so a failed call leaves the caller's buffers alone. */
	replace(creq, &c);
	replace(sts, &s);
	replace(authz, &a);
	return 0;
}

/*
 * Query-string signing: the credential, date, lifetime and signed header
 * names travel as X-Amz-* parameters and the signature is the last one.
 * Whoever holds the URL may use it until it expires, so its lifetime is
 * the caller's to keep short.
 */
int sigv4_presign(const struct sigv4_request *req, const char *access_key_id,
		  const char *secret_access_key, const char *session_token,
		  unsigned expires_s, struct buf *query)
{
	BUF_AUTO names = BUF_INIT;
	BUF_AUTO credential = BUF_INIT;
	BUF_AUTO q = BUF_INIT;
	BUF_AUTO c = BUF_INIT;
	BUF_AUTO s = BUF_INIT;
	char sig[2 * SHA256_BYTES + 1];
	struct sigv4_request with_query = *req;
	int rc = check_request(req, access_key_id, secret_access_key);

	if (rc)
		return rc;
	signed_names(req->headers, req->nheaders, &names);
	buf_printf(&credential, "%s/", access_key_id);
	append_scope(&credential, req);
	buf_printf(&q, "%s%sX-Amz-Algorithm=" ALGORITHM "&X-Amz-Credential=",
		   req->query ? req->query : "",
		   req->query && req->query[0] ? "&" : "");
	uri_encode(&q, buf_str(&credential), credential.len);
	buf_printf(&q, "&X-Amz-Date=%s&X-Amz-Expires=%u", req->amz_date,
		   expires_s);
	if (session_token && session_token[0]) {
		buf_adds(&q, "&X-Amz-Security-Token=");
		uri_encode(&q, session_token, strlen(session_token));
	}
	buf_adds(&q, "&X-Amz-SignedHeaders=");
	uri_encode(&q, buf_str(&names), names.len);
	with_query.query = buf_str(&q);
	buf_truncate(&names, 0);
	rc = sign_request(&with_query, secret_access_key, &c, &names, &s, sig);
	if (!rc) {
		buf_printf(&q, "&X-Amz-Signature=%s", sig);
		replace(query, &q);
	}
	OPENSSL_cleanse(q.data, q.len);
	return rc;
}

void sigv4_amz_date(time_t t, char out[17])
{
	struct tm tm;

	/* A year past 9999 does not fit: "" then, which sigv4_sign refuses,
	 * rather than a date cut short that would sign something else. */
	if (!gmtime_r(&t, &tm) ||
	    strftime(out, AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) !=
		    AMZ_DATE_LEN)
		out[0] = '\0';
}
