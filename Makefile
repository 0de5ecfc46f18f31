# hf_fdw: set-up, tests and the example, in two commands:
#
#   make demo   installs what is missing, then runs the example end to end
#   make test   installs what is missing, then runs the whole test suite
#
# Neither builds Multicorn2: see README.md, "Install", for how to get it.

PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# The CPU build of PyTorch; a plain 'torch' would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := postgresql postgresql-server-dev-all python3-requests make gcc

.PHONY: demo test setup system-packages python-packages sql-install

demo: setup
	$(PYTHON) -m hf_fdw.cli demo

test: setup
	$(PYTHON) -m pytest

setup: system-packages python-packages sql-install

# PostgreSQL, its build files (pg_config) and requests for the server's own
# Python, from the system's packages when they are missing.
system-packages:
	@if command -v apt-get >/dev/null 2>&1 && \
	    ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

python-packages:
	$(PIP) install -q '$(TORCH)'
	$(PIP) install -q -e '.[test,local]'

sql-install:
	$(SUDO) $(MAKE) -s -C sql install PG_CONFIG=$$(command -v pg_config)
