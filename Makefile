# delayqs: `make` builds, `make test` runs every check, `make run` shows it working.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(DESTDIR)$(PREFIX)/bin
CONFDIR := $(DESTDIR)/etc/delayqs
SHAREDIR := $(DESTDIR)$(PREFIX)/share
MUSL := x86_64-unknown-linux-musl
CONFIG ?= config/config.json
# `make run` shows each delivery (a debug line); the config's own logLevel stays
# what production runs with.
RUN_LOG_LEVEL ?= debug

.PHONY: build bench chaos chaos-sentinel chaos-cluster chaos-short chaos-ci test test-valkey lint check-install check-static redis-server redis-sentinel valkey-server netns-tools python-deps producers zsh faketime tmux run install uninstall static clean

build:
	$(CARGO) build --release --locked

# The README's test command, and what .ci/run runs: formatting, lints, the install and
# static-binary checks, the short chaos run, every test against redis-server, then the
# delivery, retry and fault tests again against valkey-server.
test: redis-server redis-sentinel valkey-server netns-tools faketime zsh python-deps producers tmux lint check-install check-static chaos-ci
	$(CARGO) test --locked
	$(MAKE) --no-print-directory test-valkey

# The tests that touch Redis most, against Valkey 8 (Debian's bookworm-backports).
test-valkey: valkey-server
	@valkey-server --version
	DELAYQS_TEST_SERVER=valkey-server $(CARGO) test --locked --test delivery --test retries --test faults --test sentinel --test cluster --test shards

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

check-install:
	scripts/check-install.sh

check-static:
	scripts/check-static.sh

# The tests start their own redis-server on a free loopback port; they need the
# program, not a running service.
redis-server:
	@scripts/need.sh redis-server redis-server

valkey-server:
	@scripts/need.sh valkey-server valkey-server bookworm-backports
	@scripts/need.sh valkey-sentinel valkey-sentinel bookworm-backports

# The partition test puts a daemon in a network namespace and cuts it off with nftables.
netns-tools:
	@scripts/need.sh ip iproute2
	@scripts/need.sh nft nftables

# The Sentinel test runs three sentinels beside a master and a replica.
redis-sentinel:
	@scripts/need.sh redis-sentinel redis-sentinel

# The shard tests run the README's producer rule in PHP and Node (Python is there);
# the id tests drive the Functions library from PHP's phpredis.
producers:
	@scripts/need.sh php php-cli
	@NEED_CHECK='php -m | grep -qx redis' scripts/need.sh "php's redis module" php-redis
	@scripts/need.sh node nodejs

# tests/top.rs runs `delayqs top` in a tmux pane and reads the screen back.
tmux:
	@scripts/need.sh tmux tmux

# The clock-skew test runs a daemon under libfaketime.
faketime:
	@scripts/need.sh faketime faketime

# tests/shell.rs runs the zsh completion in zsh.
zsh:
	@scripts/need.sh zsh zsh

# Reference implementations the tests check against: Prometheus's parser for the
# metrics file, the Standard Webhooks library for callback signatures, redis-py for the
# Functions library of jobs by id.
python-deps:
	@python3 -c 'import prometheus_client, standardwebhooks, redis' 2>/dev/null || { \
	  echo "installing prometheus_client, standardwebhooks and redis from PyPI for the tests"; \
	  python3 -m pip install -q prometheus_client standardwebhooks redis 2>&1 | grep -v 'as the .root. user' || true; \
	  python3 -c 'import prometheus_client, standardwebhooks, redis'; }

# A measurement, not a test: builds into bench/target, starts a private redis-server
# and bench/endpoint on loopback, runs the scenarios of BENCHMARKS.md (about 7 minutes
# on 2 cores; among them 3 daemons on one Redis, a 3-master Redis Cluster with
# `shards: 3`, and one daemon with `shards` 1 against 3), rewrites BENCHMARKS.md, and
# leaves nothing running. Installs wrk from Debian when missing. Knobs: BENCH_RUNS=3,
# BENCH_QUICK=1, BENCH_ONLY=burst,steady, BENCH_DELAYQS=path/to/binary (before/after
# figures), BENCH_BASELINE=path/to/binary (a delayqs from before shards, beside them).
bench:
	bench/run.sh

# The chaos run: three daemons on one Redis (appendonly, appendfsync always), killed
# with SIGKILL and restarted at random, Redis restarted 3 times, an endpoint that fails
# in five ways, ZREM cancels; checks that no job is lost. At least 20,000 jobs, about
# 3 minutes on 2 cores; rewrites RELIABILITY.md. CHAOS_SEED=n replays a seed. Builds
# into chaos/target. chaos-short: about 3,000 jobs in under a minute.
chaos: redis-server redis-sentinel
	chaos/run.sh

# The same on a master, a replica and 3 sentinels, with failovers instead of Redis
# restarts; its figures go to RELIABILITY.md's "Sentinel mode".
chaos-sentinel: redis-server redis-sentinel
	CHAOS_SENTINEL=1 chaos/run.sh

# The same on a Redis Cluster: 3 masters with a replica each, the queue in 3 shards (one
# per master); CLUSTER FAILOVERs, kill -9s of masters (they rejoin as replicas) and
# redis-cli --cluster reshards of a shard's slot instead of Redis restarts; its figures
# go to RELIABILITY.md's "Cluster mode".
chaos-cluster: redis-server
	CHAOS_CLUSTER=1 chaos/run.sh

chaos-short: redis-server
	CHAOS_SHORT=1 chaos/run.sh

# What make test runs: the short chaos run on the release binary check-install built.
chaos-ci: build redis-server
	CHAOS_SHORT=1 CHAOS_DELAYQS=target/release/delayqs chaos/run.sh

# Runs delayqs in the foreground; starts a private redis-server when none answers.
run: build redis-server
	scripts/dev-run.sh target/release/delayqs $(CONFIG) --log-level $(RUN_LOG_LEVEL)

# The binary, the completions and man page it makes of its own command definitions,
# and the example config unless one is there. As root on this host (no DESTDIR), a new
# config goes to group delayqs when that group exists, for the service to read it.
install: build
	install -d $(BINDIR) $(SHAREDIR)/bash-completion/completions $(SHAREDIR)/zsh/site-functions $(SHAREDIR)/man/man1
	install -m 755 target/release/delayqs $(BINDIR)/delayqs
	target/release/delayqs completions bash | install -m 644 /dev/stdin $(SHAREDIR)/bash-completion/completions/delayqs
	target/release/delayqs completions zsh | install -m 644 /dev/stdin $(SHAREDIR)/zsh/site-functions/_delayqs
	target/release/delayqs man | install -m 644 /dev/stdin $(SHAREDIR)/man/man1/delayqs.1
	install -d $(CONFDIR)
	@if [ -e $(CONFDIR)/config.json ]; then \
	  echo "keeping the existing $(CONFDIR)/config.json"; \
	else \
	  install -m 640 config/config.json $(CONFDIR)/config.json; \
	  if [ -z "$(DESTDIR)" ] && getent group delayqs >/dev/null; then chgrp delayqs $(CONFDIR)/config.json; fi; \
	fi
	@if [ -z "$(DESTDIR)" ] && ! getent passwd delayqs >/dev/null; then \
	  echo "next: the service (config/delayqs.service, config/runit/) runs as user delayqs, which does not exist;"; \
	  echo "  create it and let it read the config (mode 640):"; \
	  echo "    useradd --system --no-create-home --shell /usr/sbin/nologin delayqs"; \
	  echo "    chgrp delayqs $(CONFDIR)/config.json"; \
	elif [ -z "$(DESTDIR)" ] && [ "$$(stat -c %G $(CONFDIR)/config.json)" != delayqs ]; then \
	  echo "next: let the service's user read the config (mode 640): chgrp delayqs $(CONFDIR)/config.json"; \
	fi

# Removes the binary, the completions and the man page; the config stays, as package
# managers leave edited configs.
uninstall:
	rm -f $(BINDIR)/delayqs $(SHAREDIR)/bash-completion/completions/delayqs $(SHAREDIR)/zsh/site-functions/_delayqs $(SHAREDIR)/man/man1/delayqs.1

# A fully static, stripped binary for hosts with no Rust and any libc (ring's C code
# needs musl-gcc, from Debian's musl-tools).
static:
	@rustup target list --installed | grep -qx $(MUSL) || rustup target add $(MUSL)
	@scripts/need.sh musl-gcc musl-tools
	$(CARGO) build --release --locked --target $(MUSL)
	@ls -l target/$(MUSL)/release/delayqs

clean:
	$(CARGO) clean
