"""The fleet CA's key statements (``sync.keybinding``) and the keys ingest verifies with (``central.fleet.keys``):
a binding proves a key is a node's from a time on, a rotation and a revocation end it; anything altered, another
CA's or another node's statement does not count; a rotated key is accepted for the grace period, a revoked never."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from central.fleet import pki
from central.fleet.keys import CLOCK_TOLERANCE_NS, ROTATION_GRACE_NS, KeyHistory, TrustedKeys, UntrustedKey
from sync.keybinding import BindingError, key_periods, make_binding, make_revocation, verify_statement
from sync.signing import fingerprint, generate_key, public_key_text, sign

NODE = "mill-01"
T0 = 1_765_000_000_000_000_000
HOUR = 3600 * 10**9


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.CertificateAuthority:
    return pki.init_ca(tmp_path_factory.mktemp("pki"))


def test_a_binding_verifies_and_any_change_breaks_it(ca: pki.CertificateAuthority) -> None:
    key = generate_key()
    text = make_binding(ca.key, ca.cert, node=NODE, public_key=public_key_text(key), valid_from_ns=T0)
    st = verify_statement(text, ca.cert, node=NODE)
    assert (st.type, st.fingerprint, st.body["valid_from_ns"]) == ("key-binding", fingerprint(key), T0)
    outer = json.loads(text)
    body = json.loads(outer["statement"])
    body["valid_from_ns"] = T0 - HOUR
    outer["statement"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    with pytest.raises(BindingError, match="signature over the statement does not verify"):
        verify_statement(json.dumps(outer), ca.cert, node=NODE)
    with pytest.raises(BindingError, match="about node 'mill-01', not mill-02"):
        verify_statement(text, ca.cert, node="mill-02")
    with pytest.raises(BindingError, match="no statement of the fleet CA"):
        verify_statement(None, ca.cert, node=NODE)


def test_a_statement_of_another_ca_does_not_count(ca: pki.CertificateAuthority, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = pki.init_ca(tmp_path / "other")
    text = make_binding(other.key, other.cert, node=NODE, public_key=public_key_text(generate_key()),
                        valid_from_ns=T0)
    with pytest.raises(BindingError, match="names another CA"):
        verify_statement(text, ca.cert, node=NODE)


def _history(ca: pki.CertificateAuthority, *, revoke_new_at: int | None = None):  # type: ignore[no-untyped-def]
    old, new = generate_key(), generate_key()
    texts = [make_binding(ca.key, ca.cert, node=NODE, public_key=public_key_text(old), valid_from_ns=T0),
             make_binding(ca.key, ca.cert, node=NODE, public_key=public_key_text(new), valid_from_ns=T0 + HOUR,
                          supersedes=fingerprint(old))]
    if revoke_new_at is not None:
        texts.append(make_revocation(ca.key, ca.cert, node=NODE, key_fingerprint=fingerprint(new),
                                     at_ns=revoke_new_at, reason="stolen"))
    periods = key_periods([verify_statement(t, ca.cert, node=NODE) for t in texts])
    return old, new, KeyHistory(node=NODE, periods=periods)


def test_a_rotation_chains_the_intervals(ca: pki.CertificateAuthority) -> None:
    old, new, history = _history(ca)
    p_old, p_new = history.periods
    assert (p_old.valid_until_ns, p_old.end, p_new.valid_from_ns, p_new.end) == (T0 + HOUR, "rotated", T0 + HOUR,
                                                                                   None)
    assert [p.fingerprint for p in history.candidates(T0 + 1)] == [fingerprint(old)]
    # after the rotation: the new key, and the old one for the grace period
    assert [p.fingerprint for p in history.candidates(T0 + 2 * HOUR)] == [fingerprint(new), fingerprint(old)]
    late = T0 + HOUR + ROTATION_GRACE_NS + CLOCK_TOLERANCE_NS + 1
    assert [p.fingerprint for p in history.candidates(late)] == [fingerprint(new)]


def test_ingest_accepts_a_rotated_key_for_the_grace_period_a_revoked_key_never(ca: pki.CertificateAuthority) -> None:
    old, new, history = _history(ca)
    keys = TrustedKeys.of(history, public_key_text(new), fingerprint(new))
    assert keys.unbound is None
    body = b'{"batch":1}'
    by_old, by_new = sign(old, body), sign(new, body)
    now = T0 + 2 * HOUR
    assert keys.verify(body, by_new, now, now) is None
    assert keys.verify(body, by_old, now, now) is None  # within the grace after the rotation
    late = T0 + HOUR + ROTATION_GRACE_NS + CLOCK_TOLERANCE_NS + 1
    assert "forged or altered" in (keys.verify(body, by_old, late, late) or "")
    assert f"signed with its key {fingerprint(old)}, which the fleet CA vouches for only from" in (
        keys.explain(body, by_old, late) or "")
    assert "(rotated)" in (keys.explain(body, by_old, late) or "")
    assert keys.verify(body, sign(generate_key(), body), now, now) is not None
    assert keys.verify(body, None, now, now) == "not signed"

    _, new2, revoked = _history(ca, revoke_new_at=T0 + 3 * HOUR)
    keys = TrustedKeys.of(revoked, public_key_text(new2), fingerprint(new2))
    body_sig = sign(new2, body)
    assert keys.verify(body, body_sig, T0 + 2 * HOUR, T0 + 2 * HOUR) is None
    # made before the revocation but arriving after it: never again
    assert keys.verify(body, body_sig, T0 + 2 * HOUR, T0 + 4 * HOUR) is not None
    assert keys.verify(body, body_sig, T0 + 4 * HOUR, T0 + 4 * HOUR) is not None


def test_an_unbound_registered_key_is_named(ca: pki.CertificateAuthority) -> None:
    loose = generate_key()
    history = KeyHistory(node=NODE, untrusted=[UntrustedKey(public_key_text(loose), fingerprint(loose),
                                                            "not bound by the fleet CA: node mill-01: no statement "
                                                            "of the fleet CA")])
    keys = TrustedKeys.of(history, public_key_text(loose), fingerprint(loose))
    problem = keys.verify(b"x", sign(loose, b"x"), T0, T0)
    assert problem is not None
    assert problem.startswith(f"its key {fingerprint(loose)} is not bound by the fleet CA (node mill-01: no "
                              "statement of the fleet CA)")
    keys = TrustedKeys.of(KeyHistory(node=NODE), public_key_text(loose), fingerprint(loose))
    assert "in no node_keys row" in (keys.verify(b"x", sign(loose, b"x"), T0, T0) or "")


def test_a_revocation_after_a_rotation_cuts_the_rotation_grace(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "ca")
    old, new = generate_key(), generate_key()
    texts = [make_binding(ca.key, ca.cert, node=NODE, public_key=public_key_text(old), valid_from_ns=1_000),
             make_binding(ca.key, ca.cert, node=NODE, public_key=public_key_text(new), valid_from_ns=2_000,
                          supersedes=fingerprint(old)),
             make_revocation(ca.key, ca.cert, node=NODE, key_fingerprint=fingerprint(old), at_ns=2_500)]
    periods = {p.fingerprint: p for p in key_periods([verify_statement(t, ca.cert, node=NODE) for t in texts])}
    rotated = periods[fingerprint(old)]
    assert (rotated.end, rotated.valid_until_ns, rotated.revoked_at_ns) == ("rotated", 2_000, 2_500)
    assert rotated.covers(2_400, rotation_grace_ns=10_000)  # inside the grace, before the revocation
    assert not rotated.covers(2_600, rotation_grace_ns=10_000)  # the grace ends at the revocation
    assert periods[fingerprint(new)].covers(2_600)
