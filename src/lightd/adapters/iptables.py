"""Pool ports as iptables ACCEPT rules, in a chain lightd owns, changed in atomic batches.

Every pool entry gets one rule in lightd's chain (default ``LIGHTD``), which INPUT jumps to once::

    -A INPUT -j LIGHTD
    -A LIGHTD -p tcp -m tcp --dport 25565 -m comment --comment lightd -j ACCEPT
    -A LIGHTD -d 10.0.0.5/32 -p udp -m udp --dport 27015 -m comment --comment lightd -j ACCEPT

IPv6 entries go through ip6tables. Each call first reads the table with ``iptables-save -t filter``
and then feeds one ``iptables-restore --noflush`` with the whole batch on stdin, whatever its size;
iptables-restore applies a table's batch atomically, so a batch is applied whole or not at all.
When one call spans both families and the second batch fails, the first family's chain is put
back as it was read. Arguments are argv lists, never a shell; only checked ips, ports, protocols
and names reach them.

``command_prefix`` goes before every argv: ``["nsenter", "--net=/proc/<pid>/ns/net", "--"]`` runs
the firewall of another network namespace (tests use it so they never touch the host's firewall).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from lightd.adapters.iptables_rules import (
    DEFAULT_CHAIN,
    DEFAULT_TAG,
    ChainState,
    Plan,
    Rule,
    backend_of,
    close_plan,
    open_plan,
    parse_save,
    reconcile_plan,
    revert_plan,
    rules_for,
    summarize_drift,
    validate_chain,
    validate_tag,
)
from lightd.core.entry import Entry
from lightd.errors import InvalidInput, Unavailable

__all__ = ["BINARIES", "IptablesFirewall", "detect", "parse_enabled"]

log = logging.getLogger(__name__)
T = TypeVar("T")

BINARIES = ("iptables", "iptables-nft", "iptables-legacy")
NOT_FOUND = 127  # what nsenter, env and shells return when they cannot exec the command
_STDERR_LIMIT = 300


def parse_enabled(value: bool | str) -> str:
    """``firewall.enabled`` as ``"auto"``, ``"on"`` or ``"off"``."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "auto":
            return "auto"
        if lowered in ("true", "on", "yes"):
            return "on"
        if lowered in ("false", "off", "no"):
            return "off"
    raise InvalidInput(f'firewall.enabled must be "auto", true or false (got {value!r})')


def netns_path(netns: str) -> str:
    """The file of a named namespace (``ip netns``), or the path given."""
    return netns if netns.startswith("/") else f"/run/netns/{netns}"


def netns_prefix(netns: str) -> list[str]:
    """The prefix that runs a command in a named namespace (``ip netns``) or a namespace path."""
    return ["nsenter", f"--net={netns_path(netns)}", "--"]


def _tools(binary: str, family: int) -> tuple[str, str]:
    base = binary if family == 4 else "ip6" + binary[2:]
    return f"{base}-save", f"{base}-restore"


def _first_lines(data: bytes) -> str:
    text = " ".join(line.strip() for line in data.decode("utf-8", "replace").splitlines()[:3])
    text = text.strip() or "no error output"
    return text if len(text) <= _STDERR_LIMIT else text[: _STDERR_LIMIT - 3] + "..."


def detect(
    enabled: bool | str = "auto",
    command_prefix: Sequence[str] = (),
    *,
    binary: str = "iptables",
    probe: bool = True,
    timeout: float = 15.0,
) -> tuple[bool, str]:
    """Decide whether lightd manages the firewall; ``(on, reason)``.

    ``auto``: on when running as root and iptables is present (and, with ``probe``, a read-only
    ``iptables-save -t filter`` works, which catches a root without CAP_NET_ADMIN). ``True``: the
    same checks, but a failure raises :class:`Unavailable` so the daemon refuses to start.
    ``False``: off, nothing is checked.
    """
    mode = parse_enabled(enabled)
    if mode == "off":
        return False, "turned off in the settings (firewall.enabled is false)"
    problem, found = _problem(list(command_prefix), binary, probe, timeout)
    if problem is None:
        return True, f"enabled: running as root with {found}"
    if mode == "on":
        raise Unavailable(f"firewall.enabled is true but the firewall cannot work: {problem}.")
    return False, problem


def _problem(prefix: list[str], binary: str, probe: bool, timeout: float) -> tuple[str | None, str]:
    if binary not in BINARIES:
        return f"unknown iptables binary {binary!r} (use one of {', '.join(BINARIES)})", ""
    if os.geteuid() != 0:
        return f"not running as root (effective uid {os.geteuid()})", ""
    save, _ = _tools(binary, 4)
    if not prefix and shutil.which(binary) is None:
        return f"the {binary} binary was not found on PATH (install the iptables package)", ""
    if not probe:
        return None, binary
    try:
        done = subprocess.run(
            [*prefix, save, "-t", "filter"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return f"{(prefix or [save])[0]} was not found on PATH", ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{save} could not be run ({exc})", ""
    if done.returncode == NOT_FOUND:
        return f"{save} was not found ({_first_lines(done.stderr)})", ""
    if done.returncode != 0:
        return f"{save} failed ({_first_lines(done.stderr)})", ""
    return None, backend_of(done.stdout.decode("utf-8", "replace")) or binary


@contextlib.contextmanager
def _gc_paused(size: int) -> Iterator[None]:
    """Pause the cyclic garbage collector while a large batch is planned (synchronous code, no
    await inside): the collector would otherwise walk every live object several times while the
    tens of thousands of small tuples of a 65,535-rule batch are made, about a third of the time."""
    if size < 5000 or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _NotFound(Unavailable):
    """The iptables tool of a family is not installed (or not found through the prefix)."""


class IptablesFirewall:
    """Satisfies :class:`lightd.service.ports.Firewall` with iptables and ip6tables."""

    def __init__(
        self,
        chain: str = DEFAULT_CHAIN,
        command_prefix: Sequence[str] = (),
        *,
        netns: str | None = None,
        binary: str = "iptables",
        tag: str = DEFAULT_TAG,
        insert_jump: bool = False,
        timeout: float = 120.0,
        reason: str = "enabled",
    ) -> None:
        """
        :param chain: lightd's own chain in the filter table of both families.
        :param command_prefix: argv put before every iptables command (e.g. nsenter ... --).
        :param netns: convenience: a named namespace (``/run/netns/<name>``) or a namespace path;
            its nsenter prefix goes after ``command_prefix``.
        :param binary: ``iptables`` (the system's choice), ``iptables-nft`` or ``iptables-legacy``.
        :param tag: the comment that marks lightd's rules.
        :param insert_jump: put INPUT's jump first (``-I INPUT 1``) instead of appending it, for
            hosts whose INPUT ends in a catch-all DROP or REJECT rule.
        :param timeout: seconds one iptables command may take before the call fails.
        :param reason: the text ``status()`` reports while enabled (e.g. from :func:`detect`).
        """
        if binary not in BINARIES:
            raise InvalidInput(f"firewall binary must be one of {', '.join(BINARIES)}")
        self.chain = validate_chain(chain)
        self.tag = validate_tag(tag)
        self.prefix = list(command_prefix) + (netns_prefix(netns) if netns else [])
        self.binary = binary
        self.insert_jump = insert_jump
        self.timeout = timeout
        self.reason = reason
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._backend = ""
        self._counts: dict[int, int] = {}
        self._unavailable: dict[int, str] = {}
        self._last_reconcile: dict[str, Any] | None = None
        self._last_error: str | None = None

    # --- the Firewall protocol -------------------------------------------------------------

    async def open(self, entries: Sequence[Entry]) -> None:
        """Open every entry, all or nothing; present rules are not duplicated."""
        await self._change(entries, "open")

    async def close(self, entries: Sequence[Entry]) -> None:
        """Close every entry (every copy of its rule), all or nothing; absent rules are fine."""
        await self._change(entries, "close")

    async def reconcile(self, entries: Sequence[Entry]) -> dict[str, Any]:
        """Make lightd's chains hold exactly one rule per entry and INPUT jump to them once."""
        with _gc_paused(len(entries)):
            rules = rules_for(entries)
        by_family = {4: [r for r in rules if r.family == 4], 6: [r for r in rules if r.family == 6]}

        async def work() -> list[Plan]:
            states: dict[int, ChainState] = {}
            for family, wanted in by_family.items():
                try:
                    states[family] = await self._read(family)
                except _NotFound as exc:
                    if wanted:
                        raise self._fail(exc) from None
                    self._unavailable[family] = exc.message
            with _gc_paused(len(rules) + sum(len(state.lines) for state in states.values())):
                plans = [reconcile_plan(s, by_family[f], self.tag, insert_jump=self.insert_jump)
                         for f, s in states.items()]  # fmt: skip
            await self._apply(states, plans)
            return plans

        plans = await self._exclusive(work)
        drift = [item for plan in plans for item in plan.drift]
        report: dict[str, Any] = {
            "added": sum(plan.added for plan in plans),
            "removed": sum(plan.removed for plan in plans),
            "drift": summarize_drift(drift),
            "drift_count": len(drift),
            "rule_count": sum(self._counts.values()),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._last_reconcile = report
        if drift:
            log.warning("firewall drift repaired: %s", "; ".join(summarize_drift(drift, 10)))
        return report

    def status(self) -> dict[str, Any]:
        last = self._last_reconcile
        return {
            "enabled": True,
            "reason": self.reason,
            "backend": self._backend or self.binary,
            "chain": self.chain,
            "rule_count": sum(self._counts.values()) if self._counts else None,
            "rules": {f"ipv{family}": count for family, count in sorted(self._counts.items())},
            "ipv6": self._unavailable.get(6) or ("available" if 6 in self._counts else "not checked yet"),
            "drift": list(last["drift"]) if last else [],
            "last_reconcile": last,
            "last_error": self._last_error,
        }

    # --- more -------------------------------------------------------------------------------

    async def teardown(self) -> dict[str, Any]:
        """Remove lightd's rules and INPUT's jumps; drop the chain unless others' rules remain."""

        async def work() -> dict[str, Any]:
            removed = 0
            for family in (4, 6):
                try:
                    state = await self._read(family)
                except _NotFound:
                    continue
                if not state.chain_exists:
                    continue
                foreign = [line for line in state.lines if not line.tagged]
                body = [f"-D INPUT -j {self.chain}"] * state.jumps + [f"-F {self.chain}"]
                body += [f"-A {self.chain} {line.spec}" for line in foreign]
                if not foreign:
                    body.append(f"-X {self.chain}")
                await self._restore(family, Plan(family, self.chain, body, []).script)
                removed += state.tagged_count()
                self._counts[family] = 0
            return {"removed": removed}

        return await self._exclusive(work)

    async def read_rules(self) -> dict[int, list[Rule]]:
        """lightd's rules as the kernel holds them now, per family (duplicates included)."""
        async with self._lock:
            result: dict[int, list[Rule]] = {}
            for family in (4, 6):
                try:
                    result[family] = (await self._read(family)).owned()
                except _NotFound:
                    result[family] = []
        return result

    # --- internals ----------------------------------------------------------------------------

    async def _change(self, entries: Sequence[Entry], kind: str) -> None:
        with _gc_paused(len(entries)):
            rules = rules_for(entries)
        if not rules:
            return
        families = sorted({rule.family for rule in rules})

        async def work() -> None:
            states: dict[int, ChainState] = {}
            for family in families:
                try:
                    states[family] = await self._read(family)
                except Unavailable as exc:
                    raise self._fail(exc) from None
            plans = []
            with _gc_paused(len(rules) + sum(len(state.lines) for state in states.values())):
                for family, state in states.items():
                    mine = [rule for rule in rules if rule.family == family]
                    if kind == "open":
                        plans.append(open_plan(state, mine, self.tag, insert_jump=self.insert_jump))
                    else:
                        plans.append(close_plan(state, mine, self.tag))
            await self._apply(states, plans)

        await self._exclusive(work)

    async def _exclusive(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` alone, as a task of its own that holds the lock until it ends.

        A caller cancelled while waiting for the lock changes nothing. Once the work started, a
        cancelled caller neither interrupts it halfway between two families nor lets the next
        batch start before this one finished or was rolled back."""
        await self._lock.acquire()
        try:
            task = asyncio.ensure_future(work())
        except BaseException:
            self._lock.release()
            raise
        task.add_done_callback(lambda _: self._lock.release())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _apply(self, states: dict[int, ChainState], plans: list[Plan]) -> None:
        """Run the plans in order; if one fails, put back the families already changed."""
        done: list[Plan] = []
        for plan in plans:
            if plan.empty:
                self._counts[plan.family] = plan.tagged_after
                continue
            try:
                await self._restore(plan.family, plan.script)
            except Unavailable as exc:
                if not await self._revert(done, states):
                    exc = Unavailable(
                        f"{exc.message.rstrip('.')}; the IPv4 rules already changed by this call "
                        "could not be put back, so they stay out of step until reconcile.",
                        **exc.details,
                    )
                raise self._fail(exc) from None
            done.append(plan)
            self._counts[plan.family] = plan.tagged_after
        self._last_error = None

    async def _revert(self, done: list[Plan], states: dict[int, ChainState]) -> bool:
        """Put back the chains of the families already changed; False if one could not be."""
        ok = True
        for plan in reversed(done):
            before = states[plan.family]
            try:
                current = await self._read(plan.family)
                undo = revert_plan(current, before, self.tag)
                if not undo.empty:
                    await self._restore(plan.family, undo.script)
                self._counts[plan.family] = before.tagged_count()
            except Unavailable as exc:
                ok = False
                log.error(
                    "could not put the IPv%d firewall chain back after a failed batch; "
                    "it stays out of step with the pool until reconcile: %s",
                    plan.family,
                    exc.message,
                )
        return ok

    def _fail(self, exc: Unavailable) -> Unavailable:
        self._last_error = exc.message
        return exc

    async def _read(self, family: int) -> ChainState:
        save, _ = _tools(self.binary, family)
        out = await self._run([save, "-t", "filter"], None)
        text = out.decode("utf-8", "surrogateescape")
        with _gc_paused(len(text) // 64):
            state = parse_save(text, family, self.chain, self.tag)
        if state.backend:
            self._backend = state.backend
        self._unavailable.pop(family, None)
        return state

    async def _restore(self, family: int, script: bytes) -> None:
        _, restore = _tools(self.binary, family)
        await self._run([restore, "--noflush", "-w", "10"], script)

    async def _run(self, argv: list[str], stdin: bytes | None) -> bytes:
        full = [*self.prefix, *argv]
        tool = argv[0]
        try:
            proc = await asyncio.create_subprocess_exec(
                *full,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise _NotFound(
                f"The firewall command {full[0]} was not found; install iptables or turn the firewall off.",
                command=tool,
            ) from None
        except OSError as exc:
            raise Unavailable(f"The firewall command {tool} could not be started: {exc}.") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except BaseException as exc:
            if proc.returncode is None:
                proc.kill()
            await asyncio.shield(proc.wait())
            if isinstance(exc, TimeoutError):
                raise Unavailable(
                    f"The firewall command {tool} did not finish within {self.timeout:g} seconds.",
                    command=tool,
                ) from None
            raise
        if proc.returncode == NOT_FOUND:
            raise _NotFound(f"The firewall command {tool} was not found ({_first_lines(err)}).", command=tool)
        if proc.returncode != 0:
            what = "refused the batch, so no rule was changed" if stdin is not None else "failed"
            raise Unavailable(
                f"The firewall could not be changed: {tool} {what} ({_first_lines(err)}).",
                command=tool,
                exit_code=proc.returncode,
            )
        return out
