"""``lightd leases ls|renew|release|keep`` and ``lightd events``, over the daemon's HTTP API.

What the daemon sends (ids, notes, addresses) is shown through ``cli_ports._safe``: never obeyed
by the terminal.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from lightd.cli_common import ConfigOption, fail
from lightd.cli_ports import CaCertOption, PinOption, UrlOption, _client, _run, _safe, _table

__all__ = ["events", "leases_app"]

leases_app = typer.Typer(
    no_args_is_help=True, help="Look at, renew, release or keep the running daemon's leases."
)

LeaseId = Annotated[str, typer.Argument(help="the lease's id (lease_...), as leases ls shows it")]
# A lease of many ports shows its first few in leases ls, and how many more it has.
SHOWN_PORTS = 4


@leases_app.command("ls")
def leases_ls(
    config: ConfigOption = None,
    url: UrlOption = None,
    cacert: CaCertOption = None,
    pin: PinOption = None,
) -> None:
    """List the leases as a table, soonest to expire first."""
    with _client(config, url, cacert, pin) as client:
        leases = _run(client.leases)
    header = ("ID", "EXPIRES", "TTL", "PORTS")
    rows = [
        (_safe(lease["id"]), _safe(lease["expires_at"]), _safe(lease["ttl"]), _ports(lease["ports"]))
        for lease in leases
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    typer.echo(f"{len(rows)} leases")


@leases_app.command("renew")
def leases_renew(
    lease_id: LeaseId,
    ttl: Annotated[
        int | None, typer.Option("--ttl", help="seconds from now (default: the lease's own ttl)")
    ] = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    cacert: CaCertOption = None,
    pin: PinOption = None,
) -> None:
    """Move a lease's expiry to TTL seconds from now."""
    with _client(config, url, cacert, pin) as client:
        lease = _run(lambda: client.renew(lease_id, ttl))
    typer.echo(f"lease {_safe(lease['id'])} expires at {_safe(lease['expires_at'])}")


@leases_app.command("release")
def leases_release(
    lease_id: LeaseId,
    config: ConfigOption = None,
    url: UrlOption = None,
    cacert: CaCertOption = None,
    pin: PinOption = None,
) -> None:
    """End a lease now and free its ports."""
    with _client(config, url, cacert, pin) as client:
        answer = _run(lambda: client.release(lease_id))
    typer.echo(_table(answer["freed"]))
    typer.echo(f"lease {_safe(lease_id)} released: its ports are free")


@leases_app.command("keep")
def leases_keep(
    lease_id: LeaseId,
    config: ConfigOption = None,
    url: UrlOption = None,
    cacert: CaCertOption = None,
    pin: PinOption = None,
) -> None:
    """End a lease, keeping its ports in use, held by the operator with no expiry."""
    with _client(config, url, cacert, pin) as client:
        answer = _run(lambda: client.keep(lease_id))
    typer.echo(_table(answer["kept"]))
    typer.echo(f"lease {_safe(lease_id)} kept: its ports stay in use, held by the operator")


def events(
    after: Annotated[
        int | None, typer.Option("--after", help="first the events after this id (from the backlog)")
    ] = None,
    raw: Annotated[
        bool, typer.Option("--json", help='one JSON object a line: {"id", "type", "data"}')
    ] = False,
    config: ConfigOption = None,
    url: UrlOption = None,
    cacert: CaCertOption = None,
    pin: PinOption = None,
) -> None:
    """Follow the daemon's changes as they happen, one line each: ID TYPE SUMMARY (Ctrl-C stops).

    A dropped connection is reopened where it left off; a reset line means events were missed
    (too far behind): re-read the pool."""
    from lightd.client import ClientError

    # Ctrl-C ends it quietly with 130, a closed pipe (| head) with 1: typer's main does both.
    with _client(config, url, cacert, pin) as client:
        try:
            for event in client.events(after=after):
                if raw:  # json.dumps escapes every control character (ensure_ascii: C1 and DEL too)
                    typer.echo(json.dumps({"id": event.id, "type": event.type, "data": event.data}))
                else:
                    typer.echo(f"{event.id} {_safe(event.type)} {summary(event.type, event.data)}")
        except ClientError as exc:
            fail(exc.message)


def summary(kind: str, data: dict[str, Any]) -> str:
    """What a line of ``lightd events`` says about an event, made safe for a terminal."""
    lease = data.get("lease") if isinstance(data.get("lease"), dict) else None
    container = data.get("container") if isinstance(data.get("container"), dict) else None
    if kind == "reset":
        return _safe(
            f"{data.get('reason', 'events were missed')} (after {data.get('after')}, "
            f"oldest kept {data.get('oldest')}, last {data.get('last')}): re-read the pool"
        )
    if kind == "ports.claimed":
        held = f" lease {_safe(lease.get('id'))} until {_safe(lease.get('expires_at'))}" if lease else ""
        return _ports(data.get("ports")) + held
    if kind.startswith("lease.") and lease is not None:
        until = f" until {_safe(lease.get('expires_at'))}" if kind == "lease.renewed" else ""
        return f"{_safe(lease.get('id'))}{until}: {_ports(data.get('ports'))}"
    if kind in ("container.created", "container.rebound") and container is not None:
        freed = f"; freed {_ports(data.get('freed'))}" if data.get("freed") else ""
        return f"{_safe(container.get('internal_id'))}: {_ports(data.get('ports'))}{freed}"
    if kind == "container.deleted":
        return f"{_safe(data.get('internal_id'))}: freed {_ports(data.get('freed'))}"
    if kind == "firewall.repaired":
        return _safe(f"added {data.get('added')}, removed {data.get('removed')} rules")
    if kind == "repair.finding" and isinstance(data.get("finding"), dict):
        finding = data["finding"]
        return _safe(f"{finding.get('type')}: {finding.get('message', '')}")
    if isinstance(data.get("ports"), list):
        return _ports(data["ports"])
    rest = {key: value for key, value in data.items() if key != "at"}
    return _safe(json.dumps(rest)[:200])


def _ports(entries: object) -> str:
    """``0.0.0.0:25565/tcp, [::]:27015/udp`` for the first few entries, then how many more."""
    if not isinstance(entries, list) or not entries:
        return "no ports"
    shown = [_entry(entry) for entry in entries[:SHOWN_PORTS]]
    more = len(entries) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _entry(entry: object) -> str:
    if not isinstance(entry, dict):
        return _safe(entry)
    ip = str(entry.get("ip"))
    return _safe(f"{f'[{ip}]' if ':' in ip else ip}:{entry.get('port')}/{entry.get('protocol')}")
