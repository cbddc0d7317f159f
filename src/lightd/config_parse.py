"""The strict reading of one section of ``config.json``: each value's type and range, one line.

Every refusal reads ``<file>: <key> must be <rule>, got <value as JSON>``; a key nobody asked
for is refused when its section is :meth:`Section.done`, so a typo never passes in silence.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from lightd.adapters.iptables_rules import validate_chain
from lightd.core.entry import parse_ip
from lightd.core.ranges import parse_port_spec, parse_protocols
from lightd.errors import InvalidInput, quoted

__all__ = ["ConfigError", "Section", "check_host", "check_port", "shown"]

T = TypeVar("T")
C = TypeVar("C")

# Builds one item of pool.initial_ports from its ip, ports and protocols.
MakeInitial = Callable[[str, tuple[int, ...], tuple[str, ...]], C]

SHOWN_LIMIT = 60
ENGINE_SCHEMES = ("unix", "tcp", "http", "https")
# A host name as getaddrinfo takes it: labels of letters, digits and '-', dot-separated.
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


class ConfigError(InvalidInput):
    """The config file cannot be used as it is; the message is one line naming the key."""


class _Bad(Exception):
    """A value broke its rule; the caller knows the key and the file."""

    def __init__(self, rule: str, detail: str = "") -> None:
        super().__init__(rule)
        self.rule = rule
        self.detail = detail


def shown(value: Any) -> str:
    """``value`` as it was written in the JSON file, cut to a readable length."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return quoted(value)
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        return quoted(value)
    return text if len(text) <= SHOWN_LIMIT else text[: SHOWN_LIMIT - 3] + "..."


def _message(where: str | None, key: str, value: Any, bad: _Bad) -> str:
    prefix = f"{where}: " if where else ""
    return f"{prefix}{key} must be {bad.rule}, got {shown(value)}{bad.detail}"


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"an integer from {low} to {high}")
    return value


def _host(value: Any) -> str:
    rule = "an IP address or a host name"
    if not isinstance(value, str) or not value or len(value) > 253 or not value.isascii():
        raise _Bad(rule)
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(value):
        raise _Bad(rule)
    return value


def _ipv4_mapped(value: Any) -> str | None:
    try:
        mapped = ipaddress.IPv6Address(value).ipv4_mapped
    except ValueError:
        return None
    return None if mapped is None else str(mapped)


def check_port(value: Any, key: str, where: str | None = None) -> int:
    """A port to listen on, 0 for one the kernel picks (``api.port``, ``--port``)."""
    try:
        return _integer(value, 0, 65535)
    except _Bad as bad:
        raise ConfigError(_message(where, key, value, bad)) from None


def check_host(value: Any, key: str, where: str | None = None) -> str:
    """An address or host name to listen on (``api.host``, ``--host``)."""
    try:
        return _host(value)
    except _Bad as bad:
        raise ConfigError(_message(where, key, value, bad)) from None


class Section:
    """One JSON object of the config; each getter checks one key, :meth:`done` the leftovers."""

    def __init__(self, raw: dict[str, Any], where: str, prefix: str) -> None:
        self.raw = raw
        self.where = where
        self.prefix = prefix
        self.asked: set[str] = set()

    @classmethod
    def top(cls, raw: Any, where: str, names: Iterable[str]) -> Section:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must hold a JSON object, got {shown(raw)}")
        top = cls(raw, where, "")
        top.asked.update(names)
        return top

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.prefix}{key}: {message}")

    def has(self, key: str) -> bool:
        self.asked.add(key)
        return self.raw.get(key) is not None

    def _get(self, key: str, check: Callable[[Any], T], default: T) -> T:
        self.asked.add(key)
        value = self.raw.get(key)
        if value is None:  # missing, or null: the default, as the README says
            return default
        try:
            return check(value)
        except _Bad as bad:
            raise ConfigError(_message(self.where, self.prefix + key, value, bad)) from None

    def section(self, key: str) -> Section:
        found = self.optional_section(key)
        return found if found is not None else Section({}, self.where, f"{self.prefix}{key}.")

    def optional_section(self, key: str) -> Section | None:
        def check(value: Any) -> Section:
            if not isinstance(value, dict):
                raise _Bad("an object")
            return Section(value, self.where, f"{self.prefix}{key}.")

        return self._get(key, check, None)

    def done(self) -> None:
        """Refuse the keys no getter asked for: lightd does not know them."""
        for key in self.raw:
            if key not in self.asked:
                close = difflib.get_close_matches(key, sorted(self.asked), n=1)
                hint = f" (did you mean {self.prefix}{close[0]}?)" if close else ""
                known = ", ".join(sorted(self.asked))
                raise ConfigError(
                    f"{self.where}: {self.prefix}{key} is not a setting lightd knows"
                    f"{hint}; {self.prefix.rstrip('.') or 'the file'} takes {known}"
                )

    # -- one getter per kind of value --------------------------------------------------------

    def boolean(self, key: str, default: bool) -> bool:
        def check(value: Any) -> bool:
            if not isinstance(value, bool):  # "false" is a true string: never guess
                raise _Bad("true or false")
            return value

        return self._get(key, check, default)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        return self._get(key, lambda value: _integer(value, low, high), default)

    def port(self, key: str, default: int) -> int:
        return self._get(key, lambda value: _integer(value, 0, 65535), default)

    def host(self, key: str, default: str) -> str:
        return self._get(key, _host, default)

    def seconds(self, key: str, default: float, most: float, *, zero_ok: bool = False) -> float:
        def check(value: Any) -> float:
            # bool is an int to Python; NaN and infinity would never fire; the bound keeps the
            # timer arithmetic in range (and is checked first: a huge int has no float).
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (value >= 0 if zero_ok else value > 0)
                or value > most
                or not math.isfinite(value)
            ):
                raise _Bad(
                    f"0 (off) or a number of seconds up to {most:g}"
                    if zero_ok
                    else f"a number of seconds above 0 and at most {most:g}"
                )
            return float(value)

        return self._get(key, check, default)

    def string(self, key: str, default: str, *, allow_empty: bool = False) -> str:
        def check(value: Any) -> str:
            if not isinstance(value, str) or (not value and not allow_empty) or not value.isprintable():
                raise _Bad(
                    "a string of visible characters"
                    if allow_empty
                    else "a non-empty string of visible characters"
                )
            return value

        return self._get(key, check, default)

    def socket(self, key: str, default: str) -> str:
        """A unix socket path or an engine URL, as ``runtime.socket`` takes it."""

        def check(value: Any) -> str:
            if (
                not isinstance(value, str)
                or not value.isprintable()
                or not (value.startswith("/") or urlsplit(value).scheme in ENGINE_SCHEMES)
            ):
                raise _Bad("a unix socket path or a unix://, tcp:// or http(s):// URL")
            return value

        return self._get(key, check, default)

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        def check(value: Any) -> str:
            if value not in options or not isinstance(value, str):
                words = [f'"{option}"' for option in options]
                raise _Bad(", ".join(words[:-1]) + " or " + words[-1])
            return value

        return self._get(key, check, default)

    def tristate(self, key: str, default: str) -> str:
        def check(value: Any) -> str:
            if value is True:
                return "on"
            if value is False:
                return "off"
            if value == "auto":
                return "auto"
            raise _Bad('true, false or "auto"')

        return self._get(key, check, default)

    def chain(self, key: str, default: str) -> str:
        def check(value: Any) -> str:
            try:
                return validate_chain(value)
            except InvalidInput:
                raise _Bad(
                    "1 to 28 letters, digits, '_', '.' or '-', and not a built-in chain or target name"
                ) from None

        return self._get(key, check, default)

    def path(self, key: str, default: Path, folder: Path) -> Path:
        """A path; relative ones are relative to ``folder`` (the config file's)."""

        def check(value: Any) -> Path:
            if not isinstance(value, str) or not value or "\0" in value:
                raise _Bad("a path")
            return Path(value)

        chosen = self._get(key, check, default).expanduser()
        return chosen if chosen.is_absolute() else folder / chosen

    def file(self, key: str, folder: Path) -> Path:
        """A file that must exist and be readable now (a certificate, a key)."""
        self.asked.add(key)
        value = self.raw.get(key)
        if value is None:
            raise ConfigError(_message(self.where, self.prefix + key, value, _Bad("a file path")))
        path = self.path(key, Path(), folder)
        if not path.is_file() or not os.access(path, os.R_OK):
            why = "not a readable file" if path.exists() else "no such file"
            bad = _Bad("a file lightd can read", f" ({path}: {why})")
            raise ConfigError(_message(self.where, self.prefix + key, value, bad))
        return path

    def initial_ports(self, key: str, default: tuple[C, ...], make: MakeInitial[C]) -> tuple[C, ...]:
        """``pool.initial_ports``: a list of {ip, ports, protocol}, each checked and expanded."""

        def check(value: Any) -> tuple[C, ...]:
            if not isinstance(value, list):
                raise _Bad("a list of objects with ip, ports and protocol")
            return tuple(
                self._initial_item(f"{key}[{index}]", item, make) for index, item in enumerate(value)
            )

        return self._get(key, check, default)

    def _initial_item(self, key: str, item: Any, make: MakeInitial[C]) -> C:
        if not isinstance(item, dict):
            raise _Bad("a list of objects with ip, ports and protocol")
        entry = Section(item, self.where, f"{self.prefix}{key}.")

        def ip(value: Any) -> str:
            try:
                return parse_ip(value)
            except InvalidInput:
                mapped = _ipv4_mapped(value)
                hint = f" (an IPv4-mapped IPv6 address: use its IPv4 form {mapped})" if mapped else ""
                raise _Bad("an IPv4 or IPv6 address", hint) from None

        def ports(value: Any) -> tuple[int, ...]:
            try:
                return tuple(parse_port_spec(value))
            except InvalidInput:
                raise _Bad(
                    'a port from 1 to 65535, a range like "27015-27030" (low to high) or a list of both'
                ) from None

        def protocols(value: Any) -> tuple[str, ...]:
            try:
                return parse_protocols(value)
            except InvalidInput:
                raise _Bad('"tcp", "udp" or "both"') from None

        made = make(
            entry._get("ip", ip, "0.0.0.0"),
            entry._get("ports", ports, ()),
            entry._get("protocol", protocols, ("tcp",)),
        )
        if "ports" not in item or item["ports"] is None:
            raise ConfigError(
                _message(
                    self.where,
                    f"{self.prefix}{key}.ports",
                    None,
                    _Bad('a port from 1 to 65535, a range like "27015-27030" or a list of both'),
                )
            )
        entry.done()
        return made
