"""lightd: the daemon that owns this host's pool of network ports.

\b
Commands:
  lightd serve                   run the daemon in the foreground
  lightd config check            check the config file without starting anything
  lightd token what|reset|set    show, regenerate or set the API token
  lightd ports add|ls|claim      look at and change the running daemon's pool
  lightd --version               print the version

The commands that read the config take --config PATH (default: $LIGHTD_CONFIG, else
./config.json). Only serve and token create the config file; the others only read it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from lightd import __version__
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
from lightd.core.ranges import parse_port_spec
from lightd.errors import LightdError

if TYPE_CHECKING:  # the client (httpx) is imported by the commands that use it, not by serve
    from lightd.client import Client

T = TypeVar("T")

__all__ = ["app", "main"]

# Plain help (click's own layout): rich's boxes and markup make help text that a terminal
# without colours, a pager or a grep shows as noise, and rich markup in a note would be read.
PLAIN: dict[str, Any] = {"rich_markup_mode": None, "pretty_exceptions_enable": False}
app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, **PLAIN)
token_app = typer.Typer(no_args_is_help=True, help="Show, regenerate or set the API token.", **PLAIN)
app.add_typer(token_app, name="token")
config_app = typer.Typer(no_args_is_help=True, help="Check the config file.", **PLAIN)
app.add_typer(config_app, name="config")

ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="config.json path (default: $LIGHTD_CONFIG or ./config.json)"),
]


def _fail(message: str) -> NoReturn:
    typer.echo(f"lightd: {message}", err=True)
    raise typer.Exit(2)


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
        _fail(exc.message)
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
    set_token(raw, token)
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
    _check_note(note)
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
    _check_note(note)
    with _client(config, url, cacert, pin) as client:
        entries = _run(lambda: client.claim(count, ip, protocol, contiguous, note))
    typer.echo(_table(entries))


def _check_note(note: str | None) -> None:
    # A note is shown in tables and logs: an escape sequence or a newline in it could redraw
    # the operator's terminal or fake a row.
    if note is not None and not note.isprintable():
        _fail(f"--note must be visible characters and spaces, got {_safe(note)}")


def _safe(text: object) -> str:
    """``text`` with every character a terminal would act on written as an escape (\\x1b, \\n)."""
    shown = str(text)
    if shown.isprintable():
        return shown
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)


def _table(entries: list[dict[str, Any]]) -> str:
    header = ("IP", "PORT", "PROTO", "IN USE", "CONTAINER", "NOTE")
    # What the daemon sends is shown, never obeyed: notes come from any client of the API.
    rows = [
        (_safe(e["ip"]), str(e["port"]), _safe(e["protocol"]), "yes" if e["in_use"] else "no",
         _safe(e.get("container") or "-"), _safe(e.get("note") or ""))
        for e in entries
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in [header, *rows]]
    lines.append(f"{len(rows)} entries")
    return "\n".join(lines)


def main() -> None:
    app()
