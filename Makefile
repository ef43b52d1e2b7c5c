# quietwire — the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the platform and its tests run with.
DEB_PACKAGES := redis-server libbzrtp0 linphone-cli sip-tester stunnel4 nftables iproute2
# The anchors `make bench` runs side by side with quietwire.
BENCH_DEB_PACKAGES := kamailio kamailio-tls-modules rtpengine-daemon
# helm, docker-compose and checkov for the deployment checks (tools/deploy-tools).
TOOLS ?= .tools
STATE_DIR ?= .quietwire
SIP_HOST ?= 127.0.0.1
SIP_PORT ?= 5061

.PHONY: run test setup debs deploy-tools protos protos-check lint bench clean

run: setup
	$(BIN)/quietwire up --state-dir $(STATE_DIR) --sip-host $(SIP_HOST) --sip-port $(SIP_PORT)

test: setup deploy-tools protos-check lint
	QW_TOOLS_DIR=$(abspath $(TOOLS)) $(BIN)/pytest

setup: $(VENV)/.installed debs

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "quietwire needs Python 3.11 or newer as $(PYTHON)")'
	@$(PYTHON) -m venv $(VENV) || { echo "cannot create a venv: on Debian install python3-venv" >&2; exit 1; }
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

debs:
	@tools/debian-packages $(DEB_PACKAGES)

deploy-tools: $(VENV)/.installed
	@PYTHON=$(abspath $(BIN))/python tools/deploy-tools $(TOOLS)

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
	$(BIN)/python -m bench.signaling
	$(BIN)/python -m bench.zrtp
	$(BIN)/python -m bench.zrtp_network
	$(BIN)/python -m bench.relay

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
