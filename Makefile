# wshub - one non-recursive Makefile.
#
#   make deps          install the Debian packages the project needs
#   make               build/wshub and build/wshub-sim
#   make test          every check (the README's test command)
#   make MODE=asan ... build into build/asan/ with ASan + UBSan
#   make V=1 ...       echo commands
#
# Parts of the tree add their own rules in <dir>/*.mk (included below);
# they append to TEST_RELEASE, TEST_ASAN and TEST_LATE, the steps that
# `make test` runs in that order.

MODE ?= release
ifeq ($(MODE),release)
  BUILD := build
else ifeq ($(MODE),mutant)
  BUILD := build/mutant$(MUTANT)
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
ifeq ($(MODE),mutant)
  CFLAGS_OPT += -DHUB_MUTANT=$(MUTANT)
endif
CFLAGS := $(CFLAGS_BASE) $(CFLAGS_OPT) $(EXTRA_CFLAGS)
# core/ is held to a stricter standard.
CORE_CFLAGS := $(CFLAGS) -Wconversion -Wsign-conversion
LDFLAGS := $(LDFLAGS_MODE) $(EXTRA_LDFLAGS)

export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS := detect_leaks=1:abort_on_error=0

# Debian 12 packages.  `make deps` installs the missing ones (as root).
DEB_PKGS := build-essential pkg-config libcmocka-dev libwslay-dev \
  libhiredis-dev libev-dev libjsmn-dev libhttp-parser-dev libssl-dev \
  redis-server redis-tools python3 python3-pytest python3-websockets \
  python3-redis gcovr clang-format binutils

PYTHON := /usr/bin/python3

.PHONY: all deps test unit check-core-purity coverage clean format \
  format-check run scenarios integration bench mutants
.DEFAULT_GOAL := all

deps:
	$(Q)missing=""; \
	for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	    grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y \
	    --no-install-recommends $$missing; \
	fi

# ---------------------------------------------------------------- core
CORE_SRC := $(wildcard core/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(OBJ)/%.o)
CORE_LIB := $(BUILD)/libhubcore.a

$(OBJ)/core/%.o: core/%.c | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CORE_CFLAGS) -c -o $@ $<

$(CORE_LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

# Generic rule for everything outside core/.
$(OBJ)/%.o: %.c | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

# ---------------------------------------------------------- unit tests
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_HELPERS := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))
UNIT_HELPER_OBJ := $(UNIT_HELPERS:%.c=$(OBJ)/%.o)

$(BUILD)/tests/%: $(OBJ)/tests/unit/%.o $(UNIT_HELPER_OBJ) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lcmocka

unit: $(UNIT_BIN)
	$(Q)fail=0; for t in $(UNIT_BIN); do \
	  echo "== $$t"; $$t || fail=1; \
	done; exit $$fail

# The core purity check.  It reads the symbols the core's object files
# import (nm -u), not only the source: a call to send() or time() fails
# it however it got there.  Allowed imports are libc memory and string
# functions, and what the compiler and sanitizers themselves emit.
CORE_ALLOWED_RE := ^(malloc|free|realloc|calloc|memcpy|memmove|memset|memcmp|memchr|strlen|strcmp|strncmp|strchr|abort|__assert_fail|__stack_chk_fail|__(a|ub|gco)san_.*|__gcov_.*|__asan_.*|__ubsan_.*|__tsan_.*|__sanitizer_.*|_GLOBAL_OFFSET_TABLE_|__memcpy_chk|__memset_chk|__memmove_chk)$$
check-core-purity: $(CORE_OBJ)
	$(Q)bad=0; \
	defined=$$(nm --defined-only $(CORE_OBJ) | awk 'NF==3 {print $$3}' | sort -u); \
	for s in $$(nm -u $(CORE_OBJ) | awk 'NF==2 {print $$2}' | sort -u); do \
	  if echo "$$defined" | grep -qx "$$s"; then continue; fi; \
	  if ! echo "$$s" | grep -Eq '$(CORE_ALLOWED_RE)'; then \
	    echo "core purity: core/ imports $$s:"; \
	    nm -A -u $(CORE_OBJ) | grep -w "$$s" | sed 's/^/    /'; bad=1; \
	  fi; \
	done; \
	if grep -nE '#include *<(sys/|netinet/|arpa/|ev\.h|hiredis|wslay|unistd|pthread|time\.h|threads\.h|signal\.h|fcntl\.h|poll\.h|stdio\.h)' core/*.c core/*.h; then \
	  echo "core purity: forbidden include in core/"; bad=1; \
	fi; \
	if [ $$bad = 0 ]; then echo "core purity: ok ($(words $(CORE_OBJ)) objects import only libc memory/string functions)"; fi; \
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
BINS :=

include $(sort $(wildcard sim/*.mk backplanes/*.mk server/*.mk bench/*.mk \
  tests/integration/*.mk packaging/*.mk))

all: $(BINS) | deps

# `make test`: release checks, then the sanitizer build, then the
# integration tests, each step stopping the run on failure.
test: | deps
	$(Q)$(MAKE) --no-print-directory all $(TEST_RELEASE)
	$(Q)$(MAKE) --no-print-directory MODE=asan $(TEST_ASAN)
	$(Q)$(if $(strip $(TEST_LATE)),$(MAKE) --no-print-directory $(TEST_LATE),true)
	@echo "make test: all checks passed"

FORMAT_SRC = $(wildcard core/*.[ch] backplanes/*.[ch] sim/*.[ch] \
  server/*.[ch] tests/unit/*.[ch] bench/*.[ch])
format:
	clang-format -i $(FORMAT_SRC)
format-check:
	clang-format --dry-run --Werror $(FORMAT_SRC)

clean:
	rm -rf build

# Keep object files make would treat as intermediates.
.SECONDARY:

-include $(shell find build -name '*.d' 2>/dev/null)
