#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The aws provider observing many endpoints on the fake SageMaker.
#
#   tests/bench/aws.sh [BUILD_DIR]        (default BUILD_DIR: ./build)
#
# Starts tests/fake/aws_fake.py on loopback, then runs
# BUILD_DIR/tests/bench_aws_observe, which makes BENCH_AWS_ENDPOINTS
# endpoints (1000) and times the provider's observe() of all of them with
# BENCH_AWS_LATENCY_MS (50) added to every call and the fake throttling
# anything over BENCH_AWS_RPS (100, the provider's default rate), the
# provider's own limit set to the same. Then it plays the reconciler's
# loop for BENCH_AWS_PACE_S seconds (30) at rest, while every endpoint is
# updating and while COUNT more are creating, and prints the calls per
# endpoint per minute each costs. Method and results: docs/performance.md.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${1:-$ROOT/build}
COUNT=${BENCH_AWS_ENDPOINTS:-1000}
LATENCY=${BENCH_AWS_LATENCY_MS:-50}
RPS=${BENCH_AWS_RPS:-100}
BIN=$BUILD/tests/bench_aws_observe

[ -x "$BIN" ] || { echo "bench: build first ($BIN missing)" >&2; exit 1; }
WORK=$(mktemp -d)
cleanup() {
	[ -n "${FAKE_PID:-}" ] && kill "$FAKE_PID" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

python3 "$ROOT/tests/fake/aws_fake.py" --port 0 --port-file "$WORK/port" \
	--key AKIDBENCH:benchsecret >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
for _ in $(seq 100); do
	[ -s "$WORK/port" ] && break
	sleep 0.1
done
[ -s "$WORK/port" ] || { echo "bench: the fake did not start" >&2; exit 1; }
mkdir -p "$WORK/state/cold"

echo "aws observe: $COUNT endpoints, ${LATENCY} ms per call, ${RPS} requests/s"
env -u AWS_PROFILE AWS_ACCESS_KEY_ID=AKIDBENCH \
	AWS_SECRET_ACCESS_KEY=benchsecret AWS_EC2_METADATA_DISABLED=true \
	"$BIN" "http://127.0.0.1:$(cat "$WORK/port")" "$WORK/state" \
	"$COUNT" "$LATENCY" "$RPS"
