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
 * Walks the audit lines of one environment of the store open on db and
 * checks each prev= hash and the stored head. Writes one line to out:
 * the verdict, naming the first line changed or removed. Returns true
 * when the chain holds.
 */
bool audit_chain_verify(sqlite3 *db, long long env_id, const char *name,
			const char *head, FILE *out);

#endif
