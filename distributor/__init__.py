"""Distributor: torrents, tracker and seeder for every catalogued image.

Imports the shared image-list model, signing and config from :mod:`vmic`.
"""
