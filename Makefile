# The two commands of the README: `make run` and `make test`.
# Each installs what is missing first: Debian packages (as root), then the venv.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := redis-server chromium chromium-headless-shell chromium-driver firefox-esr

.PHONY: run test lint system-deps venv clean

run: system-deps venv
	$(VENV)/bin/apptasks serve

test: system-deps venv
	$(VENV)/bin/python -m pytest

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

system-deps:
	@bash docker/install-system-deps.sh $(DEBIAN_PACKAGES)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) || { \
		echo "python3 -m venv failed: install Debian's python3-venv (apt-get install python3-venv)"; exit 1; }
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV)
