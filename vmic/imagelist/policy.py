"""Whether a subscriber accepts a signed image list: pure rules, no I/O.

The signature itself is checked by :func:`vmic.imagelist.smime.verify_smime`; this
module takes what that check vouches for (the content and the signer's names) plus
what the subscriber remembers, and either returns the list or raises the one
:class:`~vmic.errors.ImageListError` that says precisely why not. The rules are at
least those of vmcatcher:

1. the content is a well-formed HEPiX list;
2. the signer's subject and issuer equal ``hv:dn`` and ``hv:ca`` in the list;
3. the signer is the endorser the subscriber configured (and its CA, if configured);
4. the list identifier is the subscribed one;
5. the list was not created in the future (beyond a small clock skew);
6. the list has not expired (a frozen list is refused);
7. the version is not lower than the last accepted one (rollback);
8. an image identifier seen before never comes back with other bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509

from ..errors import (
    EndorserMismatch,
    ImageIdentifierReused,
    ListExpired,
    ListFromFuture,
    ListIdentifierMismatch,
    Rollback,
)
from .dn import oneline, same_name
from .model import ImageList, format_date


@dataclass(frozen=True)
class Subscription:
    """What the subscriber trusts: one endorser, and optionally its CA and list id."""

    endorser_dn: str
    endorser_ca: str | None = None
    list_identifier: str | None = None
    clock_skew: dt.timedelta = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class History:
    """What the subscriber accepted before."""

    last_version: int | None = None
    #: image identifier -> sha512 of every image ever accepted from this list
    known_images: Mapping[str, str] = field(default_factory=dict)


def accept(
    content: bytes | ImageList,
    signer: x509.Name,
    issuer: x509.Name,
    subscription: Subscription,
    history: History,
    now: dt.datetime,
) -> ImageList:
    """Return the list if every rule holds, else raise the first rule it breaks. Names are
    compared structurally (:func:`~vmic.imagelist.dn.same_name`), never as strings."""
    image_list = content if isinstance(content, ImageList) else ImageList.parse(content)
    endorser = image_list.endorser
    signer_dn, signer_ca = oneline(signer), oneline(issuer)
    if not same_name(signer, endorser.dn) or not same_name(issuer, endorser.ca):
        raise EndorserMismatch(
            f"signed by {signer_dn!r} (issuer {signer_ca!r}) but the list names "
            f"hv:dn {endorser.dn!r} (hv:ca {endorser.ca!r})"
        )
    if not same_name(signer, subscription.endorser_dn):
        raise EndorserMismatch(f"signed by {signer_dn!r}, expected endorser {subscription.endorser_dn!r}")
    if subscription.endorser_ca is not None and not same_name(issuer, subscription.endorser_ca):
        raise EndorserMismatch(f"endorser issued by {signer_ca!r}, expected CA {subscription.endorser_ca!r}")
    if subscription.list_identifier is not None and image_list.identifier != subscription.list_identifier:
        raise ListIdentifierMismatch(
            f"list identifier {image_list.identifier!r} is not the subscribed {subscription.list_identifier!r}"
        )
    if image_list.created > now + subscription.clock_skew:
        raise ListFromFuture(f"list created {format_date(image_list.created)}, which is in the future")
    if image_list.expires <= now:
        raise ListExpired(f"list expired at {format_date(image_list.expires)}")
    if history.last_version is not None and image_list.version < history.last_version:
        raise Rollback(
            f"list version {image_list.version} is lower than the last accepted version {history.last_version}"
        )
    for image in image_list.images:
        known = history.known_images.get(image.identifier)
        if known is not None and known != image.sha512:
            raise ImageIdentifierReused(
                f"image {image.identifier} came back with other bytes (sha512 {image.sha512[:16]}..., "
                f"was {known[:16]}...)"
            )
    return image_list
