# clients/js/js.mk - `make js-test`: the JavaScript client's tests (node --test),
# against a mock server and against a real $(BUILD)/wshub on a free
# loopback port. Needs Node.js 20 or newer; no npm packages (the client and
# its tests have no dependencies, so there is nothing to `npm ci`).

NODE ?= node

.PHONY: js-test
js-test: $(BUILD)/wshub
	$(Q)command -v $(NODE) >/dev/null 2>&1 || { \
	  echo "js-test: '$(NODE)' not found: install Node.js 20 or newer (Debian 12's nodejs is 18, too old)"; exit 1; }
	$(Q)$(NODE) -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || { \
	  echo "js-test: Node.js 20 or newer is needed, found $$($(NODE) --version)"; exit 1; }
	$(Q)WSHUB_BIN=$(abspath $(BUILD)/wshub) $(NODE) --experimental-websocket --test \
	  --test-reporter=spec clients/js/test/

TEST_LATE += js-test
