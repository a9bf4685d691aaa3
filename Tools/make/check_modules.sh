#!/bin/sh
# check_modules.sh OBJDIR: fail unless every stdlib extension module that
# needs a system library (all but _tkinter) was built, naming the Debian
# -dev package that provides what is missing.
set -u
obj=$1
missing=$("$obj/python" - <<'PY'
import importlib
need = {
    "_ctypes": "libffi-dev", "_ssl": "libssl-dev", "_hashlib": "libssl-dev",
    "zlib": "zlib1g-dev", "pyexpat": "libexpat1-dev", "_bz2": "libbz2-dev",
    "_lzma": "liblzma-dev", "_sqlite3": "libsqlite3-dev",
    "readline": "libreadline-dev", "_curses": "libncurses-dev",
    "_curses_panel": "libncurses-dev", "_dbm": "libgdbm-compat-dev",
    "_gdbm": "libgdbm-dev", "_uuid": "uuid-dev", "_decimal": "(bundled)",
}
for mod, pkg in need.items():
    try:
        importlib.import_module(mod)
    except ImportError as e:
        print(f"  {mod}: {e} -> apt-get install {pkg}")
PY
)
if [ -n "$missing" ]; then
    echo "error: stdlib extension modules missing in $obj:" >&2
    echo "$missing" >&2
    echo "run 'make deps' (or install the packages named above)" >&2
    exit 1
fi
