#!/usr/bin/env bash
# Builds the Debian package from this tree in a scratch folder (so that
# dpkg-buildpackage's outputs land there, not beside the tree), checks
# what it installs with dpkg-deb -c, runs lintian, and with --install
# installs it with apt-get, checks the installed daemon, unit and mount
# helper, and purges it again.
#   tests/package/build.sh [--install] [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."

install=0 keep=
while [ $# -gt 0 ]; do
	case $1 in
	--install) install=1 ;;
	--keep) keep=$2; shift ;;
	*) echo "usage: $0 [--install] [--keep DIR]" >&2; exit 2 ;;
	esac
	shift
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
src=$scratch/infrafs
mkdir "$src"
# The tree as committed plus what is not ignored: no build folders.
git ls-files -z --cached --others --exclude-standard |
	tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$src"

start=$(date +%s)
(cd "$src" && dpkg-buildpackage -us -uc -b >"$scratch/build.log" 2>&1) || {
	tail -50 "$scratch/build.log" >&2
	echo "package: dpkg-buildpackage failed" >&2
	exit 1
}
echo "package: built in $(($(date +%s) - start)) s"
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
deb=$scratch/infrafs_${version}_amd64.deb
[ -f "$deb" ] || { echo "package: no $deb" >&2; ls "$scratch" >&2; exit 1; }

fail=0
contents=$(dpkg-deb -c "$deb")
expect() { # MODE OWNER PATH
	if ! grep -Eq "^$1 $2 .* \./$3( -> .*)?\$" <<<"$contents"; then
		echo "package: missing $1 $2 $3" >&2
		fail=1
	fi
}
expect '-rwxr-xr-x' 'root/root' 'usr/bin/infrafs'
for tool in infrafs-wait infrafs-plan infrafs-audit-verify infrafs-backup \
	infrafs-import-tfstate infrafs-migrate; do
	expect '-rwxr-xr-x' 'root/root' "usr/bin/$tool"
done
expect '-rwxr-xr-x' 'root/root' 'sbin/mount\.fuse\.infrafs'
expect '-rw-r--r--' 'root/root' 'lib/systemd/system/infrafs@\.service'
expect '-rw-r--r--' 'root/root' 'etc/infrafs/example\.conf'
expect 'drwx------' 'root/root' 'var/lib/infrafs/'
for page in docs/*.[157]; do
	name=${page#docs/}
	expect '-rw-r--r--' 'root/root' \
		"usr/share/man/man${name##*.}/${name//./\\.}\\.gz"
done
expect 'lrwxrwxrwx' 'root/root' 'usr/share/man/man8/mount\.fuse\.infrafs\.8\.gz'
# The unit starts the installed daemon, and so does the helper.
dpkg-deb -x "$deb" "$scratch/root"
grep -q '^ExecStart=/usr/bin/infrafs ' \
	"$scratch/root/lib/systemd/system/infrafs@.service" ||
	{ echo "package: the unit does not run /usr/bin/infrafs" >&2; fail=1; }
grep -q '^INFRAFS=/usr/bin/infrafs$' "$scratch/root/sbin/mount.fuse.infrafs" ||
	{ echo "package: the helper does not run /usr/bin/infrafs" >&2; fail=1; }
grep -q '^ *\* /etc/infrafs/example.conf' <(dpkg-deb -I "$deb" conffiles |
	sed 's/^/ * /') || { echo "package: example.conf is no conffile" >&2; fail=1; }

if ! lintian --fail-on error "$deb" >"$scratch/lintian.log" 2>&1; then
	cat "$scratch/lintian.log" >&2
	echo "package: lintian found errors" >&2
	fail=1
fi
sed 's/^/package: lintian: /' "$scratch/lintian.log"

# Installing writes /usr/bin, /sbin and /lib/systemd: only where no
# other infrafs is installed, and purged again.
if [ $install = 1 ] && [ $fail = 0 ]; then
	if [ -e /usr/bin/infrafs ] && ! dpkg -s infrafs >/dev/null 2>&1; then
		echo "package: /usr/bin/infrafs exists and is not ours" >&2
		exit 1
	fi
	apt-get install -y -qq "$deb" >/dev/null
	/usr/bin/infrafs --version | head -1
	systemd-analyze verify /lib/systemd/system/infrafs@.service || fail=1
	[ "$(stat -c %a:%U /var/lib/infrafs)" = 700:root ] ||
		{ echo "package: /var/lib/infrafs is not 700 root" >&2; fail=1; }
	# The real mount(8), finding the installed helper in /sbin.
	mkdir "$scratch/mnt"
	if mount -t fuse.infrafs "sqlite:$scratch/s.db" "$scratch/mnt" \
		-o "key_file=$scratch/k.key"; then
		head -1 "$scratch/mnt/version" | grep -q '^infrafs ' || fail=1
		umount "$scratch/mnt"
	else
		fail=1
	fi
	apt-get purge -y -qq infrafs >/dev/null
	[ ! -e /sbin/mount.fuse.infrafs ] || fail=1
fi
[ -z "$keep" ] || cp "$deb" "$keep/"
[ $fail = 0 ] && echo "package: $(basename "$deb") ok"
exit $fail
