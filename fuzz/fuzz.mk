# fuzz/fuzz.mk - libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined).
#
#   make fuzz             every target for FUZZ_SECONDS each (default 60)
#   make fuzz-smoke       every target briefly (part of make test)
#   make fuzz-client FUZZ_SECONDS=600   one target
#
# Each target is built from the sources themselves with clang into
# build/fuzz/.  Seed corpora live in fuzz/corpus/<target>/ (read only);
# what a run finds goes to build/fuzz/corpus-<target>/, and a crashing
# input to build/fuzz/crash-<target>-*, which the run prints.

FUZZ_CC ?= clang
FUZZ_DIR := build/fuzz
FUZZ_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -Wall -Wextra -Werror -Icore
FUZZ_TARGETS := client bp replay scn http frame
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 8
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)


$(FUZZ_DIR)/fuzz_client: fuzz/fuzz_client.c fuzz/fuzz_hub.h $(CORE_SRC) \
  $(wildcard core/*.h) | $(BUILD)/.test-deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_client.c $(CORE_SRC)

$(FUZZ_DIR)/fuzz_bp: fuzz/fuzz_bp.c fuzz/fuzz_hub.h $(CORE_SRC) \
  $(wildcard core/*.h) | $(BUILD)/.test-deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_bp.c $(CORE_SRC)

# The recording reader and replayer (wshub-sim --replay).
FUZZ_REPLAY_SRC := fuzz/fuzz_replay.c sim/sim_replay.c shell/sh_rec.c
$(FUZZ_DIR)/fuzz_replay: $(FUZZ_REPLAY_SRC) sim/sim_replay.h shell/sh_rec.h \
  $(CORE_SRC) $(wildcard core/*.h) | $(BUILD)/.test-deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -Ishell -Isim -o $@ $(FUZZ_REPLAY_SRC) \
	  $(CORE_SRC)

# The scenario runner over the simulated world (no sim_main.c: its main).
FUZZ_SIM_SRC = $(filter-out sim/sim_main.c,$(sort $(wildcard sim/*.c))) \
  $(SHELL_SRC)
$(FUZZ_DIR)/fuzz_scn: fuzz/fuzz_scn.c $(FUZZ_SIM_SRC) $(CORE_SRC) \
  $(wildcard core/*.h sim/*.h shell/*.h) | $(BUILD)/.test-deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -Isim -Ibackplanes -Ishell -o $@ \
	  fuzz/fuzz_scn.c $(FUZZ_SIM_SRC) $(CORE_SRC)

# The server's HTTP and frame paths: every server source (srv_main.c's
# main renamed out of the way) over a real loopback socket.
FUZZ_SRV_SRC = $(sort $(wildcard server/*.c)) backplanes/bp_redis.c \
  $(SHELL_SRC)
# fuzz_http: raw bytes (requests, upgrades); fuzz_frame: frames after a
# valid upgrade (fuzz/fuzz_srv.c, FZ_MODE).
$(FUZZ_DIR)/fuzz_http $(FUZZ_DIR)/fuzz_frame: fuzz/fuzz_srv.c $(FUZZ_SRV_SRC) \
  $(CORE_SRC) $(wildcard core/*.h server/*.h shell/*.h backplanes/*.h) \
  $(BUILD)/gen/wshub_lua.h $(DEMO_H) | $(BUILD)/.test-deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -Dmain=wshub_main -Wno-missing-prototypes \
	  -DFZ_MODE=$(if $(findstring frame,$@),1,0) \
	  -Iserver -Ibackplanes -Ishell -I$(BUILD)/gen -o $@ fuzz/fuzz_srv.c $(FUZZ_SRV_SRC) \
	  $(CORE_SRC) -lev -lwslay -lhiredis -lhttp_parser -ljwt -lssl -lcrypto

.PHONY: fuzz fuzz-smoke $(FUZZ_TARGETS:%=fuzz-%)
$(FUZZ_TARGETS:%=fuzz-%): fuzz-%: $(FUZZ_DIR)/fuzz_%
	$(Q)sh fuzz/run.sh $(FUZZ_DIR) $* $(FUZZ_SECONDS)

fuzz: $(FUZZ_BINS)
	$(Q)for t in $(FUZZ_TARGETS); do \
	  sh fuzz/run.sh $(FUZZ_DIR) $$t $(FUZZ_SECONDS) || exit 1; done

fuzz-smoke: $(FUZZ_BINS)
	$(Q)for t in $(FUZZ_TARGETS); do \
	  sh fuzz/run.sh $(FUZZ_DIR) $$t $(FUZZ_SMOKE_SECONDS) || exit 1; done

TEST_LATE += fuzz-smoke
