#!/usr/bin/env bash
# Installs the packages, builds infrafs, and mounts a demo at ./mnt on the
# local provider, with its state in ./.demo. Unmount: fusermount3 -u mnt
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
	tools/install-deps.sh
fi
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null

mkdir -p mnt .demo
if mountpoint -q mnt; then
	fusermount3 -u mnt
fi
build/infrafs --state "sqlite:$PWD/.demo/state.db" \
	--key-file "$PWD/.demo/secret.key" mnt

if [ ! -d mnt/dev ]; then
	mkdir -p mnt/dev/pools/train mnt/dev/endpoints/chat
	cat >mnt/dev/pools/train/spec <<'SPEC'
# A small pool on this machine.
accelerator = cpu
nodes = 1
labels.team = demo
SPEC
	cat >mnt/dev/endpoints/chat/spec <<'SPEC'
# A web server on this machine, one replica, on the pool's CPU slot.
command = exec python3 -m http.server $PORT --bind 127.0.0.1
health_path = /
pool = train
replicas = 1
SPEC
fi

cat <<'TRY'
infrafs is mounted at ./mnt (state in ./.demo). Try:

  cat mnt/README
  cat mnt/kinds/pool                     # every field of a pool
  cat mnt/dev/endpoints/chat/status      # a running replica, its URL
  build/tools/infrafs-wait mnt/dev/endpoints/chat ready
  echo 2 > mnt/dev/endpoints/chat/replicas   # one field, one revision
  echo 'nodes = two' > mnt/dev/pools/train/spec    # refused at write(2)
  ls mnt/dev/history; cat mnt/dev/history/4/diff
  echo 'rollback 3' > mnt/dev/ctl        # back, as a new revision
  cat mnt/dev/audit
  jq . mnt/dev/endpoints/chat/status.json

Unmount with: fusermount3 -u mnt
TRY
