"""Check a signed image list end to end: the signature (:mod:`.smime`, I/O), then the
acceptance rules (:mod:`.policy`, pure). What nodes, partner sites and ``vmic verify`` call.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from .model import ImageList
from .policy import History, Subscription, accept
from .smime import verify_smime


async def verify_signed_list(
    message: bytes,
    trusted: bytes | list[Path],
    subscription: Subscription,
    history: History | None = None,
    now: dt.datetime | None = None,
) -> ImageList:
    """The list, if its signature and every rule hold; else the precise ImageListError."""
    verified = await verify_smime(message, trusted)
    return accept(
        verified.content,
        verified.signer,
        verified.issuer,
        subscription,
        history or History(),
        now or dt.datetime.now(dt.timezone.utc),
    )
