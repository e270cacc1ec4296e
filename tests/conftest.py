"""Fixtures for every test (defined in support.py, with the helpers tests import)."""

import os

from support import catalogue, catalogue_factory, http, keys, lab, other_keys, site  # noqa: F401

#: tests/in_guest/ runs inside a guest with device-mapper (tests/test_lvm_guest.py boots it)
collect_ignore = [] if os.environ.get("VMIC_IN_GUEST") == "1" else ["in_guest"]
