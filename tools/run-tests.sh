#!/usr/bin/env bash
# Builds infrafs three times (optimised; with AddressSanitizer and
# UndefinedBehaviorSanitizer; with ThreadSanitizer) and runs every test
# against each build:
# C unit tests, then the file-system tests that mount the real daemon.
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
	local dir=$1
	shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir"
}

run() {
	local dir=$1
	echo "== tests with $dir"
	meson test -C "$dir" --print-errorlogs
}

build build
build build-asan -Db_sanitize=address,undefined -Db_lundef=false \
	-Dbuildtype=debug

# ---- release build: compiled, not tested ----
# -O3 lets the compiler see further (-Wformat-truncation and friends): the
# release build must compile warning-free as well.
build build-release --buildtype=release
# ---- end of release build ----

# Sanitizer findings must fail the run, not scroll past.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0

status=0
dirs=(build build-asan)
run build || status=1
run build-asan || status=1

# ---- ThreadSanitizer -------------------------------------------------------
# The daemon's threads (FUSE workers, committer, notifier, reconciler) built
# with -fsanitize=thread, and every test run against that build: the whole
# fs suite takes about 5 minutes here, tests/fs/test_stress.py included.
# halt_on_error=0 lets a test finish and its daemon log every report; the
# fs tests fail on the word "ThreadSanitizer" in that log (conftest.py), and
# a daemon that reported exits 66. tests/tsan.supp holds suppressions for
# reports inside libraries built without the sanitizer, and nothing else.
build build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
TSAN_OPTIONS="halt_on_error=0:exitcode=66:second_deadlock_stack=1"
TSAN_OPTIONS+=":suppressions=$PWD/tests/tsan.supp"
export TSAN_OPTIONS
run build-tsan || status=1
dirs+=(build-tsan)
# ---- end of ThreadSanitizer ------------------------------------------------

# ---- fuzz: the spec language under libFuzzer (clang, ASan+UBSan) ----
# Replays tests/fuzz/regressions, then fuzzes for 60 s from a copy of the
# seed corpus; a crash, leak or failed check fails the run.
echo "== fuzz"
tools/fuzz.sh 60 || status=1
# ---- end fuzz ----

# ---- Debian package: dpkg-buildpackage, dpkg-deb -c and lintian ----
# About 45 s on two busy cores. INFRAFS_PACKAGE_INSTALL=1 (a throwaway
# machine, such as CI's) also installs it, mounts through /sbin's helper
# and purges it.
echo "== package"
tests/package/build.sh ${INFRAFS_PACKAGE_INSTALL:+--install} || status=1
# ---- end package ----

# One closing line over every build: each C unit-test program counts as
# one test, each file-system test case as one.
python3 - "${dirs[@]}" <<'PY'
import json, os, sys
import xml.etree.ElementTree as ET
passed = failed = skipped = 0
for d in sys.argv[1:]:
    for line in open(f"{d}/meson-logs/testlog.json"):
        r = json.loads(line)
        if r["name"] == "fs":
            continue
        if r["result"] in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r["result"] == "SKIP":
            skipped += 1
        else:
            failed += 1
    junit = f"{d}/tests/fs-results.xml"
    if not os.path.exists(junit):
        failed += 1
        continue
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        n = int(suite.get("tests"))
        bad = int(suite.get("failures")) + int(suite.get("errors"))
        skip = int(suite.get("skipped"))
        passed += n - bad - skip
        failed += bad
        skipped += skip
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
