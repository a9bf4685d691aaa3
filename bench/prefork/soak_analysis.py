"""The soak's analysis (bench/prefork/soak.py): from the raw observations,
every sample's state, the per-window USS series, the trend and its
statistics, the capacity figures and the verdict (analyse()).
"""

import math
import statistics

from soak_log import classify

EXIT_MARGIN = 1.0          # seconds; see analyse()


# ------------------------------------------------------------------ stats
# Two-sided 95% Student t quantiles (df -> t); the largest df <= the actual
# one is used (conservative).
T975 = [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571),
        (6, 2.447), (7, 2.365), (8, 2.306), (9, 2.262), (10, 2.228),
        (12, 2.179), (15, 2.131), (20, 2.086), (25, 2.060), (30, 2.042),
        (40, 2.021), (60, 2.000), (120, 1.980)]


def t975(df):
    t = float("inf")
    for d, v in T975:
        if df >= d:
            t = v
    return t


def ols(xs, ys):
    """Least squares y = a + b x: {"slope", "intercept", "se", "ci95", "n"}
    (se and ci95 need n >= 3)."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx
    a = my - b * mx
    out = {"slope": b, "intercept": a, "n": n, "se": None, "ci95": None}
    if n >= 3:
        rss = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
        se = math.sqrt(rss / (n - 2) / sxx)
        h = t975(n - 2) * se
        out.update(se=se, ci95=[b - h, b + h])
    return out


def within_slope(groups):
    """Pooled within-group least-squares slope (fixed effects): GROUPS is
    {key: [(x, y), ...]}; each group is centred on its own means, so the
    slope compares like with like (e.g. workers of the same age)."""
    sxx = sxy = 0.0
    n = 0
    for pts in groups.values():
        if len(pts) < 2:
            continue
        mx = statistics.fmean(p[0] for p in pts)
        my = statistics.fmean(p[1] for p in pts)
        sxx += sum((p[0] - mx) ** 2 for p in pts)
        sxy += sum((p[0] - mx) * (p[1] - my) for p in pts)
        n += len(pts)
    return {"slope": sxy / sxx, "n": n} if sxx else None


def window_series(samples, args, duration):
    """Per-window statistics of steady worker samples (state "serving":
    age >= skip, not exiting)."""
    wins = []
    n = max(1, int(math.ceil(duration / args.window - 1e-9)))
    for i in range(n):
        lo, hi = i * args.window, min((i + 1) * args.window, duration)
        ws = [s for s in samples if s["role"] == "worker"
              and lo <= s["t"] < hi]
        steady = [s for s in ws if s["state"] == "serving"]
        ms = [s for s in samples if s["role"] == "master"
              and lo <= s["t"] < hi]
        row = {"window": i, "t_start": lo, "t_end": hi,
               "samples": len(ws), "steady_samples": len(steady),
               "steady_workers": len({s["pid"] for s in steady}),
               "use": "warm-up" if lo < args.warmup else
               "few samples" if len(steady) < args.min_window_samples
               else "yes"}
        if steady:
            u = [s["uss"] for s in steady]
            row.update(uss_median=statistics.median(u),
                       uss_mean=statistics.fmean(u),
                       uss_min=min(u), uss_max=max(u),
                       pss_median=statistics.median(s["pss"]
                                                    for s in steady),
                       t_mean=statistics.fmean(s["t"] for s in steady))
        if ws:
            row["uss_all_median"] = statistics.median(s["uss"] for s in ws)
        if ms:
            row["master_rss"] = statistics.median(s["rss"] for s in ms)
            row["master_uss"] = statistics.median(s["uss"] for s in ms)
        wins.append(row)
    return wins


def analyse(obs, args):
    cls = classify(obs)
    duration = obs["duration_s"]
    chunks = obs["chunks"]
    samples = obs["samples"]
    workers = obs["workers"]
    w_all = list(workers.values())
    kinds = {}
    for w in w_all:
        kinds[w["exit"]] = kinds.get(w["exit"], 0) + 1
    # (classify() set "exit" for every worker; "late_sigterm" for some)
    crashes = [w for w in w_all if w["exit"] == "crash"]
    requests = sum(c["requests"] for c in chunks)
    wrk_s = sum(c.get("wrk_seconds", 0) for c in chunks)
    err = {k: sum(c[k] for c in chunks) for k in
           ("non2xx", "connect", "read", "write", "timeout",
            "socket_errors", "errors")}
    err["wrk_failures"] = sum(1 for c in chunks if "failed" in c)
    booted = [w for w in w_all if w.get("booted_logged")]
    initial = [w for w in booted if (w.get("spawn_t") or 0) <= 0]

    # Reload latency: from each SIGHUP sent to the fork of the last of the
    # --workers new workers (gunicorn forks them one after the other, then
    # stops the old ones): the first --workers "Booting worker" lines after
    # the master's "Hang up" line, with their fork times from /proc.
    reload_s = []
    for hh, pids in zip(cls["hups_handled_t"], cls["reload_boots"]):
        sent = [h for h in obs["hups"] if h <= hh]
        times = [workers[p].get("spawn_t") for p in pids[:args.workers]]
        if sent and len(times) == args.workers and None not in times:
            reload_s.append(max(times) - sent[-1])

    # Sample states.  A worker's USS rises while it exits (the interpreter's
    # teardown writes to inherited pages: seen here, +3 to +10 MiB in its
    # last second): samples from EXIT_MARGIN seconds before its first exit
    # line ("Autorestarting ...", "Worker exiting"; stamped when read, up to
    # a tick late) on are "exiting", not steady state.
    for smp in samples:
        if smp["role"] != "worker":
            smp["state"] = smp["role"]
            continue
        w = workers.get(smp["pid"], {})
        eb = w.get("exit_begin_t")
        if eb is None and w.get("exit_t") is not None:
            eb = w["exit_t"]
        if eb is not None and smp["t"] >= eb - EXIT_MARGIN:
            smp["state"] = "exiting"
        elif smp["age"] is None or smp["age"] < args.skip:
            smp["state"] = "young"
        else:
            smp["state"] = "serving"
    # Serving capacity: how long the server had no worker that had not
    # logged its exit, and how long fewer than --workers (from the 0.25 s
    # scans of the master's children).
    no_worker, short, run_start = 0.0, 0.0, None
    longest = 0.0
    tl = obs.get("timeline", [])
    for (t, _, serving), nxt in zip(tl, tl[1:]):
        dt = nxt[0] - t
        if serving < args.workers:
            short += dt
        if serving == 0:
            no_worker += dt
            run_start = t if run_start is None else run_start
            longest = max(longest, nxt[0] - run_start)
        else:
            run_start = None
    capacity = {"no_worker_s": no_worker, "no_worker_longest_s": longest,
                "below_workers_s": short}

    wins = window_series(samples, args, duration)
    good = [w for w in wins if w["use"] == "yes"]
    trend = {"windows_used": len(good)}
    if good:
        first, last = good[0], good[-1]
        trend.update(first_window=first["window"],
                     first_median=first["uss_median"],
                     last_window=last["window"],
                     last_median=last["uss_median"],
                     last_vs_first=last["uss_median"] / first["uss_median"]
                     if first["uss_median"] else None)
    fit = ols([w["t_mean"] / 3600.0 for w in good],
              [w["uss_median"] for w in good]) if len(good) >= 2 else None
    trend["slope_mib_per_h"] = fit["slope"] if fit else None
    trend["slope_ci95"] = fit["ci95"] if fit else None
    steady = [s for s in samples if s["state"] == "serving"]
    exiting = [s for s in samples if s["state"] == "exiting"]
    raw = ols([s["t"] / 3600.0 for s in steady],
              [s["uss"] for s in steady]) if len(steady) >= 3 else None
    trend["raw_slope_mib_per_h"] = raw["slope"] if raw else None
    # Like with like: samples of the same age (args.sample_every wide age
    # bins), pooled within-bin slope.
    bins = {}
    for s in steady:
        bins.setdefault(int(s["age"] // args.sample_every), []).append(
            (s["t"] / 3600.0, s["uss"]))
    ws = within_slope(bins)
    trend["age_matched_slope_mib_per_h"] = ws["slope"] if ws else None
    # Like with like: each recycled worker's last sample (after about
    # --max-requests requests), against its exit time.
    last_sample = {}
    for s in steady:
        last_sample[s["pid"]] = s
    eol = sorted((last_sample[w["pid"]] for w in w_all
                  if w["exit"] == "recycle" and w["pid"] in last_sample),
                 key=lambda s: s["t"])
    efit = ols([s["t"] / 3600.0 for s in eol], [s["uss"] for s in eol]) \
        if len(eol) >= 3 else None
    trend["recycled_last_sample"] = {
        "workers": len(eol),
        "median": statistics.median(s["uss"] for s in eol) if eol else None,
        "slope_mib_per_h": efit["slope"] if efit else None}
    ms = [s for s in samples if s["role"] == "master"]
    mfit = ols([s["t"] / 3600.0 for s in ms], [s["rss"] for s in ms]) \
        if len(ms) >= 3 else None
    master = {"rss_first": ms[0]["rss"] if ms else None,
              "rss_last": ms[-1]["rss"] if ms else None,
              "rss_max": max((s["rss"] for s in ms), default=None),
              "rss_slope_mib_per_h": mfit["slope"] if mfit else None}
    all_w = [s for s in samples if s["role"] == "worker"]

    # The verdict.
    reasons = []
    if obs["master_exit"]:
        reasons.append("the master exited during the soak (status %s)"
                       % obs["master_exit"]["returncode"])
    if crashes:
        reasons.append("%d worker crash(es)" % len(crashes))
    if err["errors"]:
        reasons.append("%d request error(s)" % err["errors"])
    if cls["log_errors"]:
        reasons.append("%d error line(s) in the server's logs"
                       % len(cls["log_errors"]))
    if obs.get("workdir_error"):
        reasons.append("the server's log directory went away: %s"
                       % obs["workdir_error"])
    if obs["killed_at_stop"]:
        reasons.append("%d process(es) needed SIGKILL at shutdown"
                       % obs["killed_at_stop"])
    flat = None
    flat_why = []
    if len(good) < 2:
        flat_why.append("fewer than 2 windows after the warm-up with >= %d "
                        "steady samples (run longer or use a smaller "
                        "--window)" % args.min_window_samples)
        flat = False
    else:
        s, ci = trend["slope_mib_per_h"], trend["slope_ci95"]
        # The slope is "too steep" only when even the low end of its 95%
        # interval exceeds --max-slope (a short run cannot resolve
        # 1 MiB/h; a long one must).  Two windows give no interval: only
        # the growth test applies then.
        lo = ci[0] if ci else None
        slope_ok = lo is None or lo <= args.max_slope
        growth_ok = trend["last_vs_first"] is not None \
            and trend["last_vs_first"] <= 1.0 + args.max_growth
        flat = slope_ok and growth_ok
        if not slope_ok:
            flat_why.append("USS slope %.2f MiB/h (95%% CI low end %.2f) > "
                            "%.2f MiB/h" % (s, lo, args.max_slope))
        if not growth_ok:
            flat_why.append("last window median %.2f MiB is %+.1f%% of the "
                            "first (%.2f MiB), limit +%.0f%%" % (
                                trend["last_median"],
                                100 * ((trend["last_vs_first"] or 0) - 1),
                                trend["first_median"],
                                100 * args.max_growth))
    if not flat:
        reasons.append("worker USS not flat: " + "; ".join(flat_why))
    warnings = []
    if len(good) == 2:
        warnings.append("only 2 windows: no slope test, only last vs first "
                        "(run longer or use a smaller --window)")
    if not kinds.get("recycle"):
        warnings.append("no worker was recycled (lower --max-requests)")
    if args.hup_every and not kinds.get("reload"):
        warnings.append("no worker was replaced by a reload")
    if args.hup_every and cls["hups_handled"] != len(obs["hups"]):
        warnings.append("%d SIGHUP sent, %d logged as handled by the master"
                        % (len(obs["hups"]), cls["hups_handled"]))
    if any(s["swap"] > 0 for s in samples):
        warnings.append("some pages were swapped out (USS excludes swap)")
    nostats = [w["pid"] for w in w_all
               if w["exit"] in ("recycle", "reload") and w["requests"] is None]
    if nostats:
        warnings.append("%d exited worker(s) left no stats file"
                        % len(nostats))
    return {
        "verdict": "PASS" if not reasons else "FAIL",
        "reasons": reasons, "warnings": warnings, "flat": flat,
        "duration_s": duration, "requests": requests,
        "rps": requests / wrk_s if wrk_s else 0.0,
        "wrk_chunks": len(chunks),
        "errors": err,
        "lat_p99_ms_max": max((c["lat_p99_ms"] for c in chunks
                               if "lat_p99_ms" in c), default=None),
        "lat_p99_ms_median": statistics.median(
            c["lat_p99_ms"] for c in chunks if "lat_p99_ms" in c)
        if any("lat_p99_ms" in c for c in chunks) else None,
        "worker_spawns": len(booted), "initial_workers": len(initial),
        "workers_seen": len(w_all),
        "recycles": kinds.get("recycle", 0),
        "reload_exits": kinds.get("reload", 0),
        "shutdown_exits": kinds.get("shutdown", 0),
        "crashes": len(crashes),
        "late_sigterm_exits": sum(1 for w in w_all if w.get("late_sigterm")),
        "reload_spawn_s_median": statistics.median(reload_s)
        if reload_s else None,
        "reload_spawn_s_max": max(reload_s, default=None),
        "capacity": capacity,
        "reloads": len(obs["hups"]), "reloads_handled": cls["hups_handled"],
        "crash_details": [{"pid": w["pid"], "spawn_t": w.get("spawn_t"),
                           "exit_t": w.get("exit_t"),
                           "lines": w.get("crash_lines", []),
                           "exiting_logged": bool(w.get("exiting_logged"))}
                          for w in crashes],
        "log_errors": cls["log_errors"][:200],
        "killed_at_stop": obs["killed_at_stop"],
        "master_exit": obs["master_exit"],
        "samples": len(samples), "worker_samples": len(all_w),
        "steady_samples": len(steady),
        "exiting_samples": len(exiting),
        "exiting_uss_max": max((s["uss"] for s in exiting), default=None),
        "worker_uss_median": statistics.median(s["uss"] for s in steady)
        if steady else None,
        "worker_uss_max": max((s["uss"] for s in all_w), default=None),
        "worker_pss_median": statistics.median(s["pss"] for s in steady)
        if steady else None,
        "worker_requests_median": statistics.median(
            w["requests"] for w in w_all if w["requests"] is not None)
        if any(w["requests"] is not None for w in w_all) else None,
        "trend": trend, "master": master, "windows": wins,
        "flat_definition": flat_definition(args),
    }


def flat_definition(args):
    return ("worker samples with age >= %gs and not exiting (from 1 s "
            "before the worker's exit is logged), median USS per %gs window "
            "(windows after the first %gs of warm-up, with >= %d such "
            "samples); flat iff the low end of the 95%% confidence interval "
            "of the least-squares slope of the window medians over time is "
            "<= %g MiB/hour (needs 3 windows) and the last window's median "
            "is <= %g%% above the first's"
            % (args.skip, args.window, args.warmup, args.min_window_samples,
               args.max_slope, 100 * args.max_growth))
