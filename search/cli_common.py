"""What every command shares: error translation, the model options, the batch-size type."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import click

from indexer.errors import IndexerError
from indexer.options import PRECISIONS, EmbedOptions, Runtime
from search.actions import ActionError
from store import StoreError

F = TypeVar("F", bound=Callable[..., Any])


class DomainError(click.ClickException):
    """One line on stderr, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"imgsearch: {self.format_message()}", err=True)


def domain_errors(fn: F) -> F:
    """Translate every library error into one line and exit code 1, in one place."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StoreError, IndexerError, ActionError) as exc:
            raise DomainError(str(exc)) from exc

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


class ByteSize(click.ParamType[int]):
    """A size in bytes: 8G, 512M, 100k, or a plain number."""

    name = "SIZE"
    _UNITS: ClassVar[dict[str, int]] = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
                                        "t": 1 << 40}  # fmt: skip

    def convert(self, value: Any, param: Any, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().removesuffix("b").removesuffix("i")
        unit = text[-1:] if text[-1:] in self._UNITS else ""
        try:
            number = float(text[: len(text) - len(unit)])
        except ValueError:
            number = 0
        if number <= 0:
            self.fail(f"{value!r} is not a size such as 8G, 512M or 1000000", param, ctx)
        return int(number * self._UNITS[unit])


def option_group(
    target: str, build: Callable[..., Any], *options: Callable[[Any], Any]
) -> Callable[[F], F]:
    """Stack `options` on a command, which receives one argument `target` = build(**values).

    The options' destination names must be `build`'s parameter names.
    """
    names = list(inspect.signature(build).parameters)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return fn(*args, **{target: build(**values)}, **kwargs)

        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorate


def _embed_options(model: str | None, weights: Path | None, device: str, precision: str,
                   batch_size: int | None) -> EmbedOptions:  # fmt: skip
    return EmbedOptions(model, weights, Runtime(device, precision), batch_size)


def model_options(*, default_model: str | None) -> Callable[[F], F]:
    """--model --weights --device --precision --batch-size, shared by model-using commands.

    The command receives them as one `embedding: EmbedOptions` argument.
    """
    return option_group(
        "embedding",
        _embed_options,
        click.option("--model", default=default_model, show_default=default_model is not None,
                     help="Backbone: a short name or a Birder network name"
                          + ("." if default_model else " (default: the index's own).")),
        click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
                     help="A local checkpoint file for --model."),
        click.option("--device", default="auto", show_default=True,
                     help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
                     show_default=True,
                     help="auto: bf16 on CUDA and on CPUs with native bf16, else fp32."),
        click.option("--batch-size", type=BatchSize(), default="auto", show_default=True,
                     help="Images per forward pass, or auto: 16 on CPU, the largest that "
                          "fits on a GPU (probed)."),
    )  # fmt: skip
