"""The `dupes` report files: groups as CSV, and as a self-contained HTML contact sheet."""

from __future__ import annotations

import base64
import csv
import html
from collections.abc import Sequence
from pathlib import Path

from search.copies.dupes import Found
from search.records import DuplicateGroup
from search.render import link_text
from search.thumbnails import jpeg_thumbnail
from store import ImageRecord

THUMBNAIL_PX = 160
CSV_COLUMNS = [
    "group",
    "kind",
    "role",
    "id",
    "path",
    "score",
    "width",
    "height",
    "bytes",
    "format",
    "how",
    "keep_policy",
    "reason",
]


def write_csv(found: Found, path: Path, keep_policy: str) -> None:
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for number, group in enumerate(found.groups, start=1):
            rows = [("keep", group.keep, 1.0, "kept", group.reason)] + [
                ("duplicate", m.record, m.score, m.how, "") for m in group.members
            ]
            for role, r, score, how, reason in rows:
                values = [
                    r.id,
                    r.path,
                    f"{score:.6f}",
                    r.width,
                    r.height,
                    r.size,
                    found.format_of(r),
                    how,
                    keep_policy,
                    reason,
                ]
                writer.writerow([number, group.kind, role, *values])


def write_html(found: Found, path: Path, title: str, keep_policy: str) -> None:
    groups: Sequence[DuplicateGroup] = found.groups
    sections = [_group_html(n, group, found) for n, group in enumerate(groups, start=1)]
    page = _PAGE.format(
        title=html.escape(title),
        policy=html.escape(keep_policy),
        groups="\n".join(sections) or "<p>No duplicates.</p>",
    )
    path.write_text(page, encoding="utf-8", errors="surrogateescape")


def _group_html(number: int, group: DuplicateGroup, found: Found) -> str:
    cards = [_card(group.keep, "keep", None, found.format_of(group.keep))]
    cards += [
        _card(m.record, "duplicate", link_text(m, found.mode), found.format_of(m.record))
        for m in group.members
    ]
    return (
        f"<section><h2>Group {number} · {group.kind} · {len(group.members)} duplicate(s)</h2>"
        f"<p>Kept: {html.escape(group.reason)}</p>"
        f'<div class="cards">{"".join(cards)}</div></section>'
    )


def _card(record: ImageRecord, role: str, link: str | None, fmt: str) -> str:
    label = "KEEP" if link is None else html.escape(link)
    path = html.escape(record.path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return (
        f'<figure class="{role}"><img alt="" src="{_thumbnail(record.path)}">'
        f"<figcaption><b>{label}</b><br>#{record.id} · {record.width} &times; {record.height} · "
        f"{record.size:,} B · {fmt}<br><span>{path}</span></figcaption></figure>"
    )


def _thumbnail(path: str) -> str:
    """A data: URI of a small JPEG, or an empty image if the file is gone or unreadable."""
    try:
        data = jpeg_thumbnail(path, THUMBNAIL_PX)
    except Exception:  # the sheet is still useful without this picture
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; }}
section {{ margin-bottom: 2rem; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 0.75rem; }}
figure {{ margin: 0; width: 180px; padding: 8px; background: white; border: 3px solid #ddd; }}
figure.keep {{ border-color: #2e7d32; }}
figure img {{ width: 160px; height: 160px; object-fit: contain; background: #eee; }}
figcaption {{ font-size: 12px; word-break: break-all; }}
</style></head>
<body><h1>{title}</h1>
<p>Keeper policy: <b>{policy}</b>. The kept copy has a green border.</p>
{groups}
</body></html>
"""
