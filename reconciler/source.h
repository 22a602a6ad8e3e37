/* SPDX-License-Identifier: MIT */
/*
 * Environments that follow a folder: an environment whose config sets
 * `source = PATH` becomes what PATH declares (pools/NAME/spec,
 * endpoints/NAME/spec, policy), one revision per burst of changes.
 *
 * One thread watches every such folder with inotify. Changes seen within
 * a settle window (quiet for SOURCE_SETTLE_MS, or busy for at most
 * SOURCE_SETTLE_CAP_MS) are read whole and given to the store as one
 * CH_SYNC change, so a `git checkout` touching many files makes one
 * revision. The folder is read with the authority of the environment's
 * owner (uid, gid and groups): the daemon runs as root, and an owner
 * must not make it read what they could not read themselves.
 */
#ifndef INFRAFS_RECONCILER_SOURCE_H
#define INFRAFS_RECONCILER_SOURCE_H

#include "store/store.h"

#define SOURCE_SETTLE_MS 300
#define SOURCE_SETTLE_CAP_MS 3000

struct source_watch;

/* 0, or a negative errno when inotify or the thread cannot start. */
int source_start(struct store *st, struct source_watch **out);
void source_stop(struct source_watch *sw);

#endif
