"""Node cache: the per-hypervisor daemon that follows catalogues, fetches,
verifies, stages, seeds and evicts images.

Imports the shared image-list model, verification and config from :mod:`vmic`.
"""
