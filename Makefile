# delayqs: `make` builds, `make test` runs every check, `make run` shows it working.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(DESTDIR)$(PREFIX)/bin
CONFDIR := $(DESTDIR)/etc/delayqs
MUSL := x86_64-unknown-linux-musl
CONFIG ?= config/config.json

.PHONY: build test lint unit redis-server run install uninstall static clean

build:
	$(CARGO) build --release --locked

# The README's test command, and what .ci/run runs: formatting, lints, every test.
test: redis-server lint
	$(CARGO) test --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# The tests start their own redis-server on a free loopback port; they need the
# program, not a running service.
redis-server:
	@command -v redis-server >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "redis-server is missing: installing Debian's redis-server package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	  echo "redis-server is missing: installing Debian's redis-server package with sudo"; \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	else \
	  echo "redis-server is missing and cannot be installed here: install your system's redis-server package (Debian: apt-get install redis-server)" >&2; \
	  exit 1; \
	fi; \
	command -v redis-server >/dev/null

# Runs delayqs in the foreground; starts a private redis-server when none answers.
run: build redis-server
	scripts/dev-run.sh target/release/delayqs $(CONFIG)

install: build
	install -d $(BINDIR)
	install -m 755 target/release/delayqs $(BINDIR)/delayqs
	install -d $(CONFDIR)
	@if [ -e $(CONFDIR)/config.json ]; then \
	  echo "keeping the existing $(CONFDIR)/config.json"; \
	else \
	  install -m 640 config/config.json $(CONFDIR)/config.json; \
	fi

uninstall:
	rm -f $(BINDIR)/delayqs

# A fully static binary for hosts with no Rust and any libc.
static:
	rustup target list --installed | grep -qx $(MUSL) || rustup target add $(MUSL)
	$(CARGO) build --release --locked --target $(MUSL)
	@ls -l target/$(MUSL)/release/delayqs

clean:
	$(CARGO) clean
