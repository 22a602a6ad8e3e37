// SPDX-License-Identifier: MIT
/*
 * AES-256-GCM sealing of secret values, the key file that holds the key,
 * and locked, wiped buffers for the plain values.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MADV_DONTDUMP, GNU strerror_r */
#endif
#include "secretbox.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define NONCE_BYTES 12
#define TAG_BYTES 16
/* EVP counts bytes in int; longer values go through in pieces. */
#define EVP_CHUNK ((size_t)1 << 30)

__attribute__((format(printf, 4, 5))) static int
fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* Fails with the current errno, described after the message. */
static int fail_errno(char *err, size_t errlen, const char *what,
		      const char *path)
{
	int e = errno;
	char tmp[128];

	return fail(err, errlen, -e, "%s %s: %s", what, path,
		    strerror_r(e, tmp, sizeof(tmp)));
}

static int read_full(int fd, void *data, size_t len)
{
	char *p = data;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* shrank under us */
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The directory part of path: "." when it has none. */
static char *parent_dir(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

/* Makes a directory entry durable: fsync the directory holding it. */
static int sync_parent(const char *path, char *err, size_t errlen)
{
	AUTOFREE char *dir = parent_dir(path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return fail_errno(err, errlen, "cannot open directory", dir);
	if (fsync(fd) < 0)
		rc = fail_errno(err, errlen, "cannot sync directory", dir);
	close(fd);
	return rc;
}

static int make_dir(const char *dir, char *err, size_t errlen)
{
	if (mkdir(dir, 0700) == 0)
		return sync_parent(dir, err, errlen);
	if (errno == EEXIST)
		return 0;
	return fail_errno(err, errlen, "cannot create key directory", dir);
}

/* Creates the missing directories on the way to path, mode 0700. */
static int make_parents(const char *path, char *err, size_t errlen)
{
	AUTOFREE char *dir = parent_dir(path);
	int rc = 0;

	for (char *p = dir + 1; !rc; p++) {
		char c = *p;

		if (c != '/' && c != '\0')
			continue;
		*p = '\0';
		rc = make_dir(dir, err, errlen);
		*p = c;
		if (!c)
			break;
	}
	return rc;
}

static int check_key_file(int fd, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return fail_errno(err, errlen, "cannot stat key file", path);
	if (!S_ISREG(st.st_mode))
		return fail(err, errlen, -EINVAL,
			    "key file %s is not a regular file", path);
	if (st.st_mode & 077)
		return fail(
			err, errlen, -EPERM,
			"key file %s has mode %04o; it must be readable by its owner only (chmod 600)",
			path, (unsigned int)(st.st_mode & 07777));
	if (st.st_size != SECRET_KEY_BYTES)
		return fail(err, errlen, -EINVAL,
			    "key file %s holds %lld bytes, expected %d", path,
			    (long long)st.st_size, SECRET_KEY_BYTES);
	return 0;
}

static int load_existing(const char *path, struct secret_key *key, char *err,
			 size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	int rc;

	if (fd < 0 && errno == ENOENT)
		return fail(
			err, errlen, -ENOENT,
			"key file %s does not exist; secrets cannot be read without it",
			path);
	if (fd < 0)
		return fail_errno(err, errlen, "cannot open key file", path);
	rc = check_key_file(fd, path, err, errlen);
	if (!rc) {
		rc = read_full(fd, key->bytes, SECRET_KEY_BYTES);
		if (rc) {
			errno = -rc;
			fail_errno(err, errlen, "cannot read key file", path);
		}
	}
	close(fd);
	if (rc)
		OPENSSL_cleanse(key, sizeof(*key));
	return rc;
}

static int write_new_key(int fd, const char *path, struct secret_key *key,
			 char *err, size_t errlen)
{
	int rc;

	if (RAND_bytes(key->bytes, SECRET_KEY_BYTES) != 1)
		return fail(err, errlen, -EIO,
			    "cannot draw random bytes for key file %s", path);
	rc = write_full(fd, key->bytes, SECRET_KEY_BYTES);
	if (rc) {
		errno = -rc;
		return fail_errno(err, errlen, "cannot write key file", path);
	}
	if (fsync(fd) < 0)
		return fail_errno(err, errlen, "cannot sync key file", path);
	return 0;
}

/*
 * Makes a new key file. O_EXCL never replaces a file (or follows a link)
 * that appeared meanwhile: that comes back as -EEXIST for the caller to
 * load instead. A file left half written is removed, so no later start
 * finds a short key.
 */
static int create_key(const char *path, struct secret_key *key, char *err,
		      size_t errlen)
{
	int fd, rc;

	rc = make_parents(path, err, errlen);
	if (rc)
		return rc;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  0600);
	if (fd < 0 && errno == EEXIST)
		return -EEXIST;
	if (fd < 0)
		return fail_errno(err, errlen, "cannot create key file", path);
	rc = write_new_key(fd, path, key, err, errlen);
	if (close(fd) < 0 && !rc)
		rc = fail_errno(err, errlen, "cannot close key file", path);
	if (!rc)
		rc = sync_parent(path, err, errlen);
	if (rc) {
		unlink(path);
		OPENSSL_cleanse(key, sizeof(*key));
	}
	return rc;
}

int secret_key_load(const char *path, bool create, struct secret_key *key,
		    char *err, size_t errlen)
{
	int rc;

	if (err && errlen)
		err[0] = '\0';
	rc = load_existing(path, key, err, errlen);
	if (rc != -ENOENT || !create)
		return rc;
	rc = create_key(path, key, err, errlen);
	if (rc == -EEXIST)
		rc = load_existing(path, key, err, errlen);
	if (!rc && err && errlen)
		err[0] =
			'\0'; /* drop the "does not exist" from the first try */
	return rc;
}

static EVP_CIPHER_CTX *gcm_start(const struct secret_key *key,
				 const unsigned char *nonce, int encrypt)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	const EVP_CIPHER *aes = EVP_aes_256_gcm();
	bool ok;

	if (!ctx)
		return NULL;
	ok = EVP_CipherInit_ex(ctx, aes, NULL, NULL, NULL, encrypt) == 1;
	ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES,
				       NULL) == 1;
	ok = ok && EVP_CipherInit_ex(ctx, NULL, NULL, key->bytes, nonce,
				     encrypt) == 1;
	if (!ok) {
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/*
 * Feeds len bytes through the cipher; with out NULL they are aad. Adds
 * the bytes written to *done.
 */
static bool gcm_feed(EVP_CIPHER_CTX *ctx, unsigned char *out, const void *in,
		     size_t len, size_t *done)
{
	const unsigned char *p = in;

	while (len) {
		size_t n = len < EVP_CHUNK ? len : EVP_CHUNK;
		int outl = 0;

		if (EVP_CipherUpdate(ctx, out ? out + *done : NULL, &outl, p,
				     (int)n) != 1)
			return false;
		if (out)
			*done += (size_t)outl;
		p += n;
		len -= n;
	}
	return true;
}

static bool gcm_seal(EVP_CIPHER_CTX *ctx, const void *plain, size_t len,
		     const void *aad, size_t aadlen, unsigned char *ct)
{
	size_t done = 0, ignored = 0;
	int outl = 0;

	if (!gcm_feed(ctx, NULL, aad, aadlen, &ignored) ||
	    !gcm_feed(ctx, ct, plain, len, &done) ||
	    EVP_CipherFinal_ex(ctx, ct + done, &outl) != 1)
		return false;
	done += (size_t)outl;
	return done == len && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG,
						  TAG_BYTES, ct + len) == 1;
}

int secret_seal(const struct secret_key *key, const void *plain, size_t len,
		const void *aad, size_t aadlen, struct buf *out)
{
	size_t start = out->len;
	unsigned char *nonce;
	EVP_CIPHER_CTX *ctx;
	bool ok;

	if (len > SIZE_MAX - NONCE_BYTES - TAG_BYTES - start - 1)
		return -EIO;
	buf_truncate(out, start + NONCE_BYTES + len + TAG_BYTES);
	nonce = (unsigned char *)out->data + start;
	/* A fresh random nonce per seal: GCM must never reuse one. */
	ok = RAND_bytes(nonce, NONCE_BYTES) == 1;
	ctx = ok ? gcm_start(key, nonce, 1) : NULL;
	ok = ctx && gcm_seal(ctx, plain, len, aad, aadlen, nonce + NONCE_BYTES);
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		buf_truncate(out, start);
		return -EIO;
	}
	return 0;
}

/* Returns 0, -EBADMSG when the tag does not match, -EIO otherwise. */
static int gcm_open(EVP_CIPHER_CTX *ctx, const unsigned char *ct, size_t len,
		    const void *aad, size_t aadlen, char *plain)
{
	unsigned char tag[TAG_BYTES];
	size_t done = 0, ignored = 0;
	int outl = 0;

	memcpy(tag, ct + len, TAG_BYTES);
	if (!gcm_feed(ctx, NULL, aad, aadlen, &ignored) ||
	    !gcm_feed(ctx, (unsigned char *)plain, ct, len, &done) ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag) != 1)
		return -EIO;
	if (EVP_CipherFinal_ex(ctx, (unsigned char *)plain + done, &outl) != 1)
		return -EBADMSG;
	return done + (size_t)outl == len ? 0 : -EIO;
}

int secret_open(const struct secret_key *key, const void *sealed, size_t len,
		const void *aad, size_t aadlen, char **plain, size_t *plainlen)
{
	const unsigned char *nonce = sealed;
	size_t ctlen;
	EVP_CIPHER_CTX *ctx;
	char *p;
	int rc;

	*plain = NULL;
	*plainlen = 0;
	if (len < NONCE_BYTES + TAG_BYTES)
		return -EBADMSG;
	ctlen = len - NONCE_BYTES - TAG_BYTES;
	ctx = gcm_start(key, nonce, 0);
	if (!ctx)
		return -EIO;
	p = secret_alloc(ctlen + 1);
	rc = gcm_open(ctx, nonce + NONCE_BYTES, ctlen, aad, aadlen, p);
	EVP_CIPHER_CTX_free(ctx);
	if (rc) {
		secret_wipe_free(p, ctlen + 1);
		return rc;
	}
	*plain = p;
	*plainlen = ctlen;
	return 0;
}

/*
 * Kept in front of each secret buffer: its whole size, so the wipe covers
 * all of it whether the caller passes the value's length or the buffer's.
 */
union secret_head {
	size_t size;
	max_align_t align;
};

void *secret_alloc(size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t need = sizeof(union secret_head) + len, size;
	void *base;

	if (need < len || need > SIZE_MAX - page)
		abort();
	/* Whole pages, so that locking and dump flags touch no one else. */
	size = (need + page - 1) / page * page;
	if (posix_memalign(&base, page, size) != 0)
		abort(); /* as xmalloc does */
	memset(base, 0, size);
	/*
	 * Without CAP_IPC_LOCK, mlock fails (EPERM, or ENOMEM past a small
	 * RLIMIT_MEMLOCK) for most users. Locking only keeps the value out
	 * of swap; the buffer works without it, so a failure is not one.
	 */
	(void)mlock(base, size);
	/* Keep plain values out of core dumps; best effort too. */
	(void)madvise(base, size, MADV_DONTDUMP);
	((union secret_head *)base)->size = size;
	return (char *)base + sizeof(union secret_head);
}

void secret_wipe_free(void *p, size_t len)
{
	union secret_head *head;
	size_t size;

	(void)len; /* the head knows the real size */
	if (!p)
		return;
	head = (union secret_head *)((char *)p - sizeof(*head));
	size = head->size;
	OPENSSL_cleanse(head, size);
	(void)munlock(head, size);
	/* The pages go back to malloc: let later users' data be dumped. */
	(void)madvise(head, size, MADV_DODUMP);
	free(head);
}
