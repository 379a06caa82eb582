# seg_ros developer entry points. `make setup` is run on demand by every other target.
#   make setup   .venv with pinned ROS 2 Jazzy wheels + torch + transformers, package built into it
#                (ROS_SRC=<folder>: also the real ros2 CLI / launch / message_filters / vision_msgs
#                from the source snapshots there, e.g. ROS_SRC=../shared/ros-src)
#   make test    ruff + mypy (all of seg_ros, strict on seg_ros/engine) + pytest (everything)
#   make test-quick  ruff + mypy + pytest -m "not slow and not graph": the engine, conversion and
#                parameter tests, no DDS graph, no soak / long runs (~640 tests, ~4 min of pytest
#                on a busy 2-core VM, much of it test_sam2's reference-equality tests;
#                mypy 10 s warm, 2 min cold). `make test` adds the graph tests and the slow ones.
#                PYTEST_ARGS apply to both.
#   make demo    the package's main job: node + sample clip + prompt client, overlays in demo_out/
#   make bench   benchmarks, one JSON object per line
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.seg_ros_setup
BUILD_STAMP := build/.seg_ros_installed
# Upstream ROS 2 sources a robot has from apt and the wheels lack (tools/install_ros_src.sh).
ROS_SRC ?=
ROS_SRC_STAMP := $(VENV)/.seg_ros_ros_src
# Every file the install step copies: a change to any of them re-installs.
SOURCES := $(shell find seg_ros msg srv launch config scripts -type f -not -path '*/__pycache__/*' 2>/dev/null) CMakeLists.txt package.xml

.PHONY: setup build test test-quick lint typecheck pytest pytest-quick demo bench clean

setup: $(BUILD_STAMP) $(if $(ROS_SRC),$(ROS_SRC_STAMP))

$(ROS_SRC_STAMP): $(SETUP_STAMP) tools/install_ros_src.sh requirements-ros-src.txt \
    $(wildcard $(ROS_SRC)/*.tar.gz)
	mkdir -p build
	bash tools/install_ros_src.sh $(ROS_SRC) $(VENV) build/ros-src > build/ros-src.log 2>&1 \
	  || { tail -40 build/ros-src.log; exit 1; }
	touch $@

$(SETUP_STAMP): requirements.txt requirements-model.txt tools/patch_ros_wheels.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) tools/patch_ros_wheels.py
	touch $@

# The venv is the ROS prefix: messages, typesupport libraries and Python sources install into it,
# so `.venv/bin/python -m seg_ros.segmentation_node` needs no `source setup.bash`.
$(BUILD_STAMP): $(SETUP_STAMP) $(SOURCES)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S . -B build -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(VENV) \
	  -DPython3_EXECUTABLE=$(CURDIR)/$(PY) -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > build.log 2>&1 \
	  || { tail -40 build.log; exit 1; }
	cmake --build build -j2 >> build.log 2>&1 || { tail -40 build.log; exit 1; }
	cmake --install build >> build.log 2>&1 || { tail -40 build.log; exit 1; }
	touch $@

build: $(BUILD_STAMP)

lint: $(SETUP_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(SETUP_STAMP)
	$(VENV)/bin/mypy

pytest: $(BUILD_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

pytest-quick: $(BUILD_STAMP)
	$(PY) -m pytest -m "not slow and not graph" $(PYTEST_ARGS)

test: lint typecheck pytest

test-quick: lint typecheck pytest-quick

demo: $(BUILD_STAMP)
	$(PY) -m seg_ros.tools.demo $(DEMO_ARGS)

bench: $(BUILD_STAMP)
	$(PY) -m seg_ros.bench $(BENCH_ARGS)

clean:
	rm -rf build build.log demo_out
