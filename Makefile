# cowpy: the one entry point.  See README.md.
#
#   make            fetch + verify the pinned tarball, build build/stock and
#                   build/cowpy (same configure flags, own prefixes)
#   make demo       deps, builds, then the copy-on-write probe, side by side
#   make test       our tests + the full upstream suite on cowpy
#   make bench      every headline figure (stock vs cowpy in one run)
#   make install PREFIX=/opt/cowpy   cowpy as a normal python3.13
#   make export-patches              build/src/cowpy commits -> patches/
#
# Layout of build/ (never committed):
#   build/src/stock   pristine upstream source
#   build/src/cowpy   upstream + patches/ (a git repo, base tag "upstream")
#                     + our overlay files (copied, untracked)
#   build/obj/NAME    out-of-tree object dirs
#   build/NAME        installed prefixes: build/NAME/bin/python3

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
ROOT := $(abspath .)
B := $(ROOT)/build
include upstream/pin

J ?= $(shell nproc)
OPTIMIZE ?= 0
# Identical for both interpreters; only --prefix differs.
CONFIGURE_FLAGS := --with-ensurepip=no
ifeq ($(OPTIMIZE),1)
CONFIGURE_FLAGS += --enable-optimizations --with-lto
endif
CONFIGURE_FLAGS += $(EXTRA_CONFIGURE_FLAGS)
# ccache through PATH keeps CC="gcc" in sysconfig (what extensions see).
# Paths below the checkout are hashed relative to it, so a fresh clone
# (CI) reuses what an earlier build on the same machine compiled.
CCPATH := $(if $(wildcard /usr/lib/ccache/gcc),/usr/lib/ccache:)$(PATH)
export CCACHE_BASEDIR := $(ROOT)
export CCACHE_NOHASHDIR := 1

# Our files at CPython-layout paths, copied into build/src/cowpy.
OVERLAY_DIRS := Include Lib Modules Objects Python Doc
OVERLAY := $(shell find $(OVERLAY_DIRS) -type f ! -name '*.pyc' \
                    ! -path '*/__pycache__/*' 2>/dev/null | sort)
PATCHES := $(addprefix $(ROOT)/patches/,$(shell grep -v '^\#' patches/series))

COWGIT := $(ROOT)/Tools/make/cowgit
# One short line per build step, as CPython's own build prints; the full
# output of each step goes to a log under build/, whose tail is shown when
# the step fails.  V=1 echoes every command instead.
ifeq ($(V),1)
Q :=
else
Q := @
endif
say = @printf '  %-10s %s\n' '$(1)' '$(2)'
# run LOG, COMMAND: run quietly into LOG; on failure show LOG's tail.
run = $(1) >$(strip $(2)) 2>&1 || { echo "failed; the end of $(strip $(2)):"; \
    tail -n 40 $(strip $(2)); exit 1; }
STOCK := $(B)/stock/bin/python3
COWPY := $(B)/cowpy/bin/python3

.PHONY: all stock cowpy fetch deps demo test test-ours rebase uwsgi print-RESULTS \
        servers-deps \
        bench bench-probe bench-gc bench-instructions \
        bench-speed bench-instructions-speed bench-prefork \
        bench-immortalize bench-code bench-alloc bench-exit bench-refork bench-prefork-refork bench-servers bench-servers-instructions bench-servers-paired bench-recycle-paired bench-reload bench-uwsgi bench-prefork-uwsgi clinic install \
        export-patches \
        clean distclean \
        cowpy-debug cowpy-asan check-debug check-asan fuzz soak

all: stock cowpy

# ---------------------------------------------------------------- deps
# Debian packages for building every stdlib extension but _tkinter, and the
# tools the tests and benchmarks use.
DEB_BUILD := build-essential pkg-config ccache curl xz-utils git \
    libffi-dev libssl-dev zlib1g-dev libexpat1-dev libbz2-dev liblzma-dev \
    libsqlite3-dev libreadline-dev libncurses-dev libgdbm-dev \
    libgdbm-compat-dev uuid-dev
DEB_BENCH := gunicorn python3-flask wrk valgrind python3-matplotlib
deps:
	$(call say,DEPS,$(words $(DEB_BUILD) $(DEB_BENCH)) Debian packages (log: build/deps.log))
	@mkdir -p $(B)
	@if [ "$$(id -u)" = 0 ]; then \
	    $(call run,{ apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends \
	        $(DEB_BUILD) $(DEB_BENCH); },$(B)/deps.log); \
	else \
	    echo "not root; run:"; \
	    echo "  sudo apt-get install $(DEB_BUILD) $(DEB_BENCH)"; \
	fi

# ---------------------------------------------------------------- fetch
fetch: $(B)/$(TARBALL)
# The name carries the version, so a new pin is a new file.
$(B)/$(TARBALL):
	$(call say,FETCH,$(TARBALL) (size and sha256 verified))
	$(Q)mkdir -p $(B)
	$(Q)src=$$(upstream/fetch.sh 2>$(B)/fetch.log) || \
	    { cat $(B)/fetch.log; exit 1; }; ln -sf "$$src" $@

# ---------------------------------------------------------------- sources
$(B)/src/stock/.unpacked: $(B)/$(TARBALL)
	$(call say,UNPACK,build/src/stock)
	$(Q)rm -rf $(B)/src/stock && mkdir -p $(B)/src/stock
	$(Q)tar -xJf $< -C $(B)/src/stock --strip-components=1
	$(Q)touch $@

# build/src/cowpy is a git work tree (its repository is build/src/cowpy.git,
# outside the tree, so CPython's build embeds the same "main" build info as
# stock) so that patches apply with `git am` and edits made there export
# back with `make export-patches`.  Use Tools/make/cowgit for git commands.
$(B)/src/cowpy/.unpacked: $(B)/$(TARBALL)
	$(call say,UNPACK,build/src/cowpy (git tree, base tag "upstream"))
	$(Q)rm -rf $(B)/src/cowpy $(B)/src/cowpy.git && mkdir -p $(B)/src/cowpy
	$(Q)tar -xJf $< -C $(B)/src/cowpy --strip-components=1
	$(Q)$(COWGIT) init -q -b cowpy && \
	  $(COWGIT) add -A -f && \
	  $(COWGIT) -c user.name=cowpy -c user.email=cowpy@localhost \
	      commit -q -m "Python $(VERSION) from $(TARBALL)" && \
	  $(COWGIT) tag upstream
	$(Q)printf '%s\n' '/.unpacked' '/.patched' '__pycache__/' \
	    > $(B)/src/cowpy.git/info/exclude
	$(Q)touch $@

# Apply the series (git am) and regenerate CPython's generated files with
# its own generators, run by the stock twin (Tools/make/apply_series.sh,
# regen.sh); files whose content did not change keep their mtime, so make
# then recompiles just what depends on the changed ones.
$(B)/src/cowpy/.patched: $(B)/src/cowpy/.unpacked patches/series $(PATCHES) \
        Tools/make/apply_series.sh Tools/make/regen.sh | $(STOCK)
	$(call say,PATCH,$(words $(PATCHES)) patches from patches/series)
	$(Q)$(call run,$(ROOT)/Tools/make/apply_series.sh $(STOCK) $(PATCHES),\
	    $(B)/src/patch.log)
	$(Q)printf '  %-10s %s\n' REGEN "$$(grep -c '^regenerated: ' \
	    $(B)/src/patch.log) generated files (Argument Clinic, global strings)"
	$(Q)touch $@

# The generators need a Python: the stock twin, built first.
$(STOCK):
	$(Q)$(MAKE) --no-print-directory stock

# Copy overlay files whose content changed (unchanged files keep their
# mtime, so nothing recompiles).  Overlay files must be new files: an
# upstream file is changed only through patches/.
.PHONY: overlay
overlay: $(B)/src/cowpy/.patched
	$(Q)cd $(B)/src/cowpy && for f in $(OVERLAY); do \
	    if $(COWGIT) ls-files --error-unmatch "$$f" >/dev/null 2>&1; then \
	        echo "overlay file $$f is an upstream file; use patches/"; \
	        exit 1; fi; \
	    if ! cmp -s "$(ROOT)/$$f" "$$f"; then \
	        mkdir -p "$$(dirname "$$f")" && cp "$(ROOT)/$$f" "$$f" && \
	        printf '  %-10s %s\n' OVERLAY "$$f" && rm -f "$$(dirname \
	            "$$f")/clinic/$$(basename "$$f").h"; fi; \
	    x=$(B)/src/cowpy.git/info/exclude; \
	    grep -qxF "/$$f" $$x || echo "/$$f" >> $$x; \
	    $(call overlay_clinic,$$f) \
	done

# Argument Clinic for an overlay .c file with Clinic input: its output
# header (DIR/clinic/NAME.c.h) is generated here, never committed; the
# lines Clinic writes into the .c itself (checksums) are committed, so
# Clinic must leave the .c as it is (else: make clinic).
define overlay_clinic
	case "$1" in *.c) ;; *) continue;; esac; \
	grep -q '^/\*\[clinic input\]' "$1" || continue; \
	h="$$(dirname "$1")/clinic/$$(basename "$1").h"; \
	[ -f "$$h" ] && continue; \
	$(STOCK) Tools/clinic/clinic.py "$1" || exit 1; \
	printf '  %-10s %s\n' CLINIC "$$h"; \
	grep -qxF "/$$h" $$x || echo "/$$h" >> $$x; \
	if ! cmp -s "$(ROOT)/$1" "$1"; then \
	    echo "Argument Clinic rewrote $1: its committed clinic lines" \
	        "are stale; run 'make clinic'"; rm -f "$$h"; exit 1; fi;
endef

# After editing Clinic input in one of our files: let Clinic rewrite it
# (checksums) and copy it back, as CPython's `make clinic` does.
.PHONY: clinic
clinic: $(B)/src/cowpy/.patched
	$(Q)cd $(B)/src/cowpy && for f in $(filter %.c,$(OVERLAY)); do \
	    grep -q '^/\*\[clinic input\]' "$(ROOT)/$$f" || continue; \
	    cp "$(ROOT)/$$f" "$$f" && $(STOCK) Tools/clinic/clinic.py "$$f" \
	        && cp "$$f" "$(ROOT)/$$f" && echo "clinic: $$f"; done

# ---------------------------------------------------------------- builds
# configure NAME
define configure
	$(call say,CONFIGURE,build/obj/$(1))
	$(Q)rm -rf $(B)/obj/$(1) && mkdir -p $(B)/obj/$(1)
	$(Q)cd $(B)/obj/$(1) && $(call run,PATH=$(CCPATH) \
	    $(B)/src/$(1)/configure --prefix=$(B)/$(1) $(CONFIGURE_FLAGS),\
	    $(B)/obj/$(1)/configure.out)
endef

# build NAME: always descend (CPython's make is incremental), then install
# only when the binary, a built module or a Lib file changed since the last
# install, so a no-op `make` stays fast.
define build
	$(call say,BUILD,build/obj/$(1) (log: build/obj/$(1)/make.out))
	$(Q)$(call run,PATH=$(CCPATH) $(MAKE) -s -C $(B)/obj/$(1) -j$(J),\
	    $(B)/obj/$(1)/make.out)
	$(Q)$(ROOT)/Tools/make/check_modules.sh $(B)/obj/$(1)
	$(Q)st=$(B)/$(1)/.installed; \
	if [ ! -f $$st ] || [ -n "$$(find $(B)/obj/$(1)/python \
	        $(B)/obj/$(1)/Modules $(B)/src/$(1)/Lib -newer $$st \
	        -type f ! -name '*.pyc' -print -quit)" ]; then \
	    printf '  %-10s %s\n' INSTALL build/$(1)/bin/python3; \
	    PATH=$(CCPATH) $(MAKE) -s -C $(B)/obj/$(1) install \
	        >$(B)/obj/$(1)/install.out 2>&1 || \
	        { tail -n 40 $(B)/obj/$(1)/install.out; exit 1; }; \
	    touch $$st; \
	fi
endef

# The configure flags are recorded in a file that changes only when they
# do (OPTIMIZE=1, EXTRA_CONFIGURE_FLAGS=...), so that a change reconfigures.
FLAGS_STAMP := $(B)/obj/configure-flags
$(shell mkdir -p $(B)/obj && \
    (echo '$(CONFIGURE_FLAGS)' | cmp -s - $(FLAGS_STAMP) || \
     echo '$(CONFIGURE_FLAGS)' > $(FLAGS_STAMP)))

$(B)/obj/stock/Makefile: $(B)/src/stock/.unpacked upstream/pin $(FLAGS_STAMP)
	$(call configure,stock)
$(B)/obj/cowpy/Makefile: $(B)/src/cowpy/.unpacked upstream/pin $(FLAGS_STAMP)
	$(call configure,cowpy)

stock: $(B)/obj/stock/Makefile
	$(call build,stock)
cowpy: overlay $(B)/obj/cowpy/Makefile
	$(call build,cowpy)

# ---------------------------------------------------------------- variants
# cowpy built again from the same patched tree with other configure flags,
# used from its object dir (build/obj/cowpy-NAME/python, not installed):
#   debug  --with-pydebug: assertions, gc.c's list validation, refcount
#          totals for -R, and the differential GC oracle (PYTHONCOWORACLE)
#   asan   AddressSanitizer + UndefinedBehaviorSanitizer (tests run with
#          PYTHONMALLOC=malloc so every object is its own ASan allocation)
VARIANT_FLAGS_debug := --with-pydebug
VARIANT_FLAGS_asan := --with-address-sanitizer \
    --with-undefined-behavior-sanitizer
$(B)/obj/cowpy-%/Makefile: $(B)/src/cowpy/.unpacked upstream/pin $(FLAGS_STAMP)
	$(call say,CONFIGURE,build/obj/cowpy-$*)
	$(Q)rm -rf $(B)/obj/cowpy-$* && mkdir -p $(B)/obj/cowpy-$*
	$(Q)cd $(B)/obj/cowpy-$* && $(call run,PATH=$(CCPATH) \
	    $(B)/src/cowpy/configure --prefix=$(B)/cowpy-$* $(CONFIGURE_FLAGS) \
	    $(VARIANT_FLAGS_$*),$(B)/obj/cowpy-$*/configure.out)
# (The build runs the interpreter it builds: no LeakSanitizer reports, as
# CPython does not free everything at exit by design.)
cowpy-debug cowpy-asan: cowpy-%: overlay $(B)/obj/cowpy-%/Makefile
	$(call say,BUILD,build/obj/cowpy-$* (log: build/obj/cowpy-$*/make.out))
	$(Q)$(call run,PATH=$(CCPATH) ASAN_OPTIONS=detect_leaks=0 \
	    $(MAKE) -s -C $(B)/obj/cowpy-$* -j$(J),$(B)/obj/cowpy-$*/make.out)

# Where benchmarks and checks write their figures: build/results/, so that
# running one never edits a tracked file.  RECORD=1 records them into the
# tracked bench/results/ instead, and refreshes docs/reliability.md from
# the reliability targets' fragments.
ifeq ($(RECORD),1)
RESULTS := $(ROOT)/bench/results
else
RESULTS := $(B)/results
endif
export COWPY_RESULTS := $(RESULTS)
export COWPY_RECORD := $(RECORD)
print-RESULTS:
	@echo $(RESULTS)

# Our tests, the fuzzer and the GC-related upstream tests on a variant;
# figures go to $(RESULTS)/reliability/ (and docs/reliability.md).
# CHECK_FUZZ_SECONDS and CHECK_UPSTREAM (test names) to override.
CHECK_FUZZ_SECONDS ?= 120
check-debug check-asan: check-%: cowpy-%
	@$(ROOT)/Tools/make/check_variant.sh $* $(B)/obj/cowpy-$*/python

# Seeded fork-graph fuzzer (Tools/fuzz/gc_fuzz.py) on the installed cowpy,
# then the fork-moves fuzzer (Tools/fuzz/fork_moves.py) as long again.
SECONDS ?= 60
fuzz: cowpy
	@mkdir -p $(RESULTS)/reliability
	@$(COWPY) Tools/fuzz/gc_fuzz.py --seconds $(SECONDS) \
	    --json $(RESULTS)/reliability/fuzz.json \
	    --md $(RESULTS)/reliability/fuzz.md
	@if [ "$(RECORD)" = 1 ]; then $(COWPY) Tools/make/reliability_doc.py fuzz; fi
	@$(COWPY) Tools/fuzz/fork_moves.py --python $(COWPY) \
	    --seconds $(SECONDS) | tee $(RESULTS)/reliability/fork_moves.txt

# Pre-fork server under load with worker recycling and SIGHUP reloads.
MINUTES ?= 10
soak: all
	@mkdir -p $(RESULTS)/reliability
	@$(COWPY) bench/prefork/soak.py $(COWPY) --minutes $(MINUTES) \
	    --json $(RESULTS)/reliability/soak.json \
	    --md $(RESULTS)/reliability/soak.md \
	    --csv $(RESULTS)/reliability/soak.csv
	@if [ "$(RECORD)" = 1 ]; then $(COWPY) Tools/make/reliability_doc.py soak; fi

# ---------------------------------------------------------------- uWSGI
# uWSGI (upstream/uwsgi.pin: Debian's source, verified and cached like
# CPython's) built against each twin: build/uwsgi/{stock,cowpy}/uwsgi.
# Its embedded Python is the twin's static libpython, so it is rebuilt
# when the twin is reinstalled.
UWSGI_TARBALL := $(B)/$(shell sed -n 's/^TARBALL=//p' upstream/uwsgi.pin)
$(UWSGI_TARBALL):
	$(call say,FETCH,$(notdir $@) (size and sha256 verified))
	$(Q)mkdir -p $(B)
	$(Q)src=$$(upstream/fetch.sh upstream/uwsgi.pin 2>$(B)/fetch-uwsgi.log) \
	    || { cat $(B)/fetch-uwsgi.log; exit 1; }; ln -sf "$$src" $@
$(B)/uwsgi/%/uwsgi: $(B)/%/.installed $(UWSGI_TARBALL) upstream/uwsgi.pin
	$(call say,UWSGI,build/uwsgi/$*/uwsgi (log: build/uwsgi/$*/build.log))
	$(Q)rm -rf $(B)/uwsgi/$* && mkdir -p $(B)/uwsgi/$*
	$(Q)tar -xzf $(UWSGI_TARBALL) -C $(B)/uwsgi/$* --strip-components=1
	$(Q)cd $(B)/uwsgi/$* && $(call run,PATH=$(CCPATH) UWSGI_PROFILE=pyonly \
	    $(B)/$*/bin/python3 uwsgiconfig.py --build,$(B)/uwsgi/$*/build.log)
uwsgi: all $(B)/uwsgi/stock/uwsgi $(B)/uwsgi/cowpy/uwsgi

# ---------------------------------------------------------------- servers
# Celery, Django, uvicorn/Starlette and their pure-Python dependencies from
# a newer Debian suite (upstream/servers.pin; bookworm's fail on 3.13):
# each .deb verified and cached by upstream/fetch_debs.sh, unpacked (not
# installed) under build/servers/root.  Their modules:
SERVERS_SITE := $(B)/servers/root/usr/lib/python3/dist-packages
$(B)/servers/.unpacked: upstream/servers.pin upstream/fetch_debs.sh
	$(call say,DEBS,build/servers/root (size and sha256 verified))
	$(Q)rm -rf $(B)/servers/root && mkdir -p $(B)/servers
	$(Q)upstream/fetch_debs.sh $(B)/servers/root 2>$(B)/servers/fetch.log \
	    || { cat $(B)/servers/fetch.log; exit 1; }
	$(Q)touch $@
servers-deps: $(B)/servers/.unpacked

# ---------------------------------------------------------------- install
# A separate object dir configured for PREFIX, so every path baked into the
# installation (sysconfig, scripts' shebangs, pkg-config) is PREFIX's.
PREFIX ?= /usr/local
install: overlay
	@case "$(PREFIX)" in /*) ;; *) echo "PREFIX must be absolute"; exit 1;; esac
	mkdir -p $(B)/obj/install
	cd $(B)/obj/install && \
	  if ! grep -qxF -- "$(PREFIX)" prefix.txt 2>/dev/null; then \
	    PATH=$(CCPATH) $(B)/src/cowpy/configure -q --prefix=$(PREFIX) \
	        $(filter-out --with-ensurepip=no,$(CONFIGURE_FLAGS)) \
	        --with-ensurepip=install > configure.out && \
	    echo "$(PREFIX)" > prefix.txt; fi
	PATH=$(CCPATH) $(MAKE) -C $(B)/obj/install -j$(J)
	PATH=$(CCPATH) $(MAKE) -C $(B)/obj/install install

# ---------------------------------------------------------------- rebase
# Move to another 3.13 release (patches/README.md): new pin from Debian's
# .dsc, then fetch, verify, unpack, apply the series, regenerate, build.
rebase:
	@test -n "$(DEBIAN_VERSION_NEW)" || \
	    { echo "usage: make rebase DEBIAN_VERSION_NEW=3.13.N-1"; exit 1; }
	$(Q)upstream/new_pin.sh $(DEBIAN_VERSION_NEW)
	$(Q)$(MAKE) --no-print-directory all

# ---------------------------------------------------------------- patches
# Commit edits in build/src/cowpy (one concern per commit, header in the
# message), then run this to rewrite patches/ from those commits.
export-patches:
	$(Q)$(COWGIT) diff --quiet HEAD || \
	  { echo "build/src/cowpy has uncommitted edits"; exit 1; }
	$(Q)rm -f patches/[0-9][0-9][0-9][0-9]-*.patch
	$(Q)$(COWGIT) format-patch -q --no-signature \
	    --zero-commit -N -o $(ROOT)/patches upstream..HEAD
	$(Q)cd patches && { echo "# applied in order by the Makefile (git am)"; \
	    ls [0-9][0-9][0-9][0-9]-*.patch; } > series
	$(Q)touch $(B)/src/cowpy/.patched
	@cat patches/series

# ---------------------------------------------------------------- demo/test
demo: deps all
	$(call say,PROBE,bench/cow_probe.py: stock vs cowpy)
	$(Q)$(STOCK) bench/cow_probe.py --compare $(STOCK) $(COWPY)

test: all cowpy-debug uwsgi servers-deps
	@$(ROOT)/Tools/make/run_tests.sh

test-ours: all cowpy-debug uwsgi servers-deps
	@COWPY_SKIP_UPSTREAM=1 $(ROOT)/Tools/make/run_tests.sh

bench-probe: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/cow_probe.py --compare $(STOCK) $(COWPY) \
	    --json $(RESULTS)/cow_probe.json | tee $(RESULTS)/cow_probe.txt

# GC speed, stock vs cowpy interleaved (ROUNDS, OBJECTS to override).
ROUNDS ?= 5
OBJECTS ?= 1000000
bench-gc: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/gc_speed.py $(STOCK) $(COWPY) --rounds $(ROUNDS) \
	    --objects $(OBJECTS) --csv $(RESULTS)/gc_speed.csv \
	    | tee $(RESULTS)/gc_speed.txt

# Instructions inside the collector (callgrind): noise-free, see the script.
bench-instructions: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/gc_instructions.py $(STOCK) $(COWPY) \
	    | tee $(RESULTS)/gc_instructions.txt

# General speed suite (bench/speed/README.md); SPEED_PROCESSES to override.
SPEED_PROCESSES ?= 5
bench-speed: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/speed/run.py $(STOCK) $(COWPY) \
	    --processes $(SPEED_PROCESSES) --csv-dir $(RESULTS) \
	    --png $(RESULTS)/speed.png | tee $(RESULTS)/speed.txt

bench-instructions-speed: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/speed/instructions.py $(STOCK) $(COWPY) \
	    | tee $(RESULTS)/speed_instructions.txt

# A real pre-fork server: gunicorn --preload + Flask, wrk on loopback,
# every mode at equal work (bench/prefork/README.md).
PREFORK_REQUESTS ?= 20000
PREFORK_MODES ?= stock,stock+hooks,cowpy,cowpy-nofreeze,cowpy-immortal,cowpy-immortal-noaside
bench-prefork: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/prefork/run.py $(STOCK) $(COWPY) --csv-dir $(RESULTS) \
	    --requests $(PREFORK_REQUESTS) --modes $(PREFORK_MODES) \
	    | tee $(RESULTS)/prefork.txt

# Immortalizing freeze: time, and what a forked reader copies.
bench-immortalize: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/immortalize.py $(STOCK) $(COWPY) \
	    | tee $(RESULTS)/immortalize.txt

# pymalloc's set-aside after fork: what forked children copy of a parent
# heap with holes, stock vs cowpy with PYTHONCOWALLOC=stock and aside.
bench-alloc: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/alloc/holes.py $(STOCK) $(COWPY) --rounds 3 \
	    --json $(RESULTS)/alloc_holes.json | tee $(RESULTS)/alloc_holes.txt

# What a forked worker's exit copies and costs (bench/exit/exit_cost.py).
bench-exit: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/exit/exit_cost.py $(STOCK) $(COWPY) \
	    | tee $(RESULTS)/exit_cost.txt
	@$(STOCK) bench/exit/exit_cost.py $(STOCK) $(COWPY) --flask 20000 \
	    --rounds 5 | tee $(RESULTS)/exit_cost_flask.txt

# Writes into inherited code (#17): what a worker copies of the code it
# runs (memory), and what settled code costs in speed (interleaved CPU).
bench-code: all servers-deps
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/code/code_writes.py $(STOCK) $(COWPY) \
	    --calls-sweep 1,5,50,200 | tee $(RESULTS)/code_writes.txt
	@$(STOCK) bench/code/django_writes.py $(STOCK) $(COWPY) \
	    | tee $(RESULTS)/code_django.txt
	@$(STOCK) bench/code/settle_speed.py $(STOCK) $(COWPY) \
	    | tee $(RESULTS)/code_settle_speed.txt

# A process that forks again and again while it holds request data (#18).
bench-refork: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/refork/refork_leak.py $(STOCK) $(COWPY) \
	    | tee $(RESULTS)/refork.txt

# A pre-fork server's whole life with the same habit: gunicorn workers
# recycled (--max-requests) and forking a child every 20th request; memory
# over time from cowstat watch (#18).
bench-prefork-refork: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/prefork/run.py $(STOCK) $(COWPY) --csv-dir $(RESULTS) \
	    --requests $(PREFORK_REQUESTS) --no-attribution --watch \
	    --modes stock+hooks-refork,cowpy-refork,cowpy-immortal-refork \
	    --baseline stock+hooks-refork | tee $(RESULTS)/prefork_refork.txt

# The other pre-fork users (#16): multiprocessing.Pool (fork), Celery
# prefork, Django and Starlette (uvicorn workers) under gunicorn --preload.
SERVERS_ROUNDS ?= 3
bench-servers: all servers-deps
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/servers/run.py $(STOCK) $(COWPY) \
	    --rounds $(SERVERS_ROUNDS) --duration 10 \
	    --csv $(RESULTS)/servers.csv | tee $(RESULTS)/servers.txt

# The same work counted in instructions (callgrind; the noise does not
# move them): a catalogue task and a Django request in a forked worker,
# cowpy's default and immortal modes against stock with its recipe.
TI := $(STOCK) bench/servers/task_instructions.py $(STOCK) $(COWPY)
bench-servers-instructions: all servers-deps
	@mkdir -p $(RESULTS)
	@{ $(TI); $(TI) --fork; $(TI) --fork --recipe; \
	  $(TI) --fork --recipe --env PYTHONCOWFORK=immortal; \
	  $(TI) --django --recipe --tasks 150 --warmup 30 --records 5000; \
	  $(TI) --django --recipe --tasks 150 --warmup 30 --records 5000 \
	    --env PYTHONCOWFORK=immortal; } | tee $(RESULTS)/task_instructions.txt

# CPU per request with every mode's server up at once and the load sent
# in alternating short bursts, so neighbouring bursts see the same
# machine (bench/servers/paired_cpu.py): run.py's sequential rounds
# cannot resolve a few per cent here.
PAIRED_BURSTS ?= 80
PAIRED := $(STOCK) bench/servers/paired_cpu.py $(STOCK) $(COWPY) \
    --modes stock+recipe,cowpy,cowpy-immortal --bursts $(PAIRED_BURSTS)
bench-servers-paired: all servers-deps
	@mkdir -p $(RESULTS)
	@{ $(PAIRED) --stack django; echo; $(PAIRED) --stack asgi; echo; \
	  $(PAIRED) --stack celery --bursts $$(($(PAIRED_BURSTS) / 2)); echo; \
	  $(PAIRED) --stack mp --tasks 200 --bursts $$(($(PAIRED_BURSTS) / 3)); } \
	    | tee $(RESULTS)/servers_paired.txt

# Throughput under --max-requests recycling (#15), paired the same way:
# the Django site, workers recycled after 1,000 requests (+-100).
bench-recycle-paired: all servers-deps
	@mkdir -p $(RESULTS)
	@$(PAIRED) --stack django --max-requests 1000 \
	    | tee $(RESULTS)/recycle_paired.txt

# Worker turnover (#15): the gunicorn tree's peak PSS during a SIGHUP
# reload and during --max-requests recycling, against its steady state.
# After the HUP, samples of the stopped tree (--stop-sample): read while
# it runs, processes 100 ms apart, the old workers' pages and the new
# ones' copies made after they left were added up.
RELOAD_ROUNDS ?= 3
bench-reload: all
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/prefork/reload.py $(STOCK) $(COWPY) --duration 15 \
	    --stop-sample --rounds $(RELOAD_ROUNDS) | tee $(RESULTS)/reload.txt

# uWSGI in every mode (bench/uwsgi/run.py).
# uWSGI beside gunicorn in the pre-fork benchmark: the same Flask app,
# load and equal work (#14); CSVs in build/, the table in RESULTS.
PREFORK_UWSGI_MODES ?= stock+hooks,uwsgi-stock+recipe,uwsgi-stock+recipe-nohooks,uwsgi-cowpy,uwsgi-cowpy-nohooks,uwsgi-cowpy-immortal,uwsgi-cowpy-immortal-nohooks,cowpy-immortal
PREFORK_UWSGI_ROUNDS ?= 2
bench-prefork-uwsgi: all uwsgi
	@mkdir -p $(RESULTS) $(B)/prefork-uwsgi
	@$(STOCK) bench/prefork/run.py $(STOCK) $(COWPY) \
	    --csv-dir $(B)/prefork-uwsgi --no-attribution \
	    --requests $(PREFORK_REQUESTS) --rounds $(PREFORK_UWSGI_ROUNDS) \
	    --modes $(PREFORK_UWSGI_MODES) --baseline uwsgi-stock+recipe \
	    | tee $(RESULTS)/prefork_uwsgi.txt

UWSGI_ROUNDS ?= 3
bench-uwsgi: uwsgi
	@mkdir -p $(RESULTS)
	@$(STOCK) bench/uwsgi/run.py --rounds $(UWSGI_ROUNDS) \
	    | tee $(RESULTS)/uwsgi.txt

bench: bench-probe bench-gc bench-instructions bench-speed bench-prefork \
       bench-immortalize bench-alloc bench-exit bench-servers bench-uwsgi

clean:
	rm -rf $(B)/obj $(B)/stock $(B)/cowpy
distclean:
	rm -rf $(B)
