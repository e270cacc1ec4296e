"""The HEPiX image list: its model, signing, signature check and acceptance policy.

- :mod:`.model`  -- dataclasses and the exact HEPiX JSON layout (pure).
- :mod:`.smime`  -- sign as detached S/MIME; check a signature with ``openssl cms``.
- :mod:`.policy` -- the acceptance rules a subscriber applies (pure, no I/O).
- :mod:`.dn`     -- X.509 names in OpenSSL's one-line ``/C=../O=../CN=..`` form.
"""

from .model import DATE_FORMAT, Endorser, Image, ImageList

__all__ = ["DATE_FORMAT", "Endorser", "Image", "ImageList"]
