"""What every lightd command shares: plain help, the --config option, and how it fails."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import typer

__all__ = ["PLAIN", "ConfigOption", "fail"]

# Plain help (click's own layout): rich's boxes and markup make help text that a terminal
# without colours, a pager or a grep shows as noise, and rich markup in a note would be read.
PLAIN: dict[str, Any] = {"rich_markup_mode": None, "pretty_exceptions_enable": False}

ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="config.json path (default: $LIGHTD_CONFIG or ./config.json)"),
]


def fail(message: str) -> NoReturn:
    typer.echo(f"lightd: {message}", err=True)
    raise typer.Exit(2)
