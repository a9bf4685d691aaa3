#!/bin/bash
# `make test`: our own tests, then CPython's full suite on cowpy (default
# mode, then PYTHONCOWGC=arena), each judged against
# Lib/test/cowpy_known_failures.txt.  Ends with `N passed, N failed`
# (our test cases + upstream test files) and exits non-zero on any failure.
#   COWPY_SKIP_UPSTREAM=1   only our tests
#   COWPY_SKIP_DEBUG=1      not the debug build's short form
#   COWPY_UPSTREAM_ARGS=... extra regrtest arguments (e.g. a test subset)
set -u

# Everything runs inside main(), which bash reads whole before running it,
# so editing this file during a run cannot change the running copy.
main() {
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cowpy=$root/build/cowpy/bin/python3
logs=$root/build/test-logs
mkdir -p "$logs"
passed=0
failed=0

# unittest LABEL ARGS...: run with cowpy, count its test cases.
unittest_step() {
    local label=$1; shift
    local log=$logs/$label.log
    echo "== $label"
    "$cowpy" -m unittest -v "$@" >"$log" 2>&1
    local rc=$?
    local ran bad
    ran=$(sed -n 's/^Ran \([0-9]*\) tests\?.*/\1/p' "$log" | tail -n 1)
    bad=$(grep -E '^(FAIL|ERROR):' "$log" | wc -l)
    if [ -z "$ran" ]; then
        ran=0; bad=1
    fi
    if [ $rc -ne 0 ] && [ "$bad" = 0 ]; then bad=1; fi
    grep -E '^(FAIL|ERROR):|^(OK|FAILED)' "$log" | sed 's/^/   /'
    [ "$bad" = 0 ] || tail -n 60 "$log"
    passed=$((passed + ran - bad)); failed=$((failed + bad))
}

for t in tests/test_*.py; do
    unittest_step "$(basename "$t" .py)" "$t"
done
for mod in $(cd Lib/test && ls test_*.py 2>/dev/null | sed 's/\.py$//'); do
    unittest_step "$mod" "test.$mod"
done

# regrtest_step LABEL COMMAND...: a regrtest run, counted by test cases
# (a refleak found fails one more).
regrtest_step() {
    local label=$1; shift
    local log=$logs/$label.log
    echo "== $label"
    "$@" >"$log" 2>&1
    local rc=$?
    local ran bad
    ran=$(sed -n 's/^Total tests: run=\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    bad=$(sed -n 's/^Total tests: .*failures=\([0-9]*\).*/\1/p' "$log" \
          | tail -n 1)
    ran=${ran:-0}; bad=${bad:-0}
    if [ $rc -ne 0 ]; then bad=$((bad + 1)); ran=$((ran + 1)); fi
    grep -E "^Total tests:|^Result:|leaked" "$log" | sed 's/^/   /'
    [ $rc = 0 ] || tail -n 60 "$log"
    passed=$((passed + ran - bad)); failed=$((failed + bad))
}

# The debug build's short form (docs/reliability.md): our test modules
# with the differential oracle checking every collection, and -R 3:3
# refleak hunting.  `make check-debug` runs the long form.
debug=$root/build/obj/cowpy-debug/python
if [ "${COWPY_SKIP_DEBUG:-0}" != 1 ]; then
    if [ -x "$debug" ]; then
        regrtest_step debug-oracle env PYTHONCOWORACLE=1 PYTHONCOWGC=arena \
            "$debug" -m test --timeout 1800 test_gc_cow test_gc_cow_faults \
            test_gc_cow_immortal test_gc_cow_fuzz
        # Default mode: shared collections with scratch in the headers
        # (before any fork) and in the side arena (after).
        regrtest_step debug-oracle-default env PYTHONCOWORACLE=1 \
            PYTHONCOWGC=default "$debug" -m test --timeout 1800 test_gc_cow \
            test_gc_cow_faults test_gc_cow_immortal
        regrtest_step debug-refleak "$debug" -m test --timeout 1800 \
            -R 3:3 test_gc_cow test_gc_cow_faults test_gc_cow_immortal
    else
        echo "== debug: $debug missing (make cowpy-debug)"
        failed=$((failed + 1))
    fi
fi

# upstream LABEL [ENV=VAL ...]: the full suite in one mode.
upstream_step() {
    local label=$1; shift
    local envargs=()
    for kv in "$@"; do envargs+=(--env "$kv"); done
    local out
    out=$("$cowpy" Tools/make/upstream_suite.py "$cowpy" \
            --known Lib/test/cowpy_known_failures.txt \
            --log "$logs/upstream-$label.log" --label "$label" \
            "${envargs[@]}" ${COWPY_UPSTREAM_ARGS:-})
    echo "$out"
    local line p f
    line=$(echo "$out" | tail -n 1)
    p=$(echo "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
    f=$(echo "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-1}))
}

if [ "${COWPY_SKIP_UPSTREAM:-0}" != 1 ]; then
    # Default mode, then with every collection through the side arena.
    upstream_step default
    upstream_step arena PYTHONCOWGC=arena
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
}

main "$@"
exit $?
