# Two commands matter: `make up` and `make test`. Both set up .venv themselves.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROTOS  := $(wildcard proto/infery_proto/v1/*.proto)
GEN     := $(PROTOS:.proto=_pb2.py)

.PHONY: install proto up test lint bench clean

install: $(STAMP) $(GEN)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

proto/infery_proto/v1/%_pb2.py: proto/infery_proto/v1/%.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto $<

proto: $(GEN)

up: install
	$(BIN)/infery up $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ext_proc control_plane infery

bench: install
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) proto/infery_proto/v1/*_pb2*.py proto/infery_proto/v1/*_pb2*.pyi .infery
