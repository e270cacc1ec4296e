"""How the seeder serves an image (distributor/seeder/crowd.py): super-seeding a crowd, and
holding back while the crowd takes the image from the catalogue's web seed."""

from __future__ import annotations

import pytest

from distributor.seeder.crowd import CrowdRules, Serving, serving

RULES = CrowdRules(super_seed=True, super_seed_leechers=3, web_seed_yield=128 * 1024)
FULL, SUPER, YIELDING = Serving(False, 0), Serving(True, 0, crowd=True), Serving(True, 128 * 1024, crowd=True)


@pytest.mark.parametrize(("leechers", "web_seed", "answers", "rules", "expected"), [
    (0, True, True, RULES, FULL),  # nobody downloads
    (2, True, True, RULES, FULL),  # one or two: the seeder is their origin, at full speed
    (3, True, True, RULES, YIELDING),  # a crowd, the web seed up: the web seed sends the one copy
    (500, True, True, RULES, YIELDING),
    (3, True, False, RULES, SUPER),  # the catalogue does not answer: its web seed neither
    (3, False, True, RULES, SUPER),  # a torrent without a web seed: the seeder is the origin
    (3, True, True, CrowdRules(super_seed=True, super_seed_leechers=3, web_seed_yield=0), SUPER),  # yield off
    (3, True, True, CrowdRules(super_seed=False, super_seed_leechers=3), Serving(False, 128 * 1024, crowd=True)),
    (5, True, True, CrowdRules(super_seed=True, super_seed_leechers=6), FULL),  # a crowd is what the rules say
])
def test_how_the_seeder_serves_an_image(leechers: int, web_seed: bool, answers: bool, rules: CrowdRules,
                                        expected: Serving) -> None:
    assert serving(leechers, web_seed, answers, rules) == expected


@pytest.mark.parametrize(("leechers", "answers", "now", "settled", "expected"), [
    # super-seeding just went on and dropped the peers: none back yet, still a crowd
    (0, True, YIELDING, False, YIELDING),
    (0, True, YIELDING, True, FULL),  # they did not come back: the crowd is gone
    (5, True, FULL, False, FULL),  # just went off: a crowd reconnecting does not switch it back at once
    (5, True, FULL, True, YIELDING),
    (0, False, YIELDING, False, SUPER),  # the catalogue gone: the web seed too, at once
])
def test_a_switch_settles_before_the_next(leechers: int, answers: bool, now: Serving, settled: bool,
                                          expected: Serving) -> None:
    assert serving(leechers, True, answers, RULES, now, settled) == expected


def test_yielding_is_a_limit_of_its_own() -> None:
    assert YIELDING.yielding and not SUPER.yielding and not FULL.yielding
