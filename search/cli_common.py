"""What every command shares: error translation, the model options, option types, --home."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import click

from indexer.options import PRECISIONS, RUNTIMES, Compute, ModelOptions
from store import ImgsearchError, InvalidOption, resolve_home

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


class OneLineUsage(click.UsageError):
    """A usage error as one line (the command's --help has the rest), exit code 2."""

    def show(self, file: Any = None) -> None:
        where = f" (see `imgsearch {self.ctx.info_name} --help`)" if self.ctx else ""
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
    made = OneLineUsage(exc.format_message() if isinstance(exc, click.BadParameter)
                        else exc.message, exc.ctx)  # fmt: skip
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
    quiet = bool(click.get_current_context().find_root().meta.get("quiet"))
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


def _set_home(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:  # every context up to the root: a command's context copied its parent's obj
        home = resolve_home(value)
        here: click.Context | None = ctx
        while here is not None:
            here.obj = home
            here = here.parent


HOME_HELP = "Index directory (default: $IMGSEARCH_HOME, else the user data dir)."


def add_home_option(command: click.Command) -> None:
    """Let `--home DIR` come after the command name too (`imgsearch query --home DIR ...`)."""
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
            add_home_option(sub)
