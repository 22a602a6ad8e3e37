/* SPDX-License-Identifier: MIT */
/*
 * Nodes: what each inode number stands for. A node is named by a key (its
 * type plus the ids of the objects it shows) rather than by a path, so a
 * resource removed and made again under the same name gets new inodes and
 * a stale file handle never reaches the new object. Inode numbers are
 * handed out on first lookup and dropped when the kernel forgets them.
 */
#ifndef INFRAFS_FS_NODE_H
#define INFRAFS_FS_NODE_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/map.h"

enum node_type {
	NT_NONE,
	NT_ROOT,
	NT_README,
	NT_VERSION,
	NT_METRICS,
	NT_KINDS, /* kinds/ */
	NT_KIND_DOC, /* kinds/pool; sub = kind index */
	NT_PROVIDERS,
	NT_PROVIDER_DOC, /* sub = provider index */
	NT_ENV, /* id = env id */
	NT_ENV_CONFIG,
	NT_ENV_POLICY,
	NT_ENV_PLAN,
	NT_ENV_PLAN_JSON,
	NT_ENV_CTL,
	NT_ENV_STATUS,
	NT_ENV_EVENTS,
	NT_ENV_AUDIT,
	NT_HISTORY, /* ENV/history/ */
	NT_REV, /* history/REV/; rev */
	NT_REV_INFO,
	NT_REV_DIFF,
	NT_REV_CONFIG,
	NT_REV_POLICY,
	NT_REV_KIND, /* history/REV/pools/; sub = kind */
	NT_REV_SPEC, /* history/REV/pools/NAME; sub = kind, name */
	NT_KIND_DIR, /* ENV/pools/; sub = kind */
	NT_RES, /* ENV/pools/NAME/; id = resource id */
	NT_RES_SPEC,
	NT_RES_FIELD, /* sub = field index */
	NT_RES_STATUS,
	NT_RES_STATUS_JSON,
	NT_RES_STATE,
	NT_RES_EVENTS,
	NT_SECRETS, /* ENV/secrets/ */
	NT_SECRET, /* id = env id, name */
	NT_EXPORT, /* ENV/export/ */
	NT_EXPORT_TERRAFORM, /* export/terraform.tf.json */
	NT_SCRATCH, /* id = scratch file id */
	NT_SINK_DIR, /* id = sink id: see sink.c */
	NT_SINK_FILE,
	NT_COUNT
};

/* Zero the whole key before filling it in: it is hashed as bytes. */
struct node_key {
	uint16_t type;
	uint16_t sub;
	uint32_t zero;
	uint64_t id;
	uint64_t rev;
	char name[64];
};

struct blob;

struct node {
	struct node_key key;
	fuse_ino_t ino;
	uint64_t nlookup;
	/* Generation of the content the kernel may hold in its page cache
	 * for this inode: an open whose snapshot differs drops that cache. */
	uint64_t cached_gen;
	/* The content whose size the kernel was last told (lookup, getattr,
	 * readdirplus), or NULL. A read that fills the kernel's pages is
	 * cut at that size, so it must serve these very bytes. */
	struct blob *sized;
};

struct node_table {
	pthread_mutex_t lock;
	struct map by_key;
	struct map by_ino;
	fuse_ino_t next_ino;
};

static inline struct node_key node_key_make(enum node_type t, uint16_t sub,
					    uint64_t id, uint64_t rev)
{
	struct node_key k;

	__builtin_memset(&k, 0, sizeof(k));
	k.type = (uint16_t)t;
	k.sub = sub;
	k.id = id;
	k.rev = rev;
	return k;
}

void node_table_init(struct node_table *t);
void node_table_destroy(struct node_table *t);
/* The node for key, made if new; its lookup count grows by `lookups`. */
fuse_ino_t node_get(struct node_table *t, const struct node_key *key,
		    uint64_t lookups);
/* Copies out the key of ino; returns 0 or -ESTALE. */
int node_key_of(struct node_table *t, fuse_ino_t ino, struct node_key *key);
/* The inode number of key if the kernel knows it, else 0. */
fuse_ino_t node_find(struct node_table *t, const struct node_key *key);
/*
 * The generation of content the kernel may cache for ino (pages and
 * size), 0 when it may hold anything. Set only once the kernel's cache
 * of the inode has been dropped, by the notifier.
 */
uint64_t node_cached_gen(struct node_table *t, fuse_ino_t ino);
void node_set_cached_gen(struct node_table *t, fuse_ino_t ino, uint64_t gen);

/* Keeps b (its reference is the node's now; NULL forgets) as what the
 * kernel was last told the size of. */
void node_set_sized(struct node_table *t, fuse_ino_t ino, struct blob *b);
/* A new reference to that content, or NULL. */
struct blob *node_sized(struct node_table *t, fuse_ino_t ino);

/* Drops lookups; true with *gone set when the kernel forgot the node. */
bool node_forget(struct node_table *t, fuse_ino_t ino, uint64_t nlookup,
		 struct node_key *gone);

#endif
