#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# infrafs performance benchmark: one command, one results table.
#
#   tests/bench/run.sh [BUILD_DIR]        (default BUILD_DIR: ./build)
#
# It mounts a throw-away infrafs (its own state database, key and mount
# point under a fresh temporary folder), fills one environment with
# BENCH_RESOURCES pools, measures the figures that docs/performance.md
# sets targets for, and prints a table saying "met" or "MISSED" for each.
# A missed target is a result, not an error: the exit status is 0 whenever
# the benchmark ran, 1 when it could not (no binary, mount failed, a
# helper failed), and 2 under BENCH_STRICT=1 when a target was missed or a
# correctness check failed.
#
# Knobs (environment): BENCH_RESOURCES (10000), BENCH_SECONDS (2, per
# timed loop), BENCH_WRITERS (16), BENCH_POPULATE_THREADS (16),
# BENCH_FULL_READ=0 (skip reading every file of every pool, ~20 s),
# BENCH_NO_BUILD=1 (use BUILD_DIR/infrafs as it is), BENCH_STRICT=1.
# Must run as a user allowed to mount FUSE (/dev/fuse, fusermount3).
# Takes about a minute on 2 cores (about 45 s with BENCH_FULL_READ=0).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${1:-$ROOT/build}
RESOURCES=${BENCH_RESOURCES:-10000}
SECS=${BENCH_SECONDS:-2}
WRITERS=${BENCH_WRITERS:-16}
POP_THREADS=${BENCH_POPULATE_THREADS:-16}
# ls sorts with strcoll(3) under a UTF-8 locale; C keeps the figure about
# the file system and comparable between machines.
export LC_ALL=C

die() {
	echo "bench: $*" >&2
	exit 1
}

# ---- set-up and guaranteed clean-up -----------------------------------------

WORK=""
SHM=""
MNT=""
DAEMON_PID=""
FLOOR_MNTS=()
FLOOR_PIDS=()

# shellcheck disable=SC2317 # reached through the trap below
cleanup() {
	local rc=$?

	set +e
	trap - EXIT INT TERM
	if [[ -n $MNT ]] && mountpoint -q "$MNT"; then
		fusermount3 -u "$MNT" 2>/dev/null ||
			{ sleep 1; fusermount3 -u "$MNT" 2>/dev/null; } ||
			fusermount3 -uz "$MNT"
	fi
	for i in "${!FLOOR_PIDS[@]}"; do
		mountpoint -q "${FLOOR_MNTS[$i]}" && fusermount3 -uz "${FLOOR_MNTS[$i]}"
		kill "${FLOOR_PIDS[$i]}" 2>/dev/null
		wait "${FLOOR_PIDS[$i]}" 2>/dev/null
	done
	if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		# Unmounted, it exits by itself; give it a moment, then stop
		# the one process this script started.
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$DAEMON_PID" 2>/dev/null || break
			sleep 0.2
		done
		kill "$DAEMON_PID" 2>/dev/null
		wait "$DAEMON_PID" 2>/dev/null
	fi
	if ((rc != 0)) && [[ -n $WORK && -s $WORK/daemon.log ]]; then
		echo "bench: last lines of the daemon's log:" >&2
		tail -n 20 "$WORK/daemon.log" >&2
	fi
	# --one-file-system: should the mount somehow still be there, never
	# descend into it and rmdir the daemon's resources.
	[[ -n $WORK ]] && rm -rf --one-file-system "$WORK"
	[[ -n $SHM ]] && rm -rf "$SHM"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z ${BENCH_NO_BUILD:-} && -f $BUILD/build.ninja ]]; then
	# Measure the source as it is now, not whatever was built last.
	ninja -C "$BUILD" >/dev/null || die "ninja -C $BUILD failed"
fi
BIN=$BUILD/infrafs
[[ -x $BIN ]] || die "no infrafs binary at $BIN (build first, or pass BUILD_DIR)"
command -v fusermount3 >/dev/null || die "fusermount3 is missing"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"
command -v cc >/dev/null || die "no C compiler (cc) for the benchmark helper"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/infrafs-bench.XXXXXX")
SHM=$(mktemp -d /dev/shm/infrafs-bench.XXXXXX)
MNT=$WORK/mnt
mkdir "$MNT"

# The loops are C: a shell or Python loop would time its own forks.
cc -std=c17 -O2 -Wall -Wextra -Werror -pthread \
	-o "$WORK/benchfs" "$ROOT/tests/bench/benchfs.c" ||
	die "cannot build tests/bench/benchfs.c"
B=$WORK/benchfs

# ---- helpers ----------------------------------------------------------------

# Milliseconds since the epoch, with microseconds, from bash itself: no
# fork to date(1) inside the interval being timed.
now_ms() {
	local t=${EPOCHREALTIME/[.,]/}

	printf '%d.%03d\n' $((t / 1000)) $((t % 1000))
}

# elapsed_ms START END
elapsed_ms() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'
}

# kv LINE KEY: the value of KEY in a benchfs `key=value ...` line.
kv() {
	local f

	for f in $1; do
		[[ ${f%%=*} == "$2" ]] && { echo "${f#*=}"; return 0; }
	done
	die "no $2 in: $1"
}

# The daemon runs in the foreground under this shell so that its pid is
# known exactly ($!), not guessed with pgrep among other mounts.
MOUNT_MS=""
mount_fs() {
	local t0 t1

	t0=$(now_ms)
	"$BIN" -f --state "sqlite:$WORK/state.db" --key-file "$WORK/key" \
		"$MNT" 2>>"$WORK/daemon.log" &
	DAEMON_PID=$!
	for _ in $(seq 1 200); do
		mountpoint -q "$MNT" && break
		kill -0 "$DAEMON_PID" 2>/dev/null || die "infrafs exited at start"
		sleep 0.02
	done
	mountpoint -q "$MNT" || die "infrafs did not mount within 4 s"
	# The mount is there before the first request is served: wait for
	# one answer.
	cat "$MNT/version" >/dev/null || die "the mount does not answer"
	t1=$(now_ms)
	MOUNT_MS=$(elapsed_ms "$t0" "$t1")
}

umount_fs() {
	fusermount3 -u "$MNT" || die "cannot unmount $MNT"
	wait "$DAEMON_PID" || die "infrafs exited with status $? at unmount"
	DAEMON_PID=""
}

requests() {
	awk '$1 == "infrafs_fuse_requests_total" { print $2 }' "$MNT/metrics"
}

rss_kb() {
	awk -v k="$1:" '$1 == k { print $2 }' "/proc/$DAEMON_PID/status"
}

# time_ls DIR: one `ls -l DIR`; sets LS_MS and LS_N (lines but "total").
time_ls() {
	local t0 t1

	t0=$(now_ms)
	ls -l "$1" >"$WORK/ls.out" || die "ls -l $1 failed"
	t1=$(now_ms)
	LS_MS=$(elapsed_ms "$t0" "$t1")
	LS_N=$(($(wc -l <"$WORK/ls.out") - 1))
}

median3() {
	printf '%s\n' "$@" | sort -g | sed -n 2p
}

# verdict VAR OK: sets VAR to "met" or "MISSED" and counts a miss for
# BENCH_STRICT (no command substitution: the count must survive).
MISSES=0
verdict() {
	if [[ $2 == 1 ]]; then
		printf -v "$1" met
	else
		MISSES=$((MISSES + 1))
		printf -v "$1" MISSED
	fi
}

# ge A B: 1 when A >= B (floats).
ge() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b) ? 1 : 0 }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? 1 : 0 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b ? a / b : 0 }'; }
per() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b ? a / b : 0 }'; }

POOLS=$MNT/dev/pools
PREFIX=p

# ---- phase 1: a fresh mount, populated --------------------------------------

# Other work on the machine shows up in every figure: measure how busy
# its CPUs are for one second before starting, and say so in the header.
cpu_busy() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat
}
read -r BUSY0 TOTAL0 < <(cpu_busy)
sleep 1
read -r BUSY1 TOTAL1 < <(cpu_busy)
BACKGROUND=$(awk -v b=$((BUSY1 - BUSY0)) -v t=$((TOTAL1 - TOTAL0)) \
	'BEGIN { printf "%.0f%%", t ? 100 * b / t : 0 }')
echo "bench: mounting a fresh infrafs under $WORK" >&2
mount_fs
mkdir "$MNT/dev"

echo "bench: creating $RESOURCES pools (mkdir + spec write each)" >&2
POP=$("$B" populate "$POOLS" "$RESOURCES" "$POP_THREADS" "$PREFIX") ||
	die "populating failed"

# ---- phase 2: durable commits, 1 and WRITERS writers ------------------------

# Writers commit to the first pools; every commit carries a value never
# used before on its pool, so each accepted one must add one revision.
echo "bench: durable commits, 1 and $WRITERS writers, ${SECS} s each" >&2
HIST0=$("$B" count "$MNT/dev/history")
REQ0=$(requests)
C1=$("$B" commit "$POOLS" "$PREFIX" 1 "$SECS" 1000000) || die "1-writer run failed"
REQ1=$(requests)
CN=$("$B" commit "$POOLS" "$PREFIX" "$WRITERS" "$SECS" 2000000) ||
	die "$WRITERS-writer run failed"
HIST1=$("$B" count "$MNT/dev/history")
C1_OK=$(kv "$C1" ok)
CN_OK=$(kv "$CN" ok)
COMMITS=$((C1_OK + CN_OK))
FAILED=$(($(kv "$C1" failed) + $(kv "$CN" failed)))
REVS=$(($(kv "$HIST1" entries) - $(kv "$HIST0" entries)))
REQ_PER_COMMIT=$(per $((REQ1 - REQ0)) "$C1_OK")
# getdents64 sees every revision; readdir(3), which ls uses, drops
# entries whose inode number is 0: count both, report a difference.
HIST_SEEN=$(kv "$HIST1" readdir_entries)
HIST_ALL=$(kv "$HIST1" entries)

# ---- phase 3: open+read+close of status, against tmpfs ----------------------

# Two references beside tmpfs: floor.c, a FUSE server that answers from
# memory and does nothing else (what any FUSE daemon pays per open), and
# the same with open answered ENOSYS (no request reaches the daemon per
# open at all). They need the fuse3 headers; without them the rows say n/a.
# Three rounds, the four loops taking turns in each, and the median of
# each: a burst of other work then spoils one sample, not a comparison.
STATUS=$POOLS/${PREFIX}00000/status
cat "$STATUS" >"$SHM/status"
declare -A LOOP_PATH=([infrafs]=$STATUS [tmpfs]=$SHM/status)
LOOPS=(infrafs tmpfs)
# shellcheck disable=SC2086 # pkg-config prints several words on purpose
if FUSE_FLAGS=$(pkg-config --cflags --libs fuse3 2>/dev/null) &&
	cc -std=c17 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE \
		-o "$WORK/floor" "$ROOT/tests/bench/floor.c" $FUSE_FLAGS; then
	for mode in floor floor-no-open; do
		dir=$WORK/mnt-$mode
		mkdir "$dir"
		FLOOR_MNTS+=("$dir")
		args=("$SHM/status" "$dir")
		[[ $mode == floor-no-open ]] && args=(--no-open "${args[@]}")
		"$WORK/floor" "${args[@]}" 2>>"$WORK/floor.log" &
		FLOOR_PIDS+=($!)
		for _ in $(seq 1 200); do
			mountpoint -q "$dir" && break
			sleep 0.02
		done
		cat "$dir/status" >/dev/null || die "floor.c did not mount"
		LOOP_PATH[$mode]=$dir/status
		LOOPS+=("$mode")
	done
else
	echo "bench: no fuse3 headers; the FUSE floor rows are left out" >&2
fi
echo "bench: open+read+close loops, 3 rounds of ${SECS} s: ${LOOPS[*]}" >&2
declare -A RATES=()
READ_OPS=0
READ_REQ=0
for _ in 1 2 3; do
	for l in "${LOOPS[@]}"; do
		[[ $l == infrafs ]] && REQ0=$(requests)
		R=$("$B" readloop "${LOOP_PATH[$l]}" "$SECS") ||
			die "read loop on $l failed"
		RATES[$l]+="$(kv "$R" per_sec) "
		if [[ $l == infrafs ]]; then
			READ_REQ=$((READ_REQ + $(requests) - REQ0))
			READ_OPS=$((READ_OPS + $(kv "$R" ops)))
		fi
	done
done
for i in "${!FLOOR_MNTS[@]}"; do
	fusermount3 -u "${FLOOR_MNTS[$i]}" || die "cannot unmount ${FLOOR_MNTS[$i]}"
	wait "${FLOOR_PIDS[$i]}" || true
done
FLOOR_MNTS=()
FLOOR_PIDS=()
loop_rate() {
	if [[ -n ${RATES[$1]:-} ]]; then
		# shellcheck disable=SC2086 # three numbers, split on purpose
		median3 ${RATES[$1]}
	else
		echo n/a
	fi
}
RF_RATE=$(loop_rate infrafs)
RT_RATE=$(loop_rate tmpfs)
FLOOR_RATE=$(loop_rate floor)
FLOOR_NOOPEN_RATE=$(loop_rate floor-no-open)
READ_RATIO=$(ratio "$RF_RATE" "$RT_RATE")
REQ_PER_READ=$(per "$READ_REQ" "$READ_OPS")

# A long-lived daemon's footprint: everything above, then every status.
"$B" readall "$POOLS" "$PREFIX" "$RESOURCES" status >/dev/null ||
	die "reading every status failed"
ls -l "$POOLS" >/dev/null
RSS_LONG=$(rss_kb VmRSS)
HWM_LONG=$(rss_kb VmHWM)
umount_fs

# ---- phase 4: a fresh daemon on the same store: listings and memory ---------

echo "bench: remounting; ls -l, stat and read of $RESOURCES pools" >&2
# A cold ls -l happens once per mount: three mounts, the median of three.
LS_C=()
MOUNTS=()
for i in 1 2 3; do
	((i == 1)) || umount_fs
	mount_fs
	MOUNTS+=("$MOUNT_MS")
	RSS_START=$(rss_kb VmRSS)
	# Nothing is cached in the kernel or the daemon's render cache yet.
	REQ0=$(requests)
	time_ls "$POOLS"
	LS_COLD_REQ=$(($(requests) - REQ0))
	LS_C+=("$LS_MS")
	LS_COLD_N=$LS_N
done
LS_COLD=$(median3 "${LS_C[@]}")
REMOUNT_MS=$(median3 "${MOUNTS[@]}")
LS_W=()
for _ in 1 2 3; do
	time_ls "$POOLS"
	LS_W+=("$LS_MS")
done
LS_WARM=$(median3 "${LS_W[@]}")
LS_WARM_N=$LS_N
REQ0=$(requests)
time_ls "$POOLS"
LS_WARM_REQ=$(($(requests) - REQ0))
DIRCOUNT=$("$B" count "$POOLS")
POOLS_SEEN=$(kv "$DIRCOUNT" readdir_entries)
POOLS_ALL=$(kv "$DIRCOUNT" entries)

# The kernel trusts names and attributes for 1 s (FS_CACHE_SECONDS):
# the first pass waits that out and asks the daemon for each; the second
# follows at once and mostly hits the kernel's cache.
sleep 1.2
REQ0=$(requests)
S1=$("$B" statall "$POOLS" "$PREFIX" "$RESOURCES") || die "stat pass failed"
S1_REQ=$(($(requests) - REQ0))
S2=$("$B" statall "$POOLS" "$PREFIX" "$RESOURCES") || die "stat pass failed"

RA=$("$B" readall "$POOLS" "$PREFIX" "$RESOURCES" status) ||
	die "reading every status failed"
RSS=$(rss_kb VmRSS)
HWM=$(rss_kb VmHWM)

# Beyond the target: every file of every pool read once, as `grep -r`
# would. Shows whether memory grows with what has been read.
FULL_ROW=""
if [[ ${BENCH_FULL_READ:-1} == 1 ]]; then
	echo "bench: reading every file of every pool once" >&2
	mapfile -t FILES < <(ls "$POOLS/${PREFIX}00000")
	FR=$("$B" readall "$POOLS" "$PREFIX" "$RESOURCES" "${FILES[@]}") ||
		die "reading every file failed"
	FULL_ROW="$(kv "$FR" files) files in $(awk -v m="$(kv "$FR" ms)" 'BEGIN { printf "%.1f", m / 1000 }') s"
	RSS_FULL=$(rss_kb VmRSS)
fi
umount_fs

# Reference: the same ls -l on tmpfs folders, warm.
mkdir "$SHM/pools"
(cd "$SHM/pools" && seq -f "${PREFIX}%05g" 0 $((RESOURCES - 1)) | xargs mkdir)
ls -l "$SHM/pools" >/dev/null
LS_W=()
for _ in 1 2 3; do
	time_ls "$SHM/pools"
	LS_W+=("$LS_MS")
done
LS_TMPFS=$(median3 "${LS_W[@]}")

# ---- the table --------------------------------------------------------------

mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }

RSS_MAX=$((RSS > RSS_LONG ? RSS : RSS_LONG))
verdict V_READ "$(ge "$READ_RATIO" 0.25)"
LS_OK=$(lt "$LS_COLD" 100)
[[ $LS_COLD_N == "$RESOURCES" ]] || LS_OK=0
verdict V_LS "$LS_OK"
verdict V_COMMIT "$(ge "$(kv "$CN" per_sec)" 1000)"
verdict V_RSS "$(lt "$RSS_MAX" $((100 * 1024)))"
verdict V_LOST "$([[ $REVS == "$COMMITS" && $FAILED == 0 ]] && echo 1 || echo 0)"
verdict V_LIST "$([[ $POOLS_SEEN == "$RESOURCES" && $HIST_SEEN == "$HIST_ALL" ]] && echo 1 || echo 0)"

MEM_GB=$(awk '$1 == "MemTotal:" { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
CPU=$(awk -F'\t*: *' '$1 == "model name" { print $2; exit }' /proc/cpuinfo)
DISK=$(findmnt -no SOURCE,FSTYPE -T "$WORK" | tr -s ' ')
DEV=$(basename "$(findmnt -no SOURCE -T "$WORK")")
ROTA=$(cat "/sys/block/$DEV/queue/rotational" 2>/dev/null || echo "?")
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || REV="$REV+changes"

row() { printf '%-3s %-48s %-28s %-14s %s\n' "$@"; }

echo
echo "infrafs benchmark: $("$BIN" --version) ($REV), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) CPUs ($CPU), ${MEM_GB} GiB RAM, Linux $(uname -r)," \
	"state store on $DISK (rotational=$ROTA)"
echo "run: $RESOURCES pools, ${SECS} s per timed loop, $WRITERS writers;" \
	"CPU busy with other work before the run: $BACKGROUND"
echo
row "#" "figure" "value" "target" "result"
row "1" "status open+read+close, infrafs (median of 3)" "$RF_RATE /s" "" ""
row "" "same loop on tmpfs (/dev/shm)" "$RT_RATE /s" "" ""
row "" "infrafs / tmpfs" "$READ_RATIO" ">= 0.25" "$V_READ"
row "" "same loop, minimal FUSE server (floor.c)" "$FLOOR_RATE /s" "" ""
row "" "same loop, floor.c with no open/release" "$FLOOR_NOOPEN_RATE /s" "" ""
row "" "FUSE requests per open+read+close" "$REQ_PER_READ" "" ""
row "2" "ls -l pools/, cold (3 fresh mounts, median)" "$LS_COLD ms, $LS_COLD_N listed" "< 100 ms, all" "$V_LS"
row "" "  the three cold runs" "${LS_C[*]} ms" "" ""
row "" "ls -l pools/, warm (median of 3)" "$LS_WARM ms, $LS_WARM_N listed" "" ""
row "" "FUSE requests: cold ls -l / warm ls -l" "$LS_COLD_REQ / $LS_WARM_REQ" "" ""
row "" "ls -l of $RESOURCES folders on tmpfs, median of 3" "$LS_TMPFS ms" "" ""
row "" "stat every pool, kernel cache expired" "$(kv "$S1" ms) ms ($(kv "$S1" per_sec) /s)" "" ""
row "" "  FUSE requests for that pass" "$S1_REQ" "" ""
row "" "stat every pool, warm" "$(kv "$S2" ms) ms ($(kv "$S2" per_sec) /s)" "" ""
row "" "pools/ entries: readdir(3) / getdents64" "$POOLS_SEEN / $POOLS_ALL" "= $RESOURCES" "$V_LIST"
row "" "history/ entries: readdir(3) / getdents64" "$HIST_SEEN / $HIST_ALL" "equal" ""
row "3" "durable commits, 1 writer" "$(kv "$C1" per_sec) /s" "" ""
row "" "  latency p50 / p99" "$(kv "$C1" p50_ms) / $(kv "$C1" p99_ms) ms" "" ""
row "" "durable commits, $WRITERS writers" "$(kv "$CN" per_sec) /s" ">= 1000 /s" "$V_COMMIT"
row "" "  latency p50 / p99" "$(kv "$CN" p50_ms) / $(kv "$CN" p99_ms) ms" "" ""
row "" "FUSE requests per commit (1 writer)" "$REQ_PER_COMMIT" "" ""
row "" "revisions added / commits accepted" "$REVS / $COMMITS ($FAILED refused)" "equal, 0" "$V_LOST"
row "4" "daemon VmRSS, fresh, after ls+stat+read all" "$(mb "$RSS") (peak $(mb "$HWM"))" "< 100 MB" "$V_RSS"
row "" "daemon VmRSS, long-lived (phases 1-3)" "$(mb "$RSS_LONG") (peak $(mb "$HWM_LONG"))" "" ""
row "" "daemon VmRSS right after mount" "$(mb "$RSS_START")" "" ""
row "+" "populate: mkdir + spec, $POP_THREADS threads" "$(kv "$POP" seconds) s ($(kv "$POP" per_sec) /s)" "" ""
row "" "mount with $RESOURCES pools in the store" "$REMOUNT_MS ms (median of 3)" "" ""
row "" "read every status once (fresh mount)" "$(kv "$RA" ms) ms ($(kv "$RA" per_sec) /s)" "" ""
if [[ -n $FULL_ROW ]]; then
	row "" "read every file of every pool once" "$FULL_ROW" "" ""
	row "" "  daemon VmRSS after that" "$(mb "$RSS_FULL")" "" ""
fi
echo
echo "targets missed or checks failed: $MISSES"

if [[ -n ${BENCH_STRICT:-} ]] && ((MISSES > 0)); then
	exit 2
fi
exit 0
