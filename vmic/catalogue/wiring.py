"""The catalogue service's composition root: the catalogue (:func:`.service.open_catalogue`:
store, blobs, uploads, list signer, checked before it listens) and partner sync (its
subscriptions, and its mirror: the same fetcher as a node daemon's, with a BitTorrent
session of its own for partners' swarms), built once and injected;
:func:`vmic.catalogue.web.make_app` serves them."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from ..fetch.fetcher import Fetcher
from ..fetch.swarm import Swarm
from ..follow import follower_session
from ..sync.mirror import Mirror
from ..sync.records import SubscriptionStore
from ..sync.syncer import Syncer
from ..units import format_listen
from .config import CatalogueConfig
from .service import Catalogue, open_catalogue

USER_AGENT = "vmic-catalogue/0.1"


@dataclass
class CatalogueSite:
    catalogue: Catalogue
    syncer: Syncer
    swarm: Swarm
    http: aiohttp.ClientSession

    async def close(self) -> None:
        """What :func:`build` opened, closed in the reverse order (twice is once)."""
        await self.syncer.close()
        await self.swarm.close()
        await self.http.close()
        await self.catalogue.close()


async def build(config: CatalogueConfig) -> CatalogueSite:
    catalogue = await open_catalogue(config)
    try:
        records = SubscriptionStore(catalogue.store.db)
        await records.init()
        mirror_dir = config.data_dir / "mirror"
        swarm = Swarm(mirror_dir / "data", mirror_dir / "torrents", config.mirror_listen or format_listen(config.host, 0),
                      web_seed=config.mirror_web_seed, user_agent=USER_AGENT, verify_https=config.tls_ca is None)
        await swarm.start()
    except BaseException:
        await catalogue.close()
        raise
    http = follower_session([config.tls_ca])  # partner catalogues over HTTPS
    mirror = Mirror(Fetcher(swarm, http, mirror_dir / "data", mirror_dir / "torrents"), catalogue.blobs)
    syncer = Syncer(catalogue, records, mirror, http, config.max_partner_list_bytes)
    return CatalogueSite(catalogue, syncer, swarm, http)
