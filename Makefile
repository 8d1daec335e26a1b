# aura_ros developer entry points: `make demo` and `make test`.
#
# Everything runs from a project virtual environment ($(VENV)). It is (re)built only when
# setup.py, setup.cfg or package.xml change, so a second `make test` runs no pip at all.

SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV ?= .venv
TORCH ?= torch==2.13.0

# DDS discovery must never leave the loopback interface, for every target and every process
# they start. Tests pick their own per-run ROS_DOMAIN_ID (test/conftest.py).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 42
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp

# A sourced ROS 2 install (ROS_DISTRO set and rclpy importable by its python3) already provides
# rclpy and the messages: the venv then uses that python with --system-site-packages and skips
# the `ros` extra. Otherwise the ROS 2 Kilted wheels from PyPI are used; they are cp311 only.
ROS_SOURCED := $(shell test -n "$$ROS_DISTRO" && python3 -c 'import rclpy' >/dev/null 2>&1 && echo yes)
ifeq ($(ROS_SOURCED),yes)
PYTHON ?= python3
VENV_FLAGS := --system-site-packages
EXTRAS := test
REQUIRED_PYTHON :=
else
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3)
VENV_FLAGS :=
EXTRAS := test,ros
REQUIRED_PYTHON := 3.11
endif

VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint clean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml
	@if [ -n "$(REQUIRED_PYTHON)" ]; then \
	  v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	  if [ "$$v" != "$(REQUIRED_PYTHON)" ]; then \
	    echo "error: aura_ros needs Python $(REQUIRED_PYTHON) (the ROS 2 wheels from PyPI are cp311);" \
	         "'$(PYTHON)' is '$${v:-missing}'. Install python3.11, pass PYTHON=/path/to/python3.11," \
	         "or source a ROS 2 install." >&2; \
	    exit 1; \
	  fi; \
	fi
	test -x $(VPY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(VPY) -m pip install -q --upgrade pip 'setuptools>=70.1'
	@# torch first, pinned: the package asks for torch>=2.1, which this install then satisfies.
	$(VPY) -m pip install -q '$(TORCH)'
	$(VPY) -m pip install -q -e '.[$(EXTRAS)]' '$(TORCH)'
	touch $@

# The SO-101 MuJoCo world driving aura_node with the bundled model, headless, DEMO_TASKS tasks.
DEMO_TASKS ?= 10
demo: venv
	$(VPY) -m aura_ros demo --tasks $(DEMO_TASKS)

lint: venv
	$(VENV)/bin/ruff check .

test: venv
	$(VENV)/bin/ruff check .
	$(VPY) -m pytest -q test

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
