# bench/ - the load generator and `make bench` (issue 5; bench/README.md).
#
#   make bench            every scenario against build/wshub: RESULT lines,
#                         a table and the targets (about 5 minutes)
#   make bench BENCH_ARGS='--only A,L --backplane embedded'
#   make bench-smoke      every scenario at tiny sizes (seconds)
#   make bench-selftest   the load generator's own test (part of make test)
#   make bench-profile    perf profile of wshub during A at 10,000 subs
#
# build/wshub-loadgen is not part of BINS: only the bench targets build it.

LOADGEN := $(BUILD)/wshub-loadgen
LOADGEN_OBJ := $(OBJ)/bench/loadgen.o

$(LOADGEN): $(LOADGEN_OBJ)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lhiredis -lssl -lcrypto

.PHONY: bench-smoke

bench: all $(LOADGEN)
	$(Q)$(PYTHON) bench/run.py --build $(BUILD) $(BENCH_ARGS)

bench-smoke: all $(LOADGEN)
	$(Q)$(PYTHON) bench/run.py --build $(BUILD) --smoke $(BENCH_ARGS)

# The load generator's own test, against bench/mock_hub.py (no wshub):
# injected drops, duplicates, reordering and pings must be counted exactly.
.PHONY: bench-selftest
bench-selftest: $(LOADGEN)
	$(Q)$(PYTHON) bench/selftest.py $(BUILD)
TEST_LATE += bench-selftest

# perf profile of build/wshub during scenario A at 10,000 subscribers.
PROFILE_BACKPLANE ?= embedded
.PHONY: bench-profile
bench-profile: all $(LOADGEN)
	$(Q)sh bench/profile.sh $(BUILD) $(PROFILE_BACKPLANE)
