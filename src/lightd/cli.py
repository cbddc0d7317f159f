"""The ``lightd`` command: ``serve`` runs the daemon, ``token`` manages the API token."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from lightd.config import (
    config_path,
    load_or_create,
    new_token,
    read_config,
    validate_token,
    write_config,
)
from lightd.errors import LightdError

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
token_app = typer.Typer(no_args_is_help=True, help="Show, regenerate or set the API token.")
app.add_typer(token_app, name="token")

ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="config.json path (default: $LIGHTD_CONFIG or ./config.json)"),
]


def _fail(message: str) -> None:
    typer.echo(f"lightd: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
) -> None:
    """Run the daemon in the foreground."""
    import uvicorn

    from lightd.api import create_app
    from lightd.bootstrap import build

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_or_create(config_path(config)).with_overrides(host, port)
        daemon = build(settings)
    except LightdError as exc:
        _fail(exc.message)
        return
    loop = "uvloop" if _has("uvloop") else "asyncio"
    http = "httptools" if _has("httptools") else "h11"
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(daemon),
            host=settings.host,
            port=settings.port,
            loop=loop,
            http=http,
            access_log=settings.access_log,
            log_level="info",
            server_header=False,
        )
    )
    server.run()
    if not server.started:
        raise typer.Exit(1)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@token_app.command("what")
def token_what(config: ConfigOption = None) -> None:
    """Print the current token."""
    try:
        typer.echo(load_or_create(config_path(config)).token)
    except LightdError as exc:
        _fail(exc.message)


@token_app.command("reset")
def token_reset(config: ConfigOption = None) -> None:
    """Replace the token with a fresh random one and print it."""
    _store_token(config, new_token())


@token_app.command("set")
def token_set(
    config: ConfigOption = None,
    token: Annotated[
        str | None, typer.Argument(help="the new token; read from stdin or a prompt when left out")
    ] = None,
) -> None:
    """Set the token (must start with lightd_ and be at least 20 characters)."""
    if token is None:
        if sys.stdin.isatty():
            token = typer.prompt("New token", hide_input=True, confirmation_prompt=True)
        else:
            token = sys.stdin.readline()
    try:
        _store_token(config, validate_token(token))
    except LightdError as exc:
        _fail(exc.message)


def _store_token(config: str | None, token: str) -> None:
    path = config_path(config)
    try:
        load_or_create(path)
        raw = read_config(path)
    except LightdError as exc:
        _fail(exc.message)
        return
    raw.setdefault("authorization", {})["token"] = token
    write_config(path, raw)
    typer.echo(token)
    typer.echo("A running lightd uses the new token after it restarts.", err=True)


def main() -> None:
    app()
