#!/bin/sh
# Fetch and verify the pinned CPython tarball; print its path on stdout.
#
# Sources, tried in order, each checked for size and sha256 before it is
# accepted (nothing is ever unpacked from an unverified file):
#   1. the cache, $COWPY_CACHE_DIR (default ~/.cache/cowpy);
#   2. $COWPY_UPSTREAM_URL (default: the python.org URL of upstream/pin),
#      with a short connect timeout so an offline machine moves on at once;
#   3. Debian's source package (trixie), whose orig tarball is the same
#      file, fetched with a private apt configuration whose deb-src mirror
#      is derived from this machine's own apt sources.
# A verified download is stored in the cache.  Set COWPY_FETCH_NO_DEBIAN=1
# to skip source 3 (the tests use this).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/pin"

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
if command -v curl >/dev/null 2>&1; then
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
debian_mirror() {
    # The first archive URI configured for this machine's own release:
    # its suites name the release codename exactly (not -security, not a
    # third-party "nodistro"-style suite).
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || return 1
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk -v c="$codename" '
                /^[ \t]*$/ { if (u != "" && s) print u; u = ""; s = 0; next }
                tolower($1) == "uris:" { u = $2 }
                tolower($1) == "suites:" {
                    for (i = 2; i <= NF; i++) if ($i == c) s = 1 }
                END { if (u != "" && s) print u }' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            # deb [options] URI suite components...
            sed -e 's/\[[^]]*\]//' "$f" |
                awk -v c="$codename" '$1 == "deb" && $3 == c { print $2 }'
        done
    } | head -n 1 | grep .
}

if [ "${COWPY_FETCH_NO_DEBIAN:-0}" != 1 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not found; cannot use Debian's source package"
    elif ! mirror=$(debian_mirror); then
        say "no Debian mirror found in this machine's apt sources"
    else
        say "trying Debian $DEBIAN_SUITE source package $DEBIAN_PACKAGE" \
            "from $mirror"
        mkdir -p "$work/parts" "$work/lists/partial" \
                 "$work/cache/archives/partial" "$work/src"
        echo "deb-src $mirror $DEBIAN_SUITE main" > "$work/sources.list"
        set -- -o "Dir::Etc::SourceList=$work/sources.list" \
               -o "Dir::Etc::SourceParts=$work/parts" \
               -o "Dir::State::Lists=$work/lists" \
               -o "Dir::Cache=$work/cache" \
               -o "Debug::NoLocking=1" \
               -o "APT::Sandbox::User=$(id -un)" -q
        if apt-get "$@" update >"$work/apt.log" 2>&1 &&
           (cd "$work/src" &&
            apt-get "$@" source --download-only "$DEBIAN_PACKAGE") \
               >>"$work/apt.log" 2>&1; then
            verify "$work/src/$DEBIAN_ORIG" "Debian $DEBIAN_ORIG" &&
                store "$work/src/$DEBIAN_ORIG"
        else
            say "  apt-get failed:"
            tail -n 5 "$work/apt.log" | sed 's/^/    /' >&2
        fi
    fi
fi

say "could not obtain a verified $TARBALL (size $SIZE, sha256 $SHA256)"
exit 1
