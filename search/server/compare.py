"""The review's side-by-side view of two copies: their file facts aligned, and why they are
copies (the keypoints in agreement and where one frame lands in the other), from
search/copies/explain.py."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, HTTPException

from search import render
from search.copies.explain import explain
from search.keeper.look import look_at
from search.server.state import ServerState, check_servable
from store import ImageRecord


def add_compare(app: FastAPI, state: ServerState) -> None:
    @app.get("/api/compare")
    def compare(a: int, b: int) -> dict[str, Any]:
        """Two indexed images side by side: each one's facts (size, bytes, format, JPEG
        quality, capture date, folder) and how a maps into b, as `dupes` checks a pair:
        keypoints in agreement and a's frame (or the region of either that matched) in b,
        all as fractions of each upright image."""
        with state.current() as store:
            records = store.catalog.records([a, b])
        for image_id in (a, b):
            if image_id not in records:
                raise HTTPException(404, f"no image with id {image_id} in the index")
            check_servable(records[image_id])
            if records[image_id].width * records[image_id].height > state.max_pixels:
                raise HTTPException(415, f"{records[image_id].path}: too many pixels to compare")
        first, second = records[a], records[b]
        with (
            state.decodes,
            state.budget.taking(first.width * first.height + second.width * second.height),
        ):
            try:
                why = explain(first, second)
                facts = [_facts(first), _facts(second)]
            except Exception as exc:  # PIL and OpenCV raise many kinds for a broken file
                raise HTTPException(422, f"{first.path} or {second.path}: cannot be read") from exc
        return {
            "a": facts[0],
            "b": facts[1],
            "verified": why.check.verified,
            "inliers": why.check.inliers,
            "coverage": round(max(why.check.coverage_a, why.check.coverage_b), 4),
            "scale": round(why.check.scale, 4),
            "mirrored": why.check.mirrored,
            "region": {"of": why.region_of, "box": why.region} if why.region_of else None,
            "points_a": why.points_a,
            "points_b": why.points_b,
            "frame_in_b": why.frame_in_b,
        }


def _facts(record: ImageRecord) -> dict[str, Any]:
    look = look_at(record)
    return {
        **render.record_json(record),
        "folder": os.path.dirname(record.path),
        "format": look.format if look else "?",
        "lossless": look.lossless if look else None,
        "jpeg_quality": look.jpeg_quality if look else None,
        "taken": look.taken if look else None,
        "camera": look.camera if look else None,
    }
