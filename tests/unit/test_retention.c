// SPDX-License-Identifier: MIT
/*
 * Which revisions history_keep and history_keep_days keep
 * (store/retention.c): the rules alone, both together, and the revisions
 * no rule may take.
 */
#include "check.h"
#include "store/retention.h"

static void count_rule(void)
{
	struct retention keep5 = { .keep = 5 };

	/* Fewer revisions than kept: all stay. */
	CHECK_INT(retention_keep_from(&keep5, 3, 3, 4), 1);
	CHECK_INT(retention_keep_from(&keep5, 5, 5, 6), 1);
	CHECK_INT(retention_keep_from(&keep5, 20, 20, 21), 16);
	/* Revisions after the applied one stay for discard. */
	CHECK_INT(retention_keep_from(&keep5, 20, 12, 21), 12);
	/* Nothing applied yet: nothing goes. */
	CHECK_INT(retention_keep_from(&keep5, 20, 0, 21), 1);
}

static void age_rule(void)
{
	struct retention days = { .keep_days = 7 };
	struct retention none = { 0, 0 };

	CHECK_INT(retention_keep_from(&days, 20, 20, 9), 9);
	/* Every revision is older than the rule: the newest still stays. */
	CHECK_INT(retention_keep_from(&days, 20, 20, 21), 20);
	CHECK_INT(retention_keep_from(&none, 20, 20, 21), 1);
}

static void both_rules(void)
{
	struct retention both = { .keep = 5, .keep_days = 7 };

	/* A revision goes only when both let it go. */
	CHECK_INT(retention_keep_from(&both, 20, 20, 9), 9);
	CHECK_INT(retention_keep_from(&both, 20, 20, 18), 16);
}

static void steps(void)
{
	CHECK(!retention_due(1, 1, 20));
	CHECK(retention_due(1, 2, 20));
	/* 1000 kept: not before 62 can go. */
	CHECK(!retention_due(1, 62, 1062));
	CHECK(retention_due(1, 63, 1062));
}

static void audit_lines(void)
{
	const char *rev7 = "2026-12-02T10:00:00.000Z rev=7 uid=0 gid=0 pid=1 "
			   "comm=bash path=dev create pools/a prev=00";
	const char *refusal = "2026-12-02T10:00:00.000Z rev=- uid=0 gid=0 "
			      "pid=1 comm=bash path=- refused: rev=99 prev=00";

	CHECK(retention_keeps_audit_line(rev7, 7));
	CHECK(retention_keeps_audit_line(rev7, 3));
	CHECK(!retention_keeps_audit_line(rev7, 8));
	/* A refusal quoting "rev=99" is still not a revision's line. */
	CHECK(!retention_keeps_audit_line(refusal, 8));
	CHECK(!retention_keeps_audit_line("", 1));
	CHECK(!retention_keeps_audit_line("x rev=12x", 1));
}

int main(void)
{
	count_rule();
	age_rule();
	both_rules();
	steps();
	audit_lines();
	return check_report("retention");
}
