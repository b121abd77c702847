"""Session names, private directories and where state and sockets live."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_worker import paths
from agent_worker.paths import (
    MAX_SOCKET_PATH,
    PathError,
    check_socket_path,
    ensure_private_dir,
    ensure_socket_dir,
    validate_name,
)
from agent_worker.settings import SettingError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test here sees the caller's superv or XDG settings, nor their real home."""
    for key in ("SUPERV_HOME", "SUPERV_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))


# --- session names ----------------------------------------------------------------------------

GOOD = ["a", "Z", "0", "agent-1", "claude_code.2", "A.b_c-d", "x" * 64, "9lives", "a..b", "a-"]
BAD = [
    "",
    ".",
    "..",
    "../x",
    "../../etc/passwd",
    "x/y",
    "/abs",
    "x\\y",
    "x" * 65,
    "x" * 500,
    "-rf",
    "--help",
    ".hidden",
    "_under",
    "a b",
    " a",
    "a\n",  # a trailing newline slips past re.match(...$), not past fullmatch
    "a\nb",
    "a\tb",
    "a\x00b",
    "\x00",
    "\x1b[31mred",
    "a\x7f",
    "a\u200bb",  # zero-width space
    "\u0430bc",  # Cyrillic a
    "\uff41bc",  # fullwidth a
    "caf\u00e9",
    "a\u0301",  # combining accent
    "\u0661\u0662",  # Arabic-Indic digits match \d in Unicode regexes
    "x:y",
    "x*",
    "$(id)",
    "a;b",
]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name: str) -> None:
    assert validate_name(name) == name
    assert paths.session_dir(name).name == name
    assert paths.session_socket(name).name == f"{name}.sock"


@pytest.mark.parametrize("name", BAD, ids=[ascii(n)[:30] for n in BAD])
def test_hostile_names_refused(name: str) -> None:
    with pytest.raises(PathError) as info:
        validate_name(name)
    message = str(info.value)
    assert message.startswith("invalid session name")
    assert "1-64 letters, digits" in message
    # The message is safe to print: short, and no raw control characters.
    assert len(message) < 200
    assert message.isprintable()
    # session_dir and session_socket check too.
    with pytest.raises(PathError):
        paths.session_dir(name)
    with pytest.raises(PathError):
        paths.session_socket(name)


@pytest.mark.parametrize("name", [None, 5, b"abc", ["a"]], ids=repr)
def test_non_string_names_refused(name: object) -> None:
    with pytest.raises(PathError, match="invalid session name"):
        validate_name(name)  # type: ignore[arg-type]


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=80) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True))
def test_accepted_names_are_safe(name: str) -> None:
    try:
        validate_name(name)
    except PathError as exc:
        assert str(exc).isprintable()
        return
    assert 1 <= len(name) <= 64
    assert name.isascii() and name.isprintable()
    assert "/" not in name and "\\" not in name
    assert name[0] not in ".-_"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
    # A valid name never leaves the sessions directory.
    assert paths.session_dir(name).parent == paths.sessions_dir()
    assert os.path.normpath(paths.session_dir(name)) == str(paths.session_dir(name))


# --- private directories ------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_creates_private_dir_with_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "run"
    assert ensure_private_dir(target) == target
    assert target.is_dir()
    assert mode_of(target) == 0o700
    assert ensure_private_dir(target) == target  # idempotent


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o777])
def test_mode_does_not_depend_on_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        ensure_private_dir(tmp_path / "run")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "run") == 0o700


@pytest.mark.parametrize("mode", [0o755, 0o777, 0o711, 0o500])
def test_fixes_mode_of_our_own_dir(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "run"
    target.mkdir()
    target.chmod(mode)
    ensure_private_dir(target)
    assert mode_of(target) == 0o700


def test_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.write_text("not a dir")
    with pytest.raises(PathError, match="not a directory"):
        ensure_private_dir(target)


def test_refuses_a_symlink_to_a_directory(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o755)
    link = tmp_path / "run"
    link.symlink_to(real)
    with pytest.raises(PathError, match="is a symlink"):
        ensure_private_dir(link)
    assert mode_of(real) == 0o755  # not touched through the link


@pytest.mark.parametrize("target", ["missing", "file"])
def test_refuses_a_symlink_to_a_file_or_nothing(tmp_path: Path, target: str) -> None:
    if target == "file":
        (tmp_path / target).write_text("x")
    link = tmp_path / "run"
    link.symlink_to(tmp_path / target)
    with pytest.raises(PathError, match="not a directory"):
        ensure_private_dir(link)


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to make a directory owned by another user"
)
def test_refuses_a_dir_owned_by_someone_else(tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.mkdir(mode=0o777)
    os.chown(target, 65534, 65534)
    target.chmod(0o777)
    with pytest.raises(PathError, match="belongs to uid 65534"):
        ensure_private_dir(target)
    assert mode_of(target) == 0o777  # refused, not repaired


# --- where things live -------------------------------------------------------------------------


def test_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert paths.state_home() == tmp_path / "user" / ".local" / "state" / "superv"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert paths.state_home() == tmp_path / "xdg" / "superv"
    monkeypatch.setenv("SUPERV_HOME", str(tmp_path / "home"))
    assert paths.state_home() == tmp_path / "home"
    assert paths.sessions_dir() == tmp_path / "home" / "sessions"
    assert paths.session_dir("s1") == tmp_path / "home" / "sessions" / "s1"


def test_runtime_dir_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SUPERV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    monkeypatch.setenv("SUPERV_RUNTIME_DIR", str(tmp_path / "run"))
    assert paths.runtime_dir() == tmp_path / "run"
    assert paths.supervisor_socket() == tmp_path / "run" / "supervisor.sock"
    assert paths.session_socket("s1") == tmp_path / "run" / "sessions" / "s1.sock"


def test_runtime_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert paths.runtime_dir() == Path(f"/tmp/superv-{os.getuid()}")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    assert paths.runtime_dir() == tmp_path / "xdg-run" / "superv"


@pytest.mark.parametrize("xdg_runtime", [True, False])
def test_two_homes_get_two_runtime_dirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg_runtime: bool
) -> None:
    if xdg_runtime:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    default = paths.runtime_dir()
    monkeypatch.setenv("SUPERV_HOME", str(tmp_path / "home-a"))
    a = paths.runtime_dir()
    monkeypatch.setenv("SUPERV_HOME", str(tmp_path / "home-b"))
    b = paths.runtime_dir()
    assert len({default, a, b}) == 3
    assert a.parent == b.parent == default
    assert paths.session_socket("s") != paths.session_socket("s").with_name("x")
    # Stable: the same home always gives the same directory.
    monkeypatch.setenv("SUPERV_HOME", str(tmp_path / "home-a"))
    assert paths.runtime_dir() == a


def test_same_home_spelled_differently_gets_one_runtime_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "home")
    monkeypatch.setenv("SUPERV_HOME", str(tmp_path / "home"))
    expected = paths.runtime_dir()
    for spelling in [tmp_path / "link", tmp_path / "home" / ".." / "home", f"{tmp_path}//home/"]:
        monkeypatch.setenv("SUPERV_HOME", str(spelling))
        assert paths.runtime_dir() == expected, spelling
    # A relative home would name different places for the CLI and the daemon (cwd /).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPERV_HOME", "home")
    with pytest.raises(SettingError, match="SUPERV_HOME='home' is not usable: use an absolute path"):
        paths.runtime_dir()


def test_explicit_default_home_shares_the_default_runtime_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SUPERV_HOME set to the default home must find the sockets of a supervisor started
    without it: same state, so same sessions and same sockets."""
    default = paths.runtime_dir()
    monkeypatch.setenv("SUPERV_HOME", str(paths.state_home()))
    assert paths.runtime_dir() == default


def test_xdg_state_home_is_a_different_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    default = paths.runtime_dir()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-a"))
    a = paths.runtime_dir()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-b"))
    b = paths.runtime_dir()
    assert len({default, a, b}) == 3
    # ... and the same home as SUPERV_HOME=<xdg>/superv.
    monkeypatch.setenv("SUPERV_HOME", str(tmp_path / "xdg-b" / "superv"))
    assert paths.runtime_dir() == b


def test_socket_paths_fit_in_usual_places(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-character name fits under the default home as NAME.sock; under a tagged home
    (16 bytes more) it would not, and gets a short hashed name instead (issue 14.10)."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert paths.session_socket("n" * 64).name == "n" * 64 + ".sock"
    monkeypatch.setenv("SUPERV_HOME", "/srv/superv-home")
    check_socket_path(paths.supervisor_socket())
    assert paths.session_socket("n" * 48).name == "n" * 48 + ".sock"
    hashed = paths.session_socket("n" * 64)
    assert hashed.name.startswith("~") and check_socket_path(hashed) == hashed
    assert hashed != paths.session_socket("n" * 63 + "m")
    paths.check_runtime_dir()
    monkeypatch.setenv("SUPERV_RUNTIME_DIR", "/" + "r" * 80)
    with pytest.raises(PathError, match="SUPERV_RUNTIME_DIR"):
        paths.check_runtime_dir()


# --- socket path length ----------------------------------------------------------------------


def test_socket_path_limit() -> None:
    at_limit = Path("/" + "s" * (MAX_SOCKET_PATH - 1))
    assert len(os.fsencode(at_limit)) == MAX_SOCKET_PATH == 107
    assert check_socket_path(at_limit) == at_limit
    over = Path("/" + "s" * MAX_SOCKET_PATH)
    with pytest.raises(PathError, match="longer than 107 bytes") as info:
        check_socket_path(over)
    assert "SUPERV_RUNTIME_DIR" in str(info.value)


def test_socket_path_limit_counts_bytes_not_characters() -> None:
    path = Path("/" + "\u00e9" * 60)  # 61 characters, 121 bytes
    with pytest.raises(PathError):
        check_socket_path(path)


def test_long_runtime_dir_is_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SUPERV_RUNTIME_DIR", "/tmp/" + "d" * 80)
    with pytest.raises(PathError, match="SUPERV_RUNTIME_DIR"):
        check_socket_path(paths.session_socket("x" * 30))


@pytest.mark.parametrize("owner", [65534, None])  # another user's, or ours and mode 0777
def test_socket_dir_under_a_directory_others_can_change_is_refused(tmp_path: Path,
                                                                  owner: int | None) -> None:
    """The fallback /tmp/superv-UID made by another user first (mode 0777): they could
    rename our socket directory away and put their own in its place."""
    shared = tmp_path / "superv-0"
    shared.mkdir()
    shared.chmod(0o777)
    if owner is not None:
        os.chown(shared, owner, owner)
    with pytest.raises(PathError, match="would let another user replace"):
        ensure_socket_dir(shared / "home-0123456789")
    assert not (shared / "home-0123456789").exists()
    shared.chmod(0o1777)  # sticky, as /tmp is: no one renames what is not theirs
    if owner is None:
        assert mode_of(ensure_socket_dir(shared / "home-0123456789")) == 0o700
