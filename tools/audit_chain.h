/* SPDX-License-Identifier: MIT */
/*
 * The audit-chain walk shared by infrafs-audit-verify and infrafs-backup,
 * so a backup is accepted by exactly the rule the verifier applies.
 */
#ifndef INFRAFS_TOOLS_AUDIT_CHAIN_H
#define INFRAFS_TOOLS_AUDIT_CHAIN_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>

/*
 * One environment's chain, walked line by line from any store: begin
 * with the stored head and checkpoint (base, '' when nothing was pruned),
 * feed each line oldest first while audit_walk_line returns true, then
 * audit_walk_end prints the verdict to out, naming the first line changed
 * or removed, and returns whether the chain holds.
 */
struct audit_walk {
	const char *name, *head, *base;
	FILE *out;
	char expected[65], last_line[64];
	long n;
	bool chained;
};

void audit_walk_begin(struct audit_walk *w, const char *name, const char *head,
		      const char *base, FILE *out);
bool audit_walk_line(struct audit_walk *w, const char *line);
bool audit_walk_end(struct audit_walk *w, bool ok);

/*
 * Prepares the walk over the environments of the store open on db, each
 * row (id, name, head, base): the hash of the newest audit line and of
 * the newest one pruned by history_keep ('' when none was, and in stores
 * from before pruning).
 */
int audit_chain_envs(sqlite3 *db, sqlite3_stmt **st);

/*
 * Walks the audit lines of the environment in the current row of st
 * and checks each prev= hash, the checkpoint the oldest kept line must
 * chain to, and the stored head. Writes one line to out: the verdict,
 * naming the first line changed or removed. Returns true when the chain
 * holds.
 */
bool audit_chain_verify(sqlite3 *db, sqlite3_stmt *env_row, FILE *out);

#endif
