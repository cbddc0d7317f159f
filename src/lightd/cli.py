"""lightd: the daemon that owns this host's pool of network ports.

\b
Commands:
  lightd serve                   run the daemon in the foreground
  lightd config check            check the config file without starting anything
  lightd token what|reset|set    show, regenerate or set the API token
  lightd ports add|ls|claim      look at and change the running daemon's pool
  lightd leases ls|renew|release|keep   look at and end the running daemon's leases
  lightd events                  follow the running daemon's changes as they happen
  lightd --version               print the version

The commands that read the config take --config PATH (default: $LIGHTD_CONFIG, else
./config.json). Only serve and token create the config file; the others only read it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from lightd import __version__
from lightd.cli_common import PLAIN, ConfigOption, fail
from lightd.cli_leases import events, leases_app
from lightd.cli_ports import ports_app
from lightd.config import (
    Settings,
    config_path,
    load,
    load_or_create,
    new_token,
    read_config,
    set_token,
    validate_token,
    write_config,
)
from lightd.errors import LightdError

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, **PLAIN)
token_app = typer.Typer(no_args_is_help=True, help="Show, regenerate or set the API token.", **PLAIN)
app.add_typer(token_app, name="token")
config_app = typer.Typer(no_args_is_help=True, help="Check the config file.", **PLAIN)
app.add_typer(config_app, name="config")
app.add_typer(ports_app, name="ports")
app.add_typer(leases_app, name="leases")
app.command("events")(events)


def _version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"lightd {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """The options before any command."""


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Check the config file as lightd serve would read it, without starting or creating anything.

    Prints ok and a summary (exit 0), or the one line lightd serve would stop with (exit 2)."""
    path = config_path(config)
    try:
        settings = load(path)
        _refusals(None, None)(settings)  # what serve refuses, the certificate and key included
    except LightdError as exc:
        fail(exc.message)
    typer.echo(f"{path}: ok")
    for name, text in _summary(settings):
        typer.echo(f"  {name:<9} {text}")
    if _readable_by_others(path):
        typer.echo(f"lightd: warning: {path} is readable by others; lightd serve sets it to 0600", err=True)


def _summary(settings: Settings) -> list[tuple[str, str]]:
    api, pool, storage = settings.api, settings.pool, settings.storage
    on = {True: "on", False: "off"}
    scheme = "http" if api.tls is None else "https"
    host = f"[{api.host}]" if ":" in api.host else api.host
    seeded = sum(len(item.ports) * len(item.protocols) for item in pool.initial_ports)
    database = (f"{storage.database_path} exists" if storage.database_path.exists()
                else f"{storage.database_path} is created at start with {seeded} initial ports")
    repair = (f"every {settings.repair.interval:g} s" if settings.repair.interval else "off") + (
        f", idle after {settings.repair.idle_passes} passes")
    return [
        ("api", f"{scheme}://{host}:{api.port}" + (f" (cert {api.tls.cert})" if api.tls else "")),
        ("database", database),
        ("writer", f"{storage.writer}, write timeout {storage.write_timeout:g} s"),
        ("pool", f"host_check {on[pool.host_check]}, require_local_ip {on[pool.require_local_ip]}, "
                 f"reserve_ports {on[pool.reserve_ports]}"),
        ("firewall", f"{settings.firewall.enabled}, chain {settings.firewall.chain}"
                     + (f", netns {settings.firewall.netns}" if settings.firewall.netns else "")),
        ("runtime", f"{settings.runtime.kind}, socket {settings.runtime.socket}"),
        ("repair", repair),
        ("metrics", on[settings.metrics.enabled]),
    ]


def _readable_by_others(path: Path) -> bool:
    import stat

    return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
) -> None:
    """Run the daemon in the foreground."""
    import uvicorn

    from lightd.adapters.locks import hold_data_folder
    from lightd.api import create_app
    from lightd.api.server import (
        StreamingServer,
        bind_listener,
        connection_budget,
        protocol_class,
        raise_open_files_limit,
    )
    from lightd.bootstrap import build
    from lightd.tls import pem_fingerprint, server_context

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The order is the point: nothing is read or changed before this process owns the data
    # folder, and nothing is loaded or reconciled before it holds its address, so a start that
    # cannot serve leaves the pool, the firewall and the engine as they were.
    try:
        settings = load_or_create(config_path(config), _refusals(host, port)).with_overrides(host, port)
        api = settings.api
        tls = None if api.tls is None else server_context(api.tls.cert, api.tls.key, str(settings.path))
        data_lock = hold_data_folder(settings.storage.base_path)
    except LightdError as exc:
        fail(exc.message)
    try:
        try:
            sockets = bind_listener(api.host, api.port)
        except OSError as exc:
            fail(str(exc.strerror or exc))
        try:
            daemon = build(settings)
        except LightdError as exc:
            for sock in sockets:
                sock.close()
            fail(exc.message)
        http = protocol_class(api.header_timeout, api.body_timeout,
                              connection_budget(api.max_connections, raise_open_files_limit()),
                              ssl_context=tls, send_timeout=settings.events.client_timeout)
        server = StreamingServer(daemon.events.close,
            uvicorn.Config(
                create_app(daemon),
                host=api.host,
                port=api.port,
                loop="uvloop" if _has("uvloop") else "asyncio",
                http=http,
                ws="none",
                lifespan="on",
                access_log=api.access_log,
                log_level="info",
                server_header=False,
            )
        )
        log = logging.getLogger("lightd")
        for sock in sockets:
            log.info("listening on %s", _url(sock, "http" if tls is None else "https"))
        if api.tls is not None:
            log.info("TLS certificate %s (%s), for clients' --pin",
                     pem_fingerprint(api.tls.cert), api.tls.cert)
        if daemon.api_security["warning"]:
            log.warning("%s", daemon.api_security["warning"])
        server.run(sockets=sockets)
        if not server.started:
            raise typer.Exit(1)
    finally:
        data_lock.release()


def _refusals(host: str | None, port: int | None) -> Callable[[Settings], None]:
    """Everything serve refuses about its settings, run before load_or_create writes anything
    (a fresh token, a tightened mode), so a refused start leaves every file as it was."""
    from lightd.bootstrap import preflight
    from lightd.tls import server_context

    def check(settings: Settings) -> None:
        settings = settings.with_overrides(host, port)
        preflight(settings)
        if settings.api.tls is not None:
            server_context(settings.api.tls.cert, settings.api.tls.key, str(settings.path))

    return check


def _url(sock: Any, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@token_app.command("what")
def token_what(config: ConfigOption = None) -> None:
    """Print the current token."""
    try:
        typer.echo(load_or_create(config_path(config)).token)
    except LightdError as exc:
        fail(exc.message)


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
        fail(exc.message)


def _store_token(config: str | None, token: str) -> None:
    path = config_path(config)
    try:
        if not path.exists():
            load_or_create(path)  # a fresh config on the embedded defaults
        # Read as it is, without checking the old token: this is how a bad one is repaired.
        raw = read_config(path)
    except LightdError as exc:
        fail(exc.message)
    set_token(raw, token)
    write_config(path, raw)
    typer.echo(token)
    typer.echo("A running lightd uses the new token after it restarts.", err=True)


def main() -> None:
    app()
