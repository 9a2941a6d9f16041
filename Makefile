# Two commands matter: `make up` and `make test`. Both set up .venv themselves.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROTOS  := $(wildcard proto/infery_proto/v1/*.proto)
GEN     := $(PROTOS:.proto=_pb2.py)
# The client libraries of tests/clients, each in its own runtime as their users run them:
# Python ones in their own venv (llama-index-llms-openai needs openai<3), Node ones from the lock file.
CLIENTS      := $(VENV)/clients
CLIENTS_PY   := $(CLIENTS)/.installed
CLIENTS_NODE := tests/clients/node_modules/.installed

.PHONY: install clients proto up test lint bench bench-scale clean

install: $(STAMP) $(GEN)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
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

proto/infery_proto/v1/%_pb2.py: proto/infery_proto/v1/%.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto $<

proto: $(GEN)

up: install
	$(BIN)/infery up $(ARGS)

test: install clients
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ext_proc control_plane infery

bench: install
	$(BIN)/python -m bench $(ARGS)

# Configuration at scale (10^5 keys, 1,000 chains; needs PostgreSQL); writes bench/results/scale.md.
bench-scale: install
	$(BIN)/python -m bench.scale $(ARGS)

clean:
	rm -rf $(VENV) tests/clients/node_modules proto/infery_proto/v1/*_pb2*.py proto/infery_proto/v1/*_pb2*.pyi .infery
