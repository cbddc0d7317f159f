"""The owner locks (``lightd.adapters.locks``) on real files: one holder at a time, named when
another asks, free again once released; the e2e tests show the same across processes."""

from __future__ import annotations

import os
import stat

import pytest

from lightd.adapters.locks import hold_chain, hold_data_folder, netns_identity
from lightd.errors import Conflict


def test_a_data_folder_has_one_holder_until_it_lets_go(tmp_path):
    folder = tmp_path / "data"
    lock = hold_data_folder(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    lock_file = folder / "lightd.lock"
    assert stat.S_IMODE(lock_file.stat().st_mode) == 0o600
    assert lock_file.read_text() == f"{os.getpid()}\n"

    with pytest.raises(
        Conflict, match=rf"data folder {folder} is in use by another lightd \(pid {os.getpid()}\)"
    ):
        hold_data_folder(folder)

    lock.release()
    again = hold_data_folder(folder)
    assert again.held
    again.release()


def test_a_lock_is_not_inherited_by_programs_lightd_starts(tmp_path):
    lock = hold_data_folder(tmp_path)
    try:
        assert lock._fd is not None
        assert not os.get_inheritable(lock._fd)
    finally:
        lock.release()


def test_a_chain_is_held_per_namespace_and_name(tmp_path):
    lock = hold_chain("LIGHTD", "/proc/self/ns/net", directory=tmp_path)
    try:
        # The same namespace by another path is the same namespace.
        with pytest.raises(Conflict, match=r"firewall.chain 'LIGHTD' in network namespace net:\[\d+\]"):
            hold_chain("LIGHTD", f"/proc/{os.getpid()}/ns/net", directory=tmp_path)
        other = hold_chain("LIGHTD2", "/proc/self/ns/net", directory=tmp_path)
        other.release()
        odd = hold_chain("a/../b", "/proc/self/ns/net", directory=tmp_path)  # stays in the folder
        assert odd.path.parent == tmp_path
        odd.release()
    finally:
        lock.release()


def test_the_namespace_is_identified_by_its_inode():
    assert netns_identity("/proc/self/ns/net") == netns_identity(f"/proc/{os.getpid()}/ns/net")
    assert netns_identity("/proc/self/ns/net")[1] == int(os.readlink("/proc/self/ns/net")[5:-1])
