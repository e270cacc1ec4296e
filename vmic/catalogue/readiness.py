"""Is the catalogue ready to serve (``GET /readyz``)? Pure: the facts in, the checks out.

``/healthz`` says the process answers (liveness); ``/readyz`` says whether it should get
traffic: its database answers, its endorser certificate has more than ``min_cert_days``
left, and the list it serves is not near expiry (it is signed again at half its lifetime,
so a list in its last quarter means signing is stuck).
"""

from __future__ import annotations

import datetime as dt

from ..health import Check


def readiness(now: dt.datetime, database_error: str | None, cert_not_after: dt.datetime,
              list_expires: dt.datetime, list_lifetime: dt.timedelta, min_cert_days: float) -> list[Check]:
    cert_left = cert_not_after - now
    list_left = list_expires - now
    return [
        Check("database", database_error is None, database_error or "answers"),
        Check("endorser_certificate", cert_left > dt.timedelta(days=min_cert_days),
              f"valid until {cert_not_after:%Y-%m-%dT%H:%M:%SZ} ({cert_left.days} days left; "
              f"at least {min_cert_days:g} wanted)"),
        Check("list", list_left > list_lifetime / 4,
              f"the list served expires at {list_expires:%Y-%m-%dT%H:%M:%SZ} "
              f"({list_left.total_seconds() / 3600:.1f} h left; signed again at half its lifetime)"),
    ]
