"""Stage 3 of copy detection: disjoint groups around keepers.

Nodes are contents (byte-identical files are one node). Accepted copy pairs link contents; each
connected set is split around keepers so that chains cannot glue far images together: the best
content of the set (by the keeper policy) keeps every content that matches *it* directly. A
content reached only through a member's verified pair joins when both steps are one whole
picture (each pair's keypoints cover most of both images: a q10 copy of a blurred copy), or
else only when it verifies against the kept file itself (`confirm`: a corner crop of a centre
crop): two pictures pasted on one background verify against each other through the
background, and a chain through that part would put two different photos in one group. The
rest is grouped again the same way. Every file is in at most one group, and the kept file is never a
member.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from search.records import Chooser, DuplicateGroup, Edge, Member, Verification
from store import ImageRecord

# Verifies two files against each other (as `dupes` checks a pair); None: cannot be read.
Confirm = Callable[[ImageRecord, ImageRecord], Verification | None]


def build_groups(
    records: Iterable[ImageRecord],
    edges: Sequence[Edge],
    ignored: set[tuple[str, str]],
    choose: Chooser,
    confirm: Confirm | None = None,
) -> list[DuplicateGroup]:
    """Disjoint groups: exact ones (one content, several files) and near ones. `confirm`
    verifies a pair directly (None: what a chain reaches is left for a group of its own)."""
    by_hash: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_hash[record.content_hash].append(record)
    by_id = {r.id: r for files in by_hash.values() for r in files}
    links: dict[str, dict[str, Edge]] = defaultdict(dict)
    for edge in edges:
        if edge.a not in by_id or edge.b not in by_id:
            continue
        ha, hb = by_id[edge.a].content_hash, by_id[edge.b].content_hash
        if ha == hb or (min(ha, hb), max(ha, hb)) in ignored:
            continue
        best = links[ha].get(hb)
        if best is None or edge.score > best.score:
            links[ha][hb] = links[hb][ha] = edge
    groups = [
        _exact(files, choose) for h, files in by_hash.items() if len(files) > 1 and not links.get(h)
    ]
    star = _Star(links, by_hash, ignored, confirm)
    for component in _components(links):
        groups += _split(component, star, choose)
    # An order that a change of keeper leaves as it is (a review page walks it).
    groups.sort(key=lambda g: (g.kind != "exact", -len(g.members), min(r.path for r in g.files)))
    return groups


def _exact(files: list[ImageRecord], choose: Chooser) -> DuplicateGroup:
    keep, reason = choose(files, [])
    members = [
        Member(r, 1.0, 1.0, "same bytes")
        for r in sorted(files, key=lambda r: r.path)
        if r.id != keep.id
    ]
    return DuplicateGroup("exact", keep, members, reason)


def _components(links: dict[str, dict[str, Edge]]) -> list[set[str]]:
    seen: set[str] = set()
    found = []
    for start in links:
        if start in seen:
            continue
        component, stack = set(), [start]
        while stack:
            node = stack.pop()
            if node in component:
                continue
            component.add(node)
            stack.extend(n for n in links[node] if n not in component)
        seen |= component
        found.append(component)
    return found


WHOLE = 0.4  # a verified pair whose keypoints cover this much of both images: one picture


def whole(edge: Edge) -> bool:
    """Whether a pair is one whole picture twice (a copy by its score, or verified over most
    of both frames), not two pictures that share a part (a background, a pasted photo)."""
    check = edge.check
    return check is None or min(check.coverage_a, check.coverage_b) >= WHOLE


@dataclass(frozen=True)
class _Star:
    """What a group is built from: the links between contents, their files, the pairs people
    marked as not duplicates, and the direct check of a pair a chain reached."""

    links: dict[str, dict[str, Edge]]
    by_hash: dict[str, list[ImageRecord]]
    ignored: set[tuple[str, str]]
    confirm: Confirm | None

    def direct(self, keep: ImageRecord, other: str, via: Edge) -> Edge | None:
        """The pair of the kept file and content `other`, reached through `via`, when a check
        against the kept file itself verifies it."""
        pair = (min(keep.content_hash, other), max(keep.content_hash, other))
        if self.confirm is None or pair in self.ignored:
            return None
        record = self.by_hash[other][0]
        check = self.confirm(keep, record)
        if check is None or not check.verified:
            return None
        return Edge(keep.id, record.id, via.score, via.cosine, via.angle, check)


def _split(component: set[str], star: _Star, choose: Chooser) -> list[DuplicateGroup]:
    links, by_hash = star.links, star.by_hash
    groups = []
    remaining = set(component)
    while len(remaining) > 1:
        inside = [e for h in remaining for o, e in links[h].items() if o in remaining and h < o]
        keep, reason = choose([r for h in remaining for r in by_hash[h]], inside)
        keeper = keep.content_hash
        remaining.discard(keeper)
        reached: dict[str, tuple[Edge, str]] = {
            h: (e, e.check.how if e.check is not None else "score")
            for h, e in links[keeper].items()
            if h in remaining
        }
        frontier = list(reached)
        tried: set[str] = set()
        while frontier:  # verified pairs lead on: whole pictures, or checked against the keeper
            node = frontier.pop()
            for other, edge in links[node].items():
                if other in remaining and other not in reached and other not in tried:
                    if edge.check is None:
                        continue
                    via = f"via #{by_hash[node][0].id}"
                    if whole(reached[node][0]) and whole(edge):
                        reached[other] = (edge, via)
                        frontier.append(other)
                        continue
                    tried.add(other)
                    direct = star.direct(keep, other, edge)
                    if direct is not None:
                        reached[other] = (direct, via)
                        frontier.append(other)
        if not reached and len(by_hash[keeper]) < 2:
            continue  # matches nothing left: it stays alone
        members = [Member(r, 1.0, 1.0, "same bytes") for r in by_hash[keeper] if r.id != keep.id]
        for h, (edge, how) in reached.items():
            inliers = edge.check.inliers if edge.check is not None else None
            members += [Member(r, edge.score, edge.cosine, how, inliers) for r in by_hash[h]]
        members.sort(key=lambda m: (m.how != "same bytes", -m.score, m.record.path))
        own = tuple(
            e
            for h in [keeper, *reached]
            for o, e in links[h].items()
            if o in reached or o == keeper
        ) + tuple(e for e, _ in reached.values())  # with the checks made against the keeper
        kind: Literal["exact", "near"] = "near" if reached else "exact"
        groups.append(DuplicateGroup(kind, keep, members, reason, tuple(dict.fromkeys(own))))
        remaining -= set(reached)
    for h in remaining:  # a lone content of several files is still an exact group
        if len(by_hash[h]) > 1:
            groups.append(_exact(by_hash[h], choose))
    return groups
