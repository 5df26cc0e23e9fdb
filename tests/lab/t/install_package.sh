#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# The Debian package, installed for real: scripts/package builds the .deb from this tree; a clean
# Debian 12 root (debootstrap --variant=minbase, kept as a tarball under the lab cache) installs it
# with apt-get, which pulls exactly the Depends the package declares; then, inside that root,
# `zmigrate --version` runs, `man zmigrate` renders the page, bash completes the subcommands from
# where bash-completion looks, and `dpkg -r` takes every file away again.
# Exit: 0 pass, 1 fail, 125 skip (not root, or no debootstrap/dpkg-deb).

set -euo pipefail

src=${ZMIGRATE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (chroot)"; exit 125; }
for c in debootstrap dpkg-deb cpack unshare; do
    command -v "$c" >/dev/null || { echo "SKIP: $c is missing (scripts/install-deps)"; exit 125; }
done

cache=${ZLAB_PACKAGE_CACHE:-/var/cache/zmigrate-lab/package}
mirror=${ZLAB_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)\/\?$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi

tmp=$(mktemp -d /var/tmp/zmigrate-pkg.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

echo "== scripts/package"
deb=$("$src/scripts/package" "$tmp/build" | tail -n 1)
[ -f "$deb" ] || { echo "FAIL: scripts/package printed no .deb ($deb)"; exit 1; }
echo "built $deb"

echo "== a clean Debian 12 root from $mirror"
mkdir -p "$cache"
stage="$cache/bookworm-minbase-$(printf '%s' "$mirror" | sha256sum | cut -c1-12).tar"
root=$tmp/root
mkdir -p "$root"
if [ -s "$stage" ]; then
    tar -C "$root" -xf "$stage"
else
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
        { tail -20 "$tmp/debootstrap.log"; echo "FAIL: debootstrap from $mirror"; exit 1; }
    tar -C "$root" -cf "$stage.tmp" . && mv "$stage.tmp" "$stage"
fi
cp "$deb" "$root/tmp/"
printf 'deb %s bookworm main\n' "$mirror" >"$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

# Everything below runs in the clean root, in a private mount namespace (its /proc and /dev go
# away with it). apt-get installs the package with its Depends and Recommends (man-db,
# bash-completion), nothing else of this machine is visible.
cat >"$root/tmp/check.sh" <<'CHECK'
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
deb=$(ls /tmp/zmigrate_*.deb)
apt-get -qq update
apt-get install -y -qq "$deb" >/tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 10; }
command -v zmigrate >/dev/null || { echo "zmigrate is not on PATH after install"; exit 11; }
zmigrate --version
MANPAGER=cat man zmigrate 2>/dev/null | grep -q 'zmigrate - move Triton instances' ||
    { echo "man zmigrate does not show the page"; exit 12; }
echo "man zmigrate: ok"
words=$(bash -c '. /usr/share/bash-completion/bash_completion
  COMP_WORDS=(zmigrate mi); COMP_CWORD=1; COMP_LINE="zmigrate mi"; COMP_POINT=${#COMP_LINE}
  __load_completion zmigrate && complete -p zmigrate >/dev/null && _zmigrate zmigrate mi zmigrate
  printf "%s\n" "${COMPREPLY[@]}"')
[ "$words" = migrate ] || { echo "bash completion of 'zmigrate mi' gave '$words'"; exit 13; }
echo "bash completion: ok"
for f in /usr/share/zsh/vendor-completions/_zmigrate /usr/share/fish/vendor_completions.d/zmigrate.fish; do
    [ -s "$f" ] || { echo "missing $f"; exit 14; }
done
dpkg -r zmigrate >/dev/null
for f in /usr/sbin/zmigrate /usr/share/man/man1/zmigrate.1.gz /usr/share/bash-completion/completions/zmigrate; do
    [ ! -e "$f" ] || { echo "dpkg -r left $f"; exit 15; }
done
echo "dpkg -r: ok"
CHECK
if ! out=$(unshare -m --propagation private bash -c '
    root=$1
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    chroot "$root" /bin/bash /tmp/check.sh' _ "$root" 2>&1); then
    fail "in the clean root: $out"
else
    echo "$out"
    want="zmigrate $(sed -n 's/^project(zmigrate VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")"
    grep -qx "$want" <<<"$out" || fail "--version in the clean root: want '$want' in: $out"
fi

if [ "$failures" -gt 0 ]; then
    echo "install_package: $failures failure(s)"
    exit 1
fi
echo "install_package: the package installs in a clean Debian 12 root with its Depends, runs, has its man page and completions, and removes cleanly"
