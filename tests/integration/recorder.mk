# tests/integration/recorder.mk - test_recorder.py replays with
# build/wshub-sim (and builds a mutant's in build/rec-mutant2/).
integration: $(BUILD)/wshub-sim
