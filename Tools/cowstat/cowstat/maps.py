"""The process's memory map: page size, /proc/PID/maps parsed and classified
into regions (heap, anonymous memory, stacks, the interpreter image's and
other files' .data/.bss), and small readers of /proc files.

Used by the attribution's snapshot (cowstat.snapshot) and by the pymalloc
census (cowstat.pymalloc).  Linux only; standard library only.
"""

import os
import struct
import sys

try:
    PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):   # pragma: no cover
    PAGE_SIZE = 4096
PAGE_SHIFT = PAGE_SIZE.bit_length() - 1

# Word size, for reading pointers out of /proc/PID/mem.
_PTR = 8 if sys.maxsize > 2 ** 32 else 4
_64BIT = sys.maxsize > 2 ** 32
_PTR_FMT = "=Q" if _64BIT else "=I"

# Region keys (the order of the region table) and their descriptions.
REGIONS = (
    ("pymalloc", "pymalloc arenas: objects <= 512 bytes"),
    ("heap", "[heap], brk: glibc malloc (larger objects, buffers)"),
    ("anon", "other anonymous mmaps: large malloc blocks, arena slack"),
    ("stack", "stacks: [stack] and thread stacks"),
    ("python", "python image .data/.bss: static types, runtime state"),
    ("files", "other files' .data/.bss: libraries, extension modules"),
)
REGION_KEYS = tuple(k for k, _ in REGIONS)
_RX = {k: i for i, k in enumerate(REGION_KEYS)}


def _read_all(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            parts.append(data)
    finally:
        os.close(fd)
    return b"".join(parts)


def parse_maps(text):
    """Return [(start, end, name)] of the private writable anonymous
    mappings in /proc/PID/maps TEXT (bytes or str): the heap, unnamed or
    ``[anon:...]`` ``rw-p`` regions; not stacks, not file-backed ones."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    regions = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        perms = parts[1]
        if len(perms) < 4 or perms[1] != "w" or perms[3] != "p":
            continue
        name = parts[5].strip() if len(parts) > 5 else ""
        if parts[4] != "0":
            continue                            # file-backed (inode != 0)
        if name and name != "[heap]" and not name.startswith("[anon:"):
            continue            # [stack], [vvar], [vdso], files, memfd...
        try:
            lo, hi = parts[0].split("-")
            start, end = int(lo, 16), int(hi, 16)
        except ValueError:
            continue
        if end > start:
            regions.append((start, end, name or "[anon]"))
    return regions


def parse_maps_all(text):
    """Return every mapping of /proc/PID/maps TEXT (bytes or str) as
    (start, end, perms, inode, name, offset) tuples; name is "" when
    unnamed, offset the file offset."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, hi = parts[0].split("-")
            start, end = int(lo, 16), int(hi, 16)
            offset = int(parts[2], 16)
        except ValueError:
            continue
        if end <= start or len(parts[1]) < 4:
            continue
        name = parts[5].strip() if len(parts) > 5 else ""
        out.append((start, end, parts[1], parts[4], name, offset))
    return out


_ELF_HDR = struct.Struct("<16sHHIQQQIHHHHHH")
_ELF_PHDR = struct.Struct("<IIQQQQQQ")


def elf_segment_end(path, map_start, map_offset):
    """End address of the writable PT_LOAD segment (its .data plus .bss)
    of the 64-bit little-endian ELF file PATH mapped at MAP_START from
    file offset MAP_OFFSET; None if it cannot be told."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        hdr = os.pread(fd, _ELF_HDR.size, 0)
        if len(hdr) != _ELF_HDR.size or hdr[:4] != b"\x7fELF" \
                or hdr[4] != 2 or hdr[5] != 1:
            return None
        fields = _ELF_HDR.unpack(hdr)
        phoff, phentsize, phnum = fields[5], fields[9], fields[10]
        if phentsize < _ELF_PHDR.size or not 0 < phnum < 4096:
            return None
        table = os.pread(fd, phentsize * phnum, phoff)
    except (OSError, ValueError, OverflowError):
        return None
    finally:
        os.close(fd)
    for k in range(phnum):
        chunk = table[k * phentsize:k * phentsize + _ELF_PHDR.size]
        if len(chunk) != _ELF_PHDR.size:
            break
        (p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz,
         _) = _ELF_PHDR.unpack(chunk)
        if p_type != 1 or not p_flags & 2:             # PT_LOAD, PF_W
            continue
        if not (p_offset & ~(PAGE_SIZE - 1)) <= map_offset \
                <= p_offset + p_filesz:
            continue
        bias = map_start - map_offset + p_offset - p_vaddr
        end = bias + p_vaddr + p_memsz
        return (end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    return None


def classify_maps(text, image=None, elf=False):
    """Return [(start, end, name, region)] of the private writable
    mappings of /proc/PID/maps TEXT, region being one of REGION_KEYS
    (never "pymalloc": arenas are told from other anonymous memory page
    by page, by their pool headers).

    IMAGE: the path of the file holding the interpreter's static objects
    (its mappings are "python", other files' "files").  An anonymous
    mapping that starts where a writable file mapping ends is that file's
    .bss, up to the end of the file's writable segment when ELF is true
    and the file's program headers say where it ends (the kernel merges
    later anonymous mmaps into the .bss mapping), else all of it.  An
    anonymous mapping right above an anonymous ``---p`` guard of at most
    64 KiB is a thread stack.
    """
    out = []
    prev = None
    for start, end, perms, inode, name, offset in parse_maps_all(text):
        p = prev
        prev = (start, end, perms, inode, name, offset)
        if perms[1] != "w" or perms[3] != "p":
            continue
        if inode != "0":
            region = "python" if image and name == image else "files"
        elif name == "[heap]":
            region = "heap"
        elif name.startswith("[stack"):
            region = "stack"
        elif name and not name.startswith("[anon:"):
            continue            # [vvar], [vdso], memfd, other specials
        else:
            region = "anon"
            if p is not None and p[1] == start:
                if p[3] != "0" and p[2][1] == "w":
                    region = "python" if image and p[4] == image \
                        else "files"                            # .bss
                    seg_end = elf_segment_end(p[4], p[0], p[5]) \
                        if elf else None
                    if seg_end is not None and start <= seg_end < end:
                        if seg_end > start:
                            out.append((start, seg_end, name or "[anon]",
                                        region))
                        start, region = seg_end, "anon"
                elif p[3] == "0" and p[2].startswith("---") \
                        and not p[4] and p[1] - p[0] <= 65536:
                    region = "stack"                    # guard page below
        out.append((start, end, name or "[anon]", region))
    return out


def _image_path(maps):
    """The file mapping holding the static type objects (the python
    executable, or libpython for a shared build)."""
    addr = id(int)
    for start, end, perms, inode, name, _ in maps:
        if start <= addr < end:
            return name if inode != "0" else None
    return None


def _preadv_into(fd, view, offset):
    """Read into the writable buffer VIEW at OFFSET; returns the bytes
    read (fewer at the end of the file)."""
    total = 0
    size = len(view)
    while total < size:
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[total:]], offset + total)
        else:                                           # pragma: no cover
            data = os.pread(fd, size - total, offset + total)
            n = len(data)
            view[total:total + n] = data
        if not n:
            break
        total += n
    return total
