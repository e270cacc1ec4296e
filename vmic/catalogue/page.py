"""The read-only HTML page at ``/``: the current images, for people."""

from __future__ import annotations

from html import escape

from ..imagelist.model import EXT_CREATED, EXT_EXPIRES, ImageList


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def render(image_list: ImageList) -> str:
    rows = []
    for image in image_list.images:
        rows.append(
            "<tr>"
            f"<td class=title><a href=\"{escape(image.uri)}\">{escape(image.title)}</a></td>"
            f"<td class=version>{escape(image.version)}</td>"
            f"<td class=size data-bytes=\"{image.size}\">{human_size(image.size)}</td>"
            f"<td class=os>{escape(' '.join(filter(None, (image.os, image.osversion, image.arch))))}</td>"
            f"<td class=format>{escape(image.format)}</td>"
            f"<td class=published>{escape(str(image.extra.get(EXT_CREATED, '')))}</td>"
            f"<td class=expiry>{escape(str(image.extra.get(EXT_EXPIRES, 'never')))}</td>"
            f"<td class=identifier><code>{escape(image.identifier)}</code></td>"
            "</tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan=8 class=empty>No images published yet.</td></tr>'
    title = escape(image_list.title)
    return f"""<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd; }}
th {{ background: #f3f3f3; }}
td.size {{ text-align: right; white-space: nowrap; }}
code {{ font-size: .85em; color: #555; }}
.meta {{ color: #555; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class=meta>{escape(image_list.description)}</p>
<p class=meta>List <code id=list-identifier>{escape(image_list.identifier)}</code>,
version <span id=list-version>{image_list.version}</span>,
signed by <code>{escape(image_list.endorser.dn)}</code>,
valid until <span id=list-expires>{image_list.expires:%Y-%m-%d %H:%M} UTC</span>.
Subscribe to the <a href="/imagelist">signed list</a> (S/MIME) or read it as <a href="/imagelist.json">JSON</a>.</p>
<table id=images>
<thead><tr><th>Title</th><th>Version</th><th>Size</th><th>OS</th><th>Format</th><th>Published</th><th>Expires</th><th>Identifier</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
</body>
</html>
"""
