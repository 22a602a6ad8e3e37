#!/usr/bin/env bash
# Installs what infrafs needs to build, run and be tested, on Debian 12.
# Used by tools/demo.sh and .ci/run so both install the same set.
set -euo pipefail

packages=(
	# build
	gcc meson ninja-build pkg-config
	libfuse3-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev
	libssl-dev
	# a followed folder's Git commit subject (Git objects are zlib streams)
	zlib1g-dev
	# kubeconfig files (YAML) for the kubernetes provider
	libyaml-dev
	# the postgresql:// state store, and the server its tests start
	libpq-dev postgresql
	# sd_notify for the Type=notify unit (systemd/infrafs@.service)
	libsystemd-dev
	# --metrics-listen: the metrics file over HTTP
	libmicrohttpd-dev
	# tools/fuzz.sh: clang with libFuzzer (libclang_rt.fuzzer) and the
	# symbolizer for its reports
	clang-14 libclang-rt-14-dev llvm-14
	# run
	fuse3
	# tests drive the mount with these real programs
	python3 python3-pytest jq vim ed diffutils coreutils util-linux passwd curl
	procps openssl
	# whole-tree readers and copiers, tests/fs/test_everyday_tools.py
	zip unzip rsync ripgrep
	# tests/fs/test_metrics.py: promtool check metrics (the prometheus
	# package, about 100 MB installed; the test skips without it)
	prometheus
	# the unit's test: systemd-analyze verify
	systemd
	# tests/package/build.sh: the Debian package and its checks
	dpkg-dev debhelper lintian
	# the rest of tests/fs/test_compat.py's programs (emacs-nox with
	# its dependencies is about 150 MB installed)
	tree nano emacs-nox moreutils attr file patch git nodejs perl less
	# man pages
	man-db groff-base
)

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root (apt-get needs it)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
