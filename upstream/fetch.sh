#!/bin/sh
# Fetch and verify the pinned CPython tarball (or the source a PINFILE
# given as argument names); print its path on stdout.
#
# Sources, tried in order, each checked for size and sha256 before it is
# accepted (nothing is ever unpacked from an unverified file):
#   1. the cache, $COWPY_CACHE_DIR (default ~/.cache/cowpy);
#   2. $COWPY_UPSTREAM_URL (default: the python.org URL of upstream/pin),
#      with a short connect timeout so an offline machine moves on at once;
#   3. Debian's source package (DEBIAN_VERSION of DEBIAN_PACKAGE), whose
#      orig tarball is the same file, fetched with a private apt
#      configuration whose deb-src mirror is derived from this machine's
#      own apt sources; each suite of DEBIAN_SUITES is tried in turn (a
#      version moves from unstable to testing, then out of both), and apt
#      checks the file against the suite's signed index.
# A verified download is stored in the cache.  Set COWPY_FETCH_NO_DEBIAN=1
# to skip source 3 (the tests use this).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# Another pinned source than CPython's: upstream/fetch.sh PINFILE (same
# keys; an empty URL skips source 2).
pinfile=${1:-$here/pin}
. "$pinfile"
. "$here/debian.sh"

cache=${COWPY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cowpy}
url=${COWPY_UPSTREAM_URL:-$URL}
dest=$cache/$TARBALL

say() { echo "cowpy-fetch: $*" >&2; }

# verify FILE WHAT: 0 when FILE has the pinned size and sha256.
verify() {
    if [ ! -f "$1" ]; then
        return 1
    fi
    size=$(stat -c %s "$1")
    sum=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$size" = "$SIZE" ] && [ "$sum" = "$SHA256" ]; then
        return 0
    fi
    say "refusing $2 ($1):"
    say "  expected size $SIZE sha256 $SHA256"
    say "  got      size $size sha256 $sum"
    return 1
}

# store FILE: move a verified file into the cache atomically.
store() {
    mkdir -p "$cache"
    tmp=$cache/.$TARBALL.$$
    cp "$1" "$tmp"
    mv -f "$tmp" "$dest"
    say "cached $dest"
    echo "$dest"
    exit 0
}

work=$(mktemp -d "${TMPDIR:-/tmp}/cowpy-fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. cache
if [ -f "$dest" ]; then
    if verify "$dest" "cached copy"; then
        echo "$dest"
        exit 0
    fi
    rm -f "$dest"
fi

# 2. upstream URL
if [ -z "$url" ]; then
    :
elif command -v curl >/dev/null 2>&1; then
    say "trying $url"
    if curl -fsSL --connect-timeout 5 --max-time 900 -o "$work/dl" "$url" \
            2>"$work/curl.err"; then
        verify "$work/dl" "$url" && store "$work/dl"
    else
        say "  $(tail -n 1 "$work/curl.err")"
    fi
else
    say "curl not found; skipping $url"
fi

# 3. Debian's source package, through a private apt configuration.
# debian_try MIRROR SUITE: download DEBIAN_ORIG as SUITE's index lists it.
debian_try() {
    d=$work/$2
    mkdir -p "$d/src"
    if ! debian_apt_update "$d" "deb-src $1 $2 main"; then
        say "  apt-get update failed:"
        tail -n 3 "$d/apt.log" | sed 's/^/    /' >&2
        return 1
    fi
    if ! (cd "$d/src" && debian_apt "$d" source --download-only \
            "$DEBIAN_PACKAGE=$DEBIAN_VERSION") >>"$d/apt.log" 2>&1; then
        say "  not there: $(tail -n 1 "$d/apt.log")"
        return 1
    fi
    verify "$d/src/$DEBIAN_ORIG" "Debian $DEBIAN_ORIG" &&
        store "$d/src/$DEBIAN_ORIG"
    return 1
}

if [ "${COWPY_FETCH_NO_DEBIAN:-0}" != 1 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not found; cannot use Debian's source package"
    elif ! mirror=$(debian_mirror); then
        say "no Debian mirror found in this machine's apt sources"
    else
        for suite in $(echo "$DEBIAN_SUITES" | tr ',' ' '); do
            say "trying Debian $suite: source $DEBIAN_PACKAGE" \
                "$DEBIAN_VERSION from $mirror"
            debian_try "$mirror" "$suite" || true
        done
    fi
fi

say "could not obtain a verified $TARBALL (size $SIZE, sha256 $SHA256)"
say "from the cache, $url, or Debian ($DEBIAN_PACKAGE $DEBIAN_VERSION in"
say "any of: $DEBIAN_SUITES)."
say "To supply it by hand, put a copy (from python.org, or Debian's pool as"
say "$DEBIAN_ORIG) at $dest; it is used once its size and sha256 match."
exit 1
