// SPDX-License-Identifier: MIT
/*
 * AWS credentials, found the way the AWS CLI finds them: the environment
 * (unless config named a profile, as --profile does), the shared
 * credentials file, the config file, then the instance role through
 * IMDSv2.
 *
 * The two files are parsed once and only the chain's own profile is kept;
 * a file watch (util/filewatch.h: inotify on the folder, backed by a stat
 * at every get) says when to parse again.
 *
 * Instance credentials are cached until 5 minutes before they expire. A
 * failed IMDS fetch is not tried again for 60 s, so a machine outside EC2
 * pays the (short) time-out once a minute, not at every get.
 *
 * Threads: a chain belongs to the one thread that calls aws_creds_get on
 * it (the reconciler's), so nothing here locks. Different chains share
 * nothing but libcurl's global state, which the daemon sets up with
 * curl_global_init() before it starts threads.
 *
 * Secrets: access keys, secret keys, session tokens and the IMDS token
 * are never logged nor put into a message, and every buffer this file
 * owns that held one is wiped with OPENSSL_cleanse() before it is freed
 * or reused. Copies inside libcurl and jansson are theirs; freed without
 * a wipe, which this file cannot change without hooking their allocators
 * for the whole process.
 */
#include "providers/aws/aws.h"
#include "util/buf.h"
#include "util/filewatch.h"
#include "util/log.h"
#include "util/text.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IMDS_DEFAULT_BASE "http://169.254.169.254"
#define IMDS_TOKEN_PATH "/latest/api/token"
#define IMDS_ROLE_PATH "/latest/meta-data/iam/security-credentials/"
/* Six hours, the longest IMDS grants; one token serves one fetch anyway. */
#define IMDS_TOKEN_TTL "21600"
/* Short enough that a machine without IMDS is not slowed much. */
#define IMDS_CONNECT_MS 1000L
#define IMDS_TOTAL_MS 2000L
/* After a failure IMDS is left alone this long. */
#define IMDS_RETRY_S 60.0
/* Instance credentials are fetched again this long before Expiration. */
#define IMDS_REFRESH_S 300.0
/* The credentials JSON is under 2 KiB; a bigger answer is not IMDS. */
#define IMDS_BODY_MAX (64u * 1024u)
#define IMDS_TOKEN_MAX 1024u
/* IAM role names are at most 64 characters. */
#define IMDS_ROLE_MAX 64u

/* Credentials files are a few hundred bytes; a huge one is a mistake. */
#define CRED_FILE_MAX (1u << 20)

#define CREDS_FIELD(f) sizeof(((struct aws_creds *)0)->f)

/* What one file says about the chain's profile. Holds secrets. */
struct profile_vals {
	bool section; /* a section for the profile was seen */
	char header[128]; /* the first such section's header, "profile ci" */
	char key_id[CREDS_FIELD(access_key_id)];
	char secret[CREDS_FIELD(secret_access_key)];
	char token[CREDS_FIELD(session_token)];
	bool token_primary; /* from aws_session_token, not the legacy name */
	char region[64];
	const char *too_long; /* the first key whose value did not fit */
	const char *unsupported; /* role_arn and the like, for the message */
};

enum file_kind { CREDENTIALS_FILE, CONFIG_FILE };

struct cred_file {
	enum file_kind kind;
	const char *path; /* watch.path: absolute; NULL without a home */
	struct file_watch watch;
	bool loaded; /* parsed at least once */
	int err; /* errno of the last read: ENOENT = no file; EFBIG */
	struct profile_vals vals;
};

struct imds_state {
	CURL *curl; /* made at the first fetch */
	char *base; /* the endpoint everything below belongs to */
	bool have;
	struct aws_creds creds;
	double retry_after; /* monotonic seconds; 0 = try now */
	char err[512]; /* why the last fetch failed */
};

struct aws_cred_chain {
	char *profile;
	bool named; /* by config: the environment's keys are not used */
	struct cred_file files[2]; /* CREDENTIALS_FILE, CONFIG_FILE */
	struct imds_state imds;
	char last_source[CREDS_FIELD(source)]; /* to log changes only */
};

/* Each source answers one of these. */
enum step {
	STEP_FOUND, /* out is filled */
	STEP_NEXT, /* nothing here; try the next source */
	STEP_STOP, /* something here is broken: stop, as the CLI does */
};

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Appends one "; "-separated part to what the failure message lists. */
__attribute__((format(printf, 2, 3))) static void why_add(struct buf *why,
							  const char *fmt, ...)
{
	va_list ap;

	if (why->len)
		buf_adds(why, "; ");
	va_start(ap, fmt);
	buf_vprintf(why, fmt, ap);
	va_end(ap);
}

static bool fits(const char *s, size_t size)
{
	return strlen(s) < size;
}

/* ---- paths ------------------------------------------------------------ */

static char *home_dir(void)
{
	const char *home = getenv("HOME");
	struct passwd pw, *res = NULL;
	char tmp[4096];

	if (home && *home)
		return xstrdup(home);
	/* A daemon started by init may have no HOME: ask the user table. */
	if (getpwuid_r(getuid(), &pw, tmp, sizeof(tmp), &res) == 0 && res &&
	    res->pw_dir && *res->pw_dir)
		return xstrdup(res->pw_dir);
	return NULL;
}

/*
 * The file from env_name, else ~/.aws/leaf. Made absolute now, because the
 * daemon may change folder later and inotify names folders by path.
 * "~/" is expanded as the CLI expands it. NULL when no path can be made.
 */
static char *file_path(const char *env_name, const char *home, const char *leaf)
{
	const char *env = getenv(env_name);
	struct buf b = BUF_INIT;
	char cwd[PATH_MAX];

	if (!env || !*env) {
		if (!home)
			return NULL;
		buf_printf(&b, "%s/.aws/%s", home, leaf);
		return buf_steal(&b);
	}
	if (strncmp(env, "~/", 2) == 0 && home)
		buf_printf(&b, "%s/%s", home, env + 2);
	else if (env[0] != '/' && getcwd(cwd, sizeof(cwd)))
		buf_printf(&b, "%s/%s", cwd, env);
	else
		buf_adds(&b, env);
	return buf_steal(&b);
}

static void cred_file_init(struct cred_file *f, enum file_kind kind, char *path)
{
	memset(f, 0, sizeof(*f));
	f->kind = kind;
	file_watch_init(&f->watch, path);
	f->path = f->watch.path;
	free(path);
}

/* ---- the ini parser ----------------------------------------------------- */

static const char *skip_space(const char *s, const char *end)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	return s;
}

static const char *trim_end(const char *s, const char *end)
{
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
			   end[-1] == '\r' || end[-1] == '\n'))
		end--;
	return end;
}

static bool span_is(const char *s, const char *end, const char *word,
		    bool nocase)
{
	size_t n = strlen(word);

	if ((size_t)(end - s) != n)
		return false;
	return nocase ? strncasecmp(s, word, n) == 0 : memcmp(s, word, n) == 0;
}

/*
 * Whether the header inside [...] is the profile's section. The
 * credentials file names profiles bare; the config file says
 * "profile NAME" (optionally quoted, as botocore's shlex split allows),
 * except for "default", which may also stand bare there.
 */
static bool section_matches(enum file_kind kind, const char *h, const char *end,
			    const char *profile)
{
	const char *name;

	if (kind == CREDENTIALS_FILE)
		return span_is(h, end, profile, false);
	if (strcmp(profile, "default") == 0 &&
	    span_is(h, end, "default", false))
		return true;
	if ((size_t)(end - h) < 8 || memcmp(h, "profile", 7) != 0 ||
	    (h[7] != ' ' && h[7] != '\t'))
		return false;
	name = skip_space(h + 8, end);
	if (end - name >= 2 && name[0] == '"' && end[-1] == '"') {
		name++;
		end--;
	}
	return span_is(name, end, profile, false);
}

/* Copies a value into one of the fixed fields, or notes under key's name
 * that it is too long (never truncated: a cut key would only fail later,
 * obscurely). key NULL: a value too long is left out unremarked. */
static void set_value(struct profile_vals *v, char *field, size_t size,
		      const char *key, const char *s, const char *end)
{
	size_t n = (size_t)(end - s);

	if (n >= size) {
		if (key && !v->too_long)
			v->too_long = key;
		return;
	}
	OPENSSL_cleanse(field, size);
	memcpy(field, s, n);
	field[n] = '\0';
}

static void take_key(struct profile_vals *v, const char *k, const char *kend,
		     const char *val, const char *vend)
{
	static const char *const unsupported[] = {
		"role_arn",
		"credential_process",
		"sso_session",
		"sso_start_url",
		"web_identity_token_file",
		"source_profile",
		"credential_source",
	};

	if (span_is(k, kend, "aws_access_key_id", true)) {
		set_value(v, v->key_id, sizeof(v->key_id), "aws_access_key_id",
			  val, vend);
	} else if (span_is(k, kend, "aws_secret_access_key", true)) {
		set_value(v, v->secret, sizeof(v->secret),
			  "aws_secret_access_key", val, vend);
	} else if (span_is(k, kend, "aws_session_token", true)) {
		set_value(v, v->token, sizeof(v->token), "aws_session_token",
			  val, vend);
		v->token_primary = true;
	} else if (span_is(k, kend, "aws_security_token", true)) {
		/* The older name; botocore reads it when the new one is
		 * absent. */
		if (!v->token_primary)
			set_value(v, v->token, sizeof(v->token),
				  "aws_security_token", val, vend);
	} else if (span_is(k, kend, "region", true)) {
		/* Not a credential: too long a region must not stop the
		 * chain; the caller sees "" and uses its own default. */
		set_value(v, v->region, sizeof(v->region), NULL, val, vend);
	} else {
		for (size_t i = 0;
		     i < sizeof(unsupported) / sizeof(*unsupported); i++) {
			if (span_is(k, kend, unsupported[i], true) &&
			    !v->unsupported)
				v->unsupported = unsupported[i];
		}
	}
}

/* Where the parser is between lines. */
struct ini_state {
	enum file_kind kind;
	const char *profile;
	bool in_profile; /* inside one of the profile's sections */
	bool have_key; /* a key line came since the section header */
	size_t key_indent; /* the indent of that key line */
};

/*
 * One line, as Python's configparser (which the CLI uses) reads it: a line
 * indented deeper than the key line before it continues that key's value
 * (the config file nests "s3 =" settings so, and their "region" is not
 * the profile's); "#" and ";" start comment lines, never inline comments;
 * "=" or ":" splits key from value; keys are case-insensitive.
 */
static void ini_line(struct ini_state *st, struct profile_vals *v,
		     const char *line, const char *end)
{
	const char *s = skip_space(line, end);
	const char *sep, *close;
	size_t indent = (size_t)(s - line);

	end = trim_end(s, end);
	if (s == end || *s == '#' || *s == ';')
		return;
	if (st->have_key && indent > st->key_indent)
		return;
	if (*s == '[') {
		close = end;
		while (close > s && close[-1] != ']')
			close--;
		if (close == s)
			return; /* no "]": not a header, and not a key */
		close--;
		st->have_key = false;
		s = skip_space(s + 1, close);
		close = trim_end(s, close);
		st->in_profile =
			section_matches(st->kind, s, close, st->profile);
		if (st->in_profile && !v->section) {
			v->section = true;
			snprintf(v->header, sizeof(v->header), "%.*s",
				 (int)(close - s), s);
		}
		return;
	}
	for (sep = s; sep < end && *sep != '=' && *sep != ':'; sep++)
		;
	if (sep == end)
		return;
	st->have_key = true;
	st->key_indent = indent;
	if (st->in_profile)
		take_key(v, s, trim_end(s, sep), skip_space(sep + 1, end), end);
}

static void ini_parse(enum file_kind kind, const char *profile,
		      const char *text, size_t len, struct profile_vals *v)
{
	struct ini_state st = { .kind = kind, .profile = profile };
	const char *p = text, *end = text + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end;

		ini_line(&st, v, p, eol);
		p = nl ? nl + 1 : end;
	}
}

/* ---- reading the files ------------------------------------------------ */

/*
 * Reads the whole file into one buffer sized from fstat, never grown:
 * growing with realloc would leave copies of the secrets in freed memory.
 * A file that grew while being read is marked stale, so the next get
 * reads it again. Returns 0 or -errno.
 */
static int read_whole(struct cred_file *f, char **data, size_t *len)
{
	struct stat st;
	size_t cap, n = 0;
	char *buf;
	int fd, err;

	fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	if ((uintmax_t)st.st_size > CRED_FILE_MAX) {
		close(fd);
		return -EFBIG;
	}
	cap = (size_t)st.st_size + 4096;
	buf = xmalloc(cap);
	while (n < cap - 1) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = -errno;
			OPENSSL_cleanse(buf, cap);
			free(buf);
			close(fd);
			return err;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n == cap - 1)
		f->watch.stale = true;
	close(fd);
	buf[n] = '\0';
	*data = buf;
	*len = n;
	return 0;
}

/* Parses the file again; what it said before is wiped first. */
static void cred_file_load(struct cred_file *f, const char *profile)
{
	char *data = NULL;
	size_t len = 0;
	int rc;

	OPENSSL_cleanse(&f->vals, sizeof(f->vals));
	f->loaded = true;
	rc = read_whole(f, &data, &len);
	f->err = -rc;
	if (rc < 0) {
		if (rc != -ENOENT)
			log_warn("aws: cannot read %s: %s", f->path,
				 strerror(-rc));
		return;
	}
	ini_parse(f->kind, profile, data, len, &f->vals);
	OPENSSL_cleanse(data, len + 1);
	free(data);
}

/* Brings both files' parsed state up to date. */
static void refresh_files(struct aws_cred_chain *c)
{
	for (int i = 0; i < 2; i++) {
		struct cred_file *f = &c->files[i];
		/* Always asked: it takes the file's state as it goes. */
		bool changed = file_watch_changed(&f->watch);

		if (f->path && (changed || !f->loaded))
			cred_file_load(f, c->profile);
	}
}

/* ---- the sources ------------------------------------------------------ */

static enum step from_env(struct aws_cred_chain *c, struct aws_creds *out,
			  struct buf *why)
{
	const char *id = getenv("AWS_ACCESS_KEY_ID");
	const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
	const char *token = getenv("AWS_SESSION_TOKEN");

	if (!id || !*id) {
		if (!c->named)
			why_add(why, "AWS_ACCESS_KEY_ID not set");
		return STEP_NEXT;
	}
	if (c->named) {
		why_add(why,
			"AWS_ACCESS_KEY_ID ignored: profile \"%s\" is named in config",
			c->profile);
		return STEP_NEXT;
	}
	if (!secret || !*secret) {
		why_add(why,
			"AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
		return STEP_STOP;
	}
	if (!token || !*token)
		token = getenv("AWS_SECURITY_TOKEN");
	if (!token)
		token = "";
	if (!fits(id, sizeof(out->access_key_id)) ||
	    !fits(secret, sizeof(out->secret_access_key)) ||
	    !fits(token, sizeof(out->session_token))) {
		why_add(why,
			"the AWS_* credentials in the environment are longer than allowed");
		return STEP_STOP;
	}
	strcpy(out->access_key_id, id);
	strcpy(out->secret_access_key, secret);
	strcpy(out->session_token, token);
	out->expires = 0;
	snprintf(out->source, sizeof(out->source), "environment");
	return STEP_FOUND;
}

/*
 * One file's say. A file without the profile (or without the file) is
 * added to absent, so that the two can be reported as one part.
 */
static enum step from_file(struct aws_cred_chain *c, struct cred_file *f,
			   struct aws_creds *out, struct buf *why,
			   struct buf *absent)
{
	const struct profile_vals *v = &f->vals;

	if (!f->path)
		return STEP_NEXT;
	if (f->err && f->err != ENOENT) {
		why_add(why, "cannot read %s: %s", f->path,
			f->err == EFBIG ? "larger than 1 MiB"
					: strerror(f->err));
		return STEP_NEXT;
	}
	if (f->err == ENOENT || !v->section) {
		buf_printf(absent, "%s%s%s", absent->len ? " or " : "", f->path,
			   f->err == ENOENT ? " (no such file)" : "");
		return STEP_NEXT;
	}
	if (v->too_long) {
		why_add(why, "%s in [%s] of %s is too long", v->too_long,
			v->header, f->path);
		return STEP_STOP;
	}
	if (!v->key_id[0]) {
		why_add(why, "[%s] in %s has no aws_access_key_id%s%s%s",
			v->header, f->path, v->unsupported ? " (" : "",
			v->unsupported ? v->unsupported : "",
			v->unsupported ? " is not supported)" : "");
		return STEP_NEXT;
	}
	if (!v->secret[0]) {
		why_add(why,
			"[%s] in %s has aws_access_key_id but no aws_secret_access_key",
			v->header, f->path);
		return STEP_STOP;
	}
	memcpy(out->access_key_id, v->key_id, sizeof(v->key_id));
	memcpy(out->secret_access_key, v->secret, sizeof(v->secret));
	memcpy(out->session_token, v->token, sizeof(v->token));
	out->expires = 0;
	snprintf(out->source, sizeof(out->source), "profile %s in %s",
		 c->profile, f->path);
	return STEP_FOUND;
}

static enum step from_files(struct aws_cred_chain *c, struct aws_creds *out,
			    struct buf *why)
{
	BUF_AUTO absent = BUF_INIT;
	enum step s = STEP_NEXT;

	if (!c->files[CREDENTIALS_FILE].path)
		why_add(why, "no home folder for ~/.aws/credentials");
	if (!c->files[CONFIG_FILE].path)
		why_add(why, "no home folder for ~/.aws/config");
	for (int i = 0; i < 2 && s == STEP_NEXT; i++)
		s = from_file(c, &c->files[i], out, why, &absent);
	if (s != STEP_FOUND && absent.len)
		why_add(why, "profile \"%s\" not in %s", c->profile,
			buf_str(&absent));
	/* A profile named in config that no file has is a mistake, as the
	 * CLI says ("profile not found"): falling through to the instance's
	 * role would quietly act as someone else. */
	if (s == STEP_NEXT && c->named)
		return STEP_STOP;
	return s;
}

/* ---- IMDSv2 ----------------------------------------------------------- */

/* A fixed-size receive buffer: it holds secrets, so it is never grown
 * (see read_whole) and is wiped between uses. */
struct imds_body {
	char *data;
	size_t len;
	size_t cap;
};

static size_t imds_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct imds_body *b = arg;
	size_t n = size * nmemb;

	if (n > b->cap - 1 - b->len)
		return 0; /* too big to be IMDS: curl fails the transfer */
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

static void body_clear(struct imds_body *b)
{
	OPENSSL_cleanse(b->data, b->cap);
	b->len = 0;
	b->data[0] = '\0';
}

/* Options every IMDS request gets: nothing printed, no proxy (IMDS is
 * link-local), no redirects, plain HTTP(S) only, and the time left. */
static void imds_options(CURL *h, const char *url, long left_ms,
			 struct imds_body *body)
{
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_VERBOSE, 0L);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 1L);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS,
			 (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
			 left_ms < IMDS_CONNECT_MS ? left_ms : IMDS_CONNECT_MS);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, left_ms);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, imds_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
}

/*
 * One request, within the fetch's deadline. Returns 0 with the HTTP
 * status in *code, or -EIO with curl's reason (never a secret) in err.
 */
static int imds_request(CURL *h, const char *method, const char *url,
			const char *header, double deadline,
			struct imds_body *body, long *code, char *err,
			size_t errlen)
{
	long left = (long)((deadline - mono_now()) * 1000.0);
	struct curl_slist *hdrs = NULL;
	CURLcode rc;

	if (left <= 0) {
		snprintf(err, errlen, "%s",
			 curl_easy_strerror(CURLE_OPERATION_TIMEDOUT));
		return -EIO;
	}
	body_clear(body);
	imds_options(h, url, left, body);
	if (header) {
		hdrs = curl_slist_append(NULL, header);
		if (!hdrs)
			abort(); /* as xmalloc: out of memory */
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	}
	if (strcmp(method, "GET") != 0)
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	rc = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	aws_slist_wipe_free(hdrs);
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "%s", curl_easy_strerror(rc));
		return -EIO;
	}
	*code = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
	return 0;
}

/* Strips trailing white space and checks the rest is one printable word. */
static bool one_word(char *s, size_t max, const char *extra_ok)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
		s[--n] = '\0';
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || strchr(extra_ok, ch)))
			return false;
	}
	return true;
}

static const char *json_str(json_t *root, const char *key)
{
	return json_string_value(json_object_get(root, key));
}

/*
 * The credentials JSON into out. jansson's own error text is left out of
 * err: it quotes the text near the error, which may be a secret.
 */
static int imds_parse_creds(const struct imds_body *body, const char *role,
			    struct aws_creds *out, char *err, size_t errlen)
{
	json_t *root = json_loadb(body->data, body->len, 0, NULL);
	const char *code, *id, *secret, *token, *exp;
	double expires;
	int rc = -EINVAL;

	if (!json_is_object(root)) {
		snprintf(err, errlen, "credentials of role %s are not JSON",
			 role);
		goto out;
	}
	code = json_str(root, "Code");
	id = json_str(root, "AccessKeyId");
	secret = json_str(root, "SecretAccessKey");
	token = json_str(root, "Token");
	exp = json_str(root, "Expiration");
	if (code && strcmp(code, "Success") != 0) {
		/* Code is a word like "AssumeRoleUnauthorizedAccess". */
		snprintf(err, errlen, "role %s: Code %.64s", role, code);
		goto out;
	}
	if (!id || !*id || !secret || !*secret || !token || !exp) {
		snprintf(err, errlen,
			 "credentials of role %s lack AccessKeyId, "
			 "SecretAccessKey, Token or Expiration",
			 role);
		goto out;
	}
	expires = time_parse_rfc3339(exp);
	if (expires < 0) {
		snprintf(err, errlen, "credentials of role %s: bad Expiration",
			 role);
		goto out;
	}
	if (!fits(id, sizeof(out->access_key_id)) ||
	    !fits(secret, sizeof(out->secret_access_key)) ||
	    !fits(token, sizeof(out->session_token))) {
		snprintf(err, errlen, "credentials of role %s are too long",
			 role);
		goto out;
	}
	strcpy(out->access_key_id, id);
	strcpy(out->secret_access_key, secret);
	strcpy(out->session_token, token);
	out->expires = expires;
	snprintf(out->source, sizeof(out->source), "instance role %s", role);
	rc = 0;
out:
	json_decref(root);
	return rc;
}

/* The three requests of IMDSv2, all within IMDS_TOTAL_MS. */
static int imds_fetch(struct imds_state *m, struct aws_creds *out)
{
	double deadline = mono_now() + IMDS_TOTAL_MS / 1000.0;
	struct imds_body body = { .cap = IMDS_BODY_MAX };
	char hdr[IMDS_TOKEN_MAX + 64];
	char role[IMDS_ROLE_MAX + 1];
	char reason[CURL_ERROR_SIZE];
	BUF_AUTO url = BUF_INIT;
	long code = 0;
	int rc;

	body.data = xmalloc(body.cap);
	body.data[0] = '\0';
	hdr[0] = '\0';

	buf_printf(&url, "%s" IMDS_TOKEN_PATH, m->base);
	rc = imds_request(
		m->curl, "PUT", buf_str(&url),
		"x-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL,
		deadline, &body, &code, reason, sizeof(reason));
	if (rc < 0)
		goto unreachable;
	if (code != 200 || !one_word(body.data, IMDS_TOKEN_MAX, "+/=_-.")) {
		snprintf(
			m->err, sizeof(m->err),
			"instance metadata at %s gave no session token (HTTP %ld)",
			m->base, code);
		rc = -EPROTO;
		goto out;
	}
	snprintf(hdr, sizeof(hdr), "x-aws-ec2-metadata-token: %s", body.data);

	buf_truncate(&url, 0);
	buf_printf(&url, "%s" IMDS_ROLE_PATH, m->base);
	rc = imds_request(m->curl, "GET", buf_str(&url), hdr, deadline, &body,
			  &code, reason, sizeof(reason));
	if (rc < 0)
		goto unreachable;
	/* One role per instance profile; the list has it on its first line. */
	body.data[strcspn(body.data, "\n")] = '\0';
	if (code != 200 || !one_word(body.data, IMDS_ROLE_MAX, "+=,.@_-")) {
		snprintf(
			m->err, sizeof(m->err),
			code == 404 || code == 200
				? "no instance role at %s (HTTP %ld)"
				: "instance metadata at %s: role list answered HTTP %ld",
			m->base, code);
		rc = -EPROTO;
		goto out;
	}
	snprintf(role, sizeof(role), "%s", body.data);

	buf_printf(&url, "%s", role);
	rc = imds_request(m->curl, "GET", buf_str(&url), hdr, deadline, &body,
			  &code, reason, sizeof(reason));
	if (rc < 0)
		goto unreachable;
	if (code != 200) {
		snprintf(m->err, sizeof(m->err),
			 "instance role %s at %s: HTTP %ld", role, m->base,
			 code);
		rc = -EPROTO;
		goto out;
	}
	rc = imds_parse_creds(&body, role, out, reason, sizeof(reason));
	if (rc < 0)
		snprintf(m->err, sizeof(m->err), "instance metadata at %s: %s",
			 m->base, reason);
	goto out;

unreachable:
	snprintf(m->err, sizeof(m->err),
		 "instance metadata unreachable (%s: %s)", m->base, reason);
out:
	OPENSSL_cleanse(hdr, sizeof(hdr));
	OPENSSL_cleanse(body.data, body.cap);
	free(body.data);
	return rc;
}

/* The endpoint for this get; a change of it forgets what was learnt from
 * the old one (its credentials and its failure). */
static void imds_use_base(struct imds_state *m)
{
	const char *env = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	struct buf b = BUF_INIT;

	buf_adds(&b, env && *env ? env : IMDS_DEFAULT_BASE);
	while (b.len > 1 && b.data[b.len - 1] == '/')
		buf_truncate(&b, b.len - 1);
	if (m->base && strcmp(m->base, buf_str(&b)) == 0) {
		buf_free(&b);
		return;
	}
	free(m->base);
	m->base = buf_steal(&b);
	m->have = false;
	aws_creds_wipe(&m->creds);
	m->retry_after = 0;
}

static bool imds_disabled(void)
{
	const char *v = getenv("AWS_EC2_METADATA_DISABLED");

	return v && strcasecmp(v, "true") == 0;
}

static enum step from_imds(struct aws_cred_chain *c, struct aws_creds *out,
			   struct buf *why)
{
	struct imds_state *m = &c->imds;
	double now = time_now(), mono = mono_now();
	/* Still usable if a refresh fails: not expired yet. */
	bool usable;

	if (imds_disabled()) {
		why_add(why,
			"instance metadata disabled (AWS_EC2_METADATA_DISABLED=true)");
		return STEP_NEXT;
	}
	imds_use_base(m);
	usable = m->have && now < m->creds.expires;
	if (m->have && now < m->creds.expires - IMDS_REFRESH_S)
		goto cached;
	if (mono < m->retry_after) {
		if (usable)
			goto cached;
		why_add(why, "%s; not tried again for %.0f s", m->err,
			m->retry_after - mono);
		return STEP_NEXT;
	}
	if (!m->curl)
		m->curl = curl_easy_init();
	if (!m->curl) {
		snprintf(m->err, sizeof(m->err), "libcurl could not start");
	} else if (imds_fetch(m, &m->creds) == 0) {
		m->have = true;
		m->retry_after = 0;
		goto cached;
	}
	m->retry_after = mono + IMDS_RETRY_S;
	log_debug("aws: %s", m->err);
	if (usable) {
		log_warn(
			"aws: %s; using the instance credentials held until they expire",
			m->err);
		goto cached;
	}
	m->have = false;
	aws_creds_wipe(&m->creds);
	why_add(why, "%s", m->err);
	return STEP_NEXT;
cached:
	*out = m->creds;
	return STEP_FOUND;
}

/* ---- the interface ---------------------------------------------------- */

struct aws_cred_chain *aws_creds_open(const char *profile)
{
	struct aws_cred_chain *c = xcalloc(1, sizeof(*c));
	const char *env = getenv("AWS_PROFILE");
	char *home = home_dir();

	c->named = profile && *profile;
	if (c->named)
		c->profile = xstrdup(profile);
	else
		c->profile = xstrdup(env && *env ? env : "default");
	cred_file_init(
		&c->files[CREDENTIALS_FILE], CREDENTIALS_FILE,
		file_path("AWS_SHARED_CREDENTIALS_FILE", home, "credentials"));
	cred_file_init(&c->files[CONFIG_FILE], CONFIG_FILE,
		       file_path("AWS_CONFIG_FILE", home, "config"));
	free(home);
	return c;
}

int aws_creds_get(struct aws_cred_chain *c, struct aws_creds *out, char *msg,
		  size_t len)
{
	BUF_AUTO why = BUF_INIT;
	enum step s;

	aws_creds_wipe(out);
	refresh_files(c);
	s = from_env(c, out, &why);
	if (s == STEP_NEXT)
		s = from_files(c, out, &why);
	if (s == STEP_NEXT)
		s = from_imds(c, out, &why);
	if (s != STEP_FOUND) {
		aws_creds_wipe(out);
		if (msg && len)
			snprintf(msg, len, "no AWS credentials: %s",
				 buf_str(&why));
		return -ENOKEY;
	}
	if (msg && len)
		msg[0] = '\0';
	if (strcmp(out->source, c->last_source) != 0) {
		log_info("aws: credentials from %s", out->source);
		snprintf(c->last_source, sizeof(c->last_source), "%s",
			 out->source);
	}
	return 0;
}

void aws_creds_profile_region(struct aws_cred_chain *c, char *out, size_t len)
{
	const struct profile_vals *v = &c->files[CONFIG_FILE].vals;

	if (!len)
		return;
	refresh_files(c);
	snprintf(out, len, "%s", v->region);
}

void aws_creds_close(struct aws_cred_chain *c)
{
	if (!c)
		return;
	for (int i = 0; i < 2; i++) {
		OPENSSL_cleanse(&c->files[i].vals, sizeof(c->files[i].vals));
		file_watch_free(&c->files[i].watch);
	}
	if (c->imds.curl)
		curl_easy_cleanup(c->imds.curl);
	aws_creds_wipe(&c->imds.creds);
	free(c->imds.base);
	free(c->profile);
	free(c);
}

void aws_creds_wipe(struct aws_creds *creds)
{
	OPENSSL_cleanse(creds, sizeof(*creds));
	/* Older OpenSSL cleanses with a pattern, not zeros: zero it too, so
	 * a wiped struct reads as empty strings ("" source, no expiry). */
	memset(creds, 0, sizeof(*creds));
}
