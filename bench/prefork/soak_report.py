"""The soak's report (bench/prefork/soak.py): the printed figures and
per-window table, the markdown fragment (--md) and the samples (--csv).
"""


# ------------------------------------------------------------------ output
def f1(x, fmt="%.1f"):
    return "-" if x is None else fmt % x


def report_rows(r, meta):
    t = r["trend"]
    e = r["errors"]
    return [
        ("verdict", r["verdict"]),
        ("interpreter", meta["python_version"]),
        ("server environment", meta["env_str"]),
        ("fork mode (gc.get_fork_mode())", meta["fork_mode"]),
        ("workers; max-requests (+jitter); SIGHUP every",
         "%d; %d (+0..%d); %gs" % (meta["workers"], meta["max_requests"],
                                   meta["max_requests_jitter"],
                                   meta["hup_every"])),
        ("load", "wrk -c %d, %ds chunks, spread.lua over %d users"
         % (meta["connections"], meta["chunk"], meta["users"])),
        ("duration", "%.1f min" % (r["duration_s"] / 60.0)),
        ("requests served", "%d (%.0f req/s)" % (r["requests"], r["rps"])),
        ("request errors", "%d (non-2xx/3xx %d; socket: connect %d, read "
         "%d, write %d, timeout %d; wrk failures %d)"
         % (e["errors"], e["non2xx"], e["connect"], e["read"], e["write"],
            e["timeout"], e["wrk_failures"])),
        ("wrk p99 latency per chunk: median / worst", "%s / %s ms" % (
            f1(r["lat_p99_ms_median"], "%.0f"),
            f1(r["lat_p99_ms_max"], "%.0f"))),
        ("worker spawns", "%d (%d at start)" % (r["worker_spawns"],
                                                r["initial_workers"])),
        ("recycles (max-requests)", "%d" % r["recycles"]),
        ("reloads (SIGHUP sent / handled)", "%d / %d; %d workers replaced"
         % (r["reloads"], r["reloads_handled"], r["reload_exits"])),
        ("reload: SIGHUP to the last new worker's fork, median / max",
         "%s / %s s" % (f1(r["reload_spawn_s_median"], "%.2f"),
                        f1(r["reload_spawn_s_max"], "%.2f"))),
        ("time with no serving worker: total / longest; fewer than %d"
         % meta["workers"], "%.1f / %.1f s; %.1f s" % (
             r["capacity"]["no_worker_s"],
             r["capacity"]["no_worker_longest_s"],
             r["capacity"]["below_workers_s"])),
        ("worker crashes", "%d" % r["crashes"]),
        ("late-SIGTERM exits (gunicorn 20.1 false positive, not crashes)",
         "%d" % r["late_sigterm_exits"]),
        ("error lines in the server's log", "%d" % len(r["log_errors"])),
        ("worker USS median / max (steady / any)", "%s / %s MiB"
         % (f1(r["worker_uss_median"], "%.2f"), f1(r["worker_uss_max"],
                                                    "%.2f"))),
        ("worker USS max while exiting (teardown, not steady state)",
         "%s MiB" % f1(r["exiting_uss_max"], "%.2f")),
        ("worker PSS median (steady)", "%s MiB"
         % f1(r["worker_pss_median"], "%.2f")),
        ("USS slope of window medians", "%s MiB/h (95%% CI %s)" % (
            f1(t["slope_mib_per_h"], "%+.2f"),
            "%+.2f..%+.2f" % tuple(t["slope_ci95"]) if t["slope_ci95"]
            else "-")),
        ("first / last window median", "%s / %s MiB (%s)" % (
            f1(t.get("first_median"), "%.2f"),
            f1(t.get("last_median"), "%.2f"),
            "%+.1f%%" % (100 * (t["last_vs_first"] - 1))
            if t.get("last_vs_first") is not None else "-")),
        ("USS slope, age-matched / all steady samples", "%s / %s MiB/h" % (
            f1(t["age_matched_slope_mib_per_h"], "%+.2f"),
            f1(t["raw_slope_mib_per_h"], "%+.2f"))),
        ("recycled workers' last sample: median, slope", "%s MiB, %s MiB/h "
         "(%d workers)" % (f1(t["recycled_last_sample"]["median"], "%.2f"),
                           f1(t["recycled_last_sample"]["slope_mib_per_h"],
                              "%+.2f"),
                           t["recycled_last_sample"]["workers"])),
        ("master RSS first / last / max; slope", "%s / %s / %s MiB; %s MiB/h"
         % (f1(r["master"]["rss_first"]), f1(r["master"]["rss_last"]),
            f1(r["master"]["rss_max"]),
            f1(r["master"]["rss_slope_mib_per_h"], "%+.2f"))),
    ]


def window_table_rows(r):
    rows = []
    for w in r["windows"]:
        rows.append(["%d" % (w["window"] + 1),
                     "%d-%d" % (w["t_start"], w["t_end"]),
                     "%d" % w["steady_samples"], "%d" % w["steady_workers"],
                     f1(w.get("uss_median"), "%.2f"),
                     f1(w.get("uss_mean"), "%.2f"),
                     f1(w.get("uss_max"), "%.2f"),
                     f1(w.get("pss_median"), "%.2f"),
                     f1(w.get("master_rss"), "%.1f"), w["use"]])
    return rows


WINDOW_HEAD = ["window", "seconds", "samples", "workers", "USS median",
               "USS mean", "USS max", "PSS median", "master RSS", "used"]


def print_report(r, meta):
    print()
    width = max(len(k) for k, _ in report_rows(r, meta))
    for k, v in report_rows(r, meta):
        print("  %-*s  %s" % (width, k, v))
    print()
    print("worker USS per %gs window (steady samples: workers at least %gs "
          "old, not exiting; MiB):" % (meta["window"], meta["skip"]))
    rows = window_table_rows(r)
    widths = [max(len(h), *(len(x[i]) for x in rows))
              for i, h in enumerate(WINDOW_HEAD)]
    print("  " + "  ".join("%*s" % (w, h) for w, h in zip(widths, WINDOW_HEAD)))
    for x in rows:
        print("  " + "  ".join("%*s" % (w, c) for w, c in zip(widths, x)))
    print()
    print("flat: " + r["flat_definition"])
    for d in r["crash_details"]:
        print("crash: worker %d (spawned %s s, gone %s s)%s" % (
            d["pid"], f1(d["spawn_t"]), f1(d["exit_t"]),
            "" if d["exiting_logged"] else ", no 'Worker exiting' line"))
        for ln in d["lines"]:
            print("    " + ln)
    if r["log_errors"]:
        print("error lines in the server's log (first 20):")
        for ln in r["log_errors"][:20]:
            print("    " + ln)
    for w in r["warnings"]:
        print("warning: " + w)
    print("%s%s" % (r["verdict"], "" if not r["reasons"]
                    else ": " + "; ".join(r["reasons"])))


def write_md(path, r, meta):
    out = ["**Soak: %s** (%s)" % (r["verdict"], "; ".join(r["reasons"])
                                  or "no crash, no request error, worker "
                                  "USS flat"), "",
           "| figure | value |", "| --- | --- |"]
    for k, v in report_rows(r, meta)[1:]:
        out.append("| %s | %s |" % (k, v.replace("|", "\\|")))
    out += ["", "Worker USS per %g s window (steady samples: workers at "
            "least %g s old, not exiting; MiB):" % (meta["window"],
                                                    meta["skip"]), "",
            "| " + " | ".join(WINDOW_HEAD) + " |",
            "|" + " --- |" * len(WINDOW_HEAD)]
    for x in window_table_rows(r):
        out.append("| " + " | ".join(x) + " |")
    out += ["", "Flat: " + r["flat_definition"] + "."]
    for w in r["warnings"]:
        out.append("Warning: %s." % w)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def write_csv(path, samples):
    fields = ["t_s", "pid", "role", "state", "age_s", "uss_mib", "pss_mib",
              "rss_mib", "swap_mib"]
    with open(path, "w") as f:
        f.write(",".join(fields) + "\n")
        for s in samples:
            f.write("%.2f,%d,%s,%s,%s,%.3f,%.3f,%.3f,%.3f\n" % (
                s["t"], s["pid"], s["role"], s.get("state", ""),
                "" if s["age"] is None else "%.2f" % s["age"],
                s["uss"], s["pss"], s["rss"], s["swap"]))
