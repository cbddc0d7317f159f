"""The ``lightd`` command: ``serve`` runs the daemon, ``token`` manages the API token."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from lightd.config import (
    config_path,
    load_or_create,
    new_token,
    read_config,
    validate_token,
    write_config,
)
from lightd.core.ranges import parse_port_spec
from lightd.errors import LightdError

if TYPE_CHECKING:  # the client (httpx) is imported by the commands that use it, not by serve
    from lightd.client import Client

T = TypeVar("T")

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
token_app = typer.Typer(no_args_is_help=True, help="Show, regenerate or set the API token.")
app.add_typer(token_app, name="token")

ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="config.json path (default: $LIGHTD_CONFIG or ./config.json)"),
]


def _fail(message: str) -> NoReturn:
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

    from lightd.adapters.locks import hold_data_folder
    from lightd.api import create_app
    from lightd.api.server import (
        bind_listener,
        connection_budget,
        protocol_class,
        raise_open_files_limit,
    )
    from lightd.bootstrap import build, preflight
    from lightd.tls import pem_fingerprint, server_context

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The order is the point: nothing is read or changed before this process owns the data
    # folder, and nothing is loaded or reconciled before it holds its address, so a start that
    # cannot serve leaves the pool, the firewall and the engine as they were.
    try:
        settings = load_or_create(config_path(config)).with_overrides(host, port)
        preflight(settings)
        api = settings.api
        tls = None if api.tls is None else server_context(api.tls.cert, api.tls.key, str(settings.path))
        data_lock = hold_data_folder(settings.storage.base_path)
    except LightdError as exc:
        _fail(exc.message)
    try:
        try:
            sockets = bind_listener(api.host, api.port)
        except OSError as exc:
            _fail(str(exc.strerror or exc))
        try:
            daemon = build(settings)
        except LightdError as exc:
            for sock in sockets:
                sock.close()
            _fail(exc.message)
        http = protocol_class(api.header_timeout, api.body_timeout,
                              connection_budget(api.max_connections, raise_open_files_limit()),
                              ssl_context=tls)
        server = uvicorn.Server(
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
        if not path.exists():
            load_or_create(path)  # a fresh config on the embedded defaults
        # Read as it is, without checking the old token: this is how a bad one is repaired.
        raw = read_config(path)
    except LightdError as exc:
        _fail(exc.message)
    raw.setdefault("authorization", {})["token"] = token
    write_config(path, raw)
    typer.echo(token)
    typer.echo("A running lightd uses the new token after it restarts.", err=True)


# -- operators' commands, over the running daemon's HTTP API ------------------------------------

ports_app = typer.Typer(no_args_is_help=True, help="Look at and change the pool of the running daemon.")
app.add_typer(ports_app, name="ports")

UrlOption = Annotated[
    str | None, typer.Option("--url", help="lightd's address (default: from the config file)")
]
# Without either, https is verified against the system's CAs, or, for the daemon of the config
# file (no --url), against the certificate its api.tls names (README, TLS).
CaCertOption = Annotated[
    str | None, typer.Option("--cacert", help="verify https against the CAs in this PEM file")
]
PinOption = Annotated[
    list[str] | None,
    typer.Option("--pin", help="trust exactly this server certificate: sha256:AB:CD:... (repeatable)"),
]
CHUNK = 4096


def _client(config: str | None, url: str | None, cacert: str | None = None,
            pin: list[str] | None = None) -> Client:
    import os

    from lightd.client import Client

    token = os.environ.get("LIGHTD_TOKEN")
    try:
        if token and url:
            return Client(url, token, cacert=cacert, pin=pin)
        return Client.from_config(config_path(config), url=url, cacert=cacert, pin=pin)
    except LightdError as exc:
        _fail(exc.message)


def _run(call: Callable[[], T]) -> T:
    from lightd.client import ClientError

    try:
        return call()
    except ClientError as exc:
        _fail(exc.message)


@ports_app.command("add")
def ports_add(
    ip: Annotated[str, typer.Argument(help="0.0.0.0, :: or an address of this host")],
    ports: Annotated[list[str], typer.Argument(help="ports and ranges: 25565 27015-27030 ...")],
    protocol: Annotated[str, typer.Option("--protocol", "-p", help="tcp, udp or both")] = "tcp",
    note: Annotated[str | None, typer.Option(help="a note kept with each entry")] = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    cacert: CaCertOption = None,
    pin: PinOption = None,
) -> None:
    """Add ports and ranges to the pool; existing entries are left as they are."""
    try:
        numbers = parse_port_spec(list(ports))  # text, so the one strict digit rule applies
    except LightdError as exc:
        _fail(exc.message)
    chunks = [numbers[i:i + CHUNK] for i in range(0, len(numbers), CHUNK)]
    added = skipped = 0
    # One call per chunk of 4096 numbers, so a big range shows progress; each call is atomic.
    with (
        _client(config, url, cacert, pin) as client,
        typer.progressbar(chunks, label="adding", hidden=len(chunks) < 2, file=sys.stderr) as bar,
    ):
        for chunk in bar:
            result = _run(partial(client.add_range, ip, chunk, protocol, note))
            added += result["added_count"]
            skipped += result["skipped_count"]
    typer.echo(f"added {added} entries, {skipped} already in the pool")


@ports_app.command("ls")
def ports_ls(
    free: Annotated[bool, typer.Option("--free", help="only entries not in use")] = False,
    used: Annotated[bool, typer.Option("--used", help="only entries in use")] = False,
    ip: Annotated[str | None, typer.Option(help="only this ip")] = None,
    protocol: Annotated[str | None, typer.Option("--protocol", "-p", help="tcp or udp")] = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    cacert: CaCertOption = None,
    pin: PinOption = None,
) -> None:
    """List the pool as a table."""
    if free and used:
        _fail("--free and --used exclude each other")
    in_use = True if used else False if free else None
    with _client(config, url, cacert, pin) as client:
        entries = _run(lambda: client.list_ports(ip=ip, protocol=protocol, in_use=in_use))
    typer.echo(_table(entries))


@ports_app.command("claim")
def ports_claim(
    count: Annotated[int, typer.Option("--count", "-n", help="how many port numbers")] = 1,
    protocol: Annotated[str, typer.Option("--protocol", "-p", help="tcp, udp or both")] = "tcp",
    ip: Annotated[str | None, typer.Option(help="only on this ip")] = None,
    contiguous: Annotated[bool, typer.Option(help="consecutive numbers on one ip")] = False,
    note: Annotated[str | None, typer.Option(help="a note kept with each entry")] = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    cacert: CaCertOption = None,
    pin: PinOption = None,
) -> None:
    """Pick available ports at random and mark them in use, atomically."""
    with _client(config, url, cacert, pin) as client:
        entries = _run(lambda: client.claim(count, ip, protocol, contiguous, note))
    typer.echo(_table(entries))


def _table(entries: list[dict[str, Any]]) -> str:
    header = ("IP", "PORT", "PROTO", "IN USE", "CONTAINER", "NOTE")
    rows = [
        (e["ip"], str(e["port"]), e["protocol"], "yes" if e["in_use"] else "no",
         e.get("container") or "-", e.get("note") or "")
        for e in entries
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in [header, *rows]]
    lines.append(f"{len(rows)} entries")
    return "\n".join(lines)


def main() -> None:
    app()
