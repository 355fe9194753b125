# server/server.mk - build/wshub, the production server, and `make run`.

SERVER_SRC := $(wildcard server/*.c) backplanes/bp_redis.c
SERVER_OBJ := $(SERVER_SRC:%.c=$(OBJ)/%.o)
WSHUB := $(BUILD)/wshub

$(SERVER_OBJ): CFLAGS += -Ibackplanes -Iserver -Ishell

# The wshub Redis function library, compiled into bp_redis.o as the C
# string bp_redis_wshub_lua (loaded with FUNCTION LOAD REPLACE on every
# connect): no file is looked up at run time.  Each line becomes a string
# literal; backslashes, quotes and '?' (trigraphs) are escaped.
WSHUB_LUA_H := $(BUILD)/gen/wshub_lua.h
$(WSHUB_LUA_H): backplanes/wshub.lua
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  GEN     $@")
	$(Q){ echo '/* Generated from backplanes/wshub.lua by server/server.mk. */'; \
	  echo 'static const char bp_redis_wshub_lua[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/?/\\?/g' \
	    -e 's/^/  "/' -e 's/$$/\\n"/' $<; \
	  echo '  ;'; } > $@.tmp && mv $@.tmp $@
$(OBJ)/backplanes/bp_redis.o: $(WSHUB_LUA_H)
$(OBJ)/backplanes/bp_redis.o: CFLAGS += -I$(BUILD)/gen

# The version: the VERSION file, plus `git describe` when the tree is a
# git checkout (a tarball without .git builds with the VERSION alone).
# srv_version.o is rebuilt when either changes: the stamp file is
# rewritten only when its content differs.
WSHUB_VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
WSHUB_REVISION := $(shell [ -e .git ] && git describe --always --dirty 2>/dev/null)
VERSION_STAMP := $(BUILD)/.version
$(shell mkdir -p $(BUILD) && v='$(WSHUB_VERSION) $(WSHUB_REVISION)'; \
  [ "$$(cat $(VERSION_STAMP) 2>/dev/null)" = "$$v" ] || \
  printf '%s\n' "$$v" > $(VERSION_STAMP))
$(OBJ)/server/srv_version.o: $(VERSION_STAMP)
$(OBJ)/server/srv_version.o: CFLAGS += \
  -DWSHUB_VERSION='"$(WSHUB_VERSION)"' -DWSHUB_REVISION='"$(WSHUB_REVISION)"'

$(WSHUB): $(SERVER_OBJ) $(SHELL_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(SERVER_OBJ) $(SHELL_LIB) $(CORE_LIB) \
	  -lev -lwslay -lhiredis -lhttp_parser -ljwt -lssl -lcrypto

BINS += $(WSHUB)

# `make run`: installs what building and running need (only what is
# missing), builds both binaries, and runs the server with the embedded
# backplane on 127.0.0.1:8080 in the foreground.
RUN_ARGS ?= --listen 127.0.0.1:8080
run:
	$(Q)$(MAKE) --no-print-directory deps-build
	$(Q)$(MAKE) --no-print-directory all
	$(WSHUB) $(RUN_ARGS)
