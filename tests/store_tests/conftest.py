"""Fixtures for store tests: a PostgreSQL database of the test's own (created and dropped), for
tests that change database settings or cut every connection, which the shared ``test`` database
must not see."""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy

PG_URL = os.environ.get("AUTOTUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _admin_engine() -> sqlalchemy.engine.Engine:
    return sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT",
                                    poolclass=sqlalchemy.pool.NullPool)


@pytest.fixture
def own_pg_database():
    """``(url, admin_engine)``: a fresh, empty database; skipped where no PostgreSQL answers,
    except under CI=true, where that fails."""
    admin = _admin_engine()
    name = f"autotune_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL needed in CI: {exc}")
        pytest.skip(f"no PostgreSQL: {exc}")
    url = str(sqlalchemy.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    try:
        yield url, admin
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
