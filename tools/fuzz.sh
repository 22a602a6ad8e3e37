#!/usr/bin/env bash
# Fuzzes the spec language (tests/fuzz/spec_fuzz.c) under libFuzzer with
# AddressSanitizer (leaks included) and UndefinedBehaviorSanitizer:
# builds build-fuzz/ with clang, replays the inputs that once failed, then
# fuzzes for SECONDS (default 60) from a copy of the seed corpus, so the
# source tree is never written. Any crash, leak, undefined behaviour or
# failed check exits non-zero; the input is left in build-fuzz/artifacts/,
# to be kept under tests/fuzz/regressions/ with the fix.
#
#   tools/fuzz.sh             # 60 s, as tools/run-tests.sh runs it
#   tools/fuzz.sh 3600        # an hour; extra arguments go to libFuzzer
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
dir=build-fuzz
fuzzer=$dir/tests/fuzz/fuzz_spec

if [ -d "$dir" ]; then
	meson setup --reconfigure "$dir" >/dev/null
else
	CC=${FUZZ_CC:-clang-14} meson setup "$dir" -Dfuzz=true \
		-Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C "$dir" tests/fuzz/fuzz_spec

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
symbolizer=/usr/lib/llvm-14/bin/llvm-symbolizer
[ -x "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH=$symbolizer

echo "== fuzz: replay tests/fuzz/regressions"
"$fuzzer" tests/fuzz/regressions/* 2>&1 | tail -n 40

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$dir/artifacts"
cp tests/fuzz/corpus/* "$work/corpus/"

# One process on one core; -timeout makes a slow input a failure too.
# libFuzzer's progress lines go to a log; its summary and any failure
# are shown.
echo "== fuzz: $seconds s from tests/fuzz/corpus"
log=$dir/fuzz.log
rc=0
timeout $((seconds + 120)) "$fuzzer" -max_total_time="$seconds" \
	-timeout=10 -dict=tests/fuzz/spec.dict -print_final_stats=1 \
	-artifact_prefix="$dir/artifacts/" "$@" "$work/corpus" \
	>"$log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
	tail -n 80 "$log"
	echo "fuzz: failed (exit $rc); the input is in $dir/artifacts/" >&2
	exit 1
fi
grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec)' \
	"$log" || true
