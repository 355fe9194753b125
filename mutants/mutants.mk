# mutants/mutants.mk - deliberate core bugs that the simulator must catch.
#
#   make mutants       for each mutants/K-name.patch: copy core/ to
#                      build/mutantK/src/, apply the patch there (a patch
#                      that does not apply fails loudly), build
#                      build/mutantK/wshub-sim from that copy and the
#                      simulator's release objects, and show the explorer
#                      catching it, with a shrunk reproducer that fails
#                      on the mutant and passes on the real core
#
# The patches touch core/ only, and never hub.h, so the simulator's
# objects are shared with the release build.  Production source holds no
# mutant code.

MUTANT_PATCHES := $(sort $(wildcard mutants/*.patch))
MUTANTS := $(foreach p,$(MUTANT_PATCHES),$(firstword $(subst -, ,$(notdir $(p)))))
MUTANT_SEEDS ?= 1..400

# Included after sim/*.mk (see the Makefile): this runs after scenarios.
TEST_RELEASE += mutants

# One mutant's simulator, built by the `mutants` recipe below with
# MUTANT_DIR=build/mutantK once build/mutantK/src/core holds the patched
# copy.
ifneq ($(MUTANT_DIR),)
MUTANT_CORE_SRC := $(wildcard $(MUTANT_DIR)/src/core/*.c)
MUTANT_CORE_OBJ := $(MUTANT_CORE_SRC:$(MUTANT_DIR)/src/%.c=$(MUTANT_DIR)/obj/%.o)

$(MUTANT_DIR)/obj/core/%.o: $(MUTANT_DIR)/src/core/%.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CORE_CFLAGS) -c -o $@ $<

$(MUTANT_DIR)/libhubcore.a: $(MUTANT_CORE_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(MUTANT_DIR)/wshub-sim: $(SIM_OBJ) $(SHELL_LIB) $(MUTANT_DIR)/libhubcore.a
	$(Q)$(CC) $(LDFLAGS) -o $@ $(SIM_OBJ) $(SHELL_LIB) $(MUTANT_DIR)/libhubcore.a
endif

mutants: $(SIM_BIN)
	$(Q)fail=0; for k in $(MUTANTS); do \
	  p=$$(ls mutants/$$k-*.patch); d=build/mutant$$k; \
	  rm -rf $$d/src $$d/obj; mkdir -p $$d/src; cp -R core $$d/src/; \
	  if ! patch -s -f -p1 --no-backup-if-mismatch -d $$d/src < $$p; then \
	    echo "mutant $$k: $$p does not apply to core/"; exit 1; fi; \
	  $(MAKE) --no-print-directory MODE=release MUTANT_DIR=$$d \
	    $$d/wshub-sim >/dev/null || exit 1; \
	  rm -rf $$d/repro; mkdir -p $$d/repro; \
	  out=$$($$d/wshub-sim --explore --seeds $(MUTANT_SEEDS) \
	    --repro-dir $$d/repro); st=$$?; \
	  if [ $$st = 0 ]; then \
	    echo "mutant $$k: NOT caught in seeds $(MUTANT_SEEDS)"; fail=1; continue; \
	  fi; \
	  echo "$$out" | sed -n 's/^explore: \(seed .*invariant.*\)/mutant '$$k': \1/p' | head -1; \
	  echo "$$out" | sed -n 's/^explore: \([0-9]* seeds\).*/mutant '$$k': caught after \1/p'; \
	  echo "$$out" | sed -n 's/^explore: seed [0-9]*: \(shrunk .*\)/mutant '$$k': \1/p'; \
	  r=$$(ls $$d/repro/explore-seed-*.scn 2>/dev/null | head -1); \
	  if [ -z "$$r" ]; then echo "mutant $$k: no reproducer"; fail=1; continue; fi; \
	  if $$d/wshub-sim $$r >/dev/null; then \
	    echo "mutant $$k: reproducer passes on the mutant"; fail=1; continue; fi; \
	  if ! $(SIM_BIN) $$r >/dev/null; then \
	    echo "mutant $$k: reproducer fails on the real core:"; $(SIM_BIN) $$r; fail=1; continue; fi; \
	  echo "mutant $$k: reproducer $$r fails on the mutant, passes on the real core"; \
	done; exit $$fail
