// SPDX-License-Identifier: MIT
/*
 * Reading an environment folder (see folder.h). Every open is relative to
 * a folder already open and names one component with O_NOFOLLOW, after
 * an lstat-like look that refuses links and anything but regular files
 * and folders before it is opened: opening a FIFO would block, a device
 * could act on the open itself.
 */
#include "folder.h"

#include "spec.h"
#include "util/buf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct reader {
	struct folder *out;
	struct folder_error *err;
	size_t cap;
	size_t bytes;
	size_t entries;
};

/* Fills err for path (raw bytes, escaped here); returns rc. */
__attribute__((format(printf, 4, 5))) static int
refuse(struct reader *rd, int rc, const char *path, const char *fmt, ...)
{
	BUF_AUTO shown = BUF_INIT;
	BUF_AUTO why = BUF_INIT;
	va_list ap;

	text_escape(&shown, path, strlen(path), 0);
	va_start(ap, fmt);
	buf_vprintf(&why, fmt, ap);
	va_end(ap);
	snprintf(rd->err->path, sizeof(rd->err->path), "%s", buf_str(&shown));
	snprintf(rd->err->msg, sizeof(rd->err->msg), "%s%s%s",
		 shown.len ? buf_str(&shown) : "", shown.len ? ": " : "",
		 buf_str(&why));
	return rc;
}

static int refuse_errno(struct reader *rd, int rc, const char *path,
			const char *doing)
{
	return refuse(rd, rc, path, "cannot %s: %s", doing, strerror(-rc));
}

/*
 * "pools" + "train" -> "pools/train". Never cut in practice: a folder
 * joined to is a valid name, and out has room for two names of NAME_MAX
 * bytes; were it ever, the path is cut, never left unterminated.
 */
static void join(char *out, size_t len, const char *dir, const char *name)
{
	size_t a = strnlen(dir, len - 1), b;

	memcpy(out, dir, a);
	if (a + 1 < len)
		out[a++] = '/';
	b = strnlen(name, len - 1 - a);
	memcpy(out + a, name, b);
	out[a + b] = '\0';
}

/* Looks at name without following it: 0 with *mode, or -errno. */
static int look(struct reader *rd, int dirfd, const char *name,
		const char *path, mode_t *mode)
{
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return refuse_errno(rd, -errno, path, "look at it");
	if (S_ISLNK(st.st_mode))
		return refuse(rd, -ELOOP, path,
			      "a symbolic link; links in an environment "
			      "folder are not followed");
	if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
		return refuse(rd, -EINVAL, path,
			      "neither a regular file nor a folder");
	*mode = st.st_mode;
	return 0;
}

static int open_dir(struct reader *rd, int dirfd, const char *name,
		    const char *path)
{
	int fd = openat(dirfd, name,
			O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return refuse_errno(rd, -errno, path, "open the folder");
	return fd;
}

/* The next entry whose name does not start with '.', or NULL. */
static int next_entry(struct reader *rd, DIR *d, const char *path,
		      struct dirent **out)
{
	*out = NULL;
	for (;;) {
		struct dirent *de;

		errno = 0;
		de = readdir(d);
		if (!de)
			return errno ? refuse_errno(rd, -errno, path,
						    "list the folder")
				     : 0;
		if (++rd->entries > FOLDER_MAX_ENTRIES)
			return refuse(rd, -E2BIG, path,
				      "more than %d entries in the folder",
				      FOLDER_MAX_ENTRIES);
		/* Hidden names are Git's, editors' and the like. */
		if (de->d_name[0] != '.') {
			*out = de;
			return 0;
		}
	}
}

/* Reads at most SPEC_MAX_BYTES of an open file; 0 or -errno. */
static int read_text(struct reader *rd, int fd, const char *path,
		     struct buf *text)
{
	char chunk[16384];

	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return refuse_errno(rd, -errno, path, "read it");
		if (n == 0)
			return 0;
		buf_add(text, chunk, (size_t)n);
		if (text->len > SPEC_MAX_BYTES)
			return refuse(rd, -EFBIG, path,
				      "larger than %d bytes, the most a spec "
				      "or policy may be",
				      SPEC_MAX_BYTES);
		if (rd->bytes + text->len > FOLDER_MAX_BYTES)
			return refuse(rd, -E2BIG, path,
				      "the folder's texts pass %u bytes "
				      "together",
				      FOLDER_MAX_BYTES);
	}
}

static struct folder_doc *add_doc(struct reader *rd)
{
	struct folder *f = rd->out;

	if (f->n == rd->cap) {
		rd->cap = rd->cap ? rd->cap * 2 : 16;
		f->docs = xrealloc(f->docs, rd->cap * sizeof(*f->docs));
	}
	memset(&f->docs[f->n], 0, sizeof(f->docs[f->n]));
	return &f->docs[f->n++];
}

/* Reads the regular file name in dirfd as a document of kind k. */
static int read_doc(struct reader *rd, int dirfd, const char *name,
		    const char *path, const struct kind_def *k,
		    const char *res_name)
{
	BUF_AUTO text = BUF_INIT;
	struct folder_doc *doc;
	struct stat st;
	int fd, rc;

	if (rd->out->n >= FOLDER_MAX_DOCS)
		return refuse(rd, -E2BIG, path,
			      "more than %d resources in the folder",
			      FOLDER_MAX_DOCS);
	fd = openat(dirfd, name,
		    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return refuse_errno(rd, -errno, path, "open it");
	/* Swapped since look()? Then it is no longer what was looked at. */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
		rc = refuse(rd, -EINVAL, path, "not a regular file");
	else
		rc = read_text(rd, fd, path, &text);
	close(fd);
	if (rc)
		return rc;
	rd->bytes += text.len;
	doc = add_doc(rd);
	doc->kind = k;
	snprintf(doc->name, sizeof(doc->name), "%s", res_name);
	snprintf(doc->path, sizeof(doc->path), "%s", path);
	doc->len = text.len;
	doc->text = buf_steal(&text);
	return 0;
}

/* A resource folder holds its spec and nothing else. */
static int read_resource(struct reader *rd, int kindfd, const char *name,
			 const char *path, const struct kind_def *k)
{
	char sub[sizeof(rd->err->path)];
	struct dirent *de;
	bool found = false;
	mode_t mode;
	int fd = open_dir(rd, kindfd, name, path);
	int rc = fd < 0 ? fd : 0;
	DIR *d = fd < 0 ? NULL : fdopendir(fd);

	if (fd >= 0 && !d) {
		rc = refuse_errno(rd, -errno, path, "list the folder");
		close(fd);
	}
	while (!rc && !(rc = next_entry(rd, d, path, &de)) && de) {
		join(sub, sizeof(sub), path, de->d_name);
		if (strcmp(de->d_name, "spec") != 0)
			rc = refuse(rd, -EINVAL, sub,
				    "a resource folder holds only its spec "
				    "(field files, status and the like are "
				    "the mount's, not the folder's)");
		else if (!(rc = look(rd, fd, de->d_name, sub, &mode)) &&
			 !S_ISREG(mode))
			rc = refuse(rd, -EINVAL, sub, "not a regular file");
		else if (!rc && !(rc = read_doc(rd, fd, "spec", sub, k, name)))
			found = true;
	}
	if (d)
		closedir(d);
	if (!rc && !found)
		rc = refuse(rd, -EINVAL, path,
			    "no spec (an empty spec means all defaults)");
	return rc;
}

/* pools/ or endpoints/: one folder per resource, each a valid name. */
static int read_kind(struct reader *rd, int topfd, const struct kind_def *k)
{
	char sub[sizeof(rd->err->path)];
	struct dirent *de;
	mode_t mode;
	int fd = open_dir(rd, topfd, k->dir, k->dir);
	int rc = fd < 0 ? fd : 0;
	DIR *d = fd < 0 ? NULL : fdopendir(fd);

	if (fd >= 0 && !d) {
		rc = refuse_errno(rd, -errno, k->dir, "list the folder");
		close(fd);
	}
	while (!rc && !(rc = next_entry(rd, d, k->dir, &de)) && de) {
		join(sub, sizeof(sub), k->dir, de->d_name);
		if (!name_is_valid(de->d_name))
			rc = refuse(rd, -EINVAL, sub,
				    "not a valid name: use lowercase letters, "
				    "digits and '-', at most %d",
				    NAME_MAX_LEN);
		else if (!(rc = look(rd, fd, de->d_name, sub, &mode)) &&
			 !S_ISDIR(mode))
			rc = refuse(rd, -EINVAL, sub,
				    "not a folder (a %s is %s/NAME/spec)",
				    k->name, k->dir);
		else if (!rc)
			rc = read_resource(rd, fd, de->d_name, sub, k);
	}
	if (d)
		closedir(d);
	return rc;
}

/* Why a top-level name is refused, with the way out when there is one. */
static int refuse_top(struct reader *rd, const char *name)
{
	if (!strcmp(name, "config"))
		return refuse(rd, -EINVAL, name,
			      "an environment's config (provider, approval, "
			      "where it follows) is set in the mount, not "
			      "in the folder");
	if (!strcmp(name, "secrets"))
		return refuse(rd, -EINVAL, name,
			      "secret values never live in a folder; write "
			      "them to the mount's secrets/");
	return refuse(rd, -EINVAL, name,
		      "not part of an environment folder, which holds "
		      "pools/NAME/spec, endpoints/NAME/spec and policy "
		      "(names starting with '.' are skipped)");
}

static int read_entry(struct reader *rd, int topfd, const char *name)
{
	const struct kind_def *k = kind_by_dir(name);
	mode_t mode;
	int rc;

	if (!k && strcmp(name, "policy") != 0)
		return refuse_top(rd, name);
	rc = look(rd, topfd, name, name, &mode);
	if (rc)
		return rc;
	if (!k)
		return S_ISREG(mode) ? read_doc(rd, topfd, name, name,
						&kind_policy, "")
				     : refuse(rd, -EINVAL, name,
					      "not a regular file");
	if (!S_ISDIR(mode))
		return refuse(rd, -EINVAL, name, "not a folder");
	return read_kind(rd, topfd, k);
}

static int kind_order(const struct kind_def *k)
{
	for (int i = 0; resource_kinds[i]; i++) {
		if (resource_kinds[i] == k)
			return i;
	}
	return 100; /* the policy, after every resource */
}

static int cmp_docs(const void *a, const void *b)
{
	const struct folder_doc *x = a, *y = b;
	int kx = kind_order(x->kind), ky = kind_order(y->kind);

	return kx != ky ? kx - ky : strcmp(x->name, y->name);
}

int folder_read_at(int dirfd, struct folder *out, struct folder_error *err)
{
	struct reader rd = { .out = out, .err = err };
	struct dirent *de;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;
	DIR *d;

	memset(out, 0, sizeof(*out));
	memset(err, 0, sizeof(*err));
	if (fd < 0)
		return refuse_errno(&rd, -errno, "", "open the folder");
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return refuse_errno(&rd, -errno, "", "list the folder");
	}
	while (!(rc = next_entry(&rd, d, "", &de)) && de) {
		rc = read_entry(&rd, fd, de->d_name);
		if (rc)
			break;
	}
	closedir(d);
	if (rc) {
		folder_free(out);
		return rc;
	}
	if (out->n > 1)
		qsort(out->docs, out->n, sizeof(*out->docs), cmp_docs);
	return 0;
}

int folder_read(const char *dir, struct folder *out, struct folder_error *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd < 0) {
		struct reader rd = { .out = out, .err = err };
		BUF_AUTO shown = BUF_INIT;

		rc = -errno;
		memset(out, 0, sizeof(*out));
		memset(err, 0, sizeof(*err));
		text_escape(&shown, dir, strlen(dir), 0);
		return refuse(&rd, rc, "", "%s: %s", buf_str(&shown),
			      strerror(-rc));
	}
	rc = folder_read_at(fd, out, err);
	close(fd);
	return rc;
}

const struct folder_doc *folder_find(const struct folder *f,
				     const struct kind_def *k, const char *name)
{
	struct folder_doc key = { .kind = k };

	snprintf(key.name, sizeof(key.name), "%s", name);
	if (!f->n || strlen(name) > NAME_MAX_LEN)
		return NULL;
	return bsearch(&key, f->docs, f->n, sizeof(*f->docs), cmp_docs);
}

void folder_free(struct folder *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->docs[i].text);
	free(f->docs);
	f->docs = NULL;
	f->n = 0;
}
