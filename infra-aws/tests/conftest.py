"""pytest settings of the infra-aws policy tests: a run that collects fewer tests than
infra-aws/check.sh expects (none at all, a file that stopped being found) fails instead of
passing."""

import os

import pytest


def pytest_collection_finish(session):
    expected = int(os.environ.get("INFRA_AWS_MIN_TESTS", "1"))
    if len(session.items) < expected:
        raise pytest.UsageError(
            f"collected {len(session.items)} policy tests, expected at least {expected}"
        )
