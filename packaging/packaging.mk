# packaging/packaging.mk - `make install` / `make uninstall`.
#
#   make install PREFIX=/usr/local DESTDIR=/tmp/stage
#
# installs the binaries, the man pages, the systemd unit (its ExecStart
# pointed at $(BINDIR)), the example environment file as
# $(SYSCONFDIR)/default/wshub (never over an existing one) and the
# documentation.  Every path is under $(DESTDIR).

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/wshub
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL ?= install

PKG_DOCS := README.md LICENSE $(wildcard docs/*.md)

.PHONY: install uninstall

install: $(BUILD)/wshub $(BUILD)/wshub-sim
	$(INSTALL) -D -m 0755 $(BUILD)/wshub $(DESTDIR)$(BINDIR)/wshub
	$(INSTALL) -D -m 0755 $(BUILD)/wshub-sim $(DESTDIR)$(BINDIR)/wshub-sim
	$(INSTALL) -D -m 0644 packaging/wshub.1 $(DESTDIR)$(MANDIR)/man1/wshub.1
	$(INSTALL) -D -m 0644 packaging/wshub-sim.1 \
	  $(DESTDIR)$(MANDIR)/man1/wshub-sim.1
	$(Q)mkdir -p $(BUILD)/packaging
	$(Q)sed 's|^ExecStart=/usr/local/bin/wshub|ExecStart=$(BINDIR)/wshub|' \
	  packaging/wshub.service > $(BUILD)/packaging/wshub.service
	$(INSTALL) -D -m 0644 $(BUILD)/packaging/wshub.service \
	  $(DESTDIR)$(SYSTEMDUNITDIR)/wshub.service
	$(Q)if [ -e $(DESTDIR)$(SYSCONFDIR)/default/wshub ]; then \
	  echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/default/wshub"; \
	else \
	  echo "$(INSTALL) -D -m 0644 packaging/wshub.env $(DESTDIR)$(SYSCONFDIR)/default/wshub"; \
	  $(INSTALL) -D -m 0644 packaging/wshub.env \
	    $(DESTDIR)$(SYSCONFDIR)/default/wshub; \
	fi
	$(Q)for f in $(PKG_DOCS); do \
	  echo "$(INSTALL) -D -m 0644 $$f $(DESTDIR)$(DOCDIR)/$$f"; \
	  $(INSTALL) -D -m 0644 $$f $(DESTDIR)$(DOCDIR)/$$f || exit 1; \
	done

# Leaves $(SYSCONFDIR)/default/wshub: it holds the operator's settings.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/wshub $(DESTDIR)$(BINDIR)/wshub-sim \
	  $(DESTDIR)$(MANDIR)/man1/wshub.1 $(DESTDIR)$(MANDIR)/man1/wshub-sim.1 \
	  $(DESTDIR)$(SYSTEMDUNITDIR)/wshub.service
	rm -rf $(DESTDIR)$(DOCDIR)
