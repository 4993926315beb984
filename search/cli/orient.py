"""`imgsearch orient`: report images that are not upright, and turn them upright safely."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import click

from indexer.errors import UnreadableImage
from indexer.options import ModelOptions
from search.actions.journal import journal_path
from search.cli.common import (
    FiniteFloat,
    current_settings,
    domain_errors,
    model_options,
    option_group,
)
from store import DEFAULT_WAIT, exclusive_writer


@dataclass(frozen=True)
class Report:
    show_all: bool
    min_confidence: float
    as_json: bool


report_options = option_group(
    "report",
    Report,
    click.option("--all", "show_all", is_flag=True, help="Also list upright images."),
    click.option(
        "--min-confidence",
        type=FiniteFloat(0, 1),
        default=0.5,
        show_default=True,
        help="Only report (and fix) predictions at least this sure.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print as JSON."),
)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@model_options
@report_options
@click.option(
    "--fix",
    is_flag=True,
    help="Turn the reported images upright (a dry run unless "
    "--yes; JPEGs by their EXIF orientation, without re-encoding).",
)
@click.option("--yes", is_flag=True, help="With --fix: really change the files (journalled).")
@click.pass_context
@domain_errors
def orient(
    ctx: click.Context,
    paths: tuple[str, ...],
    embedding: ModelOptions,
    report: Report,
    fix: bool,
    yes: bool,
) -> None:
    """Find images that are turned 90, 180 or 270 degrees, with the rotation model.

    Angles are the content's counter-clockwise turn; a fix turns it back. The model is the
    `rotnet` card unless --model names another 4-way rotation head.

    \b
    imgsearch orient ~/Pictures/scans
    imgsearch orient ./dataset --min-confidence 0.9 --fix          # dry run
    imgsearch orient ./dataset --min-confidence 0.9 --fix --yes    # journalled: imgsearch undo
    """
    from dataclasses import replace

    from indexer.orientation import ROTATION_MODEL, Orientation, image_files, predict
    from indexer.runtime import load_embedder
    from indexer.spec import resolve_model
    from search.actions.orient_fix import apply_fixes, plan_fixes

    spec = resolve_model(replace(embedding, model=embedding.model or ROTATION_MODEL), None)
    embedder = load_embedder(spec)
    files = list(image_files(paths))
    batch = spec.batch_size or embedder.default_batch
    shown: list[Orientation] = []
    for found in predict(files, embedder, batch):
        if isinstance(found, UnreadableImage):
            click.echo(f"imgsearch: skipped {found}", err=True)
        elif report.show_all or (found.angle and found.confidence >= report.min_confidence):
            shown.append(found)
    if report.as_json:
        click.echo(json.dumps([asdict(o) for o in shown]))
    else:
        for o in shown:
            click.echo(f"{o.angle:>3}°  {o.confidence:.3f}  {o.path}")
        click.echo(
            f"{sum(1 for o in shown if o.angle)} of {len(files)} images not upright", err=True
        )
    if not fix:
        return
    fixes = plan_fixes([o for o in shown if o.confidence >= report.min_confidence])
    if not yes:
        for f in fixes:
            click.echo(f"would turn {f.path} {f.angle}° clockwise ({f.method})", err=True)
        click.echo(f"dry run: {len(fixes)} files would change; add --yes to do it", err=True)
        return
    home = current_settings(ctx).home
    journal = journal_path(home, "orient")
    with exclusive_writer(home, wait=DEFAULT_WAIT):
        journal.parent.mkdir(parents=True, exist_ok=True)
        failures = apply_fixes(fixes, journal, home)
    for path, why in failures:
        click.echo(f"imgsearch: not fixed {path}: {why}", err=True)
    click.echo(f"fixed {len(fixes) - len(failures)} files", err=True)
    click.echo(f"journal: {journal} (imgsearch undo {journal})", err=True)
