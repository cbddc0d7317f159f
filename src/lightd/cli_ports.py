"""``lightd ports add|ls|claim``: the operators' commands, over the running daemon's HTTP API.

The client (httpx) is imported by the commands that use it, so ``lightd serve`` never loads it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from lightd.cli_common import ConfigOption, fail
from lightd.config import config_path
from lightd.core.ranges import parse_port_spec
from lightd.errors import LightdError

if TYPE_CHECKING:
    from lightd.client import Client

T = TypeVar("T")

__all__ = ["ports_app"]

ports_app = typer.Typer(no_args_is_help=True, help="Look at and change the pool of the running daemon.")

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


def _client(
    config: str | None, url: str | None, cacert: str | None = None, pin: list[str] | None = None
) -> Client:
    import os

    from lightd.client import Client

    token = os.environ.get("LIGHTD_TOKEN")
    try:
        if token and url:
            return Client(url, token, cacert=cacert, pin=pin)
        return Client.from_config(config_path(config), url=url, cacert=cacert, pin=pin)
    except LightdError as exc:
        fail(exc.message)


def _run(call: Callable[[], T]) -> T:
    from lightd.client import ClientError

    try:
        return call()
    except ClientError as exc:
        fail(exc.message)


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
        fail(exc.message)
    _check_note(note)
    chunks = [numbers[i : i + CHUNK] for i in range(0, len(numbers), CHUNK)]
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
        fail("--free and --used exclude each other")
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
    ttl: Annotated[
        int | None, typer.Option("--ttl", help="hold them by a lease that frees them after TTL seconds")
    ] = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    cacert: CaCertOption = None,
    pin: PinOption = None,
) -> None:
    """Pick available ports at random and mark them in use, atomically."""
    _check_note(note)
    with _client(config, url, cacert, pin) as client:
        if ttl is None:
            entries = _run(lambda: client.claim(count, ip, protocol, contiguous, note))
        else:
            answer = _run(lambda: client.claim_lease(count, ip, protocol, contiguous, note, ttl=ttl))
            entries, lease = answer["ports"], answer["lease"]
    typer.echo(_table(entries))
    if ttl is not None:
        typer.echo(f"lease {_safe(lease['id'])} expires at {_safe(lease['expires_at'])}")


def _check_note(note: str | None) -> None:
    # A note is shown in tables and logs: an escape sequence or a newline in it could redraw
    # the operator's terminal or fake a row.
    if note is not None and not note.isprintable():
        fail(f"--note must be visible characters and spaces, got {_safe(note)}")


def _safe(text: object) -> str:
    """``text`` with every character a terminal would act on written as an escape (\\x1b, \\n)."""
    shown = str(text)
    if shown.isprintable():
        return shown
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)


def _held_by(entry: dict[str, Any]) -> str:
    """Who holds an entry, as the table shows it (one word, for awk): a container's name, a
    lease's id (``lease_...``), or ``-`` (free, or held by the operator: IN USE tells which)."""
    return str(entry.get("container") or entry.get("lease") or "-")


def _table(entries: list[dict[str, Any]]) -> str:
    header = ("IP", "PORT", "PROTO", "IN USE", "HOLDER", "NOTE")
    # What the daemon sends is shown, never obeyed: notes come from any client of the API.
    rows = [
        (
            _safe(e["ip"]),
            str(e["port"]),
            _safe(e["protocol"]),
            "yes" if e["in_use"] else "no",
            _safe(_held_by(e)),
            _safe(e.get("note") or ""),
        )
        for e in entries
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *rows]
    ]
    lines.append(f"{len(rows)} entries")
    return "\n".join(lines)
