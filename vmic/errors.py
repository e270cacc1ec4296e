"""The one error hierarchy of vmic.

Every error raised on purpose is a :class:`VmicError`. Each class carries the HTTP
status and a short machine-readable ``code`` that services put in their JSON error
bodies, so a service never has to translate errors by hand.
"""

from __future__ import annotations

#: the longest message an error answer carries (they may echo what a client sent)
MAX_MESSAGE = 300


def truncated(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text``, cut to ``limit`` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class VmicError(Exception):
    """Base class. ``str(error)`` is a one-line message meant for a person."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "message": truncated(self.message)}


class ConfigError(VmicError):
    """The configuration (file, environment, keys) cannot be used."""

    code = "config_error"


# --- request errors (raised by services, mapped to HTTP statuses) ---------------------


class BadRequest(VmicError):
    status = 400
    code = "bad_request"


class Unauthorized(VmicError):
    status = 401
    code = "unauthorized"


class Forbidden(VmicError):
    status = 403
    code = "forbidden"


class NotFound(VmicError):
    status = 404
    code = "not_found"


class Conflict(VmicError):
    status = 409
    code = "conflict"


class Gone(VmicError):
    status = 410
    code = "gone"


class TooLarge(VmicError):
    status = 413
    code = "too_large"


class ChecksumMismatch(VmicError):
    status = 422
    code = "checksum_mismatch"


class RequestTimeout(VmicError):
    """A client sent its request body too slowly."""

    status = 408
    code = "request_timeout"


class TooManyRequests(VmicError):
    status = 429
    code = "too_many_requests"


class StorageError(VmicError):
    """The disk refused (full, read-only, ...). Nothing partial is kept."""

    status = 507
    code = "insufficient_storage"


class RemoteError(VmicError):
    """A vmic service answered with an error; ``status`` and ``code`` are the service's."""

    def __init__(self, message: str, status: int = 502, code: str = "remote_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# --- image-list errors (raised by verification; each names one precise reason) --------


class ImageListError(VmicError):
    """An image list was refused. Subclasses say why."""

    status = 422
    code = "imagelist_invalid"


class MalformedList(ImageListError):
    code = "malformed"


class ListTooLarge(ImageListError):
    """More bytes than a list may have: refused before parsing or checking its signature."""

    code = "list_too_large"


class MalformedTorrent(VmicError):
    status = 422
    code = "malformed_torrent"


class SignatureInvalid(ImageListError):
    code = "signature_invalid"


class UntrustedSigner(ImageListError):
    code = "untrusted_signer"


class EndorserRevoked(UntrustedSigner):
    """The signer's certificate is on its CA's CRL."""

    code = "endorser_revoked"


class CrlExpired(UntrustedSigner):
    """The CRL of the signer's CA is past its next update: refused, as grid middleware does."""

    code = "crl_expired"


class CrlMissing(UntrustedSigner):
    code = "crl_missing"


class EndorserMismatch(ImageListError):
    code = "endorser_mismatch"


class ListIdentifierMismatch(ImageListError):
    code = "identifier_mismatch"


class ListExpired(ImageListError):
    code = "expired"


class ListFromFuture(ImageListError):
    code = "created_in_future"


class Rollback(ImageListError):
    code = "rollback"


class ImageIdentifierReused(ImageListError):
    code = "image_identifier_reused"


class FetchFailed(VmicError):
    """An image's bytes could not be downloaded (no peer, no web seed, torrent mismatch,
    a transfer cut: what arrived is kept and the next attempt resumes)."""

    status = 502
    code = "fetch_failed"
