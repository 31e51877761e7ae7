"""The fleet CA (central.fleet.pki): what the certificates say (CN, SAN, EKU, key usage, validity), the CRL, file
modes —
and the TLS keys of the edge and central configs, with errors that name the file and the key."""

from __future__ import annotations

import re
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from central.config import load_settings, parse_settings
from central.fleet import pki
from edge.config import load_config, parse_config
from floorgate_cli import main
from sync.runtime.config import ConfigError

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca(tmp_path: Path) -> pki.CertificateAuthority:
    return pki.init_ca(tmp_path / "pki", now=NOW)


def _ext(cert: x509.Certificate, kind: type) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(kind)


def test_the_ca_is_a_self_signed_p256_ca_for_ten_years_with_its_key_readable_by_the_owner_only(
        ca: pki.CertificateAuthority) -> None:
    cert = ca.cert
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is True
    assert bc.value.path_length == 0
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature
    assert cert.not_valid_after_utc - NOW == timedelta(days=3650)
    assert cert.not_valid_before_utc <= NOW
    assert _mode(ca.directory) == 0o700
    assert _mode(ca.directory / "ca.key") == 0o600
    assert _mode(ca.directory / "ca.crt") == 0o644
    crl = x509.load_pem_x509_crl((ca.directory / "crl.pem").read_bytes())
    assert len(crl) == 0
    assert crl.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
    again = pki.load_ca(ca.directory)
    assert again.cert == cert


def test_init_refuses_to_overwrite_a_ca_and_names_the_file(ca: pki.CertificateAuthority) -> None:
    before = (ca.directory / "ca.key").read_bytes()
    with pytest.raises(pki.PkiError, match=r"pki/ca.key: a fleet CA exists already; refusing to overwrite"):
        pki.init_ca(ca.directory)
    assert (ca.directory / "ca.key").read_bytes() == before


def test_load_ca_names_what_is_missing_or_wrong(tmp_path: Path, ca: pki.CertificateAuthority) -> None:
    with pytest.raises(pki.PkiError, match=r"nothing: no fleet CA here \(create it with `floorgate central ca init"):
        pki.load_ca(tmp_path / "nothing")
    (ca.directory / "ca.key").write_text("garbage")
    with pytest.raises(pki.PkiError, match=r"pki/ca.key: not a PEM private key"):
        pki.load_ca(ca.directory)
    other = pki.init_ca(tmp_path / "other", now=NOW)
    (ca.directory / "ca.key").write_bytes((other.directory / "ca.key").read_bytes())
    with pytest.raises(pki.PkiError, match=r"pki/ca.key: does not belong to .*pki/ca.crt"):
        pki.load_ca(ca.directory)


def test_a_node_certificate_is_a_client_certificate_with_the_node_id_as_cn(ca: pki.CertificateAuthority) -> None:
    issued = pki.issue(ca, kind="node", common_name="mill-01", days=30, now=NOW)
    cert = issued.cert
    cert.verify_directly_issued_by(ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mill-01"
    assert issued.common_name == "mill-01"
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_cert_sign
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.SubjectAlternativeName)
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca.cert, x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_after_utc - NOW == timedelta(days=30)
    assert issued.fingerprint.count(":") == 31
    assert issued.fingerprint == issued.fingerprint.upper()
    assert issued.serial_hex == format(cert.serial_number, "x")


def test_a_certificate_never_outlives_the_ca(ca: pki.CertificateAuthority) -> None:
    issued = pki.issue(ca, kind="node", common_name="n1", days=3650 * 2, now=NOW)
    assert issued.cert.not_valid_after_utc == ca.cert.not_valid_after_utc


@pytest.mark.parametrize("bad", ["", "-x", "a/b", "a+b", "a#", "x" * 65, "floorgate:central", "mill 01"])
def test_a_node_cn_must_be_a_node_id(ca: pki.CertificateAuthority, bad: str) -> None:
    with pytest.raises(pki.PkiError, match="is not a valid node id"):
        pki.issue(ca, kind="node", common_name=bad)


def test_the_server_certificate_names_the_broker_in_its_subject_alt_names(ca: pki.CertificateAuthority) -> None:
    issued = pki.issue(ca, kind="server", common_name="broker.example", dns_names=("broker.example", "localhost"),
                       ip_addresses=("127.0.0.1", "::1"), now=NOW)
    san = _ext(issued.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example", "localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert list(_ext(issued.cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert issued.cert.not_valid_after_utc - NOW == timedelta(days=pki.DEFAULT_CERT_DAYS)
    with pytest.raises(pki.PkiError, match="give the broker's host name"):
        pki.issue(ca, kind="server", common_name="x")
    with pytest.raises(pki.PkiError, match=r"--ip '300.1.1.1': not an IPv4 or IPv6 address"):
        pki.issue(ca, kind="server", common_name="x", ip_addresses=("300.1.1.1",))
    with pytest.raises(pki.PkiError, match=r"--dns 'a b': not a DNS name"):
        pki.issue(ca, kind="server", common_name="x", dns_names=("a b",))
    with pytest.raises(pki.PkiError, match="for the server certificate only"):
        pki.issue(ca, kind="node", common_name="n1", dns_names=("n1.example",))


def test_centrals_cn_can_never_be_a_node_id(ca: pki.CertificateAuthority) -> None:
    issued = pki.issue(ca, kind="client", common_name="floorgate:central")
    assert list(_ext(issued.cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for bad in ("central", "mill-01", "floorgate:", "floorgate:a/b", "other:central"):
        with pytest.raises(pki.PkiError, match="expected 'floorgate:NAME'"):
            pki.issue(ca, kind="client", common_name=bad)


def test_the_crl_lists_the_revoked_serials_with_their_dates(ca: pki.CertificateAuthority) -> None:
    a = pki.issue(ca, kind="node", common_name="a")
    b = pki.issue(ca, kind="node", common_name="b")
    when = NOW - timedelta(hours=1)
    crl = pki.write_crl(ca, [pki.Revocation(a.cert.serial_number, when, "stolen")], days=30, now=NOW)
    on_disk = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert on_disk == crl
    assert on_disk.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert on_disk.issuer == ca.cert.subject
    entry = on_disk.get_revoked_certificate_by_serial_number(a.cert.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == when
    assert on_disk.get_revoked_certificate_by_serial_number(b.cert.serial_number) is None
    assert on_disk.next_update_utc - NOW == timedelta(days=30)
    assert _mode(ca.crl_path) == 0o644


def test_written_keys_are_private_and_load_as_tls_keys(tmp_path: Path, ca: pki.CertificateAuthority) -> None:
    issued = pki.issue(ca, kind="client", common_name="floorgate:central")
    pki.write_private_key(tmp_path / "tls.key", issued.key)
    pki.write_certificate(tmp_path / "tls.crt", issued.cert)
    assert _mode(tmp_path / "tls.key") == 0o600
    assert _mode(tmp_path / "tls.crt") == 0o644
    key = serialization.load_pem_private_key((tmp_path / "tls.key").read_bytes(), None)
    assert key.public_key() == issued.cert.public_key()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")  # what the MQTT clients do


# -- the TLS keys of the configs ------------------------------------------------------------------------------------
NODE = {"node_id": "n1", "data_dir": "/tmp/n1"}
CENTRAL = {"database_url": "sqlite:///c.db", "metrics": {"kind": "sqlite", "path": "m.sqlite"}}


@pytest.fixture
def tls_files(tmp_path: Path, ca: pki.CertificateAuthority) -> Path:
    d = tmp_path / "bundle"
    d.mkdir()
    issued = pki.issue(ca, kind="node", common_name="n1")
    pki.write_certificate(d / "ca.crt", ca.cert)
    pki.write_certificate(d / "tls.crt", issued.cert)
    pki.write_private_key(d / "tls.key", issued.key)
    return d


def _node_errors(broker: dict[str, object], base: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({**NODE, "broker": broker}, source="node.yaml", base_dir=base)
    return info.value.problems


def _central_errors(broker: dict[str, object], base: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings({**CENTRAL, "broker": broker}, source="central.yaml", base_dir=base)
    return info.value.problems


@pytest.mark.parametrize("errors", [_node_errors, _central_errors], ids=["edge", "central"])
def test_tls_settings_are_checked_with_messages_naming_the_key(errors, tls_files: Path) -> None:  # type: ignore[no-untyped-def]
    assert errors({"url": "mqtts://broker"}) == [
        "broker: url mqtts:// needs tls.ca_file (the fleet CA certificate, ca.crt)"]
    assert errors({"url": "mqtt://broker", "tls": {"ca_file": str(tls_files / "ca.crt")}}) == [
        "broker: tls is set but url is mqtt:// (plain text): use mqtts://HOST[:8883]"]
    assert errors({"url": "mqtts://broker", "tls": {"ca_file": str(tls_files / "ca.crt"),
                                                    "cert_file": str(tls_files / "tls.crt")}}) == [
        "broker.tls: cert_file and key_file go together (the client certificate and its key)"]
    assert errors({"url": "mqtts://broker", "tls": {"ca_file": "ca.crt", "key_file": "missing.key",
                                                    "cert_file": "tls.crt"}}, tls_files) == [
        f"broker.tls.key_file: file not found: {tls_files}/missing.key (got 'missing.key')"]
    assert errors({"url": "mqtts://broker", "tls": {"ca_file": "tls.key"}}, tls_files)[0].startswith(
        f"broker.tls: ca_file {tls_files}/tls.key: not a PEM CA certificate")
    assert errors({"url": "mqtts://broker", "tls": {"ca_file": "ca.crt", "cert_file": "tls.crt",
                                                    "key_file": "ca.crt"}}, tls_files)[0].startswith(
        f"broker.tls: cert_file {tls_files}/tls.crt / key_file {tls_files}/ca.crt: not a PEM certificate with its "
        "private key")
    assert errors({"url": "mqtts://broker", "tls": {"ca_file": "ca.crt", "cafile": "x"}}, tls_files) == [
        "broker.tls.cafile: unknown key (check the spelling; see the example config)"]
    assert errors({"url": "https://broker"}) == [
        "broker.url: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (got 'https://broker')"]


def test_a_node_config_with_tls_resolves_the_files_next_to_it_and_defaults_to_port_8883(tls_files: Path) -> None:
    cfg_path = tls_files / "node.yaml"
    cfg_path.write_text("node_id: n1\nbroker:\n  url: mqtts://127.0.0.1\n"
                        "  tls: {ca_file: ca.crt, cert_file: tls.crt, key_file: tls.key}\n")
    cfg = load_config(cfg_path)
    assert cfg.broker.port == 8883
    assert cfg.broker.tls is not None
    assert cfg.broker.tls.ca_file == tls_files / "ca.crt"
    assert cfg.broker.tls.key_file == tls_files / "tls.key"
    from sync.runtime.broker import tls_context

    ctx = tls_context(cfg.broker)
    assert ctx is not None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert tls_context(parse_config({**NODE, "broker": {"url": "mqtt://h"}}, source="x").broker) is None


def test_edge_check_config_reports_a_missing_certificate_with_file_and_key(
        tls_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = tls_files / "node.yaml"
    cfg_path.write_text("node_id: n1\nbroker:\n  url: mqtts://broker.example:8883\n"
                        "  tls: {ca_file: ca.crt, cert_file: n1/tls.crt, key_file: n1/tls.key}\n")
    assert main(["edge", "check-config", "--config", str(cfg_path)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg_path}: broker.tls.cert_file: file not found: {tls_files}/n1/tls.crt (got 'n1/tls.crt')" in err
    assert f"{cfg_path}: broker.tls.key_file: file not found: {tls_files}/n1/tls.key (got 'n1/tls.key')" in err


def test_central_tls_and_pki_settings_from_file_and_environment(tls_files: Path) -> None:
    path = tls_files / "central.yaml"
    path.write_text("database_url: sqlite:///c.db\nmetrics: {kind: sqlite, path: m.sqlite}\n"
                    "broker: {url: 'mqtts://broker:9999', tls: {ca_file: ca.crt, cert_file: tls.crt, "
                    "key_file: tls.key}}\npki: {dir: pki}\n")
    s = load_settings(path, environ={})
    assert s.broker.port == 9999
    assert s.broker.uses_tls
    assert s.broker.tls is not None
    assert s.broker.tls.cert_file == tls_files / "tls.crt"
    assert s.pki is not None
    assert s.pki.dir == tls_files / "pki"
    assert s.pki.cert_days == 730
    assert s.pki.crl_days == 365
    s = load_settings(path, environ={"FLOORGATE_PKI__DIR": "/srv/pki", "FLOORGATE_PKI__CRL_DAYS": "30"})
    assert s.pki is not None
    assert s.pki.dir == Path("/srv/pki")
    assert s.pki.crl_days == 30
    with pytest.raises(ConfigError, match=r"pki.dri: unknown key"):
        parse_settings({**CENTRAL, "pki": {"dir": "/x", "dri": 1}}, source="central.yaml")
    path.write_text("database_url: sqlite:///c.db\nmetrics: {kind: sqlite, path: m.sqlite}\n"
                    "broker: {url: 'mqtts://broker', tls: {ca_file: ca.crt, cert_file: c/tls.crt, "
                    "key_file: c/tls.key}}\n")
    with pytest.raises(ConfigError, match=r"broker.tls.cert_file: file not found: .*/c/tls.crt"):
        load_settings(path, environ={})
    s = load_settings(path, environ={}, check_files=False)  # what `central ca …` and `migrate` read
    assert s.broker.tls is not None
    assert s.broker.tls.key_file == tls_files / "c" / "tls.key"


def _uncomment(text: str) -> str:
    """The example's commented TLS / PKI keys switched on (and the broker URL switched to mqtts://)."""
    text = re.sub(r"^(\s*)# (\s*(?:tls|ca_file|cert_file|key_file|pki|dir|cert_days|crl_days):.*)$", r"\1\2", text,
                  flags=re.M)
    return text.replace("url: mqtt://127.0.0.1:1883", "url: mqtts://broker.example")


def test_the_commented_tls_keys_of_the_example_configs_are_valid() -> None:
    import yaml

    from central.config import CentralSettings
    from edge.config import NodeConfig

    root = Path(__file__).resolve().parents[2] / "firmware-config" / "examples"
    node = NodeConfig.model_validate(yaml.safe_load(_uncomment((root / "node.yaml").read_text())),
                                     context={"check_files": False})
    assert node.broker.tls is not None
    assert node.broker.tls.cert_file == Path("/etc/floorgate/tls/tls.crt")
    assert node.key_file == Path("/etc/floorgate/tls/node.key")
    assert node.broker.port == 8883
    central = CentralSettings.model_validate(yaml.safe_load(_uncomment((root / "central.yaml").read_text())),
                                             context={"check_files": False})
    assert central.broker.tls is not None
    assert central.broker.tls.key_file == Path("/etc/floorgate/central-tls/tls.key")
    assert central.pki is not None
    assert central.pki.dir == Path("/etc/floorgate/pki")
