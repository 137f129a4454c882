#!/usr/bin/env bash
# infra-aws checks, run by .ci/run: cfn-lint on every template (errors, warnings and
# informational findings all fail; a rule ignored in a template says why in its Metadata), then
# the deployment policy tests (infra-aws/tests/), which cfn-lint does not cover: internet
# ingress, a public or unencrypted database, public IPs on tasks, secrets in plain text, the
# ALB idle timeout. Nothing here talks to AWS.
#
#   infra-aws/check.sh
#
# cfn-lint and pytest come from PyPI into the venv target/aws-venv (created when missing,
# reused after; CI_AWS_VENV to put it elsewhere).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/.."
ROOT=$PWD

CFN_LINT_VERSION=1.58.0
PYTEST_VERSION=9.2.0
VENV=${CI_AWS_VENV:-$ROOT/target/aws-venv}
# The policy tests there are (test_policy.py): fewer collected fails the run, so a test file
# that stops being found, or a parametrisation that empties, cannot pass as "no failures".
MIN_TESTS=39

if ! "$VENV/bin/cfn-lint" --version 2>/dev/null | grep -q " $CFN_LINT_VERSION\$" \
  || ! "$VENV/bin/python" -m pytest --version 2>/dev/null | grep -q " $PYTEST_VERSION\$"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "cfn-lint==$CFN_LINT_VERSION" "pytest==$PYTEST_VERSION"
fi

templates=(infra-aws/*.yml)
echo "infra-aws: cfn-lint $CFN_LINT_VERSION on ${templates[*]}"
"$VENV/bin/cfn-lint" --include-checks I --format parseable -- "${templates[@]}"

echo "infra-aws: policy tests"
cd infra-aws/tests
INFRA_AWS_MIN_TESTS=$MIN_TESTS "$VENV/bin/python" -m pytest -p no:cacheprovider -q
