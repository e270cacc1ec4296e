"""The catalogue service's composition root: the catalogue (:func:`.service.open_catalogue`:
store, blobs, uploads, list signer, checked before it listens) and partner sync, built
once and injected; :func:`vmic.catalogue.web.make_app` serves them."""

from __future__ import annotations

from dataclasses import dataclass

from ..sync.records import SubscriptionStore
from ..sync.syncer import Syncer
from .config import CatalogueConfig
from .service import Catalogue, open_catalogue


@dataclass
class CatalogueSite:
    catalogue: Catalogue
    syncer: Syncer

    async def close(self) -> None:
        await self.syncer.close()
        await self.catalogue.close()


async def build(config: CatalogueConfig) -> CatalogueSite:
    catalogue = await open_catalogue(config)
    records = SubscriptionStore(catalogue.store.db)
    try:
        await records.init()
    except BaseException:
        await catalogue.close()
        raise
    return CatalogueSite(catalogue, Syncer(catalogue, records, config.max_partner_list_bytes))
