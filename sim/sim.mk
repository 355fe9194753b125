# sim/sim.mk - the deterministic simulator (issue 3).
#
#   make build/wshub-sim     the simulator (also built by `make`)
#   make scenarios           every scenario file; each twice with --trace,
#                            the traces must be identical; then --explore
#                            over a fixed seed range
#   make mutants             builds the core with each injected bug and
#                            shows the explorer catching it, with a shrunk
#                            reproducer that fails on the mutant and passes
#                            on the real core

SIM_SRC := $(sort $(wildcard sim/*.c))
SIM_OBJ := $(SIM_SRC:%.c=$(OBJ)/%.o)
SIM_BIN := $(BUILD)/wshub-sim
BINS += $(SIM_BIN)

# The simulator drives its instances through the shell, as the server does.
$(SIM_OBJ): CFLAGS += -Ishell

$(SIM_BIN): $(SIM_OBJ) $(SHELL_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(SIM_OBJ) $(SHELL_LIB) $(CORE_LIB)

SCENARIO_FILES := $(sort $(wildcard scenarios/*.scn))
# The sanitizer build is several times slower: explore fewer seeds there.
ifeq ($(MODE),asan)
  SIM_EXPLORE_SEEDS ?= 1..1000
  SIM_SCENARIO_SEEDS ?= 2 3 4 5
else
  SIM_EXPLORE_SEEDS ?= 1..5000
  SIM_SCENARIO_SEEDS ?= $(shell seq 2 40)
endif

scenarios: $(SIM_BIN)
	$(Q)$(SIM_BIN) $(SCENARIO_FILES)
	$(Q)mkdir -p $(BUILD)/sim-trace && for f in $(SCENARIO_FILES); do \
	  n=$$(basename $$f .scn); \
	  $(SIM_BIN) --trace $$f > $(BUILD)/sim-trace/$$n.1 || true; \
	  $(SIM_BIN) --trace $$f > $(BUILD)/sim-trace/$$n.2 || true; \
	  if ! cmp -s $(BUILD)/sim-trace/$$n.1 $(BUILD)/sim-trace/$$n.2; then \
	    echo "scenarios: $$f: two runs with --trace differ"; exit 1; \
	  fi; \
	  if [ $$(wc -l < $(BUILD)/sim-trace/$$n.1) -lt 10 ]; then \
	    echo "scenarios: $$f: trace suspiciously short"; exit 1; \
	  fi; \
	done; echo "scenarios: $(words $(SCENARIO_FILES)) traces identical across two runs"
	$(Q)for s in $(SIM_SCENARIO_SEEDS); do \
	  $(SIM_BIN) --seed $$s $(SCENARIO_FILES) > $(BUILD)/sim-trace/seeds.out \
	    || { grep -A1 FAIL $(BUILD)/sim-trace/seeds.out; exit 1; }; \
	done; echo "scenarios: all also pass with --seed $(firstword $(SIM_SCENARIO_SEEDS))..$(lastword $(SIM_SCENARIO_SEEDS))"
	$(Q)for f in $(sort $(wildcard sim/selftest/*.scn)); do \
	  if $(SIM_BIN) $$f > $(BUILD)/sim-trace/selftest.out; then \
	    echo "scenarios: $$f states something false but passed"; exit 1; \
	  fi; \
	done; echo "scenarios: $(words $(wildcard sim/selftest/*.scn)) false statements (sim/selftest) fail as they must"
	$(Q)mkdir -p $(BUILD)/repro && \
	  $(SIM_BIN) --explore --seeds $(SIM_EXPLORE_SEEDS) --repro-dir $(BUILD)/repro

TEST_RELEASE += scenarios
TEST_ASAN += scenarios
