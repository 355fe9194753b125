# wshub - one non-recursive Makefile.
#
#   make deps          install the Debian packages the project needs
#   make deps-build    only those building and running need (make run)
#   make               build/wshub and build/wshub-sim
#   make test          every check (the README's test command)
#   make MODE=asan ... build into build/asan/ with ASan + UBSan
#   make V=1 ...       echo commands
#
# Parts of the tree add their own rules in <dir>/*.mk (included below);
# they append to TEST_RELEASE, TEST_ASAN and TEST_LATE, the steps that
# `make test` runs in that order, and to DEPS_LATE, what `make deps` runs
# after installing the Debian packages.

MODE ?= release
ifeq ($(MODE),release)
  BUILD := build
else
  BUILD := build/$(MODE)
endif
OBJ := $(BUILD)/obj

ifeq ($(V),1)
  Q :=
else
  Q := @
endif

CC ?= cc
CFLAGS_BASE := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
  -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
  -Wvla -MMD -MP -Icore
CFLAGS_OPT := -O2 -g
LDFLAGS_MODE :=
ifeq ($(MODE),asan)
  CFLAGS_OPT := -O1 -g -fno-omit-frame-pointer \
    -fsanitize=address,undefined -fno-sanitize-recover=all
  LDFLAGS_MODE := -fsanitize=address,undefined
endif
ifeq ($(MODE),cov)
  CFLAGS_OPT := -O0 -g --coverage
  LDFLAGS_MODE := --coverage
endif
CFLAGS := $(CFLAGS_BASE) $(CFLAGS_OPT) $(EXTRA_CFLAGS)
# core/ is held to a stricter standard.
CORE_CFLAGS := $(CFLAGS) -Wconversion -Wsign-conversion
LDFLAGS := $(LDFLAGS_MODE) $(EXTRA_LDFLAGS)

export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS := detect_leaks=1:abort_on_error=0

# Debian 12 packages.  Building needs DEB_BUILD_PKGS; `make test` and the
# other checks need DEB_TEST_PKGS too.  Nothing is installed unless asked:
#   make deps         installs every missing package (apt-get, as root or
#                     through sudo); .ci/run calls it
#   make deps-build   installs only what building and running need
#                     (`make run` calls it)
# Every other target only checks, once per build directory, that the
# headers and tools it needs are there, and names the missing packages.
DEB_BUILD_PKGS := build-essential pkg-config libwslay-dev libhiredis-dev \
  libev-dev libhttp-parser-dev libssl-dev libjwt-dev
DEB_TEST_PKGS := libcmocka-dev libjsmn-dev redis-server redis-tools python3 \
  python3-pytest python3-websockets python3-redis python3-jwt gcovr clang-format binutils \
  clang libclang-rt-14-dev chromium
DEB_PKGS := $(DEB_BUILD_PKGS) $(DEB_TEST_PKGS)

PYTHON := /usr/bin/python3

.PHONY: all deps deps-build test unit check-core-purity coverage clean \
  format format-check run scenarios integration bench mutants
.DEFAULT_GOAL := all

# $(call deb_install,PACKAGES): apt-get install the ones not installed.
define deb_install
	$(Q)if ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "deps: not a Debian system; install the equivalents of: $(1)"; \
	  exit 1; \
	fi; \
	missing=""; \
	for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	    grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "deps: need root or sudo to install$$missing"; exit 1; fi; \
	  $$SUDO apt-get update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends $$missing; \
	else echo "deps: every package is installed"; fi
endef

# DEPS_LATE: what `make deps` runs after the packages (parts append to it,
# like TEST_LATE; e.g. clients/demo/demo.mk's npm ci for the browser tests).
deps:
	$(call deb_install,$(DEB_PKGS))
	$(Q)$(if $(strip $(DEPS_LATE)),$(MAKE) --no-print-directory $(DEPS_LATE),true)

deps-build:
	$(call deb_install,$(DEB_BUILD_PKGS))

# The checks: a header the compiler cannot find, or a tool not on PATH,
# is reported with the package that provides it.  A stamp file keeps
# them to one run per build directory.
BUILD_NEEDS := wslay/wslay.h:libwslay-dev hiredis/hiredis.h:libhiredis-dev \
  ev.h:libev-dev http_parser.h:libhttp-parser-dev openssl/sha.h:libssl-dev \
  jwt.h:libjwt-dev
TEST_NEEDS := cmocka.h:libcmocka-dev jsmn.h:libjsmn-dev
TEST_TOOLS := redis-server:redis-server redis-cli:redis-tools \
  clang-format:clang-format nm:binutils

# $(call need_headers,HEADER:PKG ...)
define need_headers
	missing=""; \
	for hp in $(1); do \
	  h=$${hp%%:*}; p=$${hp##*:}; \
	  printf '#include <%s>\n' "$$h" | $(CC) -E -x c - >/dev/null 2>&1 || \
	    missing="$$missing $$p"; \
	done
endef

$(BUILD)/.build-deps-ok:
	$(Q)$(call need_headers,$(BUILD_NEEDS)); \
	if ! command -v $(CC) >/dev/null 2>&1; then missing="build-essential $$missing"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "missing packages:$$missing"; \
	  echo "run 'make deps-build' (build only) or 'make deps' (build and tests) to install them"; \
	  exit 1; \
	fi
	@mkdir -p $(dir $@) && touch $@

$(BUILD)/.test-deps-ok: | $(BUILD)/.build-deps-ok
	$(Q)$(call need_headers,$(TEST_NEEDS)); \
	for tp in $(TEST_TOOLS); do \
	  t=$${tp%%:*}; p=$${tp##*:}; \
	  command -v $$t >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	for m in pytest:python3-pytest websockets:python3-websockets redis:python3-redis jwt:python3-jwt; do \
	  $(PYTHON) -c "import $${m%%:*}" >/dev/null 2>&1 || missing="$$missing $${m##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "missing packages:$$missing"; \
	  echo "run 'make deps' to install them"; \
	  exit 1; \
	fi
	@mkdir -p $(dir $@) && touch $@

# ---------------------------------------------------------------- core
CORE_SRC := $(wildcard core/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(OBJ)/%.o)
CORE_LIB := $(BUILD)/libhubcore.a

$(OBJ)/core/%.o: core/%.c | $(BUILD)/.build-deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CORE_CFLAGS) -c -o $@ $<

$(CORE_LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

# ---------------------------------------------------------------- shell
# shell/ (pure C over hub.h, shared by both drivers) is held to the
# core's standard: the same strict flags and the purity check.
SHELL_SRC := $(wildcard shell/*.c)
SHELL_OBJ := $(SHELL_SRC:%.c=$(OBJ)/%.o)
SHELL_LIB := $(BUILD)/libhubshell.a

$(OBJ)/shell/%.o: shell/%.c | $(BUILD)/.build-deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CORE_CFLAGS) -Ishell -Ibackplanes -c -o $@ $<

$(SHELL_LIB): $(SHELL_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

# Generic rule for everything outside core/.
$(OBJ)/%.o: %.c | $(BUILD)/.build-deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

# ---------------------------------------------------------- unit tests
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_HELPERS := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))
UNIT_HELPER_OBJ := $(UNIT_HELPERS:%.c=$(OBJ)/%.o)

$(OBJ)/tests/unit/%.o: CFLAGS += -Ishell -Ibackplanes

$(BUILD)/tests/%: $(OBJ)/tests/unit/%.o $(UNIT_HELPER_OBJ) $(SHELL_LIB) \
  $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lcmocka

$(UNIT_SRC:%.c=$(OBJ)/%.o) $(UNIT_HELPER_OBJ): | $(BUILD)/.test-deps-ok

unit: $(UNIT_BIN)
	$(Q)fail=0; for t in $(UNIT_BIN); do \
	  echo "== $$t"; $$t || fail=1; \
	done; exit $$fail

# The core purity check, over core/ and shell/.  It reads the symbols
# their object files import (nm -u), not only the source: a call to
# send() or time() fails it however it got there.  Allowed imports are
# libc memory and string functions, what the compiler and sanitizers
# themselves emit, and (for shell/) the core's own functions.
CORE_ALLOWED_RE := ^(malloc|free|realloc|calloc|memcpy|memmove|memset|memcmp|memchr|strlen|strcmp|strncmp|strchr|abort|__assert_fail|__stack_chk_fail|__(a|ub|gco)san_.*|__gcov_.*|__asan_.*|__ubsan_.*|__tsan_.*|__sanitizer_.*|_GLOBAL_OFFSET_TABLE_|__memcpy_chk|__memset_chk|__memmove_chk)$$
PURE_OBJ = $(CORE_OBJ) $(SHELL_OBJ)
check-core-purity: $(CORE_OBJ) $(SHELL_OBJ)
	$(Q)bad=0; \
	defined=$$(nm --defined-only $(PURE_OBJ) | awk 'NF==3 {print $$3}' | sort -u); \
	for s in $$(nm -u $(PURE_OBJ) | awk 'NF==2 {print $$2}' | sort -u); do \
	  if echo "$$defined" | grep -qx "$$s"; then continue; fi; \
	  if ! echo "$$s" | grep -Eq '$(CORE_ALLOWED_RE)'; then \
	    echo "core purity: core/ or shell/ imports $$s:"; \
	    nm -A -u $(PURE_OBJ) | grep -w "$$s" | sed 's/^/    /'; bad=1; \
	  fi; \
	done; \
	if grep -nE '#include *<(sys/|netinet/|arpa/|ev\.h|hiredis|wslay|unistd|pthread|time\.h|threads\.h|signal\.h|fcntl\.h|poll\.h|stdio\.h)' core/*.c core/*.h shell/*.c shell/*.h; then \
	  echo "core purity: forbidden include in core/ or shell/"; bad=1; \
	fi; \
	if nm -u $(SHELL_OBJ) | awk 'NF==2 {print $$2}' | grep -Eq '^(bp_|srv_|sim_)'; then \
	  echo "core purity: shell/ calls into a driver or backplane:"; \
	  nm -A -u $(SHELL_OBJ) | grep -E ' (bp_|srv_|sim_)' | sed 's/^/    /'; bad=1; \
	fi; \
	if [ $$bad = 0 ]; then echo "core purity: ok ($(words $(CORE_OBJ)) core and $(words $(SHELL_OBJ)) shell objects import only libc memory/string functions and the core)"; fi; \
	exit $$bad

# Line coverage of core/ by the unit tests (gcov through gcovr).
coverage:
	$(Q)rm -rf build/cov
	$(Q)$(MAKE) --no-print-directory MODE=cov unit
	$(Q)gcovr --root . --filter 'core/' --object-directory build/cov/obj \
	  --print-summary --txt build/cov/coverage.txt
	$(Q)tail -n 25 build/cov/coverage.txt

# ---------------------------------------------------------- the parts
TEST_RELEASE := format-check unit check-core-purity
TEST_ASAN := unit
TEST_LATE :=
DEPS_LATE :=
BINS :=

include $(sort $(wildcard sim/*.mk backplanes/*.mk server/*.mk bench/*.mk fuzz/*.mk clients/*/*.mk \
  tests/integration/*.mk packaging/*.mk))
# After the simulator's rules, whose objects the mutants link with.
include $(sort $(wildcard mutants/*.mk))

all: $(BINS)

# `make test`: release checks, then the sanitizer build, then the
# integration tests, each step stopping the run on failure.
test: | $(BUILD)/.test-deps-ok
	$(Q)$(MAKE) --no-print-directory all $(TEST_RELEASE)
	$(Q)$(MAKE) --no-print-directory MODE=asan $(TEST_ASAN)
	$(Q)$(if $(strip $(TEST_LATE)),$(MAKE) --no-print-directory $(TEST_LATE),true)
	@echo "make test: all checks passed"

FORMAT_SRC = $(wildcard core/*.[ch] shell/*.[ch] backplanes/*.[ch] \
  sim/*.[ch] server/*.[ch] tests/unit/*.[ch] bench/*.[ch] fuzz/*.[ch])
format:
	clang-format -i $(FORMAT_SRC)
format-check:
	clang-format --dry-run --Werror $(FORMAT_SRC)

clean:
	rm -rf build

# Keep object files make would treat as intermediates.
.SECONDARY:

-include $(wildcard $(OBJ)/*/*.d $(OBJ)/*/*/*.d)
