// SPDX-License-Identifier: MIT
/* Unit tests of the text helpers: escaping for line-oriented files. */
#include "tests/unit/check.h"
#include "util/buf.h"
#include "util/text.h"

static char *escaped(const char *s, size_t n, unsigned flags)
{
	struct buf b = BUF_INIT;

	text_escape(&b, s, n, flags);
	return buf_steal(&b);
}

#define ESCAPED_IS(s, flags, want)                               \
	do {                                                     \
		char *t_ = escaped((s), sizeof(s) - 1, (flags)); \
		CHECK_STR(t_, (want));                           \
		free(t_);                                        \
	} while (0)

static void test_escape(void)
{
	ESCAPED_IS("", 0, "");
	ESCAPED_IS("plain text, é and 日本 stay", 0,
		   "plain text, é and 日本 stay");
	ESCAPED_IS("a\nstate: ready", 0, "a\\nstate: ready");
	ESCAPED_IS("cr\rtab\tesc\x1b[31mdel\x7f", 0,
		   "cr\\rtab\\tesc\\x1b[31mdel\\x7f");
	ESCAPED_IS("nul\0end", 0, "nul\\x00end");
	/* C1 controls (U+009B is a CSI) and bytes that are not UTF-8. */
	ESCAPED_IS("csi\xc2\x9b"
		   "2J nbsp\xc2\xa0",
		   0, "csi\\xc2\\x9b2J nbsp\xc2\xa0");
	ESCAPED_IS("bad\xff\xc3 cut\xe6\x97", 0, "bad\\xff\\xc3 cut\\xe6\\x97");
	/* Backslashes stay: escaping twice changes nothing. */
	ESCAPED_IS("a\\nb \\x1b", 0, "a\\nb \\x1b");
	/* Multi-line text keeps its line ends, nothing else. */
	ESCAPED_IS("one\ntwo\r\n", TEXT_KEEP_NEWLINE, "one\ntwo\\r\n");
	/* One word of a line: spaces too. */
	ESCAPED_IS("my cmd\n", TEXT_ESCAPE_SPACE, "my\\x20cmd\\n");
}

#define SHOWN_IS(url, want)                                      \
	do {                                                     \
		char out_[256];                                  \
		url_without_password((url), out_, sizeof(out_)); \
		CHECK_STR(out_, (want));                         \
	} while (0)

static void test_url_without_password(void)
{
	SHOWN_IS("sqlite:/var/lib/infrafs/state.db",
		 "sqlite:/var/lib/infrafs/state.db");
	SHOWN_IS("postgresql://ifs@db:5432/infra",
		 "postgresql://ifs@db:5432/infra");
	SHOWN_IS("postgresql://ifs:s3cret@db:5432/infra?sslmode=require",
		 "postgresql://ifs:***@db:5432/infra?sslmode=require");
	/* An '@' in the password is the last one before the host. */
	SHOWN_IS("postgres://ifs:a@b:c@db/infra",
		 "postgres://ifs:***@db/infra");
	SHOWN_IS("postgresql:///infra?user=ifs&password=s3cret&sslmode=off",
		 "postgresql:///infra?user=ifs&password=***&sslmode=off");
	SHOWN_IS("postgresql://db/infra?password=a&password=b",
		 "postgresql://db/infra?password=***&password=***");
	/* A host port with no user part is not a password. */
	SHOWN_IS("postgresql://db:5432/infra", "postgresql://db:5432/infra");
}

int main(void)
{
	test_escape();
	test_url_without_password();
	return check_report("text");
}
