#!/bin/bash
# Apply patches/ to build/src/cowpy (a git tree whose base is tagged
# "upstream"), then regenerate CPython's generated files (regen.sh).
#
# Usage: Tools/make/apply_series.sh PYTHON PATCH...
#
# Re-applying resets the files the series touches to upstream and applies
# the series again; every file whose content comes out the same gets its
# old mtime back, so make recompiles only what really changed (a new
# global string, for one, would otherwise rebuild the whole interpreter).
set -eu
py=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
tree=$root/build/src/cowpy
git() { "$root/Tools/make/cowgit" "$@"; }
ident=(-c user.name=cowpy -c user.email=cowpy@localhost)

if ! git diff --quiet HEAD || ! git diff --cached --quiet; then
    echo "build/src/cowpy has uncommitted edits: commit them and run" >&2
    echo "'make export-patches', or discard them, first." >&2
    exit 1
fi
git am --abort >/dev/null 2>&1 || true

ids() { git patch-id | cut -d' ' -f1 | sort; }
if [ "$(git rev-list upstream..HEAD | wc -l)" != 0 ] &&
   [ "$(git format-patch --stdout upstream..HEAD | ids)" = \
     "$(cat "$@" /dev/null | ids)" ]; then
    echo "patches already applied"
else
    keep=$(mktemp -d "$root/build/src/.keep.XXXXXX")
    trap 'rm -rf "$keep"' EXIT
    # Files the old series touched, and the generated ones.
    files=$( { git diff --name-only upstream HEAD;
               git ls-files -v | sed -n 's/^h //p'; } | sort -u)
    for f in $files; do
        if [ -f "$tree/$f" ]; then
            mkdir -p "$keep/$(dirname "$f")"
            cp -p "$tree/$f" "$keep/$f"
        fi
    done
    git reset -q --hard upstream
    if ! git "${ident[@]}" am -q --committer-date-is-author-date "$@"; then
        echo "a patch did not apply; resolve it in build/src/cowpy" >&2
        echo "(patches/README.md, 'Rebasing onto a new upstream" \
             "release')." >&2
        exit 1
    fi
    "$root/Tools/make/regen.sh" "$py"
    for f in $files; do
        if [ -f "$tree/$f" ] && cmp -s "$keep/$f" "$tree/$f"; then
            touch -r "$keep/$f" "$tree/$f"
        fi
    done
    exit 0
fi
"$root/Tools/make/regen.sh" "$py"
