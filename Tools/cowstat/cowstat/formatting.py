"""The attribution's result: AttributionReport (tables, JSON, per-page
detail) and its text form.

Standard library only.
"""

import json

from cowstat.maps import PAGE_SHIFT, PAGE_SIZE

NO_OBJECT_ROW = "(no tracked object: allocator, strings, other non-GC objects)"
NO_OBJECT_FOUND_ROW = ("(no object found: allocator metadata, free blocks, "
                       "out-of-line buffers)")

# Rows of the "bytes changed" table that are not object types.
IDENTICAL_ROW = "(identical to the parent's page: transient writes)"
POOL_HEADER_ROW = "(pymalloc pool headers)"
OUTSIDE_ROW = ("(outside any object found: free blocks, malloc metadata, "
               "other buffers)")


class AttributionReport:
    """The result of :func:`report`.

    Attributes:
      header: dict (pid, parent_pid, method, copied_pages, copied_kib, ...)
      rows: list of dicts, one per type, sorted by pages descending, the
        top N plus an "(N other types)" row so pages add up to the total:
        type, pages (primary attribution), kib, touched (pages holding at
        least one byte of the type), objects (objects of the type on
        copied pages), immortal (those of them that are immortal)
      all_rows: every row, untruncated
      pages: {type: sorted list of page addresses attributed to it}
      no_object_row: the name of the row of pages without any object
      regions: list of dicts, one per region of REGION_KEYS (the order of
        the table): region, label, pages, kib, share, no_object (pages
        with no object found), and when the page contents were compared
        with the parent's: identical (no byte differs), alloc_only (no
        changed byte inside an object found), immortal_written (a changed
        byte inside an immortal object); else those three are None
      region_pages: {region: sorted list of page addresses}
      written: list of dicts, the bytes that differ from the parent's
        pages, by the type of the object holding them (plus the rows
        IDENTICAL_ROW, POOL_HEADER_ROW, OUTSIDE_ROW): type, pages (pages
        on which the type holds most changed bytes; they add up to the
        total), bytes, immortal_bytes, objects (objects with a changed
        byte), offsets ({"+8": bytes, "items": bytes}, the 8 largest:
        offsets from the object's address, by 8-byte word for its fixed
        part, "items" beyond it), immortal_offsets (the same, for the
        bytes in immortal objects only); empty when not compared
      all_written: every written row, untruncated
      written_pages: {row: sorted list of page addresses}
      changed: {page address: changed bytes} for pages that differ
      text: the formatted report (also str(report))
      to_dict(detail=True) / to_json(detail=True): also one entry per
        copied page (page_detail())
    """

    def __init__(self, header, all_rows, pages, top, regions=None,
                 region_pages=None, written=None, written_pages=None,
                 changed=None, no_object_row=NO_OBJECT_ROW, runs=((), ()),
                 flags=None):
        self.header = header
        self._runs = runs
        self._flags = flags or {}
        self.all_rows = all_rows
        self.pages = pages
        self.no_object_row = no_object_row
        self.rows = self._truncate(all_rows, top, ("touched",),
                                   ("objects", "immortal"))
        self.regions = regions or []
        self.region_pages = region_pages or {}
        self.all_written = written or []
        self.written = self._truncate(self.all_written, top,
                                      ("offsets", "immortal_offsets"),
                                      ("bytes", "immortal_bytes",
                                       "objects"))
        self.written_pages = written_pages or {}
        self.changed = changed or {}
        self.text = _format(header, self.rows, self.regions, self.written)

    @staticmethod
    def _truncate(all_rows, top, none_keys, sum_keys):
        rows = all_rows[:top] if top is not None and top >= 0 else all_rows
        rest = all_rows[len(rows):]
        if rest:
            n = sum(r["pages"] for r in rest)
            extra = {"type": "(%d other types)" % len(rest),
                     "pages": n, "kib": n * PAGE_SIZE // 1024}
            for k in none_keys:
                extra[k] = None
            for k in sum_keys:
                extra[k] = sum(r.get(k) or 0 for r in rest)
            rows = rows + [extra]
        return rows

    def __str__(self):
        return self.text

    def to_dict(self, detail=False):
        """The header and the tables; DETAIL adds "page_detail", one entry
        per copied page: [address, region, type (most bytes), type (most
        changed bytes, or None), changed bytes, [[offset in the page,
        length] of the first 32 runs of changed bytes], flags], flags
        holding "S" (same bytes as the parent's page), "I" (a changed
        byte in an immortal object), "A" (every changed byte outside the
        objects found), "H" (changed bytes in a pymalloc pool header),
        and for pymalloc pages with free space in the parent's pool: "F"
        (a block on the pool's free list: a hole), "V" (only blocks never
        handed out), "E" (the pool is empty in the parent)."""
        d = {"header": self.header, "rows": self.rows,
             "regions": self.regions, "written": self.written}
        if detail:
            d["page_detail"] = self.page_detail()
        return d

    def page_detail(self):
        primary = {a: t for t, addrs in self.pages.items() for a in addrs}
        writer = {a: t for t, addrs in self.written_pages.items()
                  for a in addrs}
        runs = {}
        starts, ends = self._runs
        for s, e in zip(starts, ends):
            page = s >> PAGE_SHIFT << PAGE_SHIFT
            lst = runs.setdefault(page, [])
            if len(lst) < 32:
                lst.append([s - page, e - s])
        out = []
        for region, addrs in self.region_pages.items():
            for a in addrs:
                out.append([a, region, primary.get(a), writer.get(a),
                            self.changed.get(a, 0), runs.get(a, []),
                            self._flags.get(a, "")])
        out.sort()
        return out

    def to_json(self, detail=False, **kw):
        return json.dumps(self.to_dict(detail), **kw)


def _format(h, rows, regions=(), written=()):
    kib = PAGE_SIZE // 1024
    out = ["cowstat attribution: pid %d, parent %s"
           % (h["pid"], h["parent_pid"])]
    if h["method"] == "parent":
        out.append(
            "method: parent pagemap (a page is copied when it is present "
            "and exclusive here and the parent has a page at the same "
            "address)")
    else:
        out.append(
            "method: EXCLUSIVE ONLY (every present exclusive page counts, "
            "including pages allocated after the fork): %s"
            % h["method_note"])
    out.append(
        "copied: %d pages = %d KiB  (scanned %d pages in %d regions; "
        "present %d, exclusive %d, exclusive but new since fork %d)"
        % (h["copied_pages"], h["copied_kib"], h["scanned_pages"],
           h["regions"], h["present_pages"], h["exclusive_pages"],
           h["new_pages"]))
    out.append("objects walked: %d (%s)" % (h["objects_walked"],
                                            h["objects_note"]))
    out.append("time: snapshot %.3f s, walk %.3f s"
               % (h["snapshot_seconds"], h["walk_seconds"]))
    out.append("")
    width = max([len("TYPE")] + [len(r["type"]) for r in rows])
    width = min(width, 70)
    fmt = "%-*s %8s %10s %8s %9s"
    out.append(fmt % (width, "TYPE", "PAGES", "KiB", "TOUCHED", "OBJECTS"))
    for r in rows:
        touched = "" if r["touched"] is None else str(r["touched"])
        out.append(fmt % (width, r["type"], r["pages"], r["kib"], touched,
                          r["objects"]))
    out.append(fmt % (width, "TOTAL", h["copied_pages"],
                      h["copied_pages"] * kib, "", ""))
    if regions:
        out.append("")
        out.append("copied pages by region (the mapping of /proc/self/maps "
                   "each page lies in%s):"
                   % ("; pymalloc pages found by their pool header"
                      if not h.get("pool_note") else
                      "; pymalloc arenas not told apart: %s"
                      % h["pool_note"]))
        diff = h.get("diff") == "parent-mem"
        fmt = "%-8s %8s %8s %6s %9s %9s %10s %10s  %s"
        out.append(fmt % ("REGION", "PAGES", "KiB", "SHARE", "NO_OBJECT",
                          "IDENTICAL", "ALLOC_ONLY", "IMMORTAL_W",
                          "DESCRIPTION"))
        total = h["copied_pages"]

        def opt(v):
            return "-" if v is None else str(v)
        for r in regions:
            out.append(fmt % (r["region"], r["pages"], r["kib"],
                              "%.1f%%" % (100.0 * r["share"]),
                              r["no_object"], opt(r["identical"]),
                              opt(r["alloc_only"]),
                              opt(r["immortal_written"]), r["label"]))
        out.append(fmt % (
            "TOTAL", total, total * kib, "100.0%" if total else "0.0%",
            sum(r["no_object"] for r in regions),
            opt(sum(r["identical"] for r in regions) if diff else None),
            opt(sum(r["alloc_only"] for r in regions) if diff else None),
            opt(sum(r["immortal_written"] for r in regions)
                if diff else None), ""))
        out.append("(NO_OBJECT: no object found on the page; IDENTICAL: "
                   "same bytes as the parent's page; ALLOC_ONLY: every "
                   "changed byte outside the objects found; IMMORTAL_W: a "
                   "changed byte inside an immortal object)")
        bc = h.get("pymalloc_by_cause")
        if bc:
            out.append(
                "pymalloc pages by the parent's pool: %d had a free or "
                "never used block there in the parent (identical %d, "
                "immortal written %d, other %d); %d had none (identical "
                "%d, immortal written %d, other %d)" % (
                    sum(bc["free_in_parent"].values()),
                    bc["free_in_parent"]["identical"],
                    bc["free_in_parent"]["immortal_written"],
                    bc["free_in_parent"]["other"],
                    sum(bc["full_in_parent"].values()),
                    bc["full_in_parent"]["identical"],
                    bc["full_in_parent"]["immortal_written"],
                    bc["full_in_parent"]["other"]))
        pc = h.get("parent_pymalloc")
        if pc and "error" not in pc:
            out.append(
                "parent's pymalloc pools now: %d (%.0f KiB): blocks in use "
                "%.0f KiB, free-listed (holes) %.0f KiB in %d pools on %d "
                "pages, never used %.0f KiB (%d more pages), %d empty pools"
                % (pc["pools"], pc["pool_kib"], pc["used_kib"],
                   pc["free_kib"], pc["pools_with_holes"],
                   pc["hole_pages"], pc["virgin_kib"], pc["virgin_pages"],
                   pc["empty_pools"]))
            if pc.get("aside_pools") or pc.get("dropped_pools"):
                out.append(
                    "parent's pools in cowpy's set-aside after fork: %d set "
                    "aside (their %.0f KiB free, counted above, unused until "
                    "taken back), %d taken back (dropped), abandoning %.0f "
                    "KiB (neither in use nor free until the pool empties)"
                    % (pc["aside_pools"], pc["aside_free_kib"],
                       pc["dropped_pools"], pc["dropped_kib"]))
    out.append("")
    if h.get("diff") == "parent-mem":
        out.append("bytes changed since the fork: %d pages differ from the "
                   "parent's (%d bytes changed), %d identical; %s"
                   % (h["changed_pages"], h["changed_bytes"],
                      h["identical_pages"], h["diff_note"]))
        width = max([len("TYPE")] + [len(r["type"]) for r in written])
        width = min(width, 70)
        fmt = "%-*s %8s %10s %10s %9s  %s"
        out.append(fmt % (width, "TYPE", "PAGES", "BYTES", "IMMORTAL",
                          "OBJECTS", "OFFSETS (changed bytes)"))
        for r in written:
            offs = r.get("offsets") or {}
            out.append(fmt % (
                width, r["type"], r["pages"],
                "" if r.get("bytes") is None else r["bytes"],
                "" if r.get("immortal_bytes") is None
                else r["immortal_bytes"],
                "" if r.get("objects") is None else r["objects"],
                " ".join("%s:%d" % kv for kv in list(offs.items())[:6])))
        out.append(fmt % (width, "TOTAL", h["copied_pages"],
                          h["changed_bytes"], "", "", ""))
    elif "diff" in h:
        out.append("bytes changed since the fork: not compared (%s)"
                   % h.get("diff_note", ""))
    return "\n".join(out) + "\n"
