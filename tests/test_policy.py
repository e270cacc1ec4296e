"""Acceptance rules for a signed list, table-driven: one row per attack (pure, no I/O).

The rows are made by a small *list simulator*: a good list as the catalogue would sign
it, and the one change an attacker (or a broken publisher) would make.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from vmic.errors import (
    EndorserMismatch,
    ImageIdentifierReused,
    ImageListError,
    ListExpired,
    ListFromFuture,
    ListIdentifierMismatch,
    Rollback,
)
from vmic.imagelist.dn import oneline, parse_dn, same_name
from vmic.imagelist.model import Endorser, Image, ImageList
from vmic.imagelist.policy import History, Subscription, accept

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
DN, CA = "/C=CH/O=site/CN=endorser", "/C=CH/O=site/CN=CA"
LIST_ID = "0b7d0d3e-2f38-4f6e-a1a4-3f4c1a5d2e77"
IMAGE_ID = "8a1e2c55-8a2b-4c3f-9e53-5a1f3c0d9b11"


@dataclass
class ListSimulator:
    """What a subscriber would receive: a list, and who signed it."""

    version: int = 10
    created: dt.datetime = NOW - dt.timedelta(hours=1)
    expires: dt.datetime = NOW + dt.timedelta(days=7)
    identifier: str = LIST_ID
    list_dn: str = DN
    list_ca: str = CA
    signer_dn: str = DN
    signer_ca: str = CA
    images: dict[str, str] = field(default_factory=lambda: {IMAGE_ID: "a" * 128})

    def build(self) -> ImageList:
        return ImageList(
            identifier=self.identifier, version=self.version, created=self.created, expires=self.expires,
            endorser=Endorser(self.list_dn, self.list_ca),
            images=tuple(Image(identifier=i, uri=f"http://c/images/{i}", size=1, sha512=s, version="1")
                         for i, s in self.images.items()),
        )


SUBSCRIPTION = Subscription(endorser_dn=DN, endorser_ca=CA, list_identifier=LIST_ID)
HISTORY = History(last_version=10, known_images={IMAGE_ID: "a" * 128})


def check(sim: ListSimulator, subscription: Subscription = SUBSCRIPTION, history: History = HISTORY) -> ImageList:
    return accept(sim.build().to_bytes(), parse_dn(sim.signer_dn), parse_dn(sim.signer_ca), subscription, history,
                  NOW)


def test_a_good_list_is_accepted() -> None:
    image_list = check(ListSimulator(version=11))
    assert image_list.version == 11 and image_list.image(IMAGE_ID) is not None


def test_the_same_version_again_is_accepted() -> None:
    assert check(ListSimulator(version=10)).version == 10


def test_first_contact_has_no_history() -> None:
    assert check(ListSimulator(version=1), history=History()).version == 1


@pytest.mark.parametrize(
    ("attack", "sim", "error", "reason"),
    [
        ("signer is not the endorser named in the list", ListSimulator(signer_dn="/C=CH/O=site/CN=intruder"),
         EndorserMismatch, "but the list names"),
        ("signer's issuer is not hv:ca", ListSimulator(signer_ca="/C=XX/CN=other CA"), EndorserMismatch,
         "hv:ca"),
        # a trusted CA's certificate whose O value holds "/CN=..." (and no CN) prints as the
        # endorser's one-line DN: names are compared RDN by RDN, never as strings
        ("an O value holding /CN= poses as the endorser",
         ListSimulator(signer_dn=r"/C=CH/O=vmic demo\/CN=vmic catalogue endorser",
                       list_dn="/C=CH/O=vmic demo/CN=vmic catalogue endorser"),
         EndorserMismatch, "but the list names"),
        ("list names and is signed by another endorser",
         ListSimulator(list_dn="/C=CH/O=site/CN=other", signer_dn="/C=CH/O=site/CN=other"),
         EndorserMismatch, "expected endorser"),
        ("another CA issued an endorser of the same name",
         ListSimulator(list_ca="/C=XX/CN=other CA", signer_ca="/C=XX/CN=other CA"),
         EndorserMismatch, "expected CA"),
        ("a list of another identifier is swapped in", ListSimulator(identifier="11111111-2222-3333-4444-555555555555"),
         ListIdentifierMismatch, "not the subscribed"),
        ("created in the future", ListSimulator(created=NOW + dt.timedelta(hours=1)), ListFromFuture, "future"),
        ("expired (a frozen list replayed)", ListSimulator(expires=NOW - dt.timedelta(seconds=1)),
         ListExpired, "expired at"),
        ("rolled back to an older version", ListSimulator(version=9), Rollback, "lower than"),
        ("an image identifier comes back with other bytes", ListSimulator(images={IMAGE_ID: "b" * 128}),
         ImageIdentifierReused, "other bytes"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else "",
)
def test_each_attack_is_refused_with_its_reason(attack: str, sim: ListSimulator, error: type[ImageListError],
                                                 reason: str) -> None:
    with pytest.raises(error, match=reason):
        check(sim)


def test_clock_skew_allows_a_list_just_created_by_a_fast_clock() -> None:
    assert check(ListSimulator(created=NOW + dt.timedelta(minutes=2), version=11)).version == 11


def test_without_a_configured_ca_or_list_id_only_the_dn_is_pinned() -> None:
    loose = Subscription(endorser_dn=DN)
    sim = ListSimulator(identifier="11111111-2222-3333-4444-555555555555", list_ca="/C=XX/CN=x", signer_ca="/C=XX/CN=x")
    assert check(sim, subscription=loose).identifier.startswith("1111")


FORGED = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vmic demo/CN=vmic catalogue endorser")])
REAL = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vmic demo"),
                  x509.NameAttribute(NameOID.COMMON_NAME, "vmic catalogue endorser")])


@pytest.mark.parametrize(("name", "configured", "same"), [
    (REAL, "/C=CH/O=vmic demo/CN=vmic catalogue endorser", True),
    (REAL, "CN=vmic catalogue endorser,O=vmic demo,C=CH", True),  # RFC 4514, most specific first
    (FORGED, "/C=CH/O=vmic demo/CN=vmic catalogue endorser", False),  # the same one-line string
    (FORGED, "CN=vmic catalogue endorser,O=vmic demo,C=CH", False),
    (FORGED, r"/C=CH/O=vmic demo\/CN=vmic catalogue endorser", True),  # what oneline() shows for it
    (REAL, "/C=CH/CN=vmic catalogue endorser/O=vmic demo", False),  # order counts
    (REAL, "/C=CH/O=vmic demo/CN=vmic catalogue endorser/CN=x", False),
    (REAL, "not a DN", False),
])
def test_names_are_compared_rdn_by_rdn(name: x509.Name, configured: str, same: bool) -> None:
    assert same_name(name, configured) is same
    assert same_name(name, oneline(name))


def test_a_tls_client_certificate_passes_only_for_its_own_publisher() -> None:
    """Publisher carol's client_dn against a certificate whose O value holds "/CN=carol"."""
    from vmic.catalogue.config import Publisher, publisher_for_subject

    carol = Publisher("carol", "", ("carol",), client_dn="/C=CH/O=vmic demo/CN=carol")
    forged = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vmic demo/CN=carol")])
    assert publisher_for_subject((carol,), forged) is None
    assert publisher_for_subject((carol,), parse_dn("CN=carol,O=vmic demo,C=CH")) == carol
