# Two commands matter: `make up` and `make test`. Both set up .venv themselves, from the lock.
#
# The lock: requirements/runtime.txt (what the image installs) and requirements/dev.txt (runtime +
# tools + test deps), exact versions with hashes, compiled from pyproject.toml by pip-tools.
# After changing dependencies in pyproject.toml run `make lock` and commit requirements/.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LOCK    := requirements/dev.txt
# `make up` needs the runtime only (a faster first start); `make test` the whole dev lock (a superset).
RUNTIME       := $(VENV)/.installed-runtime
RUNTIME_LOCK  := requirements/runtime.txt
PROTOS  := $(wildcard proto/infery_proto/v1/*.proto)
# The venv's own pip (23.2 on Debian 12) spends ~14 s more CPU over the dev lock than the locked pip does:
# `make install` puts the locked pip in first, hash-checked, taken from the dev lock. (`make up` installs
# the runtime lock, which has no pip, with the venv's own.)
PIP_PIN  = awk '/^pip==/{p=1} p&&/^ *\#/{exit} p' $(LOCK) > $(VENV)/pip.txt && \
	$(BIN)/pip install -q --require-hashes --no-deps -r $(VENV)/pip.txt
COMPILE := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
# The client libraries of tests/clients, each in its own runtime as their users run them:
# Python ones in their own venv (llama-index-llms-openai needs openai<3), Node ones from the lock file.
CLIENTS      := $(VENV)/clients
CLIENTS_PY   := $(CLIENTS)/.installed
CLIENTS_NODE := tests/clients/node_modules/.installed

.PHONY: install clients chromium proto lock up test lint ci bench bench-scale bench-batch clean

install: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP_PIN)
	$(BIN)/pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@ $(RUNTIME)

$(RUNTIME): $(RUNTIME_LOCK) pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes --no-deps -r $(RUNTIME_LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

clients: $(CLIENTS_PY) $(CLIENTS_NODE)

$(CLIENTS_PY): tests/clients/requirements.txt
	$(PY) -m venv $(CLIENTS)
	$(CLIENTS)/bin/pip install -q --upgrade pip
	$(CLIENTS)/bin/pip install -q -r tests/clients/requirements.txt
	touch $@

$(CLIENTS_NODE): tests/clients/package.json tests/clients/package-lock.json
	cd tests/clients && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The dashboard's browser test drives Debian's chromium (Playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium
chromium: $(CHROMIUM)
$(CHROMIUM):
	@test "$$(id -u)" = 0 || { echo "chromium missing: run 'sudo apt-get install -y chromium'" >&2; exit 1; }
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

# Regenerate the committed protobuf modules after editing a .proto (tests/test_generated_proto.py
# fails until you do).
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto $(PROTOS)

# Re-resolve every dependency to the newest versions pyproject.toml allows, with hashes.
# Pass ARGS=--upgrade-package=NAME to move one package only.
lock:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	test -x $(BIN)/pip-compile || $(BIN)/pip install -q pip-tools
	$(BIN)/pip-compile $(COMPILE) $(ARGS) -o requirements/runtime.txt pyproject.toml
	$(BIN)/pip-compile $(COMPILE) $(ARGS) --extra dev -o requirements/dev.txt pyproject.toml

up: $(RUNTIME)
	$(BIN)/infery up $(ARGS)

# --no-loadscope-reorder: keep the order tests/run_order.py gives (the longest files first).
test: install clients chromium
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ext_proc control_plane infery proto/infery_proto

ci: lint test

bench: install
	$(BIN)/python -m bench $(ARGS)

# Configuration at scale (10^5 keys, 1,000 chains; needs PostgreSQL); writes bench/results/scale.md.
# USAGE_ARGS go to the usage-analytics part (bench/usage_scale.py: 10^6 and 10^7 records, tens of minutes).
bench-scale: install
	$(BIN)/python -m bench.scale $(ARGS)
	$(BIN)/python -m bench.usage_scale $(USAGE_ARGS)

# One batch of 5,000 lines with live traffic beside it; writes bench/results/batch.md.
bench-batch: install
	$(BIN)/python -m bench.batch $(ARGS)

clean:
	rm -rf $(VENV) tests/clients/node_modules .infery
