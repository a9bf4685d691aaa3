"""cowstat: copy-on-write memory statistics for pre-fork process trees.

Command line (any Python >= 3.9)::

    PYTHONPATH=Tools/cowstat python3 -m cowstat PID [--json]
    PYTHONPATH=Tools/cowstat python3 -m cowstat watch PID --interval S \
        --csv FILE
    PYTHONPATH=Tools/cowstat python3 -m cowstat plot FILE --png OUT

Inside a forked worker::

    from cowstat import attribution
    print(attribution.report().text)

Data collection uses the standard library only (``/proc`` files).
"""

__version__ = "1.0"


class CowstatError(Exception):
    """An error with a message meant for the user (printed as
    ``cowstat: MESSAGE``, exit status 2)."""
