#!/bin/sh
# Fetch, verify and unpack the .debs upstream/servers.pin names (or those of
# a PINFILE given as first argument) into DEST: DEST/usr/lib/python3/
# dist-packages then holds their modules.  Never installs anything.
#
#     upstream/fetch_debs.sh [PINFILE] DEST
#
# Each .deb comes from the cache ($COWPY_CACHE_DIR/debs, default
# ~/.cache/cowpy/debs) or else from the pool of the Debian mirror this
# machine's own apt sources name; either way it must have the pinned size
# and sha256 (the values of the suite's signed index) before it is
# unpacked or cached.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ge 2 ]; then pin=$1; shift; else pin=$here/servers.pin; fi
[ $# -eq 1 ] || { echo "usage: $0 [PINFILE] DEST" >&2; exit 2; }
dest=$1
. "$here/debian.sh"

cache=${COWPY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cowpy}/debs
say() { echo "cowpy-fetch-debs: $*" >&2; }
mkdir -p "$cache" "$dest"
work=$(mktemp -d "${TMPDIR:-/tmp}/cowpy-debs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ok FILE SIZE SHA256: the file has the pinned size and sha256.
ok() {
    [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$2" ] \
        && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$3" ]
}

mirror=
fails=0
grep -v -e '^#' -e '=' "$pin" | while read -r pkg ver path size sum; do
    [ -n "$pkg" ] || continue
    deb=$cache/$(basename "$path")
    if ! ok "$deb" "$size" "$sum"; then
        [ -f "$deb" ] && say "refusing cached $deb (size or sha256 differ)"
        rm -f "$deb"
        if [ -z "$mirror" ]; then
            mirror=$(debian_mirror) || {
                say "no Debian mirror in this machine's apt sources"
                exit 1
            }
        fi
        say "fetching $pkg $ver from $mirror"
        if command -v curl >/dev/null 2>&1; then
            curl -fsSL --connect-timeout 10 --max-time 600 \
                 -o "$work/dl" "$mirror/$path" 2>"$work/err" || true
        else
            /usr/lib/apt/apt-helper download-file "$mirror/$path" \
                "$work/dl" >"$work/err" 2>&1 || true
        fi
        if ! ok "$work/dl" "$size" "$sum"; then
            say "cannot get $pkg $ver: $mirror/$path"
            say "  (expected size $size sha256 $sum; $(head -c 300 "$work/err"))"
            say "  if the suite moved on, run upstream/new_servers_pin.sh;"
            say "  or put $(basename "$path") with that sha256 into $cache"
            exit 1
        fi
        cp "$work/dl" "$deb.$$" && mv -f "$deb.$$" "$deb"
    fi
    dpkg-deb -x "$deb" "$dest"
done
say "unpacked $(grep -c -v -e '^#' -e '=' "$pin") packages into $dest"
