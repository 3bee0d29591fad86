#!/usr/bin/env bash
# LangGraph's own test suite (from the langgraph sdist, the part that needs no Docker), run
# bare and then under reasonflow_otel.instrument() with every payload capture on; fails if any
# test has another outcome instrumented. Not part of CI: about 4 minutes per run here.
#
#   tests/engine_suites/run_langgraph_suite.sh [WORK_DIRECTORY]   # default /tmp/langgraph-suite
#   LANGGRAPH_VERSION=1.2.22 PYTEST_ARGS="-k interrupt" tests/engine_suites/run_langgraph_suite.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repository="$(cd "$here/../.." && pwd)"
work="${1:-/tmp/langgraph-suite}"
version="${LANGGRAPH_VERSION:-1.2.22}"
mkdir -p "$work"
cd "$work"

if [ ! -x venv/bin/python ]; then
  python3 -m venv venv
  # LangGraph's test dependency group, less what only its Docker services and dev tools use.
  venv/bin/pip install -q -e "$repository" "langgraph==$version" pytest pytest-mock syrupy \
    httpx pytest-dotenv pytest-repeat langgraph-checkpoint-sqlite langgraph-checkpoint-postgres \
    "psycopg[binary]" psycopg-pool redis pycryptodome "uvloop==0.22.1" pyperf
fi
if [ ! -d "langgraph-$version/tests" ]; then
  venv/bin/pip download -q --no-deps --no-binary :all: "langgraph==$version" -d .
  tar xzf "langgraph-$version.tar.gz"
fi
cd "langgraph-$version"
rm -rf .reasonflow-otel

run() {  # run NAME [pytest options...]: the whole suite, its outcomes in ../NAME.xml
  local name="$1"
  shift
  local started=$SECONDS
  NO_DOCKER=true ../venv/bin/python -m pytest tests -q -p no:cacheprovider \
    --junitxml="../$name.xml" "$@" ${PYTEST_ARGS:-} >"../$name.log" 2>&1 || true
  echo "$name: $(tail -n 1 "../$name.log") ($((SECONDS - started)) s)"
}

run bare
REASONFLOW_OTEL_CAPTURE=prep,exec,post,shared,state PYTHONPATH="$here" \
  run instrumented -p instrument_langgraph
spans=$(grep -o '"key":"reasonflow.engine","value":{"stringValue":"langgraph"}' \
  .reasonflow-otel/traces.jsonl | wc -l || true)
echo "instrumented: $spans LangGraph spans recorded"
../venv/bin/python "$here/compare_outcomes.py" ../bare.xml ../instrumented.xml
