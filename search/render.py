"""Turn results into the contract's JSON objects and into terminal text. No I/O here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.models import ModelCard
from indexer.options import DEFAULT_MODEL
from search.actions.plan import ActionPlan
from search.copies.dupes import Found
from search.query import QueryResult
from search.records import Member
from store import Failure, ImageRecord, IndexMeta, IndexSpec

if TYPE_CHECKING:
    from indexer.session import IndexReport


def index_json(report: IndexReport) -> dict[str, Any]:
    return {
        "added": report.added,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "removed": report.removed,
        # Every file under the folders that is not indexed, whether tried now or before.
        "failed": [{"path": f.path, "error": f.error} for f in report.failed + report.not_retried],
        "not_retried": len(report.not_retried),
        "embedded": report.embedded,
        "reused": report.reused,
        "model": report.model,
        "device": report.device,
        "precision": report.precision,
        "runtime": report.runtime,
        "repaired": report.repaired,
        "seconds": round(report.seconds, 3),
        "images_per_second": round(report.images_per_second, 2),
    }


def index_text(report: IndexReport) -> str:
    failed = len(report.failed) + len(report.not_retried)
    return (
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"removed {report.removed}, failed {failed} "
        f"({report.embedded} embedded, {report.reused} reused; {report.model} on "
        f"{report.device} {report.precision} {report.runtime}; {report.seconds:.1f} s, "
        f"{report.images_per_second:.1f} images/s)"
    )


def query_json(result: QueryResult) -> dict[str, Any]:
    found: dict[str, Any] = {"query": result.query}
    if result.record is not None:
        found["query_id"], found["query_path"] = result.record.id, result.record.path
    found["results"] = [
        {
            "rank": rank,
            "id": m.record.id,
            "path": m.record.path,
            "score": round(m.score, 6),
            **({"verified": m.verified} if m.verified is not None else {}),
        }
        for rank, m in enumerate(result.matches, start=1)
    ]
    return found


def query_text(result: QueryResult) -> str:
    asked, record = result.query, result.record
    if record is not None:  # an indexed image: by id, or by path
        asked = f"id {record.id}  {record.path}"
    lines = [f"query: {asked}"]
    if not result.matches:
        lines.append("  (no results)")
        return "\n".join(lines)
    lines.append(f"{'rank':>4}  {'score':>6}  {'id':>6}  path")
    for rank, m in enumerate(result.matches, start=1):
        mark = "  (copy: verified)" if m.verified else ""
        lines.append(f"{rank:>4}  {m.score:.4f}  {m.record.id:>6}  {m.record.path}{mark}")
    return "\n".join(lines)


def index_change(spec: IndexSpec) -> str:
    """One line saying what the FAISS index now is."""
    params = {
        "hnsw": f"efSearch {spec.ef_search}",
        "ivf": f"nprobe {spec.nprobe}",
        "ivfpq": f"nprobe {spec.nprobe}, rerank x{spec.rerank}",
    }.get(spec.kind)
    recall = f"recall@10 {spec.recall:.3f}" if spec.recall is not None else "exact"
    return f"index is now {spec.factory} ({', '.join(p for p in (params, recall) if p)})"


def index_spec_json(spec: IndexSpec, count: int) -> dict[str, Any]:
    return {"index_type": spec.factory, "count": count, **dataclasses.asdict(spec)}


def info_json(home: str, meta: IndexMeta, count: int, failed: list[Failure]) -> dict[str, Any]:
    spec = IndexSpec.from_json(meta.index_spec)
    return {
        "home": home,
        "model": meta.model,
        "dim": meta.dim,
        "count": count,
        "index_type": meta.index_factory,
        "index_choice": meta.index_choice,
        # recall@10 against exact search, measured when the index was built (flat: exact)
        "index_recall": 1.0 if spec.kind == "flat" else spec.recall,
        "input_size": meta.input_size,  # None: the model's own
        "precision": meta.precision,  # of the last run that embedded images
        "runtime": meta.runtime,
        "failed": len(failed),
    }


def info_text(info: dict[str, Any], failed: list[Failure]) -> str:
    lines = [f"{key:<13} {value}" for key, value in info.items() if value is not None]
    lines += [f"  {f.path}: {f.error}" for f in failed]
    return "\n".join(lines)


def record_json(record: ImageRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "path": record.path,
        "width": record.width,
        "height": record.height,
        "bytes": record.size,
        "mtime_ns": record.mtime_ns,
    }


def api_page(schema: dict[str, Any]) -> str:
    """The endpoints of an OpenAPI schema as one self-contained HTML page."""
    import html

    rows = []
    for path, methods in sorted(schema.get("paths", {}).items()):
        for method, spec in methods.items():
            params = ", ".join(p["name"] for p in spec.get("parameters", []))
            summary = spec.get("description") or spec.get("summary") or ""
            rows.append(
                f"<tr><td><code>{method.upper()} {html.escape(path)}</code></td>"
                f"<td>{html.escape(params)}</td><td>{html.escape(summary)}</td></tr>"
            )
    return (
        "<!doctype html><meta charset=utf-8><title>imgsearch API</title>"
        "<style>body{font-family:system-ui;margin:2rem}td{padding:4px 12px;"
        "vertical-align:top;border-bottom:1px solid #ddd}</style><h1>imgsearch API</h1>"
        "<p>The schema: <a href=/openapi.json>/openapi.json</a></p><table><tr><th>endpoint"
        "</th><th>parameters</th><th>what</th></tr>" + "".join(rows) + "</table>"
    )


def file_json(record: ImageRecord, found: Found) -> dict[str, Any]:
    """A file of a duplicate group: the catalog's row and the file's format."""
    sets = {"set": found.sets.set_of(record.path)} if found.sets.across else {}
    return {**record_json(record), "format": found.format_of(record), **sets}


def dupes_json(found: Found, keep: str) -> dict[str, Any]:
    return {
        "threshold": found.threshold,
        "mode": found.mode,
        "keep_policy": keep,
        "candidate_recall": found.candidate_recall,
        "groups": [
            {
                "id": g.id,
                "kind": g.kind,
                "keep": file_json(g.keep, found),
                "reason": g.reason,
                "members": [
                    {
                        **file_json(m.record, found),
                        "score": round(m.score, 6),
                        "cosine": round(m.cosine, 6),
                        "how": m.how,
                        "link": link_text(m, found.mode),
                        **({"inliers": m.inliers} if m.inliers is not None else {}),
                    }
                    for m in g.members
                ],
            }
            for g in found.groups
        ],
    }


def dupes_text(found: Found, keep: str) -> str:
    lines = []
    for number, g in enumerate(found.groups, start=1):
        k = g.keep
        lines.append(
            f"group {number} ({g.kind}): keep {k.id:>6}  {k.path}  "
            f"({k.width} x {k.height}, {k.size:,} bytes)"
        )
        if g.reason:
            lines.append(f"        why: {g.reason}")
        lines += [
            f"        {m.record.id:>6}  {m.record.path}  ({link_text(m, found.mode)})"
            for m in g.members
        ]
    exact = sum(all(m.how == "same bytes" for m in g.members) for g in found.groups)
    duplicates = sum(len(g.members) for g in found.groups)
    what = {"copies": "copy score", "cosine": "cosine", "exact": "exact only"}[found.mode]
    threshold = f"{what} {found.threshold:.3f}" if found.mode != "exact" else what
    if found.mode == "copies" and found.checked:
        threshold += f", {found.checked} pairs verified"
    if found.candidate_recall is not None:
        threshold += f", candidate recall {found.candidate_recall:.3f} against exact search"
    lines.append(
        f"{len(found.groups)} groups ({exact} exact, {len(found.groups) - exact} near), "
        f"{duplicates} duplicates; {threshold}; keep: {keep}"
    )
    return "\n".join(lines)


def link_text(member: Member, mode: str) -> str:
    """How a member is linked to its keeper, in the words every output uses (the text, the
    HTML sheet, the review page): one name and one value for the same pair."""
    if member.how == "same bytes":
        return "same bytes"
    name = {"copies": "copy score", "cosine": "cosine"}.get(mode, "score")
    link = f"{name} {member.score:.3f}"
    if member.how.startswith("verified"):  # "verified", "verified in a region"
        return f"{link}, {member.how}: {member.inliers} keypoints" if member.inliers else link
    if member.how.startswith("via #"):  # verified against the kept file, found through another
        checked = f"verified: {member.inliers} keypoints; " if member.inliers else ""
        return f"{checked}reached {member.how} ({name} {member.score:.3f} to it)"
    return link if member.how == "score" else f"{link}, {member.how}"


def plan_text(plan: ActionPlan, dry_run: bool) -> str:
    verbs = {
        "move": ("move", "moved"),
        "symlink": ("link", "linked"),
        "trash": ("trash", "trashed"),
        "delete": ("delete", "deleted"),
    }
    lines = []
    for a in plan.actions:
        verb = verbs[a.kind][0 if dry_run else 1]
        prefix = "would " if dry_run else ""
        lines.append(f"{prefix}{verb} {a.source}" + (f" -> {a.target}" if a.target else ""))
    lines += [f"left alone {path}: {why}" for path, why in plan.skipped]
    return "\n".join(lines)


def size_text(count: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def model_json(card: ModelCard, present: bool, path: Path | None) -> dict[str, Any]:
    return {
        "name": card.name,
        "weights": card.weights,
        "network": card.network,
        "input": card.size,
        "dim": card.dim,
        "params_millions": card.params_millions,
        "download_mb": card.download_mb or None,
        "present": present,
        "default": card.name == DEFAULT_MODEL,
        "path": str(path) if path else None,
        "note": card.note,
    }


def models_text(rows: list[dict[str, Any]], cache: Path) -> str:
    lines = [f"{'name':<16}{'input':>6}{'dim':>6}{'params':>9}{'file':>9}  {'here':<6}note"]
    for r in rows:
        here = "yes" if r["present"] else "no"
        name = r["name"] + (" *" if r["default"] else "")
        size = f"{r['input']:>6}{r['dim']:>6}{r['params_millions']:>8.1f}M"
        file = f"{r['download_mb']:>7.0f}MB" if r["download_mb"] else f"{'packaged':>9}"
        lines.append(f"{name:<16}{size}{file}  {here:<6}{r['note']}")
    lines.append(
        f"* default. Other weights are downloaded on first use into {cache} "
        "(or: imgsearch models download NAME)"
    )
    return "\n".join(lines)
