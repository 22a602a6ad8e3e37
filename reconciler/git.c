// SPDX-License-Identifier: MIT
/*
 * Reading .git: see git.h. Object files are zlib streams (RFC 1950), read
 * with zlib: inflating by hand would be a few hundred lines of code that
 * zlib has had right for thirty years.
 */
#include "git.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>
#include <zlib.h>

/* What is inflated of an object: a commit's header lines (a signed one
 * carries its signature there) and the start of its message. */
#define OBJECT_PREFIX_MAX 65536
/* A loose object file larger than this is no commit worth reading. */
#define LOOSE_MAX (1 << 20)

static bool is_hex40(const char *s)
{
	for (int i = 0; i < 40; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

/* The first line of a small file below dirfd, without its newline. */
static int read_line_at(int dirfd, const char *name, char *out, size_t outlen)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, out, outlen - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	out[n] = '\0';
	out[strcspn(out, "\r\n")] = '\0';
	return 0;
}

/* "SHA REF" lines of packed-refs, with '#' and '^' lines between. */
static int packed_ref(int gitfd, const char *ref, char out[41])
{
	int fd = openat(gitfd, "packed-refs", O_RDONLY | O_CLOEXEC);
	char buf[65536];
	size_t reflen = strlen(ref);
	ssize_t n;

	if (fd < 0)
		return -ENOENT;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ENOENT;
	buf[n] = '\0';
	for (char *line = buf; *line;) {
		char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);

		if (len == 41 + reflen && line[40] == ' ' && is_hex40(line) &&
		    !memcmp(line + 41, ref, reflen)) {
			memcpy(out, line, 40);
			out[40] = '\0';
			return 0;
		}
		line += len + (nl ? 1 : 0);
	}
	return -ENOENT;
}

static int resolve_ref(int gitfd, const char *ref, char out[41])
{
	char line[128];

	if (strncmp(ref, "refs/", 5) || strstr(ref, ".."))
		return -EINVAL;
	if (read_line_at(gitfd, ref, line, sizeof(line)) == 0 &&
	    is_hex40(line)) {
		memcpy(out, line, 41);
		out[40] = '\0';
		return 0;
	}
	return packed_ref(gitfd, ref, out);
}

/* .git is a folder, or a file "gitdir: PATH" (a linked work tree). */
static int open_git_dir(int dirfd)
{
	char line[PATH_MAX + 16];
	int fd = openat(dirfd, ".git", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0 || errno != ENOTDIR)
		return fd < 0 ? -errno : fd;
	if (read_line_at(dirfd, ".git", line, sizeof(line)) < 0 ||
	    strncmp(line, "gitdir: ", 8))
		return -ENOENT;
	fd = openat(dirfd, line + 8, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int git_head(int dirfd, char out[41])
{
	char head[256], common[PATH_MAX];
	int gitfd = open_git_dir(dirfd), rc;

	if (gitfd < 0)
		return -ENOENT;
	rc = read_line_at(gitfd, "HEAD", head, sizeof(head));
	if (rc == 0 && is_hex40(head)) {
		memcpy(out, head, 40);
		out[40] = '\0';
	} else if (rc == 0 && !strncmp(head, "ref: ", 5)) {
		rc = resolve_ref(gitfd, head + 5, out);
		/* A linked work tree keeps its branches in the main one. */
		if (rc < 0 && read_line_at(gitfd, "commondir", common,
					   sizeof(common)) == 0) {
			int cfd = openat(gitfd, common,
					 O_RDONLY | O_DIRECTORY | O_CLOEXEC);

			if (cfd >= 0) {
				rc = resolve_ref(cfd, head + 5, out);
				close(cfd);
			}
		}
	} else {
		rc = -ENOENT;
	}
	close(gitfd);
	return rc < 0 ? -ENOENT : 0;
}

/* objects/, which a linked work tree keeps in the main one. */
static int open_objects(int gitfd)
{
	char common[PATH_MAX];
	int fd = openat(gitfd, "objects", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int cfd;

	if (fd >= 0)
		return fd;
	if (read_line_at(gitfd, "commondir", common, sizeof(common)) < 0)
		return -ENOENT;
	cfd = openat(gitfd, common, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cfd < 0)
		return -ENOENT;
	fd = openat(cfd, "objects", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	close(cfd);
	return fd < 0 ? -ENOENT : fd;
}

static int hex_value(char c)
{
	return c <= '9' ? c - '0' : c - 'a' + 10;
}

static void sha_bytes(const char hex[41], unsigned char out[20])
{
	for (int i = 0; i < 20; i++)
		out[i] = (unsigned char)(hex_value(hex[2 * i]) << 4 |
					 hex_value(hex[2 * i + 1]));
}

/* Inflates the start of a zlib stream: up to outmax bytes into out. */
static size_t inflate_prefix(const unsigned char *in, size_t inlen,
			     unsigned char *out, size_t outmax)
{
	z_stream z = { 0 };
	size_t got;
	int rc;

	if (inflateInit(&z) != Z_OK)
		return 0;
	z.next_in = (unsigned char *)in;
	z.avail_in = (uInt)inlen;
	z.next_out = out;
	z.avail_out = (uInt)outmax;
	rc = inflate(&z, Z_SYNC_FLUSH);
	got = rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR
		      ? outmax - z.avail_out
		      : 0;
	inflateEnd(&z);
	return got;
}

/* Reads up to max bytes of path below dirfd at offset; bytes read or -1. */
static ssize_t read_at(int dirfd, const char *path, off_t off,
		       unsigned char *buf, size_t max)
{
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -1;
	while (got < max) {
		ssize_t n = pread(fd, buf + got, max - got, off + (off_t)got);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return (ssize_t)got;
}

/* objects/ab/cdef...: "commit SIZE\0" and the body, zlib-compressed. */
static size_t loose_commit(int objfd, const char sha[41], unsigned char *out,
			   size_t outmax)
{
	char path[44];
	unsigned char *raw = malloc(LOOSE_MAX);
	ssize_t n;
	size_t got = 0, head;

	if (!raw)
		return 0;
	snprintf(path, sizeof(path), "%.2s/%.38s", sha, sha + 2);
	n = read_at(objfd, path, 0, raw, LOOSE_MAX);
	if (n > 0)
		got = inflate_prefix(raw, (size_t)n, out, outmax);
	free(raw);
	head = strnlen((const char *)out, got);
	if (got < 8 || head == got || memcmp(out, "commit ", 7))
		return 0;
	memmove(out, out + head + 1, got - head - 1);
	return got - head - 1;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/* Where a pack index (version 2) puts sha in its pack, or -1. */
static int64_t idx_offset(int fd, const unsigned char sha[20])
{
	unsigned char head[8 + 256 * 4], e[20], off[8];
	uint32_t lo, hi, n;

	if (pread(fd, head, sizeof(head), 0) != (ssize_t)sizeof(head) ||
	    memcmp(head, "\377tOc\0\0\0\2", 8))
		return -1;
	n = be32(head + 8 + 255 * 4);
	lo = sha[0] ? be32(head + 8 + (sha[0] - 1) * 4) : 0;
	hi = be32(head + 8 + sha[0] * 4);
	while (lo < hi && hi <= n) {
		uint32_t mid = lo + (hi - lo) / 2;
		int cmp;

		if (pread(fd, e, 20, (off_t)sizeof(head) + (off_t)mid * 20) != 20)
			return -1;
		cmp = memcmp(e, sha, 20);
		if (cmp < 0) {
			lo = mid + 1;
		} else if (cmp > 0) {
			hi = mid;
		} else {
			off_t at = (off_t)sizeof(head) + (off_t)n * 24 +
				   (off_t)mid * 4;

			if (pread(fd, off, 4, at) != 4)
				return -1;
			if (!(off[0] & 0x80))
				return be32(off);
			/* A pack past 2 GiB: the offset is in the 64-bit table. */
			at = (off_t)sizeof(head) + (off_t)n * 28 +
			     (off_t)(be32(off) & 0x7fffffff) * 8;
			if (pread(fd, off, 8, at) != 8)
				return -1;
			return (int64_t)((uint64_t)be32(off) << 32 |
					 be32(off + 4)) &
			       INT64_MAX;
		}
	}
	return -1;
}

/* A commit stored whole (not as a delta) at off in pack: its body. */
static size_t packed_body(int packdir, const char *pack, int64_t off,
			  unsigned char *out, size_t outmax)
{
	unsigned char *raw = malloc(OBJECT_PREFIX_MAX + 32);
	ssize_t n = raw ? read_at(packdir, pack, (off_t)off, raw,
				  OBJECT_PREFIX_MAX + 32)
			: -1;
	size_t i = 0, got = 0;

	/* Type in bits 4-6 of the first byte (1: a commit), then the
	 * size, 7 bits a byte while the top bit is set. */
	if (n > 0 && ((raw[0] >> 4) & 7) == 1) {
		while (i < (size_t)n && (raw[i] & 0x80))
			i++;
		if (++i < (size_t)n)
			got = inflate_prefix(raw + i, (size_t)n - i, out,
					     outmax);
	}
	free(raw);
	return got;
}

static size_t packed_commit(int objfd, const char sha[41], unsigned char *out,
			    size_t outmax)
{
	unsigned char bin[20];
	int packfd = openat(objfd, "pack", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int dupfd;
	DIR *d;
	struct dirent *de;
	size_t got = 0;

	if (packfd < 0)
		return 0;
	dupfd = dup(packfd);
	d = dupfd >= 0 ? fdopendir(dupfd) : NULL;
	if (!d) {
		if (dupfd >= 0)
			close(dupfd);
		close(packfd);
		return 0;
	}
	sha_bytes(sha, bin);
	while (!got && (de = readdir(d))) {
		size_t len = strlen(de->d_name);
		char pack[NAME_MAX + 1];
		int fd;
		int64_t off;

		if (len < 5 || strcmp(de->d_name + len - 4, ".idx"))
			continue;
		fd = openat(packfd, de->d_name, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		off = idx_offset(fd, bin);
		close(fd);
		if (off < 0)
			continue;
		snprintf(pack, sizeof(pack), "%.*s.pack", (int)(len - 4),
			 de->d_name);
		got = packed_body(packfd, pack, off, out, outmax);
	}
	closedir(d);
	close(packfd);
	return got;
}

/* The message's first line, after the header lines and a blank one. */
static int subject_of(const unsigned char *body, size_t len, char *out,
		      size_t outlen)
{
	const char *s = (const char *)body, *end = s + len, *msg = NULL;
	size_t n;

	for (const char *p = s; p + 1 < end; p++) {
		if (p[0] == '\n' && p[1] == '\n') {
			msg = p + 2;
			break;
		}
	}
	if (!msg || !outlen)
		return -ENOENT;
	for (n = 0; msg + n < end && msg[n] != '\n'; n++)
		;
	if (n && msg[n - 1] == '\r')
		n--;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, msg, n);
	out[n] = '\0';
	return 0;
}

int git_commit_subject(int dirfd, const char sha[41], char *out,
		       size_t outlen)
{
	unsigned char *body;
	int gitfd, objfd, rc = -ENOENT;
	size_t got;

	if (!is_hex40(sha))
		return -ENOENT;
	gitfd = open_git_dir(dirfd);
	if (gitfd < 0)
		return -ENOENT;
	objfd = open_objects(gitfd);
	close(gitfd);
	if (objfd < 0)
		return -ENOENT;
	body = malloc(OBJECT_PREFIX_MAX);
	if (body) {
		got = loose_commit(objfd, sha, body, OBJECT_PREFIX_MAX);
		if (!got)
			got = packed_commit(objfd, sha, body,
					    OBJECT_PREFIX_MAX);
		if (got)
			rc = subject_of(body, got, out, outlen);
		free(body);
	}
	close(objfd);
	return rc;
}
