"""What partner sync may do to this catalogue: the narrow protocol it is written against
(:class:`vmic.catalogue.service.Catalogue` provides it). Sync never reaches into the
catalogue's store or list signer itself."""

from __future__ import annotations

from typing import Protocol

from ..catalogue.blobs import BlobStore
from ..catalogue.store import ImageRecord, ImageRequest


class CatalogueWriter(Protocol):
    @property
    def blobs(self) -> BlobStore:
        """Where mirrored bytes go (pinned while they are recorded)."""

    def local_namespaces(self) -> set[str]:
        """Namespaces of this catalogue's own publishers (a partner may not take one)."""

    async def find_image(self, identifier: str) -> ImageRecord | None: ...

    async def import_image(self, record: ImageRecord, request: ImageRequest) -> None:
        """Record a mirrored image (Conflict if its namespace/name/version is taken)."""

    async def withdraw(self, identifier: str, by: str) -> ImageRecord:
        """Revoke an image version: out of the next list (NotFound if unknown)."""

    async def changed(self) -> None:
        """Images were added: sign the list again now."""

    def count_sync(self, subscription: str, outcome: str) -> None:
        """One sync ended (a metric)."""
