// SPDX-License-Identifier: MIT
/*
 * sigv4_sign() against AWS's Signature Version 4 test suite, read at run
 * time from tests/data/aws/sigv4-testsuite (argv[1], else
 * $INFRAFS_SIGV4_SUITE, else that path from the current folder): every
 * case's canonical request, string to sign and Authorization value must
 * come out byte for byte. Then SageMaker-shaped requests against vectors
 * made by botocore, the canonical forms of odd paths and queries worked
 * out by hand, the refusals, and sigv4_amz_date().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memrchr, strcasecmp */
#endif
#include "providers/aws/aws.h"
#include "tests/unit/check.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

/* The suite's parameters (its README; the key is AWS's published example). */
#define AKID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define REGION "us-east-1"
#define SERVICE "service"
#define AMZ_DATE "20150830T123600Z"

/* The suite as vendored holds 34 cases; fewer means the walk lost some. */
#define SUITE_CASES 34

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- files -------------------------------------------------------------- */

static bool read_file(const char *path, struct buf *out)
{
	char chunk[8192];
	size_t n;
	FILE *f = fopen(path, "rb");

	if (!f)
		return false;
	buf_truncate(out, 0);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_add(out, chunk, n);
	if (ferror(f)) {
		fclose(f);
		return false;
	}
	fclose(f);
	return true;
}

static bool is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- parsing a .req ----------------------------------------------------- */

struct req_header {
	char *name;
	struct buf value; /* continuation lines joined with '\n', as sent */
};

struct parsed_req {
	char *method, *path, *query;
	struct req_header *headers;
	size_t nheaders;
	/* The request line and header lines as in the file, for rebuilding
	 * the signed request (.sreq) around them. */
	char *head;
	char *body;
	size_t body_len;
};

static void parsed_req_free(struct parsed_req *r)
{
	for (size_t i = 0; i < r->nheaders; i++) {
		free(r->headers[i].name);
		buf_free(&r->headers[i].value);
	}
	free(r->headers);
	free(r->method);
	free(r->path);
	free(r->query);
	free(r->head);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

/* The line at *p (without '\n' or a '\r' before it); moves *p past it. */
static size_t next_line(const char **p, const char *end, const char **line)
{
	const char *nl = memchr(*p, '\n', (size_t)(end - *p));
	const char *stop = nl ? nl : end;
	size_t len = (size_t)(stop - *p);

	*line = *p;
	*p = nl ? nl + 1 : end;
	if (len > 0 && (*line)[len - 1] == '\r')
		len--;
	return len;
}

/*
 * "METHOD TARGET HTTP/1.1". The target is what lies between the first
 * space and the last one, so that normalize-path/get-space's
 * "GET /example space/ HTTP/1.1" keeps its space in the path.
 */
static bool parse_request_line(const char *line, size_t len,
			       struct parsed_req *r)
{
	const char *sp1 = memchr(line, ' ', len);
	const char *sp2 = memrchr(line, ' ', len);
	const char *target, *q;

	if (!sp1 || sp2 == sp1 || (size_t)(line + len - sp2) < 6 ||
	    strncmp(sp2 + 1, "HTTP/", 5) != 0)
		return false;
	target = sp1 + 1;
	q = memchr(target, '?', (size_t)(sp2 - target));
	r->method = xstrndup(line, (size_t)(sp1 - line));
	r->path = xstrndup(target, (size_t)((q ? q : sp2) - target));
	r->query = q ? xstrndup(q + 1, (size_t)(sp2 - q - 1)) : xstrdup("");
	return true;
}

static void add_header(struct parsed_req *r, const char *name, size_t nlen,
		       const char *value, size_t vlen)
{
	struct req_header *h;

	r->headers =
		xrealloc(r->headers, (r->nheaders + 1) * sizeof(*r->headers));
	h = &r->headers[r->nheaders++];
	h->name = xstrndup(name, nlen);
	h->value = (struct buf)BUF_INIT;
	buf_add(&h->value, value, vlen);
}

/* "Name:value"; a line that starts with white space continues the last. */
static bool parse_header_line(const char *line, size_t len,
			      struct parsed_req *r)
{
	const char *colon;

	if (line[0] == ' ' || line[0] == '\t') {
		if (r->nheaders == 0)
			return false;
		buf_addc(&r->headers[r->nheaders - 1].value, '\n');
		buf_add(&r->headers[r->nheaders - 1].value, line, len);
		return true;
	}
	colon = memchr(line, ':', len);
	if (!colon || colon == line)
		return false;
	add_header(r, line, (size_t)(colon - line), colon + 1,
		   (size_t)(line + len - colon - 1));
	return true;
}

/* Request line, headers up to a blank line, then the body as it is. */
static bool parse_request(const struct buf *text, struct parsed_req *r,
			  const char **why)
{
	const char *p = buf_str(text), *end = p + text->len, *line;
	const char *head_end;
	size_t len = next_line(&p, end, &line);

	memset(r, 0, sizeof(*r));
	if (!parse_request_line(line, len, r)) {
		*why = "request line is not METHOD TARGET HTTP/x";
		return false;
	}
	head_end = line + len;
	while (p < end) {
		len = next_line(&p, end, &line);
		if (len == 0)
			break; /* the blank line; the body follows */
		if (!parse_header_line(line, len, r)) {
			*why = "header line without a name and ':'";
			return false;
		}
		head_end = line + len;
	}
	r->head = xstrndup(buf_str(text), (size_t)(head_end - buf_str(text)));
	r->body_len = (size_t)(end - p);
	r->body = xstrndup(p, r->body_len);
	return true;
}

/* ---- running one case --------------------------------------------------- */

/*
 * Cases whose files do not say everything. The .authz is the truth for
 * each; what else they need is said here and printed when they run.
 */
enum token_use {
	TOKEN_AS_GIVEN, /* any token header is in the .req already */
	TOKEN_SIGNED, /* add the .sreq's token header, then sign */
	TOKEN_AFTER, /* sign the .req, then add the token header */
};

struct special_case {
	const char *name;
	enum token_use token;
	bool compare_sreq;
	const char *why;
};

static const struct special_case special_cases[] = {
	{ "get-vanilla-with-session-token", TOKEN_SIGNED, false,
	  "the .req lacks the X-Amz-Security-Token header that the .creq "
	  "signs: it is taken from the .sreq and signed with the rest; the "
	  ".sreq itself is not compared (its Signature is get-vanilla's, a "
	  "known error in the suite)" },
	{ "post-sts-header-after", TOKEN_AFTER, true,
	  "readme.txt: the token is added after the signature is made: the "
	  ".req is signed as it is, then X-Amz-Security-Token (from the "
	  ".sreq) and Authorization are added and the result compared with "
	  "the .sreq" },
};

static const struct special_case *find_special(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(special_cases); i++) {
		if (!strcmp(special_cases[i].name, name))
			return &special_cases[i];
	}
	return NULL;
}

/* The value of the first header called name in a .sreq, or NULL. */
static char *sreq_header(const struct buf *sreq, const char *name)
{
	const char *p = buf_str(sreq), *end = p + sreq->len, *line;
	size_t nlen = strlen(name);

	while (p < end) {
		size_t len = next_line(&p, end, &line);

		if (len > nlen && line[nlen] == ':' &&
		    !strncasecmp(line, name, nlen))
			return xstrndup(line + nlen + 1, len - nlen - 1);
	}
	return NULL;
}

/* What the suite's .sreq holds: the request with Authorization added. */
static void signed_request(const struct parsed_req *r, const char *after_name,
			   const char *after_value, const char *authz,
			   struct buf *out)
{
	buf_adds(out, r->head);
	if (after_name)
		buf_printf(out, "\n%s:%s", after_name, after_value);
	buf_printf(out, "\nAuthorization: %s", authz);
	if (r->body_len) {
		buf_adds(out, "\n\n");
		buf_add(out, r->body, r->body_len);
	}
}

static int sign_parsed(const struct parsed_req *r, const char *token,
		       struct buf *creq, struct buf *sts, struct buf *authz)
{
	struct sigv4_header *h = xcalloc(r->nheaders + 1, sizeof(*h));
	size_t n = 0;
	int rc;

	for (; n < r->nheaders; n++) {
		h[n].name = r->headers[n].name;
		h[n].value = buf_str(&r->headers[n].value);
	}
	if (token) {
		h[n].name = "X-Amz-Security-Token";
		h[n++].value = token;
	}
	rc = sigv4_sign(
		&(struct sigv4_request){
			.method = r->method,
			.path = r->path,
			.query = r->query,
			.headers = h,
			.nheaders = n,
			.payload = r->body,
			.payload_len = r->body_len,
			.region = REGION,
			.service = SERVICE,
			.amz_date = AMZ_DATE,
		},
		AKID, SECRET, creq, sts, authz);
	free(h);
	return rc;
}

struct case_files {
	struct buf req, creq, sts, authz, sreq;
	bool have_sreq;
};

static bool read_case(const char *dir, const char *name, struct case_files *f)
{
	struct {
		const char *ext;
		struct buf *to;
	} want[] = { { "req", &f->req },
		     { "creq", &f->creq },
		     { "sts", &f->sts },
		     { "authz", &f->authz } };
	BUF_AUTO path = BUF_INIT;
	bool ok = true;

	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		buf_truncate(&path, 0);
		buf_printf(&path, "%s/%s.%s", dir, name, want[i].ext);
		if (!read_file(buf_str(&path), want[i].to)) {
			fprintf(stderr, "%s: %m\n", buf_str(&path));
			ok = false;
		}
	}
	buf_truncate(&path, 0);
	buf_printf(&path, "%s/%s.sreq", dir, name);
	f->have_sreq = read_file(buf_str(&path), &f->sreq);
	return ok;
}

static void case_files_free(struct case_files *f)
{
	buf_free(&f->req);
	buf_free(&f->creq);
	buf_free(&f->sts);
	buf_free(&f->authz);
	buf_free(&f->sreq);
}

/* Compares the signed request with the .sreq, as the case asks. */
static void check_sreq(const char *rel, const struct special_case *sp,
		       const struct parsed_req *r, const struct case_files *f,
		       const char *token, const struct buf *authz)
{
	BUF_AUTO sreq = BUF_INIT;

	if (sp && !sp->compare_sreq)
		return;
	if (!f->have_sreq) {
		printf("sigv4: %s: no .sreq, signed request not compared\n",
		       rel);
		return;
	}
	signed_request(r,
		       sp && sp->token == TOKEN_AFTER ? "X-Amz-Security-Token"
						      : NULL,
		       token, buf_str(authz), &sreq);
	CHECK_STR(buf_str(&sreq), buf_str(&f->sreq));
}

/* Runs one case folder; true when every check on it passed. */
static bool run_case(const char *dir, const char *rel, const char *name)
{
	const struct special_case *sp = find_special(name);
	struct case_files f = { BUF_INIT, BUF_INIT, BUF_INIT,
				BUF_INIT, BUF_INIT, false };
	struct parsed_req r = { 0 };
	BUF_AUTO creq = BUF_INIT;
	BUF_AUTO sts = BUF_INIT;
	BUF_AUTO authz = BUF_INIT;
	AUTOFREE char *token = NULL;
	const char *why = NULL;
	int failures = check_failures;

	if (sp)
		printf("sigv4: %s: %s\n", rel, sp->why);
	CHECK(read_case(dir, name, &f));
	if (!parse_request(&f.req, &r, &why)) {
		fprintf(stderr, "sigv4: %s: cannot parse .req: %s\n", rel, why);
		CHECK(!"parsable .req");
		goto out;
	}
	if (sp && sp->token != TOKEN_AS_GIVEN) {
		token = sreq_header(&f.sreq, "X-Amz-Security-Token");
		CHECK(token != NULL);
		if (!token)
			goto out;
	}
	CHECK_INT(sign_parsed(&r,
			      sp && sp->token == TOKEN_SIGNED ? token : NULL,
			      &creq, &sts, &authz),
		  0);
	CHECK_STR(buf_str(&creq), buf_str(&f.creq));
	CHECK_STR(buf_str(&sts), buf_str(&f.sts));
	CHECK_STR(buf_str(&authz), buf_str(&f.authz));
	check_sreq(rel, sp, &r, &f, token, &authz);
out:
	if (check_failures != failures)
		fprintf(stderr, "sigv4: case %s FAILED\n", rel);
	parsed_req_free(&r);
	case_files_free(&f);
	return check_failures == failures;
}

/* ---- walking the suite -------------------------------------------------- */

struct suite_case {
	char *dir; /* the case's folder */
	char *rel; /* its path under the suite, for messages */
	const char *name; /* its last component, the files' stem */
	bool passed;
};

struct suite {
	struct suite_case *cases;
	size_t n;
};

static void add_case(struct suite *s, const char *dir, const char *rel)
{
	struct suite_case *c;
	const char *slash;

	s->cases = xrealloc(s->cases, (s->n + 1) * sizeof(*s->cases));
	c = &s->cases[s->n++];
	c->dir = xstrdup(dir);
	c->rel = xstrdup(rel);
	slash = strrchr(c->rel, '/');
	c->name = slash ? slash + 1 : c->rel;
	c->passed = false;
}

/* A case is a folder F holding F.req; folders are searched all the way
 * down, so normalize-path/ and post-sts-token/ are included. */
static void walk(struct suite *s, const char *dir, const char *rel)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d) {
		fprintf(stderr, "sigv4: %s: %m\n", dir);
		return;
	}
	while ((e = readdir(d))) {
		BUF_AUTO sub = BUF_INIT;
		BUF_AUTO subrel = BUF_INIT;
		BUF_AUTO req = BUF_INIT;

		if (e->d_name[0] == '.')
			continue;
		buf_printf(&sub, "%s/%s", dir, e->d_name);
		if (!is_dir(buf_str(&sub)))
			continue;
		buf_printf(&subrel, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
		buf_printf(&req, "%s/%s.req", buf_str(&sub), e->d_name);
		if (is_file(buf_str(&req)))
			add_case(s, buf_str(&sub), buf_str(&subrel));
		walk(s, buf_str(&sub), buf_str(&subrel));
	}
	closedir(d);
}

static int suite_case_cmp(const void *a, const void *b)
{
	const struct suite_case *x = a, *y = b;

	return strcmp(x->rel, y->rel);
}

static bool case_passed(const struct suite *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++) {
		if (!strcmp(s->cases[i].name, name))
			return s->cases[i].passed;
	}
	fprintf(stderr, "sigv4: case %s not found in the suite\n", name);
	return false;
}

static void test_suite(const char *root)
{
	struct suite s = { NULL, 0 };
	size_t passed = 0;

	if (!is_dir(root))
		fprintf(stderr, "sigv4: suite folder %s: not found\n", root);
	walk(&s, root, "");
	if (s.n > 0)
		qsort(s.cases, s.n, sizeof(*s.cases), suite_case_cmp);
	for (size_t i = 0; i < s.n; i++) {
		s.cases[i].passed = run_case(s.cases[i].dir, s.cases[i].rel,
					     s.cases[i].name);
		passed += s.cases[i].passed;
	}
	printf("sigv4: suite %s: %zu of %zu cases passed\n", root, passed, s.n);
	CHECK_INT(s.n, SUITE_CASES);
	CHECK_INT(passed, s.n);
	/* The ones the AWS client cannot do without, by name. */
	CHECK(case_passed(&s, "get-vanilla"));
	CHECK(case_passed(&s, "post-x-www-form-urlencoded"));
	CHECK(case_passed(&s, "get-vanilla-with-session-token"));
	CHECK(case_passed(&s, "post-sts-header-before"));
	CHECK(case_passed(&s, "post-sts-header-after"));
	for (size_t i = 0; i < s.n; i++) {
		free(s.cases[i].dir);
		free(s.cases[i].rel);
	}
	free(s.cases);
}

/* ---- SageMaker-shaped requests ------------------------------------------ */

static const char describe_body[] = "{\"EndpointName\":\"demo\"}";

static int sign_describe(const char *host, struct buf *creq, struct buf *sts,
			 struct buf *authz)
{
	/* Given out of order and in mixed case, as a client might. */
	const struct sigv4_header h[] = {
		{ "X-Amz-Target", "SageMaker.DescribeEndpoint" },
		{ "Content-Type", "application/x-amz-json-1.1" },
		{ "X-Amz-Date", AMZ_DATE },
		{ "Host", host },
	};

	return sigv4_sign(
		&(struct sigv4_request){
			.method = "POST",
			.path = "/",
			.query = "",
			.headers = h,
			.nheaders = ARRAY_SIZE(h),
			.payload = describe_body,
			.payload_len = strlen(describe_body),
			.region = "us-east-1",
			.service = "sagemaker",
			.amz_date = AMZ_DATE,
		},
		AKID, SECRET, creq, sts, authz);
}

/*
 * Expected values for the two tests below come from outside this code:
 * the canonical requests were written out by hand from the SigV4 steps
 * (0c532c... is `printf '{"EndpointName":"demo"}' | sha256sum`), and the
 * string to sign and signature were made by botocore 1.43.11's SigV4Auth
 * (canonical_request, string_to_sign, signature, with the timestamp fixed
 * at 20150830T123600Z and the suite's example key) from
 * https://api.sagemaker.us-east-1.amazonaws.com/ and
 * http://127.0.0.1:8080/; botocore's canonical requests matched the ones
 * written by hand, and a plain Python hmac/hashlib chain gave the first
 * signature again.
 */
static void test_sagemaker(void)
{
	BUF_AUTO creq = BUF_INIT;
	BUF_AUTO sts = BUF_INIT;
	BUF_AUTO authz = BUF_INIT;

	CHECK_INT(sign_describe("api.sagemaker.us-east-1.amazonaws.com", &creq,
				&sts, &authz),
		  0);
	CHECK_STR(
		buf_str(&creq),
		"POST\n"
		"/\n"
		"\n"
		"content-type:application/x-amz-json-1.1\n"
		"host:api.sagemaker.us-east-1.amazonaws.com\n"
		"x-amz-date:20150830T123600Z\n"
		"x-amz-target:SageMaker.DescribeEndpoint\n"
		"\n"
		"content-type;host;x-amz-date;x-amz-target\n"
		"0c532cda8410fe41b39a962a4630b6062a381cb9b2746b199dd41132f022bb2c");
	CHECK_STR(
		buf_str(&sts),
		"AWS4-HMAC-SHA256\n"
		"20150830T123600Z\n"
		"20150830/us-east-1/sagemaker/aws4_request\n"
		"943fa17e2425789808ba17f2d01007330cea5586efcea389116d41ffa361c781");
	CHECK_STR(
		buf_str(&authz),
		"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
		"sagemaker/aws4_request, SignedHeaders=content-type;host;"
		"x-amz-date;x-amz-target, Signature=90d016f0311f2be9099ae1f5a6f"
		"6f28cc6f89f0deedf9ecdaa976da9dd0cd585");
}

/* A port that is not the scheme's default is part of the signed host. */
static void test_host_with_port(void)
{
	BUF_AUTO creq = BUF_INIT;
	BUF_AUTO sts = BUF_INIT;
	BUF_AUTO authz = BUF_INIT;

	CHECK_INT(sign_describe("127.0.0.1:8080", &creq, &sts, &authz), 0);
	CHECK_STR(
		buf_str(&creq),
		"POST\n"
		"/\n"
		"\n"
		"content-type:application/x-amz-json-1.1\n"
		"host:127.0.0.1:8080\n"
		"x-amz-date:20150830T123600Z\n"
		"x-amz-target:SageMaker.DescribeEndpoint\n"
		"\n"
		"content-type;host;x-amz-date;x-amz-target\n"
		"0c532cda8410fe41b39a962a4630b6062a381cb9b2746b199dd41132f022bb2c");
	CHECK_STR(
		buf_str(&sts),
		"AWS4-HMAC-SHA256\n"
		"20150830T123600Z\n"
		"20150830/us-east-1/sagemaker/aws4_request\n"
		"1030cfeca746c8a531a162cd61cf81bbcaa5fc0dde241b070ff5c1185c8e9f69");
	CHECK_STR(
		buf_str(&authz),
		"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
		"sagemaker/aws4_request, SignedHeaders=content-type;host;"
		"x-amz-date;x-amz-target, Signature=cb41ace4e2ef54736e0d963bd58"
		"9b480c35848b06461a2cc21ad3d6e8d610067");
}

/*
 * An EKS token is a presigned STS GetCallerIdentity URL. The expected
 * URLs came from botocore 1.43 (SigV4QueryAuth, service sts, region
 * us-west-2, 60 s) for the same key, header and time.
 */
static void presign_eks(const char *token, struct buf *query)
{
	const struct sigv4_header h[] = {
		{ "host", "sts.us-west-2.amazonaws.com" },
		{ "x-k8s-aws-id", "my-eks" },
	};
	struct sigv4_request req = {
		.method = "GET",
		.path = "/",
		.query = "Action=GetCallerIdentity&Version=2011-06-15",
		.headers = h,
		.nheaders = 2,
		.region = "us-west-2",
		.service = "sts",
		.amz_date = "20261128T075307Z",
	};

	CHECK_INT(sigv4_presign(&req, "AKIDEXAMPLE",
				"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
				token, 60, query),
		  0);
}

static void test_presign(void)
{
	BUF_AUTO query = BUF_INIT;

	presign_eks(NULL, &query);
	CHECK_STR(buf_str(&query),
		  "Action=GetCallerIdentity&Version=2011-06-15&"
		  "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
		  "AKIDEXAMPLE%2F20261128%2Fus-west-2%2Fsts%2Faws4_request&"
		  "X-Amz-Date=20261128T075307Z&X-Amz-Expires=60&"
		  "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature="
		  "97c0339de4f077e53ab24fac8c071e4e1d675e8645df3cee79b4aea578f"
		  "fa1ed");
	presign_eks("FQoGZXIvYXdzEXAMPLE/token+x=", &query);
	CHECK_STR(buf_str(&query),
		  "Action=GetCallerIdentity&Version=2011-06-15&"
		  "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
		  "AKIDEXAMPLE%2F20261128%2Fus-west-2%2Fsts%2Faws4_request&"
		  "X-Amz-Date=20261128T075307Z&X-Amz-Expires=60&"
		  "X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLE%2Ftoken%2Bx%3D&"
		  "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature="
		  "d4ae88e33dcf953fa96730eb07094b7af298db0bcdc4361645d69acbe16"
		  "1f47a");
}

/* ---- canonical forms worked out by hand --------------------------------- */

static const struct sigv4_header plain_headers[] = {
	{ "Host", "example.amazonaws.com" },
	{ "X-Amz-Date", AMZ_DATE },
};

/* The canonical request's method, URI and query lines, each with its '\n'. */
static void creq_start(const char *path, const char *query, struct buf *out)
{
	BUF_AUTO creq = BUF_INIT;
	const char *p;
	int rc = sigv4_sign(
		&(struct sigv4_request){
			.method = "GET",
			.path = path,
			.query = query,
			.headers = plain_headers,
			.nheaders = ARRAY_SIZE(plain_headers),
			.region = REGION,
			.service = SERVICE,
			.amz_date = AMZ_DATE,
		},
		AKID, SECRET, &creq, NULL, NULL);

	CHECK_INT(rc, 0);
	p = strstr(buf_str(&creq), "\nhost:");
	buf_truncate(out, 0);
	buf_add(out, buf_str(&creq), p ? (size_t)(p - buf_str(&creq)) + 1 : 0);
}

/*
 * Paths are normalised, then each segment encoded again, '%' included
 * (the non-S3 rule); queries are decoded, then encoded, then sorted.
 */
static void test_paths_and_queries(void)
{
	static const struct {
		const char *path, *query, *want;
	} cases[] = {
		/* a%20b is encoded once more; "." and "//" go, ".." takes d
		 * with it, and the trailing '/' stays. */
		{ "/a%20b/./c//d/../e/", "", "GET\n/a%2520b/c/e/\n\n" },
		/* ".." never climbs above the root. */
		{ "/../x", "", "GET\n/x\n\n" },
		{ "/a/b/..", "", "GET\n/a\n\n" },
		{ "/", "", "GET\n/\n\n" },
		/* Reserved and non-ASCII bytes in a segment. */
		{ "/\xc3\xa9/a+b=c:d", "", "GET\n/%C3%A9/a%2Bb%3Dc%3Ad\n\n" },
		/* %41 decodes to A, %7e to ~ (unreserved, so left bare),
		 * %2f to '/' (encoded again); '+' is a literal plus, "a" has
		 * no '=' and signs as "a=", empty pieces vanish, and a '%'
		 * without two hex digits is a literal '%'. Sorted by name,
		 * then value. */
		{ "/", "b=2&a=%41&a&c=x+y&&d=%7e%2f&e=%zz&e=50%",
		  "GET\n/\na=&a=A&b=2&c=x%2By&d=~%2F&e=%25zz&e=50%25\n" },
		/* Names sort before values, bytewise: "A" < "a" < "aa". */
		{ "/", "aa=1&a=2&A=3&a=1", "GET\n/\nA=3&a=1&a=2&aa=1\n" },
		{ "/", "x=a%20b c", "GET\n/\nx=a%20b%20c\n" },
	};
	BUF_AUTO got = BUF_INIT;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		creq_start(cases[i].path, cases[i].query, &got);
		CHECK_STR(buf_str(&got), cases[i].want);
	}
}

/* Values: outer white space gone, inner runs (line breaks too) folded. */
static void test_header_values(void)
{
	const struct sigv4_header h[] = {
		{ "x-b", "  a\t\tb \r\n c  " },
		{ "Host", "example.amazonaws.com" },
		{ "X-EMPTY", "" },
		{ "x-a", "2" },
		{ "X-A", " 1 " },
		{ "x-amz-date", AMZ_DATE },
	};
	BUF_AUTO creq = BUF_INIT;
	int rc = sigv4_sign(
		&(struct sigv4_request){
			.method = "GET",
			.path = "/",
			.query = "",
			.headers = h,
			.nheaders = ARRAY_SIZE(h),
			.region = REGION,
			.service = SERVICE,
			.amz_date = AMZ_DATE,
		},
		AKID, SECRET, &creq, NULL, NULL);

	CHECK_INT(rc, 0);
	/* e3b0c4... is the SHA-256 of nothing. */
	CHECK_STR(
		buf_str(&creq),
		"GET\n/\n\n"
		"host:example.amazonaws.com\n"
		"x-a:2,1\n"
		"x-amz-date:20150830T123600Z\n"
		"x-b:a b c\n"
		"x-empty:\n"
		"\n"
		"host;x-a;x-amz-date;x-b;x-empty\n"
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* ---- the API's own rules ------------------------------------------------ */

static struct sigv4_request good_request(void)
{
	return (struct sigv4_request){
		.method = "GET",
		.path = "/",
		.query = "",
		.headers = plain_headers,
		.nheaders = ARRAY_SIZE(plain_headers),
		.region = REGION,
		.service = SERVICE,
		.amz_date = AMZ_DATE,
	};
}

/* Outputs are replaced, any may be NULL, and the result is the same. */
static void test_outputs(void)
{
	struct sigv4_request req = good_request();
	BUF_AUTO creq = BUF_INIT;
	BUF_AUTO sts = BUF_INIT;
	BUF_AUTO authz = BUF_INIT;
	BUF_AUTO alone = BUF_INIT;

	buf_adds(&creq, "old creq");
	buf_adds(&sts, "old sts");
	buf_adds(&authz, "old authz");
	CHECK_INT(sigv4_sign(&req, AKID, SECRET, &creq, &sts, &authz), 0);
	/* get-vanilla's values: this request is that case. */
	CHECK(!strncmp(buf_str(&creq), "GET\n/\n\nhost:", 12));
	CHECK(!strncmp(buf_str(&sts), "AWS4-HMAC-SHA256\n", 17));
	CHECK_STR(buf_str(&authz),
		  "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
		  "service/aws4_request, SignedHeaders=host;x-amz-date, "
		  "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b"
		  "8aae1d763fbf31");
	CHECK_INT(sigv4_sign(&req, AKID, SECRET, NULL, NULL, &alone), 0);
	CHECK_STR(buf_str(&alone), buf_str(&authz));
	CHECK_INT(sigv4_sign(&req, AKID, SECRET, NULL, NULL, NULL), 0);
	/* A NULL query is taken as none. */
	req.query = NULL;
	CHECK_INT(sigv4_sign(&req, AKID, SECRET, NULL, NULL, &alone), 0);
	CHECK_STR(buf_str(&alone), buf_str(&authz));
}

/* Each refusal is -EINVAL and leaves the caller's buffers as they were. */
static void test_refusals(void)
{
	const struct sigv4_header colon[] = { { "Host:", "x" } };
	const struct sigv4_header space[] = { { "My Header", "x" } };
	const struct sigv4_header novalue[] = { { "Host", NULL } };
	BUF_AUTO authz = BUF_INIT;
	struct sigv4_request r;

#define REFUSED(change, akid, secret)                                       \
	do {                                                                \
		r = good_request();                                         \
		change;                                                     \
		buf_truncate(&authz, 0);                                    \
		buf_adds(&authz, "kept");                                   \
		CHECK_INT(sigv4_sign(&r, akid, secret, NULL, NULL, &authz), \
			  -EINVAL);                                         \
		CHECK_STR(buf_str(&authz), "kept");                         \
	} while (0)

	CHECK_INT(sigv4_sign(NULL, AKID, SECRET, NULL, NULL, &authz), -EINVAL);
	REFUSED(r.method = NULL, AKID, SECRET);
	REFUSED(r.method = "", AKID, SECRET);
	REFUSED(r.method = "GET /", AKID, SECRET);
	REFUSED(r.path = NULL, AKID, SECRET);
	REFUSED(r.path = "", AKID, SECRET);
	REFUSED(r.path = "relative/path", AKID, SECRET);
	REFUSED(r.amz_date = NULL, AKID, SECRET);
	REFUSED(r.amz_date = "", AKID, SECRET);
	REFUSED(r.amz_date = "2015-08-30T12:36Z", AKID, SECRET);
	REFUSED(r.amz_date = "20150830 123600Z", AKID, SECRET);
	REFUSED(r.amz_date = "20150830T123600", AKID, SECRET);
	REFUSED(r.region = NULL, AKID, SECRET);
	REFUSED(r.region = "", AKID, SECRET);
	REFUSED(r.region = "us-east-1/x", AKID, SECRET);
	REFUSED(r.service = "sage maker", AKID, SECRET);
	REFUSED(r.headers = NULL, AKID, SECRET);
	REFUSED((r.headers = colon, r.nheaders = 1), AKID, SECRET);
	REFUSED((r.headers = space, r.nheaders = 1), AKID, SECRET);
	REFUSED((r.headers = novalue, r.nheaders = 1), AKID, SECRET);
	REFUSED((r.payload = NULL, r.payload_len = 3), AKID, SECRET);
	REFUSED((void)0, NULL, SECRET);
	REFUSED((void)0, "", SECRET);
	REFUSED((void)0, "AKID,x", SECRET);
	REFUSED((void)0, AKID, NULL);
#undef REFUSED
}

static void test_amz_date(void)
{
	static const struct {
		time_t t;
		const char *want;
	} cases[] = {
		{ 1440938160, "20150830T123600Z" }, /* the suite's time */
		{ 0, "19700101T000000Z" },
		{ 951782400, "20000229T000000Z" }, /* a leap day */
		{ 253402300799LL, "99991231T235959Z" },
		/* Year 10000 does not fit in 16 characters: "" then. */
		{ 253402300800LL, "" },
	};
	char out[17];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		memset(out, 'x', sizeof(out));
		sigv4_amz_date(cases[i].t, out);
		CHECK_STR(out, cases[i].want);
	}
	/* What it makes, sigv4_sign takes. */
	{
		struct sigv4_request r = good_request();

		sigv4_amz_date(time(NULL), out);
		r.amz_date = out;
		CHECK_INT(sigv4_sign(&r, AKID, SECRET, NULL, NULL, NULL), 0);
	}
}

/* argv[1] (meson passes it), else $INFRAFS_SIGV4_SUITE, else from here. */
static const char *suite_root(int argc, char **argv)
{
	const char *env = getenv("INFRAFS_SIGV4_SUITE");

	if (argc > 1)
		return argv[1];
	if (env && *env)
		return env;
	return "tests/data/aws/sigv4-testsuite";
}

int main(int argc, char **argv)
{
	const char *root = suite_root(argc, argv);

	test_suite(root);
	test_sagemaker();
	test_host_with_port();
	test_presign();
	test_paths_and_queries();
	test_header_values();
	test_outputs();
	test_refusals();
	test_amz_date();
	return check_report("sigv4");
}
