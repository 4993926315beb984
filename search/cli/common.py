"""What every command shares: the settings on the context, error translation, the model and
index-kind options, option types, --home, -v and -q."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import click

from indexer.options import PRECISIONS, RUNTIMES, Compute, ModelOptions
from store import INDEX_KINDS, ImgsearchError, InvalidOption, resolve_home

F = TypeVar("F", bound=Callable[..., Any])
# Library fields that are command-line options of the same name (`size` -> `--size`).
FLAGS = frozenset(
    {
        "size",
        "max_pixels",
        "batch_size",
        "device",
        "precision",
        "runtime",
        "index_type",
        "threshold",
        "keep",
        "k",
        "min_score",
        "model",
        "weights",
        "workers",
        "home",
        "max_upload",
        "tag",
    }
)


@dataclass(frozen=True)
class Settings:
    """What the group's options resolve to: every command's click context object."""

    home: Path
    quiet: bool = False
    verbose: bool = False

    def with_home(self, home: str | None) -> Settings:
        return replace(self, home=resolve_home(home))


pass_settings = click.make_pass_decorator(Settings)


def _log_level(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """-v and -q, before or after the command's name: the last one given wins."""
    if not value:
        return
    quiet = param.name == "quiet"
    settings = replace(current_settings(ctx), quiet=quiet, verbose=not quiet)
    _set_settings(ctx, settings)
    configure_logging(settings)


def current_settings(ctx: click.Context | None = None) -> Settings:
    """The settings of `ctx` (default: the current context); the defaults before any is set."""
    found = (ctx or click.get_current_context()).find_object(Settings)
    return found if found is not None else Settings(resolve_home(None))


def _set_settings(ctx: click.Context, settings: Settings) -> None:
    # Every context up to the root: a command's context copied its parent's object.
    here: click.Context | None = ctx
    while here is not None:
        here.obj = settings
        here = here.parent


def configure_logging(settings: Settings) -> None:
    level = (
        logging.ERROR if settings.quiet else logging.INFO if settings.verbose else logging.WARNING
    )
    logging.basicConfig(stream=sys.stderr, level=level, format="imgsearch: %(message)s", force=True)
    for noisy in ("birder", "faiss", "faiss.loader", "httpx", "PIL", "ray"):
        # Their INFO lines (FAISS's "could not load swigfaiss_avx512" probing) are not ours.
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def verbosity_options() -> list[click.Option]:
    """-v/--verbose and -q/--quiet, for the group and (add_common_options) every command."""
    return [
        click.Option(
            [flag, f"--{name}"], is_flag=True, expose_value=False, callback=_log_level, help=text
        )
        for name, flag, text in (
            ("verbose", "-v", "More detail on stderr."),
            ("quiet", "-q", "Only errors on stderr."),
        )
    ]


class OneLineUsage(click.UsageError):
    """A usage error as one line (the command's --help has the rest), exit code 2."""

    def show(self, file: Any = None) -> None:
        # The command as typed after the program's name (`models download`), whatever the
        # program is called here.
        typed = " ".join(["imgsearch", *self.ctx.command_path.split()[1:]]) if self.ctx else ""
        where = f" (see `{typed} --help`)" if self.ctx else ""
        if self.ctx is not None and self.ctx.parent is None:
            where = " (see `imgsearch --help`)"
        click.echo(f"imgsearch: {self.format_message()}{where}", err=True)


class OneLineGroup(click.Group):
    """A group whose usage errors, its own and its commands', are one line on stderr."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OneLineUsage:
            raise
        except click.UsageError as exc:
            raise _one_line(exc) from exc


def _one_line(exc: click.UsageError) -> OneLineUsage:
    made = OneLineUsage(
        exc.format_message() if isinstance(exc, click.BadParameter) else exc.message, exc.ctx
    )
    return made


class DomainError(click.ClickException):
    """One line on stderr, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"imgsearch: {self.format_message()}", err=True)


class BadValue(DomainError):
    """A value the command cannot use: one line on stderr, exit code 2 (a usage error)."""

    exit_code = 2


def message_of(exc: ImgsearchError) -> str:
    """The library's error in command-line words: the field it is about as its flag."""
    text = " ".join(str(exc).split())  # one line, whatever the library wrote
    if exc.field not in FLAGS:
        return text
    flag = "--" + exc.field.replace("_", "-")
    # A message that starts with the value ("50: needs a multiple of 16") reads "--size 50: ...".
    head, colon, _ = text.partition(": ")
    return f"{flag} {text}" if colon and " " not in head else f"{flag}: {text}"


def domain_errors(fn: F) -> F:
    """Translate every library error into one line and an exit code, in one place."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ImgsearchError as exc:
            error = BadValue if isinstance(exc, InvalidOption) else DomainError
            raise error(message_of(exc)) from exc
        except OSError as exc:  # an output file that cannot be written, a path too long, ...
            where = f"{exc.filename}: " if exc.filename else ""
            raise DomainError(f"{where}{exc.strerror or exc}") from exc

    return wrapper  # type: ignore[return-value]


class BatchSize(click.ParamType[int | None]):
    """A positive integer, or `auto` (None)."""

    name = "N|auto"

    def convert(self, value: Any, param: Any, ctx: click.Context | None) -> int | None:
        if value is None or value == "auto":
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            self.fail(f"{value!r} is not a positive integer or 'auto'", param, ctx)
        return number


class FiniteFloat(click.ParamType[float]):
    """A number in [low, high]; nan and infinities are refused (click's FloatRange lets nan in)."""

    name = "FLOAT"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: Any, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{value!r} is not a number from {self.low} to {self.high}", param, ctx)
        return number


class ByteSize(click.ParamType[int]):
    """A size in bytes: 8G, 512M, 100k, or a plain number."""

    name = "SIZE"
    _UNITS: ClassVar[dict[str, int]] = {
        "": 1,
        "k": 1 << 10,
        "m": 1 << 20,
        "g": 1 << 30,
        "t": 1 << 40,
    }

    def convert(self, value: Any, param: Any, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().removesuffix("b").removesuffix("i")
        unit = text[-1:] if text[-1:] in self._UNITS else ""
        try:
            number = float(text[: len(text) - len(unit)])
        except ValueError:
            number = 0
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} is not a size such as 8G, 512M or 1000000", param, ctx)
        return int(number * self._UNITS[unit])


IMAGE_ID = click.IntRange(1, 2**63 - 1)  # SQLite's integer keys


def option_group(
    target: str, build: Callable[..., Any], *options: Callable[[Any], Any]
) -> Callable[[F], F]:
    """Stack `options` on a command, which receives one argument `target` = build(**values).

    The options' destination names must be `build`'s parameter names. A library error raised
    while building (a bad value) is translated like the command's own.
    """
    names = list(inspect.signature(build).parameters)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            built = domain_errors(build)(**values)
            return fn(*args, **{target: built}, **kwargs)

        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorate


def _model_options(
    model: str | None,
    weights: Path | None,
    device: str,
    precision: str,
    runtime: str,
    batch_size: int | None,
) -> ModelOptions:
    quiet = current_settings().quiet
    return ModelOptions(
        model,
        weights,
        None,
        Compute(device, precision, runtime),
        batch_size,
        show_download=not quiet,
    )


def model_options(fn: F) -> F:
    """--model --weights --device --precision --runtime --batch-size, shared by every command
    that runs a backbone. The command receives them as one `embedding: ModelOptions`."""
    return option_group(
        "embedding",
        _model_options,
        click.option(
            "--model",
            default=None,
            help="Backbone: a short name (`imgsearch models`) or a Birder network name "
            "[default: the index's own; effnet-lite0 for a new index].",
        ),
        click.option(
            "--weights",
            type=click.Path(dir_okay=False, path_type=Path),
            help="A local checkpoint file for --model.",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps.",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default="auto",
            show_default=True,
            help="auto: bf16 on CUDA, fp32 on a CPU.",
        ),
        click.option(
            "--runtime",
            type=click.Choice(RUNTIMES),
            default="auto",
            show_default=True,
            help="auto: ONNX Runtime on a CPU (exported once, cached), torch on a GPU.",
        ),
        click.option(
            "--batch-size",
            type=BatchSize(),
            default="auto",
            show_default=True,
            help="Images per forward pass, or auto: 16 on CPU, the largest that "
            "fits on a GPU (probed).",
        ),
    )(fn)


@dataclass(frozen=True)
class IndexKind:
    """--index-type and --max-index-memory (`index` for a new index, `reindex`)."""

    index_type: str | None
    max_index_memory: int | None


def index_kind_options(fn: F) -> F:
    """--index-type --max-index-memory; the command receives them as one `kind: IndexKind`."""
    return option_group(
        "kind",
        IndexKind,
        click.option(
            "--index-type",
            type=click.Choice(["auto", *INDEX_KINDS]),
            default=None,
            help="FAISS index: auto (flat below 50,000 images, then IVF, or IVF-PQ past "
            "--max-index-memory), flat, hnsw, ivf or ivfpq [default: the recorded choice; "
            "auto for a new index].",
        ),
        click.option(
            "--max-index-memory",
            type=ByteSize(),
            default=None,
            help="Memory `auto` may give the vectors [default: as recorded, else 8G].",
        ),
    )(fn)


def _set_home(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        _set_settings(ctx, replace(current_settings(ctx), home=resolve_home(value)))


HOME_HELP = "Index directory (default: $IMGSEARCH_HOME, else the user data dir)."


def add_common_options(command: click.Command) -> None:
    """Let `--home DIR`, `-v` and `-q` come after the command name too (`imgsearch query -q`)."""
    command.params.extend(verbosity_options())
    command.params.append(
        click.Option(
            ["--home"],
            type=click.Path(file_okay=False),
            expose_value=False,
            callback=_set_home,
            is_eager=True,
            help=HOME_HELP,
        )
    )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_common_options(sub)
