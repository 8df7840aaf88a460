# nnd — build, test, run, install.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR = $(DESTDIR)$(PREFIX)/bin
UNITDIR ?= $(DESTDIR)/etc/systemd/system
CONFDIR ?= $(DESTDIR)/etc/nnd
DOCDIR = $(DESTDIR)$(PREFIX)/share/doc/nnd
SWIFT ?= swift
SHELL := /bin/bash
# Which build `install` copies (check-install uses the debug build `swift test` just made).
CONFIG ?= release

.PHONY: build test demo bench fuzz verify-units check-install install uninstall deps clean

build:
	$(SWIFT) build -c release

# The test command (README): unit, engine, training and daemon tests on MNIST subsets,
# then systemd-analyze verify on the units, the install layout, and 30 s of libFuzzer per reader.
test:
	@mkdir -p .build; set -o pipefail; $(SWIFT) test --disable-swift-testing 2>&1 | tee .build/test.log
	$(MAKE) verify-units
	$(MAKE) check-install
	$(MAKE) fuzz
	@summary=$$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" .build/test.log | tail -1); \
	  n=$$(echo "$$summary" | sed -E 's/.*Executed ([0-9]+) tests?, with ([0-9]+) failures?.*/\1/'); \
	  f=$$(echo "$$summary" | sed -E 's/.*Executed ([0-9]+) tests?, with ([0-9]+) failures?.*/\2/'); \
	  echo "$$((n - f)) passed, $$f failed"

# The main job: daemon + a real MNIST run on local default paths (see scripts/demo.sh).
demo:
	scripts/demo.sh

bench: build
	.build/release/nnd bench

# Coverage-guided fuzzing of the IDX, gzip, CSV and checkpoint readers (FUZZ_SECONDS each).
FUZZ_SECONDS ?= 30
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# systemd-analyze verify in an offline root holding the units, stub binaries and the distro's
# targets; any warning fails. Also prints the security exposure of nnd.service.
verify-units:
	@command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing (apt-get install systemd)"; exit 1; }
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	  mkdir -p $$tmp/usr/local/bin $$tmp/etc/systemd/system $$tmp/usr/lib/systemd; \
	  printf '#!/bin/sh\n' > $$tmp/usr/local/bin/nnd; cp $$tmp/usr/local/bin/nnd $$tmp/usr/local/bin/nnctl; chmod +x $$tmp/usr/local/bin/*; \
	  cp -r /lib/systemd/system $$tmp/usr/lib/systemd/; cp systemd/*.service systemd/*.timer $$tmp/etc/systemd/system/; \
	  out=$$(systemd-analyze verify --root=$$tmp nnd.service nnd-retrain.service nnd-retrain.timer 2>&1); rc=$$?; \
	  if [ $$rc -ne 0 ] || [ -n "$$out" ]; then echo "systemd-analyze verify failed:"; echo "$$out"; exit 1; fi; \
	  echo "systemd-analyze verify: nnd.service nnd-retrain.service nnd-retrain.timer OK"; \
	  systemd-analyze security --offline=yes --root=$$tmp nnd.service 2>&1 | tail -1

deps:
	@for p in libopenblas-dev libnuma-dev zlib1g-dev systemd prometheus chromium; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

# `make install DESTDIR=…` lays out the expected tree, and the installed units verify.
check-install:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	  $(MAKE) -s install-files DESTDIR=$$tmp CONFIG=debug >/dev/null; \
	  for f in usr/local/bin/nnd usr/local/bin/nnctl etc/systemd/system/nnd.service etc/systemd/system/nnd-retrain.service \
	           etc/systemd/system/nnd-retrain.timer etc/nnd/nnd.yaml etc/nnd/runs/mnist-seed.yaml etc/nnd/runs/mnist-fast.yaml \
	           etc/nnd/runs/mnist-retrain.yaml usr/local/share/doc/nnd/README.md; do \
	    [ -e $$tmp/$$f ] || { echo "make install: missing $$f"; exit 1; }; done; \
	  $$tmp/usr/local/bin/nnctl --help >/dev/null || { echo "installed nnctl does not run"; exit 1; }; \
	  mkdir -p $$tmp/usr/lib/systemd; cp -r /lib/systemd/system $$tmp/usr/lib/systemd/; \
	  out=$$(systemd-analyze verify --root=$$tmp nnd.service nnd-retrain.service nnd-retrain.timer 2>&1); \
	  if [ $$? -ne 0 ] || [ -n "$$out" ]; then echo "installed units do not verify:"; echo "$$out"; exit 1; fi; \
	  $(MAKE) -s uninstall DESTDIR=$$tmp >/dev/null; \
	  left=$$(find $$tmp -type f -not -path "$$tmp/usr/lib/systemd/*"); \
	  [ -z "$$left" ] || { echo "make uninstall left: $$left"; exit 1; }; \
	  echo "make install DESTDIR=…: tree complete, units verify; make uninstall: removed"

install: build install-files
	@if [ -z "$(DESTDIR)" ]; then \
	  getent group nnd >/dev/null || groupadd --system nnd; \
	  getent passwd nnd >/dev/null || useradd --system --gid nnd --home-dir /var/lib/nnd --shell /usr/sbin/nologin nnd; \
	  systemctl daemon-reload 2>/dev/null || true; \
	fi

install-files:
	install -d $(BINDIR) $(UNITDIR) $(CONFDIR)/runs $(DOCDIR)
	install -m 0755 .build/$(CONFIG)/nnd .build/$(CONFIG)/nnctl $(BINDIR)/
	install -m 0644 systemd/nnd.service systemd/nnd-retrain.service systemd/nnd-retrain.timer $(UNITDIR)/
	install -m 0644 etc/nnd/nnd.yaml $(CONFDIR)/nnd.yaml
	install -m 0644 etc/nnd/runs/*.yaml $(CONFDIR)/runs/
	install -m 0644 README.md $(DOCDIR)/

uninstall:
	rm -f $(BINDIR)/nnd $(BINDIR)/nnctl
	rm -f $(UNITDIR)/nnd.service $(UNITDIR)/nnd-retrain.service $(UNITDIR)/nnd-retrain.timer
	rm -rf $(CONFDIR) $(DOCDIR)
	@if [ -z "$(DESTDIR)" ]; then \
	  getent passwd nnd >/dev/null && userdel nnd || true; \
	  getent group nnd >/dev/null && groupdel nnd || true; \
	  systemctl daemon-reload 2>/dev/null || true; \
	fi

clean:
	rm -rf .build
