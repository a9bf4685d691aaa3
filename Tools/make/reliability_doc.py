"""Refresh the generated figures in docs/reliability.md.

    python3 Tools/make/reliability_doc.py [NAME ...]

Each reliability target (make check-debug, check-asan, fuzz, soak) writes
bench/results/reliability/NAME.md, a markdown fragment with its figures.
This copies every fragment named (all of them by default) into
docs/reliability.md between the markers

    <!-- figures:NAME -->  ...  <!-- /figures:NAME -->

so the document always quotes the last run of each target, and says so.
A fragment without its markers in the document is an error: the prose
around the figures is written by hand, and must exist first.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "bench", "results", "reliability")
DOC = os.path.join(ROOT, "docs", "reliability.md")


def main(names):
    if not names:
        names = sorted(f[:-3] for f in os.listdir(RESULTS)
                       if f.endswith(".md"))
    with open(DOC) as f:
        doc = f.read()
    for name in names:
        path = os.path.join(RESULTS, name + ".md")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            fragment = f.read().strip()
        pattern = re.compile(r"(<!-- figures:%s -->\n).*?(<!-- /figures:%s -->)"
                             % (re.escape(name), re.escape(name)), re.S)
        if not pattern.search(doc):
            sys.exit(f"{DOC}: no <!-- figures:{name} --> markers")
        doc = pattern.sub(lambda m: m.group(1) + fragment + "\n" + m.group(2),
                          doc)
    with open(DOC, "w") as f:
        f.write(doc)


if __name__ == "__main__":
    main(sys.argv[1:])
