"""``/healthz`` is liveness; ``/readyz`` is readiness: the database answers, the endorser
certificate is not about to expire, the list served is not near its expiry."""

from __future__ import annotations

import datetime as dt
from typing import Any

import aiohttp
import pytest

from vmic.catalogue.db import connect, redacted
from vmic.catalogue.readiness import readiness
from vmic.errors import ConfigError

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=7)


@pytest.mark.parametrize("database, cert_left, list_left, failing", [
    (None, 365 * DAY, 5 * DAY, []),
    ("OperationalError: unable to open database file", 365 * DAY, 5 * DAY, ["database"]),
    (None, 10 * DAY, 5 * DAY, ["endorser_certificate"]),  # fewer than 14 days left
    (None, 365 * DAY, DAY, ["list"]),  # last quarter of a week's lifetime: signing is stuck
    ("down", -DAY, -DAY, ["database", "endorser_certificate", "list"]),
])
def test_readiness_checks(database: str | None, cert_left: dt.timedelta, list_left: dt.timedelta,
                          failing: list[str]) -> None:
    checks = readiness(NOW, database, NOW + cert_left, NOW + list_left, WEEK, 14)
    assert [c.name for c in checks if not c.ok] == failing
    assert all(c.detail for c in checks)


class BrokenDatabase:
    """A fake of our own Database protocol at the seam: the server is gone."""

    async def fetchone(self, sql: str, *args: Any) -> None:
        raise ConnectionRefusedError("connection refused (the database is down)")


async def test_readyz_says_what_is_wrong_and_healthz_stays_up(catalogue: Any, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{catalogue.url}/readyz") as response:
        body = await response.json()
        assert response.status == 200 and body["status"] == "ready", body
    store = catalogue.catalogue.store
    real, store.db = store.db, BrokenDatabase()
    try:
        async with http.get(f"{catalogue.url}/readyz") as response:
            body = await response.json()
            assert response.status == 503 and body["status"] == "not_ready"
            assert [c["name"] for c in body["checks"] if not c["ok"]] == ["database"]
            assert "database is down" in body["checks"][0]["detail"]
        async with http.get(f"{catalogue.url}/healthz") as response:
            assert response.status == 200, "liveness: the process answers"
    finally:
        store.db = real


@pytest.mark.parametrize("text, url, expected", [
    ("postgresql://vmic:s3cret@db/vmic", None, "postgresql://vmic:***@db/vmic"),
    ('password authentication failed for user "vmic" (s3cret)', "postgresql://vmic:s3cret@db/vmic",
     'password authentication failed for user "vmic" (***)'),
    ("postgresql://vmic@db/vmic", None, "postgresql://vmic@db/vmic"),
    ("/var/lib/vmic/catalogue.sqlite", None, "/var/lib/vmic/catalogue.sqlite"),
])
def test_database_passwords_are_never_shown(text: str, url: str | None, expected: str) -> None:
    assert redacted(text, url) == expected


async def test_a_failed_database_connection_does_not_print_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        await connect("postgresql://vmic:s3cret@127.0.0.1:1/vmic")
    assert "s3cret" not in str(refused.value) and "vmic:***@127.0.0.1:1" in str(refused.value)
