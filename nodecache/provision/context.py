"""The contextualization ISO: one image that both kinds of guests understand.

- cloud-init NoCloud: volume label ``CIDATA`` (cloud-init matches it case-insensitively)
  with ``meta-data`` (instance-id, local-hostname), ``user-data`` and
  ``network-config`` (version 2, DHCP on every ethernet device);
- HEPiX contextualization (CernVM, the batch farm's images): ``context.sh`` (shell
  variables, quoted) and ``prolog.sh`` (run at boot by the HEPiX context scripts), plus
  ``authorized_keys``.

Names keep their case through Rock Ridge and Joliet, as both readers need; the plain
ISO 9660 names are 8.3 uppercase stand-ins. Built with pycdlib (pure Python): blocking
but small, run in an executor.
"""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Mapping
from pathlib import Path

import pycdlib

from vmic.private import private_file

LABEL = "CIDATA"


def context_files(name: str, instance_id: str, user_data: str, context: Mapping[str, str],
                  ssh_keys: tuple[str, ...]) -> dict[str, bytes]:
    meta: dict[str, str | list[str]] = {"instance-id": instance_id, "local-hostname": name}
    if ssh_keys:
        meta["public-keys"] = list(ssh_keys)
    network = "version: 2\nethernets:\n  all:\n    match:\n      name: \"e*\"\n    dhcp4: true\n"
    variables = {"VMIC_VM_NAME": name, "VMIC_INSTANCE_ID": instance_id, **context}
    context_sh = "".join(f"{key}={shlex.quote(value)}\n" for key, value in variables.items())
    prolog = ("#!/bin/sh\n# HEPiX contextualization: sourced variables, then the user's script if any\n"
              ". \"$(dirname \"$0\")/context.sh\"\n")
    return {
        "meta-data": json.dumps(meta, indent=2).encode() + b"\n",
        "user-data": (user_data or "#cloud-config\n{}\n").encode(),
        "network-config": network.encode(),
        "context.sh": context_sh.encode(),
        "prolog.sh": prolog.encode(),
        "authorized_keys": "".join(k + "\n" for k in ssh_keys).encode(),
    }


def _iso9660_name(name: str, index: int) -> str:
    stem = "".join(c for c in name.upper() if c.isalnum())[:6] or "FILE"
    return f"/{stem}{index:02d}.;1"


def build_iso(path: Path, files: Mapping[str, bytes]) -> None:
    """Write the ISO to ``path`` (a new file, 0600: it holds the VM's secrets)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=LABEL, joliet=3, rock_ridge="1.09")
    for index, (name, data) in enumerate(sorted(files.items())):
        iso.add_fp(io.BytesIO(data), len(data), _iso9660_name(name, index), rr_name=name, joliet_path=f"/{name}")
    try:
        with private_file(path) as out:
            iso.write_fp(out)
    finally:
        iso.close()


def read_iso(path: Path) -> dict[str, bytes]:
    """The files of an ISO by their Rock Ridge names (what a guest sees)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        result = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_file():
                name = child.rock_ridge.name().decode()
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
                result[name] = out.getvalue()
        return result
    finally:
        iso.close()
