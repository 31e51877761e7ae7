"""``floorgate central ca …`` and ``central node add|revoke`` on real PostgreSQL: the bundle a node gets (layout, modes,
a signing key the agent can read and that central has registered), refusals that name the node, reissue, revocation
(certificates, CRL, signing key, ``node list``) and the certificate records."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select

from central.db import migrate
from central.db.engine import make_engine, make_session_factory
from central.db.models import Certificate, Node, Site
from floorgate_cli import main
from sync.signing import fingerprint, load_private_key, public_key_text
from tests.procs import write_yaml

pytestmark = pytest.mark.integration


@pytest.fixture
def central_cfg(tmp_path: Path, pg_url: str) -> Path:
    engine = make_engine(pg_url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return write_yaml(tmp_path / "central.yaml", {
        "database_url": pg_url,
        "metrics": {"kind": "sqlite", "path": str(tmp_path / "m.sqlite")},
        # central's own TLS files do not exist yet: the ca commands must not need them
        "broker": {"url": "mqtts://127.0.0.1:8883", "tls": {"ca_file": "pki/ca.crt", "cert_file": "central/tls.crt",
                                                            "key_file": "central/tls.key"}},
        "pki": {"dir": "pki", "cert_days": 90},
    })


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _db(central_cfg: Path):  # type: ignore[no-untyped-def]
    from central.config import load_settings

    engine = make_engine(load_settings(central_cfg, check_files=False).database_url)
    return engine, make_session_factory(engine)


def test_node_add_writes_the_bundle_and_registers_the_node(
        tmp_path: Path, central_cfg: Path, capsys: pytest.CaptureFixture[str], unique_id: str) -> None:
    cfg = str(central_cfg)
    rc, out, err = _run(capsys, "central", "node", "add", "mill-01", "--config", cfg, "--out", str(tmp_path / "b"))
    assert rc == 1
    assert "no fleet CA here (create it with `floorgate central ca init" in err
    assert _run(capsys, "central", "ca", "init", "--config", cfg)[0] == 0
    rc, _, err = _run(capsys, "central", "ca", "init", "--config", cfg)
    assert rc == 1
    assert f"{tmp_path}/pki/ca.key: a fleet CA exists already; refusing to overwrite it" in err

    engine, sessions = _db(central_cfg)
    try:
        with sessions.begin() as s:
            now = datetime.now(UTC)
            s.add(Site(code="HAM", name="Hamburg", created_at=now, updated_at=now))
        rc, out, err = _run(capsys, "central", "node", "add", "mill-01", "--config", cfg, "--out",
                            str(tmp_path / "bundles"), "--site", "HAM")
        assert rc == 0, err
        bundle = tmp_path / "bundles" / "mill-01"
        assert sorted(p.name for p in bundle.iterdir()) == ["bindings.json", "ca.crt", "central.pub", "node.key",
                                                            "tls.crt", "tls.key"]
        # central.pub: the public half of central's downlink signing key, made in pki.dir on first need
        central_key = load_private_key(tmp_path / "pki" / "central-signing.key")
        trusted = [ln for ln in (bundle / "central.pub").read_text().splitlines() if not ln.startswith("#")]
        assert trusted == [public_key_text(central_key)]
        assert _mode(tmp_path / "pki" / "central-signing.key") == 0o600
        assert _mode(bundle / "tls.key") == 0o600
        assert _mode(bundle / "node.key") == 0o600
        assert _mode(bundle) == 0o700
        assert (bundle / "ca.crt").read_bytes() == (tmp_path / "pki" / "ca.crt").read_bytes()
        cert = x509.load_pem_x509_certificate((bundle / "tls.crt").read_bytes())
        assert cert.subject.rfc4514_string() == "CN=mill-01"
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate((bundle / "ca.crt").read_bytes()))
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 90  # pki.cert_days (+ backdating)
        key = load_private_key(bundle / "node.key")  # exactly what the agent reads at key_file
        with sessions() as s:
            node = s.get(Node, "mill-01")
            assert node is not None
            assert node.public_key == public_key_text(key)
            assert node.key_fingerprint == fingerprint(key)
            assert node.cert_fingerprint == cert.fingerprint(hashes.SHA256()).hex(":").upper()
            assert node.site_id == s.execute(select(Site.id).where(Site.code == "HAM")).scalar_one()
            row = s.execute(select(Certificate)).scalar_one()
            assert (row.kind, row.common_name, row.node_id, row.revoked_at) == ("node", "mill-01", "mill-01", None)
            assert int(row.serial, 16) == cert.serial_number
            assert row.fingerprint == node.cert_fingerprint
        assert f"node mill-01 added: bundle {bundle}" in out
        assert f"signing key fingerprint {fingerprint(key)}" in out

        # again: refused, naming the node and the way out; the bundle stays as it was
        before = (bundle / "node.key").read_bytes()
        rc, _, err = _run(capsys, "central", "node", "add", "mill-01", "--config", cfg, "--out",
                          str(tmp_path / "bundles"))
        assert rc == 1
        assert "node mill-01 has a valid certificate already (serial " in err
        assert "--reissue revokes it" in err
        assert (bundle / "node.key").read_bytes() == before
        # a node enrolled the other way (edge enrol + node register) is refused the same way
        assert _run(capsys, "central", "node", "register", "mill-02", "--public-key", public_key_text(key),
                    "--config", cfg)[0] == 0
        rc, _, err = _run(capsys, "central", "node", "add", "mill-02", "--config", cfg, "--out",
                          str(tmp_path / "bundles"))
        assert rc == 1
        assert "node mill-02 is enrolled already with signing key" in err
        assert not (tmp_path / "bundles" / "mill-02").exists()
        rc, _, err = _run(capsys, "central", "node", "add", "mill 3", "--config", cfg, "--out", str(tmp_path / "b"))
        assert rc == 1
        assert "'mill 3' is not a valid node id" in err
        rc, _, err = _run(capsys, "central", "node", "add", "mill-04", "--config", cfg, "--out",
                          str(tmp_path / "bundles"), "--site", "NOPE")
        assert rc == 1
        assert "--site 'NOPE': no site with that code or id" in err
        assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == ["mill-01"]  # nothing half-written

        # --reissue: the old certificate is revoked (and in the CRL), a new key and certificate replace the old
        old_serial = cert.serial_number
        rc, out, err = _run(capsys, "central", "node", "add", "mill-01", "--config", cfg, "--out",
                            str(tmp_path / "bundles"), "--reissue", "--days", "10")
        assert rc == 0, err
        new_cert = x509.load_pem_x509_certificate((bundle / "tls.crt").read_bytes())
        assert new_cert.serial_number != old_serial
        assert (bundle / "node.key").read_bytes() != before
        crl = x509.load_pem_x509_crl((tmp_path / "pki" / "crl.pem").read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(old_serial) is not None
        assert crl.get_revoked_certificate_by_serial_number(new_cert.serial_number) is None
        assert "revoked the previous certificate(s)" in out
        with sessions() as s:
            assert s.get(Node, "mill-01").public_key == public_key_text(load_private_key(bundle / "node.key"))  # type: ignore[union-attr]
            old_row = s.execute(select(Certificate).where(Certificate.serial == format(old_serial, "x"))).scalar_one()
            assert old_row.revoke_reason == f"superseded by {format(new_cert.serial_number, 'x')}"
    finally:
        engine.dispose()


def test_node_revoke_blocks_certificate_and_key_and_node_list_shows_it(
        tmp_path: Path, central_cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(central_cfg)
    assert _run(capsys, "central", "ca", "init", "--config", cfg)[0] == 0
    out_dir = str(tmp_path / "bundles")
    for node in ("mill-01", "mill-02"):
        assert _run(capsys, "central", "node", "add", node, "--config", cfg, "--out", out_dir)[0] == 0
    revoked = x509.load_pem_x509_certificate((tmp_path / "bundles" / "mill-01" / "tls.crt").read_bytes())
    kept = x509.load_pem_x509_certificate((tmp_path / "bundles" / "mill-02" / "tls.crt").read_bytes())

    rc, out, err = _run(capsys, "central", "node", "revoke", "mill-01", "--config", cfg, "--reason", "stolen")
    assert rc == 0, err
    assert "node mill-01 revoked: certificate(s)" in out
    assert "crl.pem rewritten: deploy it to the broker and restart the broker" in out
    crl = x509.load_pem_x509_crl((tmp_path / "pki" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(kept.serial_number) is None
    engine, sessions = _db(central_cfg)
    try:
        with sessions() as s:
            node = s.get(Node, "mill-01")
            assert node is not None
            assert node.public_key is None  # ingest finds no key: whatever it sends is quarantined
            row = s.execute(select(Certificate).where(Certificate.node_id == "mill-01")).scalar_one()
            assert row.revoked_at is not None
            assert row.revoke_reason == "stolen"
            assert s.get(Node, "mill-02").public_key is not None  # type: ignore[union-attr]
    finally:
        engine.dispose()
    rc, out, _ = _run(capsys, "central", "node", "list", "--config", cfg)
    assert rc == 0
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert lines["mill-01"][1:3] == ["revoked", "REVOKED"]
    assert lines["mill-02"][1] == "enrolled"

    rc, out, _ = _run(capsys, "central", "node", "revoke", "mill-01", "--config", cfg)
    assert rc == 0
    assert "nothing left to revoke (revoked already)" in out
    rc, _, err = _run(capsys, "central", "node", "revoke", "mill-99", "--config", cfg)
    assert rc == 1
    assert "node mill-99 is not known at central" in err
    # let it in again with a new bundle: no --reissue needed for a revoked node
    assert _run(capsys, "central", "node", "add", "mill-01", "--config", cfg, "--out", out_dir)[0] == 0
    rc, out, _ = _run(capsys, "central", "node", "list", "--config", cfg)
    assert {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}["mill-01"] == "enrolled"


def test_server_and_client_certificates_crl_list_and_revoke(
        tmp_path: Path, central_cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(central_cfg)
    assert _run(capsys, "central", "ca", "init", "--config", cfg)[0] == 0
    rc, out, err = _run(capsys, "central", "ca", "server-cert", "--config", cfg, "--dns", "broker.example",
                        "--dns", "localhost", "--ip", "127.0.0.1", "--out", str(tmp_path / "broker"))
    assert rc == 0, err
    srv = x509.load_pem_x509_certificate((tmp_path / "broker" / "server.crt").read_bytes())
    assert srv.subject.rfc4514_string() == "CN=broker.example"
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example", "localhost"]
    assert _mode(tmp_path / "broker" / "server.key") == 0o600
    assert (tmp_path / "broker" / "ca.crt").exists()
    rc, _, err = _run(capsys, "central", "ca", "server-cert", "--config", cfg, "--out", str(tmp_path / "b2"))
    assert rc == 1
    assert "give the broker's host name(s) with --dns" in err

    rc, _, err = _run(capsys, "central", "ca", "client-cert", "--config", cfg, "--out", str(tmp_path / "central"))
    assert rc == 0, err
    cli = x509.load_pem_x509_certificate((tmp_path / "central" / "tls.crt").read_bytes())
    assert cli.subject.rfc4514_string() == "CN=floorgate:central"
    rc, _, err = _run(capsys, "central", "ca", "client-cert", "--config", cfg, "--cn", "mill-01", "--out",
                      str(tmp_path / "x"))
    assert rc == 1
    assert "expected 'floorgate:NAME'" in err
    # now central's own TLS files exist: the full config loads (what `central run` reads)
    from central.config import load_settings

    assert load_settings(central_cfg).broker.tls is not None

    rc, out, _ = _run(capsys, "central", "ca", "list", "--config", cfg)
    assert rc == 0
    assert format(srv.serial_number, "x") in out
    assert "floorgate:central" in out
    rc, _, err = _run(capsys, "central", "ca", "revoke", format(cli.serial_number, "x"), "--config", cfg,
                      "--reason", "key leaked")
    assert rc == 0, err
    crl = x509.load_pem_x509_crl((tmp_path / "pki" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cli.serial_number) is not None
    rc, _, err = _run(capsys, "central", "ca", "revoke", "abc123", "--config", cfg)
    assert rc == 1
    assert "serial abc123: no such certificate was issued" in err
    assert _run(capsys, "central", "node", "add", "n1", "--config", cfg, "--out", str(tmp_path / "nb"))[0] == 0
    node_serial = format(x509.load_pem_x509_certificate((tmp_path / "nb" / "n1" / "tls.crt").read_bytes())
                         .serial_number, "x")
    rc, _, err = _run(capsys, "central", "ca", "revoke", node_serial, "--config", cfg)
    assert rc == 1
    assert "use `floorgate central node revoke n1`" in err

    (tmp_path / "pki" / "crl.pem").unlink()
    rc, _, err = _run(capsys, "central", "ca", "list", "--config", cfg)
    assert rc == 1
    assert f"{tmp_path / 'pki' / 'crl.pem'}: cannot read the CRL" in err
    rc, out, _ = _run(capsys, "central", "ca", "crl", "--config", cfg, "--days", "7")
    assert rc == 0
    assert "1 revoked certificate(s), valid for 7 days" in out
    crl = x509.load_pem_x509_crl((tmp_path / "pki" / "crl.pem").read_bytes())
    assert [r.serial_number for r in crl] == [cli.serial_number]
    rc, out, _ = _run(capsys, "central", "ca", "list", "--config", cfg)
    assert rc == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines[format(cli.serial_number, "x")].endswith("(key leaked)")
    assert "revoked" in lines[format(cli.serial_number, "x")]
    assert lines[format(srv.serial_number, "x")].endswith("valid, 90 days left")  # pki.cert_days: 90
    assert f"{tmp_path / 'pki' / 'crl.pem'}: next update " in out
    assert "UTC, 7 days left (the broker refuses every client after it" in out


def test_the_pki_commands_need_a_pki_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_yaml(tmp_path / "central.yaml", {"database_url": "sqlite:///x.db",
                                                 "metrics": {"kind": "sqlite", "path": "m.sqlite"}})
    rc, _, err = _run(capsys, "central", "ca", "init", "--config", str(cfg))
    assert rc == 2
    assert f"{cfg}: pki: not set; add `pki: {{dir: /etc/floorgate/pki}}`" in err
