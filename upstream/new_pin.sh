#!/bin/bash
# Rewrite upstream/pin for another CPython 3.13 release, from Debian's
# python3.13 source package (the first step of a rebase; see
# patches/README.md).
#
# Usage: upstream/new_pin.sh DEBIAN_VERSION      e.g. 3.13.16-1
#
# The .dsc comes through a private apt configuration (mirror derived from
# this machine's apt sources) from the first suite of DEBIAN_SUITES that
# lists that version; apt checks it against the suite's signed index, and
# the orig tarball's size and sha256 are read from its Checksums-Sha256.
# The tarball itself is then downloaded and verified by upstream/fetch.sh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/pin"
. "$here/debian.sh"
dver=${1:?usage: upstream/new_pin.sh DEBIAN_VERSION (e.g. 3.13.16-1)}
version=${dver%-*}
orig=${DEBIAN_PACKAGE}_$version.orig.tar.xz

mirror=$(debian_mirror) || { echo "no Debian mirror in apt sources" >&2;
                             exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/cowpy-pin.XXXXXX")
trap 'rm -rf "$work"' EXIT
for suite in $(echo "$DEBIAN_SUITES" | tr ',' ' '); do
    d=$work/$suite
    mkdir -p "$d/src"
    debian_apt_update "$d" "deb-src $mirror $suite main" || continue
    if (cd "$d/src" && debian_apt "$d" source --download-only --only-source \
            -o APT::Get::Download-Only=1 "$DEBIAN_PACKAGE=$dver") \
            >>"$d/apt.log" 2>&1; then
        dsc=$d/src/${DEBIAN_PACKAGE}_$dver.dsc
        line=$(awk -v f="$orig" '/^Checksums-Sha256:/ { s = 1; next }
                                 /^[^ ]/ { s = 0 }
                                 s && $3 == f { print $1, $2 }' "$dsc")
        [ -n "$line" ] || { echo "$orig not in $dsc" >&2; exit 1; }
        set -- $line
        top=$(tar -tJf "$d/src/$orig" | head -n 1 | cut -d/ -f1)
        [ "$top" = "Python-$version" ] || {
            echo "$orig unpacks to $top/, not Python-$version/" >&2; exit 1; }
        sed -e "s/^VERSION=.*/VERSION=$version/" \
               -e "s/^TARBALL=.*/TARBALL=Python-$version.tar.xz/" \
               -e "s|^URL=.*|URL=https://www.python.org/ftp/python/$version/Python-$version.tar.xz|" \
               -e "s/^SIZE=.*/SIZE=$2/" \
               -e "s/^SHA256=.*/SHA256=$1/" \
               -e "s/^DEBIAN_VERSION=.*/DEBIAN_VERSION=$dver/" \
               -e "s/^DEBIAN_ORIG=.*/DEBIAN_ORIG=$orig/" \
               -e "s/_3\.13\.[0-9]*-[0-9]*\.dsc/_$dver.dsc/" \
               "$here/pin" > "$work/pin"
        # Rewrite only a change: the pin's mtime rebuilds everything.
        cmp -s "$work/pin" "$here/pin" || cp "$work/pin" "$here/pin"
        echo "upstream/pin: $version (size $2, sha256 $1, Debian $suite)"
        exit 0
    fi
done
echo "no suite of $DEBIAN_SUITES lists $DEBIAN_PACKAGE $dver" >&2
exit 1
