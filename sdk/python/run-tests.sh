#!/usr/bin/env bash
# The Python SDK's checks: mypy --strict on the package, then pytest against a real
# `tinydevcrm serve` (tests/conftest.py starts one with a managed cluster in a temp dir).
#
#   sdk/python/run-tests.sh                 # everything
#   sdk/python/run-tests.sh -k listen -x    # arguments go to pytest (no minimum count then)
#
# The venv (SDK_VENV, default target/sdk-venv) gets the package with its test extras, at the
# versions of tests/constraints.txt; it is (re)installed only when it is missing or the
# package's files or the constraints changed. The server binary: TDC_BIN, else built with
# `cargo build` (a no-op when fresh) under CARGO_TARGET_DIR or target/.
# pytest collecting no test (exit 5), or fewer than MIN_TESTS in a full run, is a failure.
set -euo pipefail
cd "$(dirname "$0")"
SDK=$PWD
ROOT=$(cd ../.. && pwd)
VENV=${SDK_VENV:-$ROOT/target/sdk-venv}
MIN_TESTS=38
export PYTHONDONTWRITEBYTECODE=1

stamp() {
  {
    cat tests/constraints.txt pyproject.toml README.md
    find src/tinydevcrm -type f -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs cat
  } | sha256sum | cut -d' ' -f1
}
STAMP=$(stamp)
if [ "$(cat "$VENV/.tdc-sdk-stamp" 2>/dev/null || true)" != "$STAMP" ]; then
  START=$(date +%s)
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -c tests/constraints.txt "$SDK[test]"
  # The same version number with new files: install the package itself again.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$SDK"
  echo "$STAMP" >"$VENV/.tdc-sdk-stamp"
  echo "sdk/python: venv $VENV installed in $(($(date +%s) - START)) s"
fi

if [ -z "${TDC_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --quiet --bin tinydevcrm)
  export TDC_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/tinydevcrm
fi

MYPY_CACHE_DIR=$ROOT/target/sdk-mypy-cache "$VENV/bin/mypy" --config-file pyproject.toml

START=$(date +%s)
REPORT=$(mktemp)
trap 'rm -f "$REPORT"' EXIT
STATUS=0
"$VENV/bin/python" -m pytest -p no:cacheprovider -rfE --junitxml="$REPORT" "$@" || STATUS=$?
echo "sdk/python: pytest took $(($(date +%s) - START)) s, exit status $STATUS"
if [ "$STATUS" -eq 5 ]; then
  echo "sdk/python: pytest collected no tests" >&2
  exit 1
fi
if [ "$STATUS" -ne 0 ]; then
  exit "$STATUS"
fi
if [ "$#" -eq 0 ]; then
  RAN=$("$VENV/bin/python" -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
print(sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites))' "$REPORT")
  if [ "$RAN" -lt "$MIN_TESTS" ]; then
    echo "sdk/python: only $RAN tests ran; at least $MIN_TESTS were expected" >&2
    exit 1
  fi
fi
