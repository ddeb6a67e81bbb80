"""Fixtures for tests that run on each supported database: SQLite and a real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from support.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session; a start failure fails the tests that need it."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database of each kind, as a `server.database_url`."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'modelport.db'}"
    return request.getfixturevalue("postgres").create_database(f"t_{uuid.uuid4().hex[:12]}")
