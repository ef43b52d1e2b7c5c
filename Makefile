# quietwire — the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
# The interpreter of the venv: Debian's python3.11 where it is installed (built
# with PGO and LTO, as the image's python:3.11-slim is; a plain source build, as
# pyenv makes by default, runs signaling about 12 % slower), else python3.
PYTHON ?= $(or $(wildcard /usr/bin/python3.11),python3)
VENV ?= .venv
BIN := $(VENV)/bin
UV_DIR ?= .uv
UV := $(UV_DIR)/bin/uv
UV_COMPILE := $(UV) pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform linux --custom-compile-command 'make lock'
STALE_LOCK := uv.lock does not match pyproject.toml (or the index could not be reached: see above). \
	Run \`make lock\` and commit uv.lock.
# uv uses the Python it is given, never one it downloads.
export UV_PYTHON_DOWNLOADS := never
# Debian packages the platform and its tests run with.
DEB_PACKAGES := redis-server libbzrtp0 linphone-cli sip-tester stunnel4 nftables iproute2 prometheus
# The anchors `make bench` runs side by side with quietwire.
BENCH_DEB_PACKAGES := kamailio kamailio-tls-modules rtpengine-daemon
# helm, docker-compose and checkov for the deployment checks (tools/deploy-tools).
TOOLS ?= .tools
STATE_DIR ?= .quietwire
# The signaling hot path compiled with mypyc (tools/build_native.py), and its sources.
NATIVE := services/quietwire/_native/manifest.json
NATIVE_SOURCES := $(shell $(PYTHON) tools/build_native.py --sources)
SIP_HOST ?= 127.0.0.1
SIP_PORT ?= 5061
# `make fuzz`: each target for this many inputs, or this many seconds, whichever first.
FUZZ_TARGETS := sip_message sip_stream sdp zrtp rtp_demux digest
FUZZ_RUNS ?= 1000000
FUZZ_SECONDS ?= 2400
# `make soak`: this many concurrent ZRTP calls, with churn, for this many seconds.
SOAK_CALLS ?= 200
SOAK_SECONDS ?= 600

.PHONY: run test setup lock lock-check debs deploy-tools protos protos-check lint bench fuzz soak clean other-interpreter

run: setup
	$(BIN)/quietwire up --state-dir $(STATE_DIR) --sip-host $(SIP_HOST) --sip-port $(SIP_PORT)

test: lock-check setup deploy-tools protos-check lint
	QW_TOOLS_DIR=$(abspath $(TOOLS)) $(BIN)/pytest

setup: $(VENV)/.installed $(NATIVE) debs

# The hot path compiled with mypyc (part of the locked mypy): used only while
# built from the sources as they are (services/quietwire/native.py), pure
# Python otherwise; QW_NATIVE=0 turns it off.
$(NATIVE): $(VENV)/.installed tools/build_native.py $(NATIVE_SOURCES)
	$(BIN)/python tools/build_native.py

# uv itself, pinned by hash (tools/uv.txt), in a bootstrap venv of its own:
# `uv sync` keeps the project venv exactly as uv.lock says.
$(UV): tools/uv.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "quietwire needs Python 3.11 or newer as $(PYTHON)")'
	@$(PYTHON) -m venv $(UV_DIR) || { echo "cannot create a venv: on Debian install python3-venv" >&2; exit 1; }
	$(UV_DIR)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r tools/uv.txt
	@touch $@

# Exactly the locked set (--locked: a uv.lock that no longer matches
# pyproject.toml stops here instead of being re-resolved).
# A venv made on another interpreter than $(PYTHON)'s (say before Debian's
# python3.11 was installed) is made again: both named by their real paths.
INTERPRETER = $(shell $(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable))')
VENV_INTERPRETER = $(realpath $(BIN)/python)
$(VENV)/.installed: pyproject.toml uv.lock $(UV) \
		$(if $(filter-out $(INTERPRETER),$(VENV_INTERPRETER)),other-interpreter)
	@if [ -n "$(filter-out $(INTERPRETER),$(VENV_INTERPRETER))" ]; then \
		echo "$(VENV) was made with $(VENV_INTERPRETER): making it again with $(INTERPRETER)"; \
		rm -rf $(VENV); fi
	@UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --quiet --python $(PYTHON) \
		|| { echo "$(STALE_LOCK)" >&2; exit 1; }
	@touch $@

other-interpreter:

# Re-resolve on purpose: after editing pyproject.toml (or tools/checkov,
# tools/*.in), or `make lock UPGRADE=1` to take the newest versions allowed.
# Commit what it changes.
lock: $(UV)
	$(UV) lock $(if $(UPGRADE),--upgrade)
	$(UV) lock $(if $(UPGRADE),--upgrade) --project tools/checkov
	$(UV_COMPILE) tools/uv.in -o tools/uv.txt
	$(UV_COMPILE) --no-deps tools/deploy-downloads.in -o tools/deploy-downloads.txt

# Every lock file is fresh for what it locks (the way protos-check is for protos/).
lock-check: $(UV)
	@$(UV) lock --check --quiet || { echo "$(STALE_LOCK)" >&2; exit 1; }
	@$(UV) lock --check --quiet --project tools/checkov \
		|| { echo "tools/checkov/uv.lock is stale: run \`make lock\` and commit it" >&2; exit 1; }
	@$(PYTHON) tools/check_pins.py tools/uv.in tools/uv.txt tools/deploy-downloads.in tools/deploy-downloads.txt

debs:
	@tools/debian-packages $(DEB_PACKAGES)

deploy-tools: $(UV)
	@UV=$(abspath $(UV)) PIP=$(abspath $(UV_DIR))/bin/pip tools/deploy-tools $(TOOLS)

protos: $(VENV)/.installed
	$(BIN)/python tools/gen_protos.py

protos-check: $(VENV)/.installed
	$(BIN)/python tools/gen_protos.py --check

lint: $(VENV)/.installed
	$(BIN)/ruff check services tests tools bench
	$(BIN)/ruff format --check services tests tools bench
	$(BIN)/mypy

bench: setup
	@tools/debian-packages $(BENCH_DEB_PACKAGES)
	$(BIN)/python -m bench.signaling --rounds 3
	$(BIN)/python -m bench.storm --rounds 3
	$(BIN)/python -m bench.zrtp
	$(BIN)/python -m bench.zrtp_network
	$(BIN)/python -m bench.relay

# Coverage-guided fuzzing (atheris) of every parser a stranger reaches; `make
# test` only replays the corpus and runs each target for seconds.
fuzz: $(VENV)/.installed
	@for target in $(FUZZ_TARGETS); do \
		echo "fuzzing $$target"; \
		$(BIN)/python -m tests.fuzz $$target --runs $(FUZZ_RUNS) --seconds $(FUZZ_SECONDS) || exit 1; \
	done

# Secure calls with churn and re-registration through a real `quietwire up`,
# then zero failed calls and nothing left behind (README: `make soak`).
soak: setup
	$(BIN)/python -m bench.soak --calls $(SOAK_CALLS) --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) $(UV_DIR) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache services/quietwire/_native
