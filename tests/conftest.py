"""Fixtures for every test (defined in support.py, with the helpers tests import)."""

from support import catalogue, catalogue_factory, http, keys, lab, other_keys, site  # noqa: F401
