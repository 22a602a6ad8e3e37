// SPDX-License-Identifier: MIT
/*
 * The AWS credentials chain: the order of its sources (environment,
 * credentials file, config file, instance role), the ini dialect of the
 * two files, the messages when nothing is found (never a secret in them),
 * files rotated under a running chain (renamed over, rewritten in place,
 * made after open, reached through a symbolic link), and IMDSv2 against a
 * small HTTP server run by this test on 127.0.0.1: the token handshake,
 * fetching again near Expiration, the 60 s back-off and the time-outs.
 *
 * Every test gets a fresh HOME under one mkdtemp folder, and the AWS_*
 * variables are cleared before each, so the user's own ~/.aws and
 * environment never leak in. IMDS is disabled except where a test
 * points it at its own server.
 */
#include "providers/aws/aws.h"
#include "check.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MSG_LEN 1024

static char tmp_dir[] = "/tmp/infrafs-test-awscreds-XXXXXX";
static char home[4200];

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

/* ---- homes and files -------------------------------------------------- */

/* home/rel, in one of a few rotating buffers. */
static const char *at(const char *rel)
{
	static char path[8][4400];
	static int next;
	char *p = path[next++ % 8];

	snprintf(p, sizeof(path[0]), "%s/%s", home, rel);
	return p;
}

/* A new, empty HOME with no AWS_* variables but IMDS disabled. */
static void fresh_home(void)
{
	static const char *const vars[] = {
		"AWS_ACCESS_KEY_ID",
		"AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN",
		"AWS_SECURITY_TOKEN",
		"AWS_PROFILE",
		"AWS_DEFAULT_PROFILE",
		"AWS_SHARED_CREDENTIALS_FILE",
		"AWS_CONFIG_FILE",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT",
		"http_proxy",
		"HTTP_PROXY",
		"ALL_PROXY",
		"all_proxy",
	};
	static int seq;

	snprintf(home, sizeof(home), "%s/home%d", tmp_dir, ++seq);
	if (mkdir(home, 0700) < 0)
		die(home);
	setenv("HOME", home, 1);
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
}

static void make_dir(const char *path)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		die(path);
}

static void put(int fd, const char *text, const char *path)
{
	size_t len = strlen(text);

	if (write(fd, text, len) != (ssize_t)len)
		die(path);
}

/* Writes in place: the same inode, truncated then written. */
static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0)
		die(path);
	put(fd, text, path);
	close(fd);
}

/* Writes a new file beside path and renames it over, as rotation tools
 * and editors do. */
static void replace_file(const char *path, const char *text)
{
	char tmp[4500];

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	write_file(tmp, text);
	if (rename(tmp, path) < 0)
		die(tmp);
}

static void write_aws(const char *leaf, const char *text)
{
	char rel[64];

	make_dir(at(".aws"));
	snprintf(rel, sizeof(rel), ".aws/%s", leaf);
	write_file(at(rel), text);
}

/*
 * Whether an inotify fd of this process watches folder dir: each watch is
 * listed in /proc/self/fdinfo/FD as "inotify wd:N ino:HEX sdev:HEX ...".
 */
static bool folder_watched(const char *dir)
{
	struct stat st;
	struct dirent *e;
	bool found = false;
	DIR *d;

	if (stat(dir, &st) < 0)
		return false;
	d = opendir("/proc/self/fd");
	if (!d)
		die("/proc/self/fd");
	while (!found && (e = readdir(d))) {
		char link[300], target[64], line[512];
		ssize_t n;
		FILE *f;

		snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, "anon_inode:inotify") != 0)
			continue;
		snprintf(link, sizeof(link), "/proc/self/fdinfo/%s", e->d_name);
		f = fopen(link, "r");
		if (!f)
			continue;
		while (!found && fgets(line, sizeof(line), f)) {
			const char *p = strstr(line, " ino:");
			unsigned long ino;

			if (p && sscanf(p, " ino:%lx", &ino) == 1 &&
			    ino == (unsigned long)st.st_ino)
				found = true;
		}
		fclose(f);
	}
	closedir(d);
	return found;
}

/* ---- sources and their order ------------------------------------------ */

static void test_env_wins(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN], want[4600];
	struct aws_cred_chain *c;

	fresh_home();
	write_aws("credentials", "[default]\n"
				 "aws_access_key_id = AKIAFILE\n"
				 "aws_secret_access_key = filesecret\n");
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
	c = aws_creds_open(NULL);

	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAENV");
	CHECK_STR(cr.secret_access_key, "envsecret");
	CHECK_STR(cr.session_token, "");
	CHECK_STR(cr.source, "environment");
	CHECK(cr.expires == 0);
	CHECK_STR(msg, "");

	/* The environment is read at each get. */
	setenv("AWS_SESSION_TOKEN", "envtoken", 1);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.session_token, "envtoken");

	/* A key without its secret stops the chain, as in the CLI. */
	unsetenv("AWS_SECRET_ACCESS_KEY");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "AWS_SECRET_ACCESS_KEY");
	CHECK_LACKS(msg, "AKIAENV");
	CHECK_LACKS(msg, "envtoken");
	CHECK_STR(cr.access_key_id, "");

	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SESSION_TOKEN");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAFILE");
	snprintf(want, sizeof(want), "profile default in %s",
		 at(".aws/credentials"));
	CHECK_STR(cr.source, want);
	aws_creds_close(c);
}

static void test_named_skips_env(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN], want[4600];
	struct aws_cred_chain *c;

	fresh_home();
	write_aws("credentials", "[ci]\n"
				 "aws_access_key_id = AKIACI\n"
				 "aws_secret_access_key = cisecret\n");
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);

	c = aws_creds_open("ci");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIACI");
	CHECK_STR(cr.secret_access_key, "cisecret");
	snprintf(want, sizeof(want), "profile ci in %s",
		 at(".aws/credentials"));
	CHECK_STR(cr.source, want);
	aws_creds_close(c);

	/* Named but absent: not the environment's keys either. */
	c = aws_creds_open("nope");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "AWS_ACCESS_KEY_ID ignored");
	CHECK_HAS(msg, "profile \"nope\" not in");
	CHECK_LACKS(msg, "envsecret");
	CHECK_LACKS(msg, "cisecret");
	aws_creds_close(c);

	/* "" is no name: the environment is used. */
	c = aws_creds_open("");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.source, "environment");
	aws_creds_close(c);
}

static void test_aws_profile(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN];
	struct aws_cred_chain *c;

	fresh_home();
	write_aws("credentials", "[default]\n"
				 "aws_access_key_id = AKIADEFAULT\n"
				 "aws_secret_access_key = defaultsecret\n"
				 "[ci]\n"
				 "aws_access_key_id = AKIACI\n"
				 "aws_secret_access_key = cisecret\n");
	setenv("AWS_PROFILE", "ci", 1);
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIACI");

	/* AWS_PROFILE is not --profile: the environment's keys still win. */
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAENV");
	aws_creds_close(c);

	/* The argument beats AWS_PROFILE. */
	c = aws_creds_open("default");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIADEFAULT");
	aws_creds_close(c);
}

static void test_config_profile(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN], want[4600];
	struct aws_cred_chain *c;

	fresh_home();
	write_aws("config", "[x]\n"
			    "aws_access_key_id = AKIABARE\n"
			    "aws_secret_access_key = baresecret\n"
			    "[profile x]\n"
			    "aws_access_key_id = AKIACONFIGX\n"
			    "aws_secret_access_key = configsecret\n"
			    "[profile \"two words\"]\n"
			    "aws_access_key_id = AKIAQUOTED\n"
			    "aws_secret_access_key = quotedsecret\n"
			    "[default]\n"
			    "aws_access_key_id = AKIACONFIGDEFAULT\n"
			    "aws_secret_access_key = cdsecret\n");

	/* [x] is not a profile in the config file; [profile x] is. */
	c = aws_creds_open("x");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIACONFIGX");
	snprintf(want, sizeof(want), "profile x in %s", at(".aws/config"));
	CHECK_STR(cr.source, want);
	aws_creds_close(c);

	c = aws_creds_open("two words");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAQUOTED");
	aws_creds_close(c);

	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIACONFIGDEFAULT");
	aws_creds_close(c);

	/* [profile default] is accepted too. */
	fresh_home();
	write_aws("config", "[profile default]\n"
			    "aws_access_key_id = AKIAPROFILEDEFAULT\n"
			    "aws_secret_access_key = pdsecret\n");
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAPROFILEDEFAULT");
	aws_creds_close(c);

	/* AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE move the files. */
	fresh_home();
	make_dir(at("elsewhere"));
	write_file(at("elsewhere/cfg"),
		   "[profile moved]\n"
		   "aws_access_key_id = AKIAMOVED\n"
		   "aws_secret_access_key = movedsecret\n");
	setenv("AWS_CONFIG_FILE", at("elsewhere/cfg"), 1);
	setenv("AWS_SHARED_CREDENTIALS_FILE", at("elsewhere/creds"), 1);
	c = aws_creds_open("moved");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAMOVED");
	aws_creds_close(c);
}

static void test_creds_beat_config(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN], want[4600];
	struct aws_cred_chain *c;

	fresh_home();
	write_aws("credentials", "[ci]\n"
				 "aws_access_key_id = AKIACREDS\n"
				 "aws_secret_access_key = credssecret\n"
				 "[keyless]\n"
				 "region = ap-south-1\n");
	write_aws("config", "[profile ci]\n"
			    "aws_access_key_id = AKIACONFIG\n"
			    "aws_secret_access_key = configsecret\n"
			    "[profile keyless]\n"
			    "aws_access_key_id = AKIAKEYLESS\n"
			    "aws_secret_access_key = keylesssecret\n");
	c = aws_creds_open("ci");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIACREDS");
	CHECK_STR(cr.secret_access_key, "credssecret");
	aws_creds_close(c);

	/* A section without keys in the credentials file: on to config. */
	c = aws_creds_open("keyless");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAKEYLESS");
	snprintf(want, sizeof(want), "profile keyless in %s",
		 at(".aws/config"));
	CHECK_STR(cr.source, want);
	aws_creds_close(c);
}

static void test_region(void)
{
	struct aws_cred_chain *c;
	char region[64];

	fresh_home();
	write_aws("credentials", "[ci]\n"
				 "region = not-from-credentials\n");
	write_aws("config", "[default]\n"
			    "region = us-east-1\n"
			    "[profile ci]\n"
			    "s3 =\n"
			    "    region = nested-wrong\n"
			    "    max_concurrent_requests = 20\n"
			    "region = eu-west-1\n"
			    "output = json\n");
	c = aws_creds_open("ci");
	aws_creds_profile_region(c, region, sizeof(region));
	CHECK_STR(region, "eu-west-1");

	/* Read again after a rotation, like the keys. */
	replace_file(at(".aws/config"),
		     "[profile ci]\nregion = eu-central-1\n");
	aws_creds_profile_region(c, region, sizeof(region));
	CHECK_STR(region, "eu-central-1");
	aws_creds_close(c);

	c = aws_creds_open(NULL);
	aws_creds_profile_region(c, region, sizeof(region));
	CHECK_STR(region, "");
	aws_creds_close(c);

	c = aws_creds_open("nothere");
	aws_creds_profile_region(c, region, sizeof(region));
	CHECK_STR(region, "");
	aws_creds_close(c);
}

static void test_ini_dialect(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN];
	struct aws_cred_chain *c;

	fresh_home();
	write_aws("credentials",
		  "# a comment line\r\n"
		  "; another = comment\r\n"
		  "[other]\r\n"
		  "aws_access_key_id = AKIAOTHER\r\n"
		  "\r\n"
		  "[ tok ]\r\n"
		  "AWS_Access_Key_Id=AKIATOK\r\n"
		  "aws_secret_access_key:   tok/secret+with=signs   \r\n"
		  "unknown_key = whatever\r\n"
		  "aws_session_token = FwoGZXIvYXdzE//token==\r\n"
		  "aws_security_token = legacy-loses\r\n"
		  "[legacy]\n"
		  "aws_access_key_id = AKIALEGACY\n"
		  "aws_secret_access_key = legacysecret\n"
		  "aws_security_token = legacytoken\n");
	c = aws_creds_open("tok");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIATOK");
	CHECK_STR(cr.secret_access_key, "tok/secret+with=signs");
	CHECK_STR(cr.session_token, "FwoGZXIvYXdzE//token==");
	CHECK(cr.expires == 0);
	aws_creds_close(c);

	c = aws_creds_open("legacy");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.session_token, "legacytoken");
	aws_creds_close(c);
}

static void test_partial(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN];
	struct aws_cred_chain *c;

	fresh_home();
	write_aws("credentials", "[ci]\n"
				 "aws_access_key_id = AKIAHALF\n");
	write_aws("config", "[profile ci]\n"
			    "aws_access_key_id = AKIACONFIG\n"
			    "aws_secret_access_key = configsecret\n"
			    "[profile cfg]\n"
			    "aws_access_key_id = AKIACFGHALF\n"
			    "aws_session_token = cfgtoken\n");
	/* Stops at the broken section: the config file's keys for the same
	 * profile are not used, as the CLI does not use them. */
	c = aws_creds_open("ci");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "[ci]");
	CHECK_HAS(msg, at(".aws/credentials"));
	CHECK_HAS(msg, "no aws_secret_access_key");
	CHECK_LACKS(msg, "instance metadata");
	CHECK_LACKS(msg, "configsecret");
	CHECK_STR(cr.access_key_id, "");
	aws_creds_close(c);

	c = aws_creds_open("cfg");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "[profile cfg]");
	CHECK_HAS(msg, at(".aws/config"));
	CHECK_HAS(msg, "no aws_secret_access_key");
	CHECK_LACKS(msg, "cfgtoken");
	aws_creds_close(c);
}

static void test_nokey_message(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN], want[9000];
	struct aws_cred_chain *c;

	fresh_home();
	setenv("AWS_PROFILE", "ci", 1);
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	snprintf(
		want, sizeof(want),
		"no AWS credentials: AWS_ACCESS_KEY_ID not set; "
		"profile \"ci\" not in %s (no such file) or %s (no such file); "
		"instance metadata disabled (AWS_EC2_METADATA_DISABLED=true)",
		at(".aws/credentials"), at(".aws/config"));
	CHECK_STR(msg, want);
	aws_creds_close(c);

	/* The files exist, with other profiles' secrets in them. */
	write_aws("credentials", "[default]\n"
				 "aws_access_key_id = AKIADEFAULT\n"
				 "aws_secret_access_key = SECRETDEFAULT\n"
				 "[assumer]\n"
				 "role_arn = arn:aws:iam::123456789012:role/x\n"
				 "source_profile = default\n");
	write_aws("config", "[default]\nregion = us-east-1\n");
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	snprintf(want, sizeof(want), "profile \"ci\" not in %s or %s;",
		 at(".aws/credentials"), at(".aws/config"));
	CHECK_HAS(msg, want);
	CHECK_LACKS(msg, "SECRETDEFAULT");
	CHECK_LACKS(msg, "AKIADEFAULT");
	aws_creds_close(c);

	/* Profiles this chain cannot use are named as such. */
	c = aws_creds_open("assumer");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "[assumer] in ");
	CHECK_HAS(msg, "has no aws_access_key_id (role_arn is not supported)");
	aws_creds_close(c);

	/* msg may be NULL. */
	c = aws_creds_open("assumer");
	CHECK_INT(aws_creds_get(c, &cr, NULL, 0), -ENOKEY);
	aws_creds_close(c);
}

/* ---- files changing under a chain ------------------------------------- */

static const char *creds_text(const char *key)
{
	static char text[256];

	snprintf(text, sizeof(text),
		 "[default]\naws_access_key_id = %s\n"
		 "aws_secret_access_key = s-%s\n",
		 key, key);
	return text;
}

static void test_rotation_rename(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN], key[32];
	struct aws_cred_chain *c;

	fresh_home();
	write_aws("credentials", creds_text("AKIAROTATE0"));
	c = aws_creds_open(NULL);
	CHECK(folder_watched(at(".aws")));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAROTATE0");
	for (int i = 1; i <= 3; i++) {
		snprintf(key, sizeof(key), "AKIAROTATE%d", i);
		replace_file(at(".aws/credentials"), creds_text(key));
		CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
		CHECK_STR(cr.access_key_id, key);
	}
	/* Deleted: gone from the chain too. */
	unlink(at(".aws/credentials"));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "(no such file)");
	aws_creds_close(c);
}

/*
 * Rewritten in place with a key of the same length, and the mtime put
 * back: inode, size and mtime are as before, so stat cannot see the
 * change and only the inotify watch can.
 */
static void rewrite_unseen_by_stat(const char *path, const char *text)
{
	struct stat before, after;
	struct timespec times[2];

	if (stat(path, &before) < 0)
		die(path);
	write_file(path, text);
	times[0] = before.st_atim;
	times[1] = before.st_mtim;
	if (utimensat(AT_FDCWD, path, times, 0) < 0)
		die(path);
	if (stat(path, &after) < 0)
		die(path);
	CHECK(after.st_ino == before.st_ino);
	CHECK(after.st_size == before.st_size);
	CHECK(after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
	      after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
}

static void test_rotation_in_place(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN];
	struct aws_cred_chain *c;

	fresh_home();
	write_aws("credentials", creds_text("AKIAINPLACE1"));
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAINPLACE1");

	rewrite_unseen_by_stat(at(".aws/credentials"),
			       creds_text("AKIAINPLACE2"));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAINPLACE2");
	CHECK_STR(cr.secret_access_key, "s-AKIAINPLACE2");

	/* A plain truncate and write of a different length. */
	write_file(at(".aws/credentials"), creds_text("AKIAINPLACE3LONGER"));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAINPLACE3LONGER");
	aws_creds_close(c);
}

/*
 * The file is a symbolic link into a folder that is not watched: the
 * stat check (which follows the link) is what sees the change.
 */
static void test_stat_fallback(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN];
	struct aws_cred_chain *c;

	fresh_home();
	make_dir(at("real"));
	make_dir(at(".aws"));
	write_file(at("real/credentials"), creds_text("AKIALINKED1"));
	if (symlink(at("real/credentials"), at(".aws/credentials")) < 0)
		die("symlink");
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIALINKED1");
	CHECK(!folder_watched(at("real")));
	write_file(at("real/credentials"), creds_text("AKIALINKED22"));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIALINKED22");
	aws_creds_close(c);
}

static void test_late_file(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN];
	struct aws_cred_chain *c;

	fresh_home();
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "(no such file)");

	/* The folder and the file come after open. */
	write_aws("credentials", creds_text("AKIALATE1"));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIALATE1");
	/* And from then on the folder is watched. */
	CHECK(folder_watched(at(".aws")));
	rewrite_unseen_by_stat(at(".aws/credentials"), creds_text("AKIALATE2"));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIALATE2");

	/* The folder removed and made again: watched again. */
	unlink(at(".aws/credentials"));
	rmdir(at(".aws"));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	write_aws("credentials", creds_text("AKIALATE3"));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIALATE3");
	CHECK(folder_watched(at(".aws")));
	rewrite_unseen_by_stat(at(".aws/credentials"), creds_text("AKIALATE4"));
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIALATE4");
	aws_creds_close(c);
}

/* ---- IMDSv2 against a server of our own -------------------------------- */

#define IMDS_TOKEN "TESTTOKEN-abc123=="

struct imds_server {
	int fd;
	int port;
	pthread_t thread;
	atomic_bool stop;
	/* What it answers. */
	atomic_int expires_in; /* seconds from now for Expiration */
	atomic_int role_status; /* 200, or 404 for "no role" */
	/* What it saw. */
	atomic_int puts, lists, fetches;
	atomic_int bad; /* requests without the headers IMDSv2 needs */
	atomic_int absolute; /* request lines with a full URL: a proxy's */
};

static void respond(int fd, int status, const char *body)
{
	char head[256];
	int n;

	n = snprintf(head, sizeof(head),
		     "HTTP/1.0 %d X\r\nContent-Type: text/plain\r\n"
		     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		     status, strlen(body));
	if (write(fd, head, (size_t)n) < 0 || write(fd, body, strlen(body)) < 0)
		return; /* the client gave up: nothing to do */
}

/* The request's head, up to the blank line. */
static bool read_head(int fd, char *req, size_t len)
{
	size_t n = 0;

	while (n < len - 1) {
		ssize_t r = read(fd, req + n, len - 1 - n);

		if (r <= 0)
			return false;
		n += (size_t)r;
		req[n] = '\0';
		if (strstr(req, "\r\n\r\n"))
			return true;
	}
	return false;
}

static void serve_one(struct imds_server *s, int fd)
{
	static const char role_path[] =
		"/latest/meta-data/iam/security-credentials/";
	char req[4096], body[1024], path[512], method[16], exp[32];
	bool has_token = false;
	time_t t;
	int n;

	if (!read_head(fd, req, sizeof(req)) ||
	    sscanf(req, "%15s %511s", method, path) != 2)
		return;
	if (path[0] != '/')
		s->absolute++;
	has_token = strcasestr(req, "\r\nx-aws-ec2-metadata-token: " IMDS_TOKEN
				    "\r\n") != NULL;
	if (strcmp(method, "PUT") == 0 &&
	    strcmp(path, "/latest/api/token") == 0) {
		s->puts++;
		if (!strcasestr(req,
				"\r\nx-aws-ec2-metadata-token-ttl-seconds: "
				"21600\r\n")) {
			s->bad++;
			respond(fd, 400, "");
			return;
		}
		respond(fd, 200, IMDS_TOKEN);
		return;
	}
	if (strcmp(method, "GET") != 0) {
		respond(fd, 405, "");
		return;
	}
	if (!has_token) {
		s->bad++;
		respond(fd, 401, "");
		return;
	}
	if (strcmp(path, role_path) == 0) {
		s->lists++;
		if (s->role_status != 200)
			respond(fd, s->role_status, "");
		else
			respond(fd, 200, "test-role\nsecond-line-ignored\n");
		return;
	}
	if (strncmp(path, role_path, sizeof(role_path) - 1) == 0 &&
	    strcmp(path + sizeof(role_path) - 1, "test-role") == 0) {
		n = ++s->fetches;
		t = time(NULL) + s->expires_in;
		strftime(exp, sizeof(exp), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
		snprintf(body, sizeof(body),
			 "{\"Code\":\"Success\","
			 "\"LastUpdated\":\"2026-11-28T11:00:00Z\","
			 "\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIAIMDS%d\","
			 "\"SecretAccessKey\":\"imdssecret%d\","
			 "\"Token\":\"imdstoken%d\",\"Expiration\":\"%s\"}",
			 n, n, n, exp);
		respond(fd, 200, body);
		return;
	}
	respond(fd, 404, "");
}

static void *serve(void *arg)
{
	struct imds_server *s = arg;
	struct pollfd p = { .fd = s->fd, .events = POLLIN };

	while (!s->stop) {
		int fd;

		if (poll(&p, 1, 50) <= 0)
			continue;
		fd = accept(s->fd, NULL, NULL);
		if (fd < 0)
			continue;
		serve_one(s, fd);
		close(fd);
	}
	return NULL;
}

/* A socket listening on 127.0.0.1 at a port of the kernel's choosing. */
static int listen_local(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &alen) < 0)
		die("listen");
	*port = ntohs(a.sin_port);
	return fd;
}

static void server_start(struct imds_server *s)
{
	memset(s, 0, sizeof(*s));
	s->fd = listen_local(&s->port);
	s->expires_in = 60;
	s->role_status = 200;
	if (pthread_create(&s->thread, NULL, serve, s) != 0)
		die("pthread_create");
}

static void server_stop(struct imds_server *s)
{
	s->stop = true;
	pthread_join(s->thread, NULL);
	close(s->fd);
}

static void point_imds_at(int port)
{
	char url[64];

	/* The trailing "/" is dropped by the chain. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
	setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url, 1);
	unsetenv("AWS_EC2_METADATA_DISABLED");
	/* IMDS must be reached directly, never through a proxy. */
	setenv("http_proxy", "http://127.0.0.1:1", 1);
	setenv("ALL_PROXY", "http://127.0.0.1:1", 1);
}

static void test_imds(void)
{
	struct imds_server s;
	struct aws_creds cr;
	char msg[MSG_LEN];
	struct aws_cred_chain *c;
	double t0;

	fresh_home();
	server_start(&s);
	point_imds_at(s.port);

	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "ASIAIMDS1");
	CHECK_STR(cr.secret_access_key, "imdssecret1");
	CHECK_STR(cr.session_token, "imdstoken1");
	CHECK_STR(cr.source, "instance role test-role");
	CHECK(cr.expires > (double)time(NULL) + 50 &&
	      cr.expires < (double)time(NULL) + 70);
	CHECK_INT(s.puts, 1);
	CHECK_INT(s.lists, 1);
	CHECK_INT(s.fetches, 1);
	CHECK_INT(s.bad, 0);
	CHECK_INT(s.absolute, 0);

	/* Expiration is a minute away, within the 5 minute margin: the
	 * next get fetches again. */
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "ASIAIMDS2");
	CHECK_INT(s.fetches, 2);
	CHECK_INT(s.puts, 2);

	/* An hour away: fetched once more, then served from the cache. */
	s.expires_in = 3600;
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "ASIAIMDS3");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "ASIAIMDS3");
	CHECK_INT(s.fetches, 3);
	CHECK_INT(s.bad, 0);
	aws_creds_close(c);

	/* Files come before IMDS. */
	write_aws("credentials", creds_text("AKIAFILEFIRST"));
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "AKIAFILEFIRST");
	CHECK_INT(s.puts, 3);
	aws_creds_close(c);
	unlink(at(".aws/credentials"));

	/* A profile named in config that no file has stops the chain: the
	 * instance's role is someone else's identity. */
	c = aws_creds_open("typo");
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "profile \"typo\" not in");
	CHECK_INT(s.puts, 3);
	aws_creds_close(c);

	/* No role attached: reported, then left alone for 60 s. */
	s.role_status = 404;
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "no instance role at http://127.0.0.1:");
	CHECK_INT(s.lists, 4);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	CHECK_HAS(msg, "no instance role at http://127.0.0.1:");
	CHECK_HAS(msg, "not tried again for");
	CHECK_INT(s.lists, 4);
	CHECK_INT(s.puts, 4);

	/* A different endpoint forgets the old one's failure. */
	s.role_status = 200;
	{
		char url[64];

		snprintf(url, sizeof(url), "http://localhost:%d", s.port);
		setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url, 1);
	}
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "ASIAIMDS4");
	aws_creds_close(c);

	/* Near Expiration with IMDS gone: the credentials held are used
	 * until they expire, and IMDS is not asked again for a while. */
	point_imds_at(s.port);
	s.expires_in = 120;
	c = aws_creds_open(NULL);
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "ASIAIMDS5");
	server_stop(&s);
	t0 = mono();
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "ASIAIMDS5");
	CHECK(mono() - t0 < 3.0);
	t0 = mono();
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), 0);
	CHECK_STR(cr.access_key_id, "ASIAIMDS5");
	CHECK(mono() - t0 < 0.5);
	aws_creds_close(c);
}

static void test_imds_unreachable(void)
{
	struct aws_creds cr;
	char msg[MSG_LEN], want[128];
	struct aws_cred_chain *c;
	double t0, first, second;
	int port, fd;

	/* A closed port: refused at once. */
	fresh_home();
	fd = listen_local(&port);
	close(fd);
	point_imds_at(port);
	c = aws_creds_open(NULL);
	t0 = mono();
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	first = mono() - t0;
	snprintf(want, sizeof(want),
		 "instance metadata unreachable (http://127.0.0.1:%d: ", port);
	CHECK_HAS(msg, want);
	CHECK_HAS(msg, "AWS_ACCESS_KEY_ID not set; profile \"default\" not in");
	CHECK(first < 3.0);
	t0 = mono();
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	second = mono() - t0;
	CHECK_HAS(msg, "not tried again for");
	CHECK(second < 0.5);
	aws_creds_close(c);

	/*
	 * A listener that never answers: the kernel completes the connect,
	 * and the 2 s total time-out ends the wait. The second get, inside
	 * the back-off, does not wait at all.
	 */
	fd = listen_local(&port);
	point_imds_at(port);
	c = aws_creds_open(NULL);
	t0 = mono();
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	first = mono() - t0;
	CHECK_HAS(msg, "instance metadata unreachable");
	CHECK(first >= 1.5 && first < 3.0);
	t0 = mono();
	CHECK_INT(aws_creds_get(c, &cr, msg, sizeof(msg)), -ENOKEY);
	second = mono() - t0;
	CHECK(second < 0.2);
	CHECK_HAS(msg, "not tried again for");
	aws_creds_close(c);
	close(fd);
}

static void test_wipe(void)
{
	struct aws_creds cr;

	memset(&cr, 'x', sizeof(cr));
	aws_creds_wipe(&cr);
	CHECK(memchr(&cr, 'x', sizeof(cr)) == NULL);
	aws_creds_close(NULL);
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int main(void)
{
	if (!mkdtemp(tmp_dir))
		die("mkdtemp");
	curl_global_init(CURL_GLOBAL_DEFAULT);

	test_env_wins();
	test_named_skips_env();
	test_aws_profile();
	test_config_profile();
	test_creds_beat_config();
	test_region();
	test_ini_dialect();
	test_partial();
	test_nokey_message();
	test_rotation_rename();
	test_rotation_in_place();
	test_stat_fallback();
	test_late_file();
	test_imds();
	test_imds_unreachable();
	test_wipe();

	curl_global_cleanup();
	nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return check_report("awscreds");
}
