"""Bar chart of bench/results/speed.csv (run by run.py under /usr/bin/python3).

    /usr/bin/python3 bench/speed/plot.py SPEED_CSV OUT_PNG [--title T]

One horizontal bar per workload: the ratio cowpy/stock of median times,
with the bootstrap 95 % interval as error bar and a line at 1.0 (no
difference).  Grey: "no measurable difference" (or too few samples);
red: cowpy slower; green: cowpy faster.  The geometric mean is the last
bar.  Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""

import argparse
import csv

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--title", default="cowpy / stock time (median)")
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    rows = rows[::-1]            # first workload at the top
    names = [r["workload"] for r in rows]
    ratio = [float(r["ratio"]) for r in rows]
    lo = [max(0.0, float(r["ratio"]) - float(r["ci_low"])) for r in rows]
    hi = [max(0.0, float(r["ci_high"]) - float(r["ratio"])) for r in rows]
    colors = []
    for r in rows:
        v = r["verdict"]
        if "slower" in v:
            colors.append("#d9534f")
        elif "faster" in v:
            colors.append("#5cb85c")
        else:
            colors.append("#9e9e9e")
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    y = range(len(rows))
    ax.barh(list(y), [x - 1.0 for x in ratio], left=1.0, color=colors,
            xerr=[lo, hi], capsize=3, ecolor="black", height=0.6)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(y))
    ax.set_yticklabels([("$\\bf{%s}$" % n.replace("_", "\\_")) if n == "GEOMEAN"
                        else n for n in names])
    span = max([abs(float(r["ci_low"]) - 1) for r in rows] +
               [abs(float(r["ci_high"]) - 1) for r in rows] + [0.05])
    ax.set_xlim(1 - span * 1.25, 1 + span * 1.25)
    for yi, (r, x) in enumerate(zip(rows, ratio)):
        ax.text(1 + span * 1.22, yi, "%.3f" % x, va="center", ha="right",
                fontsize=8)
    ax.set_xlabel("time ratio cowpy / stock (> 1: cowpy slower); "
                  "error bars: bootstrap 95% interval")
    ax.set_title(a.title, fontsize=10)
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color="#9e9e9e", label="no measurable difference"),
                       Patch(color="#d9534f", label="cowpy slower"),
                       Patch(color="#5cb85c", label="cowpy faster")],
              loc="lower left", fontsize=7, framealpha=0.8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.png, dpi=110)


if __name__ == "__main__":
    main()
