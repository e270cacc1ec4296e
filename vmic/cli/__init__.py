"""The ``vmic`` command line (see :mod:`.main`)."""
