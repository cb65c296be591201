"""FileTokenCache: tokens kept between short-lived processes in a 0600 file."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path

import pytest
from tests.support import token_client

from ccflow import FileTokenCache
from ccflow._token_cache import default_cache_path
from ccflow.authority import Authority


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"XDG_CACHE_HOME": "/xdg"}, Path("/xdg/ccflow/tokens.json")),
        ({"XDG_CACHE_HOME": ""}, Path.home() / ".cache/ccflow/tokens.json"),
        ({"XDG_CACHE_HOME": "relative"}, Path.home() / ".cache/ccflow/tokens.json"),
        ({}, Path.home() / ".cache/ccflow/tokens.json"),
    ],
)
def test_the_default_path_follows_xdg(environ: dict[str, str], expected: Path) -> None:
    assert default_cache_path(environ) == expected


def test_the_default_cache_lives_under_xdg_cache_home(tmp_path: Path) -> None:
    assert FileTokenCache().path == tmp_path / "xdg-cache" / "ccflow" / "tokens.json"


def test_a_second_process_reads_the_token_from_the_file(
    authority: Authority, tmp_path: Path, scope: str
) -> None:
    path = tmp_path / "c" / "tokens.json"
    token = token_client(authority, FileTokenCache(path)).get_token(scope)
    assert token_client(authority, FileTokenCache(path)).get_token(scope) == token
    assert authority.hits["token"] == 1
    assert len(FileTokenCache(path)) == 1


def test_the_file_is_0600_in_a_0700_directory_and_no_temp_file_is_left(
    authority: Authority, tmp_path: Path, scope: str
) -> None:
    path = tmp_path / "c" / "tokens.json"
    token_client(authority, FileTokenCache(path)).get_token(scope)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.json", "tokens.json.lock"]


def test_an_existing_directory_keeps_its_mode(
    authority: Authority, tmp_path: Path, scope: str
) -> None:
    # Pointed at a project directory (or $HOME), the cache must not make it private.
    directory = tmp_path / "c"
    directory.mkdir()
    directory.chmod(0o755)
    path = directory / "tokens.json"
    token_client(authority, FileTokenCache(path)).get_token(scope)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_directory_others_may_write_to_is_not_used(
    authority: Authority, tmp_path: Path, scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "c"
    directory.mkdir()
    directory.chmod(0o775)
    client = token_client(authority, FileTokenCache(directory / "tokens.json"))
    assert client.get_token(scope).token
    assert stat.S_IMODE(directory.stat().st_mode) == 0o775
    assert not (directory / "tokens.json").exists()
    assert "writable by other users" in caplog.text


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"k": 1}', b""])
def test_a_corrupt_file_is_ignored_and_replaced(
    authority: Authority, tmp_path: Path, scope: str, content: bytes
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    token = token_client(authority, FileTokenCache(path)).get_token(scope)
    assert token.token in json.loads(path.read_text()).popitem()[1]


def test_threads_of_separate_caches_on_one_file_make_one_post(
    authority: Authority, tmp_path: Path, scope: str
) -> None:
    path = tmp_path / "tokens.json"
    barrier = threading.Barrier(8)
    tokens: list[str] = []

    def run() -> None:
        client = token_client(authority, FileTokenCache(path))
        barrier.wait()
        tokens.append(client.get_token(scope).token)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(tokens) == 8
    assert len(set(tokens)) == 1
    assert authority.hits["token"] == 1


def test_partitions_keep_entries_apart(authority: Authority, tmp_path: Path, scope: str) -> None:
    path = tmp_path / "tokens.json"
    token_client(authority, FileTokenCache(path, partition="a")).get_token(scope)
    token_client(authority, FileTokenCache(path, partition="b")).get_token(scope)
    token_client(authority, FileTokenCache(path, partition="a")).get_token(scope)
    assert authority.hits["token"] == 2
    assert len(FileTokenCache(path)) == 2


def test_invalidate_removes_the_token_from_the_file(
    authority: Authority, tmp_path: Path, scope: str
) -> None:
    path = tmp_path / "tokens.json"
    client = token_client(authority, FileTokenCache(path))
    token = client.get_token(scope)
    client.invalidate(token, scope)
    assert len(FileTokenCache(path)) == 0
    assert token_client(authority, FileTokenCache(path)).get_token(scope) != token


def test_expired_entries_are_dropped_when_the_file_is_written(
    authority: Authority, tmp_path: Path, scope: str
) -> None:
    path = tmp_path / "tokens.json"
    token_client(authority, FileTokenCache(path)).get_token(scope)
    later = token_client(authority, FileTokenCache(path), "reader-client", clock=lambda: 4e9)
    later.get_token(scope)  # another key: the file is written, the expired entry dropped
    assert len(FileTokenCache(path)) == 1


def test_an_unusable_file_costs_one_warning_and_a_direct_fetch(
    authority: Authority, tmp_path: Path, scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cache = FileTokenCache(blocker / "tokens.json")
    with caplog.at_level(logging.WARNING, logger="ccflow"):
        assert token_client(authority, cache).get_token(scope).token
        assert token_client(authority, cache, refresh_margin=0).get_token(scope).token
    assert len([r for r in caplog.records if "cannot be used" in r.getMessage()]) == 1
    assert len(cache) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a directory to another user")
def test_a_directory_of_another_user_is_not_used(
    authority: Authority, tmp_path: Path, scope: str
) -> None:
    # Root would otherwise read (or write) tokens where the directory's owner can swap them.
    directory = tmp_path / "c"
    directory.mkdir()
    directory.chmod(0o777)
    os.chown(directory, 65534, 65534)
    link = tmp_path / "link"
    link.symlink_to(directory)
    for path in (directory / "tokens.json", link / "tokens.json"):
        token_client(authority, FileTokenCache(path)).get_token(scope)
        assert not (directory / "tokens.json").exists()
        assert stat.S_IMODE(directory.stat().st_mode) == 0o777


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a file to another user")
def test_a_token_file_of_another_user_is_not_read(
    authority: Authority, tmp_path: Path, scope: str
) -> None:
    path = tmp_path / "c" / "tokens.json"
    client = token_client(authority, FileTokenCache(path))
    client.get_token(scope)
    os.chown(path, 65534, 65534)
    assert len(FileTokenCache(path)) == 0
    token_client(authority, FileTokenCache(path)).get_token(scope)
    assert authority.hits["token"] == 2
    assert path.stat().st_uid == os.geteuid()  # replaced by this user's
