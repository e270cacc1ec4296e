"""The libtorrent session of seeders and node daemons: every setting, and why, in one place.

Starts from libtorrent's ``high_performance_seed()`` preset (large send buffers,
many connections, suggest mode for pieces in cache), then, for a data-centre LAN:

- no DHT, local peer discovery, UPnP or NAT-PMP: a private cloud's peers come from
  its own tracker, and nothing is sent outside the configured interfaces;
- no uTP: on a LAN, TCP is faster and cheaper (uTP's delay-based congestion control
  backs off needlessly on sub-millisecond links);
- ``seed_choking_algorithm = fastest_upload``: a seed unchokes the peers that take
  data fastest, which on a LAN spreads pieces quickest; ``anti_leech`` suits swarms
  of strangers, not ours;
- rate limits apply to local peers too (``ignore_limits_on_local_network = False``),
  so that a seeder's upload cap holds inside a rack;
- several connections from one IP are allowed (hosts behind one address, tests);
- a stopping session waits at most 1 s for the trackers to hear "stopped" (a LAN
  tracker answers in milliseconds or is down; the peer expires there anyway);
- a web seed (the catalogue, BEP 19) is asked for at most 256 KiB at a time instead of
  16 MiB: large ranges made every node pull long stretches from the catalogue that its
  peers were about to offer. Measured with tools/bench/swarm.py (256 MiB, N = 4 / 8 /
  16): T/T* 1.49 / 1.26 / 1.40 -> 1.30 / 1.18 / 1.24, origin copies 1.83 / 1.86 / 2.15
  -> 1.59 / 1.73 / 1.91.
- send buffers as libtorrent's defaults (512 KiB watermark), not the preset's 3 MiB x 150:
  on 100 Mbit/s node links the preset queued seconds of data per peer, which delays the
  forwarding of fresh pieces (N = 8: T/T* 1.21 -> 1.16, origin copies 1.78 -> 1.70).
- which pieces a node takes from the origin: :mod:`vmic.bittorrent.share`.
- HTTPS web seeds and trackers are certificate-checked against the system's CAs; libtorrent
  cannot be given another CA, so a follower of a catalogue with a site CA (``tls_ca``)
  turns the check off for libtorrent alone (``verify_https=False``). What rests on it:
  every byte from a web seed is checked against the piece hashes of the torrent whose
  info hash the signed list names, and the whole image against the signed sha512; a
  forged tracker answer can only name peers, whose bytes are checked the same way.
"""

from __future__ import annotations

from typing import Any

import libtorrent as lt

#: everything not in libtorrent's high-performance-seed preset
OVERRIDES: dict[str, Any] = {
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "seed_choking_algorithm": 1,  # fastest_upload
    "ignore_limits_on_local_network": False,
    "allow_multiple_connections_per_ip": True,
    "announce_to_all_trackers": True,
    "stop_tracker_timeout": 1,
    "urlseed_max_request_bytes": 256 * 1024,
    # libtorrent's defaults, not the preset's 3 MiB x 150: see the module's docstring
    "send_buffer_watermark": 512 * 1024,
    "send_buffer_watermark_factor": 50,
    "send_buffer_low_watermark": 10 * 1024,
    "send_not_sent_low_watermark": 16 * 1024,
    "alert_mask": (lt.alert_category.error | lt.alert_category.status | lt.alert_category.storage
                   | lt.alert_category.tracker),
}


def settings(listen: str, upload_limit: int = 0, download_limit: int = 0, user_agent: str = "",
             verify_https: bool = True) -> dict[str, Any]:
    """``listen``: "host:port" to accept peers on; limits in bytes/s, 0 = none;
    ``user_agent``: what HTTP trackers see (node daemons: "vmic-node/<name>");
    ``verify_https``: see the module's docstring."""
    result = dict(lt.high_performance_seed())
    result.update(OVERRIDES)
    result["listen_interfaces"] = listen
    result["upload_rate_limit"] = upload_limit
    result["download_rate_limit"] = download_limit
    if user_agent:
        result["user_agent"] = user_agent
    result["validate_https_trackers"] = verify_https
    return result


def make_session(listen: str, upload_limit: int = 0, download_limit: int = 0, user_agent: str = "",
                 verify_https: bool = True) -> lt.session:
    params: Any = settings(listen, upload_limit, download_limit, user_agent, verify_https)  # the binding takes a dict
    return lt.session(params)
