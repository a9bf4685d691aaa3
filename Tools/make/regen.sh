#!/bin/bash
# Regenerate CPython's generated sources in the patched tree with CPython's
# own generators, as `make clinic regen-global-objects` would:
#   Tools/clinic/clinic.py --make       Argument Clinic output (*/clinic/*.h)
#   generate_global_objects.py          the runtime's global strings
#   Tools/cases_generator/*.py          the interpreter's cases and opcode
#                                       metadata, from Python/bytecodes.c
#                                       (make regen-cases)
#
# patches/ carries only generator *inputs* (a Clinic block, a new _Py_ID
# use) and the few lines Clinic writes into the .c file itself, never a
# generated file, so a rebase never conflicts on one.
#
# Usage: Tools/make/regen.sh PYTHON
#   PYTHON runs the generators: the stock twin built from the same tarball,
#   so their output does not depend on the machine's own Python.
#
# Generated files that change are marked assume-unchanged in the tree's
# git index: `cowgit diff`, `commit -a` and `make export-patches` leave
# them out, and resetting the tree to upstream does not rewrite them, so
# their mtime (and the rebuild it would cause) changes only when their
# content does.
set -eu
py=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
tree=$root/build/src/cowpy
git() { "$root/Tools/make/cowgit" "$@"; }

# The generated files: what the generators may write.
generated() {
    grep -E "$@" '(^|/)clinic/[^/]+\.h$|^Include/internal/pycore_(global_strings|runtime_init_generated|unicodeobject_generated|global_objects_fini_generated|opcode_metadata|uop_metadata|uop_ids)\.h$|^Include/opcode_ids\.h$|^Python/(generated_cases|executor_cases|optimizer_cases)\.c\.h$|^Python/opcode_targets\.h$|^Lib/_opcode_metadata\.py$'
}

# make regen-cases, generator by generator (Makefile.pre.in's rules).
regen_cases() {
    local g=Tools/cases_generator b=Python/bytecodes.c
    "$py" $g/opcode_id_generator.py -o Include/opcode_ids.h $b
    "$py" $g/target_generator.py -o Python/opcode_targets.h $b
    "$py" $g/uop_id_generator.py -o Include/internal/pycore_uop_ids.h $b
    "$py" $g/py_metadata_generator.py -o Lib/_opcode_metadata.py $b
    "$py" $g/tier1_generator.py -o Python/generated_cases.c.h $b
    "$py" $g/tier2_generator.py -o Python/executor_cases.c.h $b
    "$py" $g/optimizer_generator.py -o Python/optimizer_cases.c.h \
        Python/optimizer_bytecodes.c $b
    "$py" $g/opcode_metadata_generator.py \
        -o Include/internal/pycore_opcode_metadata.h $b
    "$py" $g/uop_metadata_generator.py \
        -o Include/internal/pycore_uop_metadata.h $b
}

cd "$tree"
# Start from upstream's generated files plus the series' inputs: forget
# what an earlier regeneration left (its inputs may have changed since).
prev=$(git ls-files -v | sed -n 's/^h //p')
if [ -n "$prev" ]; then
    echo "$prev" | git update-index --no-assume-unchanged --stdin
fi

"$py" Tools/clinic/clinic.py --make --exclude Lib/test/clinic.test.c \
    --srcdir . >/dev/null
"$py" Tools/build/generate_global_objects.py >/dev/null
regen_cases >/dev/null

changed=$(git diff --name-only)
stale=$(echo "$changed" | grep . | generated -v || true)
if [ -n "$stale" ]; then
    echo "regen: the generators rewrote files that patches/ carries:" >&2
    echo "$stale" | sed 's/^/  /' >&2
    echo "regen: commit them into the patch that changes their input" >&2
    echo "regen: (see patches/README.md, 'Rebasing'), then" \
         "'make export-patches'." >&2
    exit 1
fi
if [ -n "$changed" ]; then
    echo "$changed" | git update-index --assume-unchanged --stdin
fi
echo "$changed" | grep . | sed 's/^/regenerated: /' || true
