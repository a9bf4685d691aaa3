#!/bin/bash
# `make check-debug` / `make check-asan`: run cowpy's checks on a variant
# build (see the Makefile's "variants" section).
#
#   Tools/make/check_variant.sh NAME PYTHON
#
# Steps, each judged pass/fail, with its time:
#   ours      our test modules (Lib/test/test_gc_cow*.py) in default mode
#   ours-arena  the same with every collection through the side arena
#   refleak   (debug) -R 3:3 on our test modules
#   fuzz      Tools/fuzz/gc_fuzz.py for CHECK_FUZZ_SECONDS (default 120)
#   fork-moves  Tools/fuzz/fork_moves.py for half as long
#   upstream  the GC-related upstream tests ($CHECK_UPSTREAM) in arena mode
# In the debug variant every step runs with the differential oracle
# (PYTHONCOWORACLE=1): each side-arena collection is checked against
# gc.c's own algorithm.  In the asan variant objects come from malloc
# (PYTHONMALLOC=malloc) so ASan sees each one, and any ASan or UBSan report
# fails the step.  Writes $COWPY_RESULTS/reliability/check-NAME.{json,md}
# (build/results unless make's RECORD=1 asked for bench/results) and, when
# recording, refreshes docs/reliability.md; exits non-zero if any step
# failed.
set -u

main() {
name=$1
py=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
logs=$root/build/test-logs/check-$name
out=${COWPY_RESULTS:-$root/build/results}/reliability
mkdir -p "$logs" "$out"
fuzz_seconds=${CHECK_FUZZ_SECONDS:-120}
upstream=${CHECK_UPSTREAM:-test_gc test_finalization test_weakref test_descr \
test_dict test_list test_asyncio test_threading test_os \
test_multiprocessing_fork}
ours="test_gc_cow test_gc_cow_faults test_gc_cow_immortal test_gc_cow_code test_gc_cow_fuzz"

# A clean environment: nothing of the caller's PYTHON* settings.
for v in $(env | sed -n 's/^\(PYTHON[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export PYTHONHASHSEED=0
case $name in
debug)
    export PYTHONCOWORACLE=1 ;;
asan)
    export PYTHONMALLOC=malloc
    # CPython frees little at exit by design: leak reports would be noise.
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:print_summary=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1
    ;;
esac

results=()
failed=0
step() {
    local label=$1; shift
    local log=$logs/$label.log
    local t0=$SECONDS
    echo "== check-$name: $label"
    "$@" >"$log" 2>&1
    local rc=$?
    # Sanitizer reports fail a step even when the test harness survived.
    if grep -qE "ERROR: AddressSanitizer|runtime error:|Fatal Python error" \
            "$log"; then
        rc=${rc/#0/99}
    fi
    local dt=$((SECONDS - t0))
    local verdict=pass
    if [ $rc -ne 0 ]; then
        verdict=fail; failed=$((failed + 1))
        tail -n 40 "$log"
    fi
    local summary
    summary=$(grep -E "^Total tests:|^gc_fuzz:|^fork_moves:|^Result:" "$log" \
              | tr '\n' ' ')
    echo "   $verdict in ${dt}s  $summary"
    results+=("$label|$verdict|$dt|$summary")
}

regrtest() {
    "$py" -m test --timeout 1800 "$@"
}

step ours regrtest $ours
step ours-arena env PYTHONCOWGC=arena "$py" -m test --timeout 1800 $ours
if [ "$name" = debug ]; then
    step refleak regrtest -R 3:3 $ours
fi
step fuzz "$py" Tools/fuzz/gc_fuzz.py --seconds "$fuzz_seconds" \
    --json "$logs/fuzz.json"
step fork-moves "$py" Tools/fuzz/fork_moves.py --python "$py" \
    --seconds "$((fuzz_seconds / 2))" --timeout 600
step upstream env PYTHONCOWGC=arena "$py" -m test -j2 --timeout 1800 \
    $upstream

# Figures: JSON for machines, a markdown fragment for docs/reliability.md.
"$py" - "$name" "$out" "$logs" "$failed" "$fuzz_seconds" "${results[@]}" \
    <<'EOF'
import json, os, platform, sys, time
name, out, logs, failed, fuzz_seconds = sys.argv[1:6]
steps = []
for r in sys.argv[6:]:
    label, verdict, secs, summary = r.split("|", 3)
    steps.append({"step": label, "result": verdict, "seconds": int(secs),
                  "summary": summary.strip()})
fuzz = {}
try:
    with open(os.path.join(logs, "fuzz.json")) as f:
        fuzz = json.load(f)
except (OSError, ValueError):
    pass
doc = {"variant": name, "date": time.strftime("%Y-%m-%d %H:%M"),
       "python": sys.version.split()[0], "machine": platform.machine(),
       "cpus": os.cpu_count(), "failed_steps": int(failed), "steps": steps,
       "fuzz": {k: fuzz.get(k) for k in ("cases", "steps", "findings")
                if k in fuzz}}
with open(os.path.join(out, f"check-{name}.json"), "w") as f:
    json.dump(doc, f, indent=1)
lines = [f"`make check-{name}`, {doc['date']}, {doc['cpus']} CPUs: "
         f"**{'clean' if not int(failed) else str(failed) + ' step(s) failed'}**.",
         "", "| step | result | time | summary |", "|---|---|---|---|"]
for s in steps:
    lines.append(f"| {s['step']} | {s['result']} | {s['seconds']} s | "
                 f"{s['summary'].replace('|', '/')} |")
if fuzz:
    lines += ["", f"Fuzzer: {fuzz.get('cases')} cases, {fuzz.get('steps')} "
                  f"steps in {fuzz_seconds} s, "
                  f"{len(fuzz.get('findings') or [])} findings."]
with open(os.path.join(out, f"check-{name}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
EOF
if [ "${COWPY_RECORD:-}" = 1 ]; then
    "$py" Tools/make/reliability_doc.py "check-$name"
fi

echo "check-$name: $((${#results[@]} - failed)) passed, $failed failed"
[ "$failed" = 0 ]
}

main "$@"
exit $?
