# Standalone path (no ROS install): a local venv with the ROS 2 Jazzy wheels and CPU PyTorch.
# In a sourced ROS 2 workspace use colcon instead (see README); nothing here is needed there.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SOURCE ?=
OUT    ?= out

.PHONY: demo test soak bench models clean

$(STAMP): setup.py setup.cfg package.xml scannernet_ros/_linestep.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[standalone,test,bench,export]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scannernet demo $(if $(SOURCE),--source $(SOURCE)) --out $(OUT)

test: $(STAMP)
	SCANNERNET_REQUIRE_KERNEL=1 $(PY) -m pytest -q -m "not soak" test

soak: $(STAMP)
	$(PY) -m pytest -q -m soak test

bench: $(STAMP)
	$(VENV)/bin/scannernet bench --out $(OUT)/bench

models: $(STAMP)
	$(VENV)/bin/scannernet models

clean:
	rm -rf $(VENV) build *.egg-info $(OUT)
