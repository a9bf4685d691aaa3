"""Dependencies of the pre-fork benchmark: the Debian packages it needs,
and the private site directory (build/prefork-site) holding exactly the
pure-Python packages the servers import, copied from Debian's
dist-packages and checked under each interpreter.
"""

import json
import os
import shutil
import subprocess
import sys

from common import DEB_LIST, DIST, HERE, log

# What the servers import from Debian's dist-packages.  Their further
# pure-Python dependencies are found by importing (build_site()).
REQUIRED = ["flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous",
            "click", "blinker", "gunicorn"]
# Imports a gunicorn sync-worker server running app.py performs.
IMPORT_PROBE = ("flask", "werkzeug.serving", "jinja2", "markupsafe",
                "itsdangerous", "click", "blinker", "gunicorn.app.wsgiapp",
                "gunicorn.arbiter", "gunicorn.workers.sync",
                "gunicorn.glogging", "gunicorn.http.wsgi")


# ------------------------------------------------------------------ deps
def debian_packages():
    with open(DEB_LIST) as f:
        return [ln.strip() for ln in f if ln.strip() and ln[0] != "#"]


def check_deps(install):
    missing = [p for p in REQUIRED if not os.path.exists(os.path.join(DIST, p))]
    if shutil.which("wrk") is None:
        missing.append("wrk")
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends",
           *debian_packages()]
    if install and os.geteuid() == 0:
        log("installing Debian packages:", " ".join(cmd))
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(cmd, check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        return check_deps(False)
    sys.exit("missing: %s\ninstall them (Debian) with:\n  apt-get update && %s"
             "\n(or run this script with --install-deps as root)"
             % (", ".join(missing), " ".join(cmd)))


# ------------------------------------------------------------------ site
def _tree_stamp(path):
    """Cheap identity of a source tree: file count, bytes, newest mtime."""
    n = size = newest = 0
    if os.path.isfile(path):
        st = os.stat(path)
        return [1, st.st_size, int(st.st_mtime)]
    for d, dirs, files in os.walk(path):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for f in files:
            st = os.stat(os.path.join(d, f))
            n += 1
            size += st.st_size
            newest = max(newest, int(st.st_mtime))
    return [n, size, newest]


def _dist_entry(name):
    for cand in (name, name + ".py"):
        p = os.path.join(DIST, cand)
        if os.path.exists(p):
            return cand
    return None


PROBE = r'''
import importlib, json, sys
site = sys.argv[1]
out = {"missing": None, "error": None, "files": {}, "ext_in_site": []}
try:
    for name in sys.argv[2:]:
        importlib.import_module(name)
except ModuleNotFoundError as e:
    out["missing"] = (e.name or "").split(".")[0]
    out["error"] = repr(e)
except Exception as e:
    out["error"] = repr(e)
for name, m in list(sys.modules.items()):
    f = getattr(m, "__file__", None) or ""
    if "." not in name:
        out["files"][name] = f
    if f.startswith(site) and not f.endswith(".py"):
        out["ext_in_site"].append(name)
if out["error"] is None:
    import markupsafe
    out["markupsafe_escape"] = markupsafe.escape.__module__
    out["markupsafe_speedups_loaded"] = "markupsafe._speedups" in sys.modules
print(json.dumps(out))
'''


def _probe(python, site, env):
    r = subprocess.run([python, "-s", "-c", PROBE, site, *IMPORT_PROBE],
                       env=env, cwd=site, capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        sys.exit("import probe failed under %s:\n%s" % (python, r.stderr))
    return json.loads(r.stdout.strip().splitlines()[-1])


def build_site(site, pythons, base_env):
    """Copy the needed Debian packages into SITE; verify under each python.

    Copies (not symlinks), so that 3.13 never writes its bytecode next to
    Debian's 3.11 files.  Debian's compiled 3.11 speedups are copied as they
    are: their cpython-311 suffix is not importable by 3.13, and the probe
    checks that no extension module is loaded from SITE at all.
    """
    os.makedirs(site, exist_ok=True)
    manifest_path = os.path.join(site, "MANIFEST.json")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        manifest = {}
    entries = dict(manifest.get("entries", {}))
    wanted = list(dict.fromkeys(REQUIRED + manifest.get("extra", [])))
    extra = [p for p in wanted if p not in REQUIRED]
    env = dict(base_env, PYTHONPATH=site)
    changed = False
    for _ in range(50):
        for name in wanted:
            entry = _dist_entry(name)
            if entry is None:
                sys.exit("%s not found in %s" % (name, DIST))
            src, dst = os.path.join(DIST, entry), os.path.join(site, entry)
            stamp = _tree_stamp(src)
            if entries.get(entry) == stamp and os.path.exists(dst):
                continue
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            elif os.path.exists(dst):
                os.remove(dst)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                    "__pycache__"))
            else:
                shutil.copy2(src, dst)
            entries[entry] = stamp
            changed = True
        results = {}
        missing = None
        for py in pythons:
            res = _probe(py, site, env)
            results[py] = res
            if res["missing"]:
                missing = res["missing"]
                break
            if res["error"]:
                sys.exit("importing %s under %s failed: %s"
                         % (", ".join(IMPORT_PROBE), py, res["error"]))
        if missing is None:
            break
        if _dist_entry(missing) is None:
            sys.exit("%s needs %r, which is not in %s (a stdlib module "
                     "removed in 3.13?)" % (pythons, missing, DIST))
        log("prefork-site: adding %s (imported by the server)" % missing)
        wanted.append(missing)
        extra.append(missing)
    else:
        sys.exit("prefork-site: dependency discovery did not converge")
    for py, res in results.items():
        outside = [n for n in wanted if not res["files"].get(n, "")
                   .startswith(site)]
        if outside:
            sys.exit("under %s, %s not imported from %s: %s"
                     % (py, outside, site,
                        {n: res["files"].get(n) for n in outside}))
        if res["ext_in_site"] or res["markupsafe_speedups_loaded"] \
                or res["markupsafe_escape"] != "markupsafe._native":
            sys.exit("under %s a compiled extension from %s was loaded: %s"
                     % (py, site, res))
    if changed or manifest.get("extra") != extra:
        # Bytecode once for both interpreters (same cache tag and magic
        # number; checked), so the servers never compile at start-up.
        magics = {subprocess.run(
            [py, "-c", "import importlib.util,sys;"
             "print(importlib.util.MAGIC_NUMBER.hex(),"
             "sys.implementation.cache_tag)"],
            capture_output=True, text=True, check=True).stdout
            for py in pythons}
        for py in pythons if len(magics) > 1 else pythons[:1]:
            subprocess.run([py, "-m", "compileall", "-q", "-j", "0", site],
                           env=base_env, check=False,
                           stdout=subprocess.DEVNULL)
        with open(manifest_path, "w") as f:
            json.dump({"entries": entries, "extra": extra}, f, indent=1)
    for py in pythons:
        subprocess.run([py, "-m", "compileall", "-q",
                        os.path.join(HERE, "app.py"),
                        os.path.join(HERE, "freeze_hooks.py")],
                       env=base_env, check=False, stdout=subprocess.DEVNULL)
    return wanted
