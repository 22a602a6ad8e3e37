/* SPDX-License-Identifier: MIT */
/*
 * The series of the root `metrics` file past the daemon-wide counters:
 * per environment and per resource, and latency histograms; and the
 * optional HTTP listener (--metrics-listen) that serves the same bytes.
 */
#ifndef INFRAFS_FS_METRICS_H
#define INFRAFS_FS_METRICS_H

#include "util/buf.h"

struct fs;

/* Per-resource series stop at this many resources of one environment;
 * the environment's aggregates (by state, cost) count them all. */
#define METRICS_RESOURCES_PER_ENV 200

/* FUSE operations timed for infrafs_fuse_request_duration_seconds. */
enum fs_op {
	FOP_LOOKUP,
	FOP_FORGET,
	FOP_GETATTR,
	FOP_SETATTR,
	FOP_MKDIR,
	FOP_RMDIR,
	FOP_UNLINK,
	FOP_RENAME,
	FOP_OPEN,
	FOP_READ,
	FOP_WRITE,
	FOP_FLUSH,
	FOP_RELEASE,
	FOP_FSYNC,
	FOP_OPENDIR,
	FOP_READDIR,
	FOP_RELEASEDIR,
	FOP_CREATE,
	FOP_MKNOD,
	FOP_STATFS,
	FOP_POLL,
	FOP_SYMLINK,
	FOP_LINK,
	FOP_COUNT
};

/* infrafs_build_info{version,commit,...} 1: what is running. */
void metrics_render_build_info(struct buf *out);
void metrics_render_resources(struct fs *fs, struct buf *out);
void metrics_render_latency(struct fs *fs, struct buf *out);
/* infrafs_provider_errors_total and _throttles_total. */
void metrics_render_provider_outcomes(struct buf *out);

/* --metrics-listen: ADDR:PORT, [ADDR6]:PORT or PORT (loopback). 0 or a
 * negative errno with msg saying why. */
int metrics_http_start(struct fs *fs, const char *listen, char *msg,
		       size_t len);
void metrics_http_stop(struct fs *fs);

#endif
