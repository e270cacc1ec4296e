"""``vmic``: run the catalogue, publish, list, revoke, and verify signed lists.

Every failure is one line on stderr, ``vmic: error: ...``, and a non-zero exit:
1 for a refused operation, 2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..imagelist.extensions import NAME, NAMESPACE
from ..version import add_version
from . import publish as publish_cmd
from . import subscribe as subscribe_cmd
from .output import console, images_table, run_command
from .remote import call, client_for, remote

# --- commands ----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from ..catalogue.config import load_catalogue_config
    from ..catalogue.server import serve
    from ..log import setup

    def load() -> Any:
        return load_catalogue_config(
            args.config, data_dir=args.data_dir, listen=args.listen, public_url=args.public_url
        )

    config = load()
    setup(config.log_level)
    asyncio.run(serve(config, load))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from ..catalogue.config import load_catalogue_config
    from ..config_check import check

    config = load_catalogue_config(args.config)
    cert, key = config.cert_path, config.key_path  # defaults under data_dir: checked as if set
    print(check({"catalogue": dataclasses.replace(config, endorser_cert=cert, endorser_key=key)}, args.config))
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from ..pki import init_keys

    paths = init_keys(args.directory, endorser_dn=args.endorser_dn, ca_dn=args.ca_dn)
    print(f"trust directory:      {paths.ca_dir}  (give it to subscribers: <hash>.0 CA, <hash>.r0 CRL)")
    print(f"CA certificate:       {paths.ca_cert}")
    print(f"CA key:               {paths.ca_key}  (keep it: vmic keys revoke signs CRLs with it)")
    print(f"endorser certificate: {paths.cert}")
    print(f"endorser key:         {paths.key}")
    return 0


def cmd_keys_tls(args: argparse.Namespace) -> int:
    from ..pki import KeyPaths, issue_tls_certificate, load_ca, write_pair

    paths = KeyPaths.under(args.directory)
    if not paths.ca_key.is_file():
        raise ConfigError(f"{args.directory} holds no CA key ({paths.ca_key}): make one with vmic keys init")
    first = args.name[0]
    cert, key = issue_tls_certificate(f"/CN={first}", *load_ca(paths), server_names=tuple(args.name),
                                      days=args.days)
    out = args.directory / "tls"
    out.mkdir(mode=0o700, exist_ok=True)
    write_pair(cert, key, out / f"{first}.pem", out / f"{first}.key")
    print(f"server certificate: {out / f'{first}.pem'}  (tls_cert; names: {', '.join(args.name)})")
    print(f"its key:            {out / f'{first}.key'}  (tls_key, 0600)")
    print(f"followers trust it: tls_ca = \"{paths.ca_cert}\"  (vmic --tls-ca for the command line)")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from ..pki import KeyPaths, crl_path, revoke

    serial = revoke(args.directory, args.certificate, days=args.crl_days)
    print(f"revoked serial {serial:x}; CRL {crl_path(KeyPaths.under(args.directory))} "
          f"(valid {args.crl_days:g} days: give the trust directory to subscribers again)")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from ..catalogue.config import hash_token
    from ..catalogue.names import check_name

    name = check_name(args.name, "publisher name")
    token = secrets.token_urlsafe(32)
    namespaces = ", ".join(f'"{check_name(n, "namespace")}"' for n in (args.namespace or [name]))
    # the cleartext token never goes where `>> catalogue.toml` would append it
    if args.token_file is not None:
        fd = os.open(args.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        print(f"vmic: token for {name} written to {args.token_file} (give it to the publisher)", file=sys.stderr)
    else:
        print(f"vmic: token for {name} (give it to the publisher; the catalogue keeps only its hash): {token}",
              file=sys.stderr)
    print(f"[catalogue.publishers.{name}]")
    print(f'token_sha256 = "{hash_token(token)}"')
    print(f"namespaces = [{namespaces}]")
    if args.admin:
        print("admin = true")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    target = preheat_target(args.preheat) if args.preheat else None  # a bad target fails before the upload
    image = asyncio.run(publish_cmd.publish(args, client_for(args)))
    console(sys.stdout).print(
        f"published [bold]{image['namespace']}/{image['name']}[/] version {image['version']}: "
        f"identifier {image['identifier']}"
    )
    if target is not None:
        call(args, lambda client: client.preheat(image["identifier"], target))
        console(sys.stdout).print(f"preheat: {json.dumps(target)}")
    return 0


def preheat_target(text: str) -> dict[str, Any]:
    """``all``, a share (``0.25`` or ``25%``), or node names (``hv1,hv2``) -> a target."""
    from ..preheat import parse_target

    if text == "all":
        return {"all": True}
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return parse_target({"nodes": [n.strip() for n in text.split(",") if n.strip()]}) or {}
    return parse_target({"share": share}) or {}


def cmd_preheat(args: argparse.Namespace) -> int:
    from rich.table import Table

    out = console(sys.stdout)
    if args.target:
        target = {} if args.target == "cancel" else preheat_target(args.target)
        result = call(args, lambda client: client.preheat(args.identifier, target, args.force))
        out.print(f"preheat of {args.identifier}: {json.dumps(result['preheat']) if result['preheat'] else 'none'}")
        return 0
    status = call(args, lambda client: client.preheat_status(args.identifier), token=False)
    if args.json:
        out.print_json(data=status)
        return 0
    out.print(f"preheat of {args.identifier}: {json.dumps(status['preheat']) if status['preheat'] else 'none'}")
    table = Table("node", "address", "done", "state", "seen")
    for node in status["nodes"]:
        done = "-" if node["done"] is None else f"{node['done']:.0%}"
        table.add_row(node["name"], f"{node['ip']}:{node['port']}", done, "seeding" if node["seeding"] else
                      "fetching", f"{node['seen_seconds_ago']:.0f} s ago")
    for name in status["missing"]:
        table.add_row(name, "-", "0%", "not seen", "-")
    out.print(table)
    if status["tracker_error"]:
        out.print(f"tracker not reachable: {status['tracker_error']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    images = call(args, lambda client: client.images(), token=False)
    if not args.all:
        images = [i for i in images if not i["revoked"]]
    if args.json:
        print(json.dumps(images, indent=2, sort_keys=True))
    else:
        console(sys.stdout).print(images_table(images))
    return 0


def cmd_uploads_list(args: argparse.Namespace) -> int:
    uploads = call(args, lambda client: client.uploads())
    if args.json:
        print(json.dumps(uploads, indent=2, sort_keys=True))
        return 0
    from rich.table import Table

    table = Table("id", "image", "version", "received", "of", "expires")
    for u in uploads:
        table.add_row(u["id"], f"{u['namespace']}/{u['name']}", u["version"], str(u["offset"]), str(u["length"]),
                      u["expires"])
    console(sys.stdout).print(table)
    return 0


def cmd_uploads_cancel(args: argparse.Namespace) -> int:
    call(args, lambda client: client.cancel_upload(args.upload_id))
    print(f"cancelled upload {args.upload_id} (its bytes are gone)")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    image = call(args, lambda client: client.revoke(args.identifier))
    print(f"revoked {image['namespace']}/{image['name']} version {image['version']} ({image['identifier']})")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    image = call(args, lambda client: client.restore(args.identifier))
    print(f"restored {image['namespace']}/{image['name']} version {image['version']} ({image['identifier']})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..client import CatalogueClient, tls_context
    from ..imagelist.policy import History, Subscription
    from ..imagelist.verify import verify_signed_list

    async def run() -> Any:
        source: str = args.source
        if source.startswith(("http://", "https://")):
            async with CatalogueClient(source, ssl_context=tls_context(args.tls_ca)) as client:
                message = (await client.fetch(source)).body
        else:
            try:
                message = Path(source).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read {source}: {exc.strerror}") from None
        subscription = Subscription(endorser_dn=args.endorser_dn, endorser_ca=args.endorser_ca,
                                    list_identifier=args.list_id)
        return await verify_signed_list(message, args.ca, subscription, History(last_version=args.min_version))

    image_list = asyncio.run(run())
    if args.json:
        sys.stdout.buffer.write(image_list.to_bytes().replace(b"\r\n", b"\n"))
        return 0
    out = console(sys.stdout)
    out.print(
        f"[green]verified[/]: list {image_list.identifier} version {image_list.version}, "
        f"{len(image_list.images)} image(s), signed by {image_list.endorser.dn}, "
        f"expires {image_list.expires:%Y-%m-%dT%H:%M:%SZ}"
    )
    out.print(images_table([
        {"namespace": i.extra.get(NAMESPACE, ""), "name": i.extra.get(NAME, i.title),
         "version": i.version, "size": i.size, "identifier": i.identifier, "format": i.format, "os": i.os}
        for i in image_list.images
    ]))
    return 0


# --- parser ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vmic", description="Virtual-machine image catalogue")
    add_version(p, "vmic")
    p.add_argument("-c", "--config", type=Path, help="TOML config file (vmic serve; also after the subcommand)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the catalogue service")
    s.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help="TOML config file ([catalogue] table)")
    s.add_argument("--data-dir", type=Path)
    s.add_argument("--listen", metavar="HOST:PORT", help="overrides listen in the config")
    s.add_argument("--public-url")
    s.set_defaults(func=cmd_serve)

    cf = sub.add_parser("config", help="the catalogue's config file")
    cfsub = cf.add_subparsers(dest="config_command", required=True)
    cc = cfsub.add_parser("check", help="check the [catalogue] table and the files it names; start nothing")
    cc.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help="TOML config file")
    cc.set_defaults(func=cmd_config_check)

    k = sub.add_parser("keys", help="certificates for demos and tests")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    ki = ksub.add_parser("init", help="create a test CA and an endorser certificate in DIRECTORY")
    ki.add_argument("directory", type=Path)
    ki.add_argument("--endorser-dn", default="/C=CH/O=vmic demo/CN=vmic catalogue endorser")
    ki.add_argument("--ca-dn", default="/C=CH/O=vmic demo/CN=vmic demo CA")
    ki.set_defaults(func=cmd_keys_init)
    kt = ksub.add_parser("tls", help="an HTTPS server certificate from the CA in DIRECTORY (for a demo site)")
    kt.add_argument("directory", type=Path)
    kt.add_argument("--name", action="append", required=True,
                    help="a host name or address the catalogue is reached at (public_url's host); repeatable")
    kt.add_argument("--days", type=int, default=825)
    kt.set_defaults(func=cmd_keys_tls)
    kr = ksub.add_parser("revoke", help="revoke a certificate the CA in DIRECTORY issued (its CRL, signed again)")
    kr.add_argument("directory", type=Path)
    kr.add_argument("certificate", type=Path)
    kr.add_argument("--crl-days", type=float, default=30, help="the CRL's validity (default 30 days)")
    kr.set_defaults(func=cmd_keys_revoke)

    t = sub.add_parser("token", help="make a publisher token and its config entry")
    t.add_argument("name")
    t.add_argument("--namespace", action="append", help="namespace it may publish in (default: its name)")
    t.add_argument("--admin", action="store_true", help="may also manage partner subscriptions")
    t.add_argument("--token-file", type=Path, help="write the token to this file (0600) instead of stderr")
    t.set_defaults(func=cmd_token)

    pub = sub.add_parser("publish", help="upload an image version (resumable, with progress)")
    pub.add_argument("file", type=Path)
    remote(pub, token=True)
    publish_cmd.add_arguments(pub)
    pub.set_defaults(func=cmd_publish)

    ls = sub.add_parser("list", help="list the catalogue's images")
    remote(ls, token=False)
    ls.add_argument("--all", action="store_true", help="include revoked versions")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    ph = sub.add_parser("preheat", help="push an image to nodes before they ask; or show its progress per node")
    ph.add_argument("identifier")
    ph.add_argument("target", nargs="?", help="all | a share (0.25 or 25%%) | node names (hv1,hv2) | cancel; "
                                               "none: show progress per node")
    ph.add_argument("--json", action="store_true")
    ph.add_argument("--force", action="store_true", help="name nodes the tracker has not heard of yet")
    remote(ph, token=True)
    ph.set_defaults(func=cmd_preheat)

    up = sub.add_parser("uploads", help="your open uploads: list them, cancel one")
    upsub = up.add_subparsers(dest="uploads_command", required=True)
    ul = upsub.add_parser("list", help="open uploads, how far each is, when each expires")
    ul.add_argument("--json", action="store_true")
    remote(ul, token=True)
    ul.set_defaults(func=cmd_uploads_list)
    uc = upsub.add_parser("cancel", help="abandon an upload (its bytes are removed)")
    uc.add_argument("upload_id")
    remote(uc, token=True)
    uc.set_defaults(func=cmd_uploads_cancel)

    rv = sub.add_parser("revoke", help="remove an image version from the list (restorable for revoke_grace)")
    rv.add_argument("identifier")
    remote(rv, token=True)
    rv.set_defaults(func=cmd_revoke)

    rs = sub.add_parser("restore", help="a revoked image version back in the list, within revoke_grace")
    rs.add_argument("identifier")
    remote(rs, token=True)
    rs.set_defaults(func=cmd_restore)

    subscribe_cmd.add_arguments(sub)

    v = sub.add_parser("verify", help="verify a signed image list (file or URL) and say why it fails")
    v.add_argument("source", help="file path or http(s) URL of a signed list")
    v.add_argument("--ca", type=Path, action="append", required=True, help="trusted CA file or directory")
    v.add_argument("--tls-ca", "--cacert", dest="tls_ca", type=Path,
                   help="CA of the HTTPS server the list is fetched from, trusted besides the system's")
    v.add_argument("--endorser-dn", required=True, help="expected signer, e.g. /C=CH/O=Org/CN=name")
    v.add_argument("--endorser-ca", help="expected issuer of the signer")
    v.add_argument("--list-id", help="expected list identifier")
    v.add_argument("--min-version", type=int, help="refuse versions lower than this (rollback)")
    v.add_argument("--json", action="store_true", help="print the verified JSON")
    v.set_defaults(func=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("vmic", lambda: int(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
