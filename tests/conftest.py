"""Fixtures for every test folder: real servers the tests start themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services.postgres import PostgresNotInstalled, PostgresServer


def _postgres_or_fail() -> PostgresServer:
    """Missing binaries fail the test rather than skip it: `make test` installs them."""
    try:
        return PostgresServer()
    except PostgresNotInstalled as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # out of the except: the message alone, not twice


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the session's own, database `sluice_test` at `.url`; a test
    that stops it (an outage) starts it again before it ends."""
    server = _postgres_or_fail()
    try:
        server.start()
        yield server
    finally:
        server.close()
