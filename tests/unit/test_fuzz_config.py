"""Property-based fuzzing of the configuration loaders: ``edge.config.load_config``, ``central.config.load_settings``,
``central.alerts.config.load_rules`` and ``edge.devices.profiles.load_profile``.

Property: any file — random bytes, random YAML, a real example mutated at text or value level — gives either a
configuration or ``ConfigError`` naming the file, never another exception. Alias bombs, deep nesting, recursive
aliases and oversized files are refused before YAML builds them (``sync.runtime.limits``); the shipped examples
load. Budget: the hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from central.alerts.config import load_rules
from central.config import load_settings
from edge.config import load_config
from edge.devices.profiles import load_profile
from sync.runtime.config import ConfigError
from sync.runtime.limits import MAX_CONFIG_BYTES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "firmware-config" / "examples"
PROFILE = next((ROOT / "firmware-config" / "profiles").rglob("*.yaml"))


def _central(path: Path) -> object:
    return load_settings(path, environ={}, check_files=False)


def _profile(path: Path) -> object:
    return load_profile(path)


LOADERS: dict[str, tuple[Callable[[Path], object], Path]] = {
    "node": (load_config, EXAMPLES / "node.yaml"),
    "central": (_central, EXAMPLES / "central.yaml"),
    "alert-rules": (load_rules, EXAMPLES / "alert-rules.yaml"),
    "profile": (_profile, PROFILE),
}
_TMP = Path(tempfile.mkdtemp(prefix="fuzz-config-"))


@pytest.fixture(autouse=True, scope="module")
def _secrets_in_the_environment() -> Iterator[None]:
    """The alert-rules example takes its secrets from the environment (as it should)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOORGATE_ALERT_WEBHOOK_AUTH", "Bearer fuzz")
        mp.setenv("FLOORGATE_SMTP_PASSWORD", "fuzz")
        yield


def _load(kind: str, content: bytes) -> object | None:
    loader, original = LOADERS[kind]
    path = _TMP / f"{kind}-{time.monotonic_ns()}" / original.name  # a profile's name must match its file
    path.parent.mkdir()
    path.write_bytes(content)
    try:
        return loader(path)
    except ConfigError as exc:
        if str(path) not in str(exc):
            raise AssertionError(f"the error does not name the file: {exc}") from exc
        return None
    finally:
        path.unlink()
        path.parent.rmdir()


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_the_shipped_examples_load(kind: str) -> None:
    assert _load(kind, LOADERS[kind][1].read_bytes()) is not None


@pytest.mark.parametrize("kind", sorted(LOADERS))
@pytest.mark.parametrize(("name", "text"), [
    ("alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))),
    ("recursive alias", "a: &a [1, *a]\n"),
    ("deep nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n"),
    ("deep block nesting", "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "v\n"),
    ("bad date", "a: 2024-02-30\n"),
    ("unhashable key", "? {a: 1}\n: x\n"),  # found by make fuzz in the profile loader (TypeError)
    ("not UTF-8", "a: \udcff\n"),
    ("too large", "# " + "x" * MAX_CONFIG_BYTES + "\n"),
])
def test_hostile_files_end_in_config_error(kind: str, name: str, text: str) -> None:
    started = time.monotonic()
    assert _load(kind, text.encode("utf-8", "surrogateescape")) is None, name
    assert time.monotonic() - started < 10, f"{name} took {time.monotonic() - started:.1f} s"


@st.composite
def text_mutations(draw: st.DrawFn, kind: str) -> bytes:
    text = bytearray(LOADERS[kind][1].read_bytes())
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "set":
            text[pos] = draw(st.sampled_from(b" \n\t:-[]{}&*!|>'\"#%@`0123456789x\x00\xff"))
        elif op == "insert":
            text[pos:pos] = draw(st.sampled_from([b"&a ", b"*a", b"!!python/object:os.system ", b"<<: ", b"\t",
                                                 b"\n- ", b": ", "١٢".encode(), b"2024-02-30", b"0o777", b"1e999",
                                                 b".nan", b"~", b"!!binary ", b"[[[[", b"{"]))
        else:
            del text[pos:pos + draw(st.integers(1, 20))]
    return bytes(text)


@st.composite
def value_mutations(draw: st.DrawFn, kind: str) -> bytes:
    data = yaml.safe_load(LOADERS[kind][1].read_text())
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, prefix: tuple[Any, ...]) -> None:
        paths.append(prefix)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*prefix, i))

    walk(data, ())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths[1:]))
        parent = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = draw(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
                                    | st.text(max_size=30) | st.just("١٢٣") | st.just([]) | st.just({})
                                    | st.just("x" * 5000) | st.lists(st.integers(), max_size=3))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced the parent
    return yaml.safe_dump(data, allow_unicode=True).encode()


@pytest.mark.parametrize("kind", sorted(LOADERS))
@given(data=st.data())
def test_fuzz_config_loaders_raise_only_config_error(kind: str, data: st.DataObject) -> None:
    content = data.draw(text_mutations(kind) | value_mutations(kind) | st.binary(max_size=300)
                        | st.text(max_size=300).map(str.encode))
    _load(kind, content)
