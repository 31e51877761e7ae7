"""Property-based fuzzing of the TSE TAR reader (``protocols.tse.verify_tar``): an uploaded export is untrusted.

Property: ``verify_tar`` never raises (its documented contract: an unreadable archive is ``readable=False`` with the
reason in the ``archive`` check, a bad file is an invalid entry) for arbitrary bytes, for a real export mutated at
byte level, with member contents replaced or renamed, and compressed; the real export verifies as valid. A tar bomb
(more files or bytes than the reader's bounds) ends as an unreadable archive. Budget: tests/conftest.py profiles.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from protocols.tse import verify_tar as reader
from protocols.tse.api import ensure_ready
from protocols.tse.software import SoftwareTse
from protocols.tse.tarexport import build_tar
from protocols.tse.verify_tar import TarVerification, verify_tar
from tests.tse_support import FakeClock

PTYPE = "Kassenbeleg-V1"


@cache
def _export() -> bytes:
    """A real export of the software TSE: two sales (start, update, finish), certificate, info.csv."""
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp, SoftwareTse(Path(tmp) / "tse", curve="P-256", clock=clock) as tse:
        ensure_ready(tse)
        tse.register_client("KASSE-1")
        for _ in range(2):
            number = tse.start_transaction("KASSE-1", b"", PTYPE).transaction_number
            clock.advance(1)
            tse.finish_transaction("KASSE-1", number, "Beleg^1.00_0.00_0.00_0.00_0.00^1.00:Bar", PTYPE)
            clock.advance(1)
        return tse.export()


def _members(data: bytes) -> list[tuple[str, bytes, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = []
        for m in tar.getmembers():
            handle = tar.extractfile(m)
            out.append((m.name, handle.read() if handle else b"", int(m.mtime)))
        return out


def _never_raises(data: bytes, partial: bool = False) -> TarVerification:
    report = verify_tar(data, partial=partial)
    assert isinstance(report, TarVerification)
    report.lines(verbose=True)
    report.as_dict()
    return report


def test_the_real_export_verifies() -> None:
    report = _never_raises(_export())
    assert report.valid, report.lines()


@given(data=st.binary(max_size=4000), prefix=st.sampled_from([b"", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"]))
def test_fuzz_arbitrary_bytes(data: bytes, prefix: bytes) -> None:
    _never_raises(prefix + data)


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    out = bytearray(_export())
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["flip", "set", "truncate"]))
        if op == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            out[pos] = draw(st.integers(0, 255))
        else:
            del out[pos:]
            break
    return bytes(out)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # the failing export's repr is long
@given(data=byte_mutations(), partial=st.booleans(), compress=st.booleans())
def test_fuzz_byte_mutated_exports(data: bytes, partial: bool, compress: bool) -> None:
    _never_raises(gzip.compress(data) if compress else data, partial)


@st.composite
def member_mutations(draw: st.DrawFn) -> bytes:
    members = _members(_export())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(members) - 1))
        name, content, mtime = members[i]
        op = draw(st.sampled_from(["content", "name", "duplicate", "drop", "digits"]))
        if op == "content":
            pos = draw(st.integers(0, max(0, len(content) - 1)))
            content = content[:pos] + draw(st.binary(max_size=20)) + content[pos + draw(st.integers(0, 10)):]
        elif op == "name":
            name = draw(st.text(max_size=80).filter(lambda n: n.strip("/") != "" and "\x00" not in n))
        elif op == "digits":  # the counters of a file name in other scripts' digits
            name = name.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
        elif op == "duplicate":
            members.append((name, content, mtime))
        if op == "drop" and len(members) > 1:
            del members[i]
        else:
            members[min(i, len(members) - 1)] = (name, content, mtime)
    return build_tar(members)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@given(data=member_mutations(), partial=st.booleans())
def test_fuzz_member_mutated_exports(data: bytes, partial: bool) -> None:
    report = _never_raises(data, partial)
    for entry in report.entries:
        if entry.kind == "log" and entry.signature_counter is not None:
            assert entry.signature_counter >= 0


def test_non_ascii_digits_in_a_log_name_are_not_read_as_a_counter() -> None:
    members = _members(_export())
    name = next(m[0] for m in members if m[0].endswith(".log"))
    other = name.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    report = verify_tar(build_tar([(other if n == name else n, c, t) for n, c, t in members]))
    entry = next(e for e in report.entries if e.name == other)
    assert {c.name: c.ok for c in entry.checks}["name"] is False


@pytest.mark.parametrize(("bound", "value"), [("MAX_MEMBERS", 50), ("MAX_TOTAL_BYTES", 5000),
                                              ("MAX_STREAM_BYTES", 20_000)])
def test_a_tar_bomb_is_an_unreadable_archive(monkeypatch: pytest.MonkeyPatch, bound: str, value: int) -> None:
    """The bounds are module constants; smaller ones here so that the bomb stays small (the reader is the same)."""
    monkeypatch.setattr(reader, bound, value)
    bomb = build_tar([(f"f{i}.bin", b"\x00" * 1000, 0) for i in range(60)])
    report = verify_tar(gzip.compress(bomb))
    assert not report.readable
    assert report.checks[0].name == "archive"
    assert "not a readable TAR archive: " in report.checks[0].detail


def test_found_by_fuzzing_a_certificate_with_a_corrupt_key_is_an_invalid_entry() -> None:
    """The certificate parses, its key only when asked for (``public_key()`` raised ValueError out of verify_tar)."""
    members = _members(_export())
    name, cert, _ = next(m for m in members if "_X509." in m[0])
    der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER) if cert.startswith(
        b"-----BEGIN") else cert
    point = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    broken = der.replace(point, b"\x05" + point[1:])
    report = _never_raises(build_tar([(n, broken if n == name else c, t) for n, c, t in members]))
    entry = next(e for e in report.entries if e.name == name)
    assert entry.checks[0].name == "certificate"
    assert entry.checks[0].ok is False
    assert not report.valid


def test_found_by_fuzzing_an_info_csv_the_csv_reader_refuses_is_an_invalid_entry() -> None:
    members = [(n, b'"' + b"x" * 200_000 + b'"\n' if n.endswith("info.csv") else c, t) for n, c, t in
               _members(_export())]
    report = _never_raises(build_tar(members))
    entry = next(e for e in report.entries if e.kind == "info")
    assert [(c.name, c.ok) for c in entry.checks] == [("info", False)]
    assert "info.csv is not CSV" in entry.checks[0].detail
