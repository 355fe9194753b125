# server/server.mk - build/wshub, the production server, and `make run`.

SERVER_SRC := $(wildcard server/*.c) backplanes/bp_redis.c
SERVER_OBJ := $(SERVER_SRC:%.c=$(OBJ)/%.o)
WSHUB := $(BUILD)/wshub

$(SERVER_OBJ): CFLAGS += -Ibackplanes -Iserver -Ishell

$(WSHUB): $(SERVER_OBJ) $(SHELL_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(SERVER_OBJ) $(SHELL_LIB) $(CORE_LIB) \
	  -lev -lwslay -lhiredis -lhttp_parser -ljwt -lcrypto

BINS += $(WSHUB)

# `make run`: installs what building and running need (only what is
# missing), builds both binaries, and runs the server with the embedded
# backplane on 127.0.0.1:8080 in the foreground.
run:
	$(Q)$(MAKE) --no-print-directory deps-build
	$(Q)$(MAKE) --no-print-directory all
	$(WSHUB) --listen 127.0.0.1:8080
