"""Shared by the collector-heavy workloads (imported by name: the worker
puts this directory at the end of sys.path)."""

import gc


def scaled_threshold(scale):
    """Below scale 1, lower the young-generation threshold in proportion
    (at least 50), so a reduced run (--quick, callgrind) keeps about the
    same number of young/middle/full collections as a full one, each over
    fewer objects.  Returns the thresholds to restore."""
    old = gc.get_threshold()
    if scale < 1.0 and old[0] > 0:
        gc.set_threshold(max(50, int(old[0] * scale)), *old[1:])
    return old
