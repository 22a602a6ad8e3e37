// SPDX-License-Identifier: MIT
/*
 * floor: the least a FUSE daemon can do to serve open+read+close of one
 * small file, as a reference for tests/bench/run.sh. It serves a single
 * read-only file, "status", whose bytes are read at start from a file
 * given on the command line. Lookup, getattr, open and release answer
 * from memory at once; open keeps the page cache and asks for no flush,
 * as infrafs does for generated files; the request loop is libfuse's
 * multi-threaded one with infrafs's settings. Whatever infrafs spends
 * above this floor is its own; what the floor spends is FUSE's.
 *
 *   floor [--no-open] CONTENT_FILE MOUNTPOINT    (stays in the foreground)
 *
 * --no-open answers open with ENOSYS, which FUSE takes as "this file system
 * needs no open or release at all" (FUSE_CAP_NO_OPEN_SUPPORT): it shows
 * what the loop costs when no request reaches the daemon per open.
 */
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FILE_INO 2

static char content[65536];
static size_t content_len;
static bool no_open;

static void fill_stat(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)content_len;
	}
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent != FUSE_ROOT_ID || strcmp(name, "status") != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = FILE_INO;
	e.attr_timeout = 1.0; /* infrafs's FS_CACHE_SECONDS */
	e.entry_timeout = 1.0;
	fill_stat(FILE_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	fill_stat(ino, &st);
	fuse_reply_attr(req, &st, 1.0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != FILE_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	/* ENOSYS tells the kernel to stop sending open and release for
	 * every file of this mount, and to keep their page cache. */
	if (no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	fi->keep_cache = 1;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	size_t n = 0;

	(void)ino;
	(void)fi;
	if ((size_t)off < content_len)
		n = content_len - (size_t)off < size ? content_len - (size_t)off
						     : size;
	fuse_reply_buf(req, content + off, n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup,
	.getattr = op_getattr,
	.open = op_open,
	.read = op_read,
	.release = op_release,
};

int main(int argc, char **argv)
{
	char *fargv[] = { "floor", "-o", "fsname=floor,subtype=floor", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_loop_config *cfg;
	struct fuse_session *se;
	FILE *f;
	int rc;

	if (argc == 4 && !strcmp(argv[1], "--no-open")) {
		no_open = true;
		argv++;
		argc--;
	}
	if (argc != 3) {
		fprintf(stderr,
			"usage: floor [--no-open] CONTENT_FILE MOUNTPOINT\n");
		return 2;
	}
	f = fopen(argv[1], "r");
	if (!f) {
		perror(argv[1]);
		return 1;
	}
	content_len = fread(content, 1, sizeof(content), f);
	fclose(f);
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se || fuse_set_signal_handlers(se) != 0 ||
	    fuse_session_mount(se, argv[2]) != 0) {
		fprintf(stderr, "floor: cannot mount on %s\n", argv[2]);
		return 1;
	}
	cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(cfg, 64);
	fuse_loop_cfg_set_idle_threads(cfg, 16);
	rc = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	return rc ? 1 : 0;
}
