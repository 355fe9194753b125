# tests/integration/integration.mk - `make integration`: pytest against
# real build/wshub processes and a real redis-server (loopback only).

integration: $(BUILD)/wshub
	$(Q)PYTHONDONTWRITEBYTECODE=1 WSHUB_BIN=$(abspath $(BUILD)/wshub) \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

TEST_LATE += integration
