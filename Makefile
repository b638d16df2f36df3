# Two commands do everything on a fresh machine: `make demo` (main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
DEMO_ARGS ?=

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[asr,test]'
	touch $(STAMP)

install: $(STAMP)

# DEMO_ARGS=--quick: the 3-minute smoke run. A re-run resumes (finished stages are skipped).
demo: $(STAMP)
	$(VENV)/bin/medvid demo --out $(DEMO_DIR) $(DEMO_ARGS)

# PYTEST_ARGS="-m slow" runs the long tests. pytest's exit 5 (no test collected) is reported, not fatal.
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "WARNING: pytest collected no tests"; exit 0; fi; exit $$rc

clean:
	rm -rf $(DEMO_DIR)
