# Two commands set up everything on a fresh machine: `make run` and `make test`.
# Both go through `make install`, which is idempotent and quick when nothing changed.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard protos/tradebot/v1/*.proto)
GEN_STAMP := generated/.stamp

# Any Python 3.13: pyenv's if there is one, else python3.13 on PATH.
PYTHON313 ?= $(shell p="$$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python3.13"; \
	if [ -x "$$p" ]; then echo "$$p"; else command -v python3.13; fi)

.PHONY: install run test bench check-proto clean ops-tools certs screenshots

install: $(VENV)/.installed $(GEN_STAMP)

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON313)" || { echo "Python 3.13 is required (pyenv install 3.13.0, or put python3.13 on PATH)"; exit 1; }
	@test -x $(PY) || $(PYTHON313) -m venv $(VENV)
	@# The package must exist before the editable install registers it.
	@mkdir -p generated/tradebot/v1 && touch generated/tradebot/__init__.py generated/tradebot/v1/__init__.py
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[gateway,market,strategy,executor,dev]'
	@touch $@

# Generated code lives in generated/tradebot/v1, the same path as the proto
# package, so `from tradebot.v1 import market_pb2` works with no path tricks.
$(GEN_STAMP): $(PROTOS) $(VENV)/.installed
	@rm -f generated/tradebot/v1/*_pb2*.py*
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=generated --pyi_out=generated \
		--grpc_python_out=generated $(PROTOS)
	@touch generated/tradebot/__init__.py generated/tradebot/v1/__init__.py
	@touch $@

run: install
	$(PY) -m services.devstack

test: install ops-tools
	$(PY) -m pytest $(PYTEST_ARGS)

# docker-compose v1 validates docker-compose.yml offline (no Docker engine needed); Debian's prometheus
# (promtool) and prometheus-alertmanager (amtool) check and unit-test the alerts, and run in a test;
# chromium and chromium-driver run the dashboard's browser tests (no driver is downloaded at run time).
# --no-install-recommends: without it apt also pulls in the Docker daemon.
OPS_PACKAGES := $(shell command -v docker-compose >/dev/null || echo docker-compose) \
	$(shell command -v promtool >/dev/null && command -v prometheus >/dev/null || echo prometheus) \
	$(shell command -v amtool >/dev/null || echo prometheus-alertmanager) \
	$(shell command -v chromium >/dev/null || echo chromium) \
	$(shell command -v chromedriver >/dev/null || echo chromium-driver)
ops-tools:
	@test -z "$(strip $(OPS_PACKAGES))" || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(OPS_PACKAGES) >/dev/null; }

# Mutual TLS between the services: a private CA and one key pair per identity
# (gateway, market, strategy, executor, operator) in certs/, git- and docker-ignored.
# Refuses to overwrite an existing set; rotate with `make certs CERTS_ARGS=--force`.
# Compose installs them with its tls-init step; Kubernetes: docs/deployment.md.
certs: install
	$(PY) -m services.devstack.certs --out certs $(CERTS_ARGS)

# The README's dashboard screenshots, taken by the browser test on the `make run` stack.
screenshots: install ops-tools
	DASHBOARD_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/e2e/test_dashboard_browser.py

# make bench [BOTS=N]: one paper tick per population; make bench LIVE=1 [BOTS=N]: live accounts, several ticks.
bench: install
	$(PY) -m bench $(if $(LIVE),--live) $(if $(BOTS),--bots $(BOTS))

clean:
	rm -rf $(VENV) generated data/dev
