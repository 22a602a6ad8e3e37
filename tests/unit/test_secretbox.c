// SPDX-License-Identifier: MIT
/* Sealing, opening, tampering, and the key file's rules. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp, memmem */
#endif
#include "store/secretbox.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEALED_EXTRA 28 /* 12-byte nonce + 16-byte tag */

static char tmpdir[] = "/tmp/test_secretbox.XXXXXX";

static char *tmp_path(const char *name)
{
	struct buf p = BUF_INIT;

	buf_printf(&p, "%s/%s", tmpdir, name);
	return buf_steal(&p);
}

static void test_key(struct secret_key *key, unsigned char seed)
{
	for (int i = 0; i < SECRET_KEY_BYTES; i++)
		key->bytes[i] = (unsigned char)(seed + 7 * i);
}

static int open_str(const struct secret_key *key, const struct buf *sealed,
		    const char *aad, char **plain, size_t *len)
{
	return secret_open(key, sealed->data, sealed->len, aad, strlen(aad),
			   plain, len);
}

static void test_round_trip(void)
{
	struct secret_key key;
	BUF_AUTO sealed = BUF_INIT;
	char *plain = NULL;
	size_t len = 0;

	test_key(&key, 1);
	CHECK_INT(secret_seal(&key, "hunter2", 7, "prod/db", 7, &sealed), 0);
	CHECK_INT(sealed.len, 7 + SEALED_EXTRA);
	CHECK(memmem(sealed.data, sealed.len, "hunter2", 7) == NULL);
	CHECK_INT(open_str(&key, &sealed, "prod/db", &plain, &len), 0);
	CHECK_INT(len, 7);
	CHECK_STR(plain, "hunter2");
	secret_wipe_free(plain, len);
}

static void test_empty_and_appended(void)
{
	struct secret_key key;
	BUF_AUTO sealed = BUF_INIT;
	char *plain = NULL;
	size_t len = 1;

	test_key(&key, 2);
	buf_adds(&sealed, "prefix");
	CHECK_INT(secret_seal(&key, NULL, 0, NULL, 0, &sealed), 0);
	CHECK_INT(sealed.len, 6 + SEALED_EXTRA);
	CHECK(memcmp(sealed.data, "prefix", 6) == 0);
	CHECK_INT(secret_open(&key, sealed.data + 6, sealed.len - 6, NULL, 0,
			      &plain, &len),
		  0);
	CHECK_INT(len, 0);
	CHECK_STR(plain, "");
	secret_wipe_free(plain, len);
}

static void test_tamper(void)
{
	static const size_t where[] = { 0, 11, 12, 27, 28, 43 };
	struct secret_key key;
	BUF_AUTO sealed = BUF_INIT;

	test_key(&key, 3);
	CHECK_INT(
		secret_seal(&key, "0123456789abcdef", 16, "env/x", 5, &sealed),
		0);
	/* nonce, ciphertext and tag: one bit flipped in each spot */
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		char *plain = (char *)"untouched";
		size_t len = 99;

		sealed.data[where[i]] ^= 0x10;
		CHECK_INT(open_str(&key, &sealed, "env/x", &plain, &len),
			  -EBADMSG);
		CHECK(plain == NULL);
		CHECK_INT(len, 0);
		sealed.data[where[i]] ^= 0x10;
	}
}

static void test_wrong_aad_key_length(void)
{
	struct secret_key key, other;
	BUF_AUTO sealed = BUF_INIT;
	char *plain = NULL;
	size_t len = 0;

	test_key(&key, 4);
	test_key(&other, 5);
	CHECK_INT(secret_seal(&key, "v", 1, "prod/a", 6, &sealed), 0);
	CHECK_INT(open_str(&key, &sealed, "prod/b", &plain, &len), -EBADMSG);
	CHECK_INT(open_str(&key, &sealed, "", &plain, &len), -EBADMSG);
	CHECK_INT(open_str(&other, &sealed, "prod/a", &plain, &len), -EBADMSG);
	CHECK_INT(secret_open(&key, sealed.data, SEALED_EXTRA - 1, "prod/a", 6,
			      &plain, &len),
		  -EBADMSG);
	CHECK_INT(secret_open(&key, sealed.data, sealed.len - 1, "prod/a", 6,
			      &plain, &len),
		  -EBADMSG);
	CHECK(plain == NULL);
}

static void test_nonce_differs(void)
{
	struct secret_key key;
	BUF_AUTO s1 = BUF_INIT;
	BUF_AUTO s2 = BUF_INIT;

	test_key(&key, 6);
	CHECK_INT(secret_seal(&key, "same", 4, "a", 1, &s1), 0);
	CHECK_INT(secret_seal(&key, "same", 4, "a", 1, &s2), 0);
	CHECK_INT(s1.len, s2.len);
	CHECK(memcmp(s1.data, s2.data, 12) != 0);
	CHECK(memcmp(s1.data, s2.data, s1.len) != 0);
}

static void test_alloc(void)
{
	unsigned char *p = secret_alloc(10000);
	size_t zero = 0;

	CHECK(p != NULL);
	for (size_t i = 0; i < 10000; i++)
		zero += p[i] == 0;
	CHECK_INT(zero, 10000);
	memset(p, 0xa5, 10000);
	secret_wipe_free(p, 10000);
	secret_wipe_free(NULL, 0);
	p = secret_alloc(0);
	CHECK(p != NULL);
	secret_wipe_free(p, 0);
}

static void write_file(const char *path, const void *data, size_t len,
		       mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd) != 0) {
		perror(path);
		exit(2);
	}
	chmod(path, mode);
}

static void test_key_create_and_reload(void)
{
	AUTOFREE char *dir = tmp_path("keys");
	AUTOFREE char *path = tmp_path("keys/sub/key");
	struct secret_key k1, k2;
	char err[256];
	struct stat st;

	CHECK_INT(secret_key_load(path, true, &k1, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_INT(stat(path, &st), 0);
	CHECK(S_ISREG(st.st_mode));
	CHECK_INT(st.st_mode & 07777, 0600);
	CHECK_INT(st.st_size, SECRET_KEY_BYTES);
	CHECK_INT(stat(dir, &st), 0);
	CHECK_INT(st.st_mode & 07777, 0700);
	CHECK_INT(secret_key_load(path, false, &k2, err, sizeof(err)), 0);
	CHECK(memcmp(&k1, &k2, sizeof(k1)) == 0);
	CHECK_INT(secret_key_load(path, true, &k2, err, sizeof(err)), 0);
	CHECK(memcmp(&k1, &k2, sizeof(k1)) == 0);
	CHECK(memmem(err, strlen(err), k1.bytes, 4) == NULL);
}

static void test_key_refused(void)
{
	AUTOFREE char *path = tmp_path("refused");
	AUTOFREE char *want = NULL;
	unsigned char bytes[SECRET_KEY_BYTES] = { 1, 2, 3 };
	struct secret_key key;
	char err[256];
	struct buf w = BUF_INIT;

	write_file(path, bytes, sizeof(bytes), 0640);
	CHECK_INT(secret_key_load(path, true, &key, err, sizeof(err)), -EPERM);
	buf_printf(
		&w,
		"key file %s has mode 0640; it must be readable by its owner only (chmod 600)",
		path);
	want = buf_steal(&w);
	CHECK_STR(err, want);

	write_file(path, bytes, 31, 0600);
	CHECK_INT(secret_key_load(path, true, &key, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, path) != NULL);
	CHECK(strstr(err, "holds 31 bytes, expected 32") != NULL);
	CHECK(memmem(err, strlen(err), bytes, 3) == NULL);
}

static void test_key_missing(void)
{
	AUTOFREE char *path = tmp_path("missing");
	struct secret_key key;
	char err[256];
	struct stat st;

	CHECK_INT(secret_key_load(path, false, &key, err, sizeof(err)),
		  -ENOENT);
	CHECK(strstr(err, path) != NULL);
	CHECK(strstr(err, "secrets cannot be read") != NULL);
	CHECK(stat(path, &st) < 0 && errno == ENOENT);
}

/* A link planted at the key path must not make us write through it. */
static void test_key_dangling_link(void)
{
	AUTOFREE char *link = tmp_path("link");
	AUTOFREE char *target = tmp_path("target");
	struct secret_key key;
	char err[256];
	struct stat st;

	CHECK_INT(symlink(target, link), 0);
	CHECK(secret_key_load(link, true, &key, err, sizeof(err)) < 0);
	CHECK(lstat(target, &st) < 0 && errno == ENOENT);
}

static void cleanup(void)
{
	static const char *const files[] = { "keys/sub/key", "refused",
					     "link" };
	static const char *const dirs[] = { "keys/sub", "keys", "" };

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		AUTOFREE char *p = tmp_path(files[i]);

		unlink(p);
	}
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		AUTOFREE char *p = tmp_path(dirs[i]);

		rmdir(p);
	}
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	test_round_trip();
	test_empty_and_appended();
	test_tamper();
	test_wrong_aad_key_length();
	test_nonce_differs();
	test_alloc();
	test_key_create_and_reload();
	test_key_refused();
	test_key_missing();
	test_key_dangling_link();
	cleanup();
	return check_report("secretbox");
}
