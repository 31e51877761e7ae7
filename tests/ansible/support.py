"""Helpers of the Ansible tests: running ``ansible-playbook`` / ``ansible-lint`` from the project's venv against
ansible/, reading the play recap, building the wheelhouse, and a small fleet PKI in the layout of
``floorgate central node add NODE --out DIR`` (DIR/NODE/ca.crt, tls.crt, tls.key 0600, node.key 0600).

The PKI here is made with ``cryptography`` directly, so these tests do not depend on central's database; the layout
and the key formats are those the role expects from the real command."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sync.signing import fingerprint, generate_key, public_key_text, save_private_key

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
RECAP_RE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


def ansible_env(home: Path, control_dir: Path) -> dict[str, str]:
    """The environment an admin's shell would have in ansible/: our venv first on PATH, ansible/ansible.cfg, and
    Ansible's own state (tmp, SSH control sockets) in the test's directories."""
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),  # short: sun_path has 108 bytes
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_STDOUT_CALLBACK": "default",
    })
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    return env


def run_tool(args: list[str], env: dict[str, str], *, timeout_s: float, log: Path | None = None,
             ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(VENV_BIN / args[0]), *args[1:]], cwd=ANSIBLE_DIR, env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    if log is not None:
        log.write_text(f"$ {' '.join(args)}\n{done.stdout}\n--- stderr ---\n{done.stderr}")
    return done


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """``PLAY RECAP`` → {host: {"ok": …, "changed": …, "failed": …, …}}."""
    part = stdout.rsplit("PLAY RECAP", 1)[-1]
    return {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            for m in RECAP_RE.finditer(part)}


def changed_tasks(stdout: str) -> list[str]:
    """The task headers followed by a ``changed:`` line (to name what broke idempotence)."""
    out, task = [], ""
    for line in stdout.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.rstrip("* ")
        elif line.startswith("changed:"):
            out.append(f"{task} {line}")
    return out


def build_wheelhouse(out: Path) -> list[str]:
    """scripts/build-wheelhouse.sh OUT, as the README tells an admin; returns the wheel names."""
    done = subprocess.run([str(REPO / "scripts/build-wheelhouse.sh"), str(out)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, f"build-wheelhouse.sh failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return sorted(p.name for p in out.glob("*.whl"))


# -- PKI ---------------------------------------------------------------------------------------------------------------
@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class FleetPki:
    """A fleet CA (EC P-256) that issues the broker's server certificate and the nodes' client certificates."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name("floorgate test fleet CA"))
            .issuer_name(_name("floorgate test fleet CA")).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.ca_file = self.dir / "ca.crt"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        # central's downlink signing key where `floorgate central signing-key show` makes it (<pki.dir>); the central
        # role copies it to the server, and every node bundle trusts its public half
        self.central_signing_key = generate_key()
        save_private_key(self.central_signing_key, self.dir / "central-signing.key")

    def issue(self, cn: str, *, server_ips: list[str] | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_ips else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if server_ips:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]),
                critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)

    @staticmethod
    def write(directory: Path, name: str, issued: Issued) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        crt, key = directory / f"{name}.crt", directory / f"{name}.key"
        crt.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        key.chmod(0o600)
        return crt, key

    def node_bundle(self, out: Path, node_id: str) -> tuple[Issued, str]:
        """OUT/NODE/{ca.crt, tls.crt, tls.key, node.key, central.pub} as `floorgate central node add NODE --out OUT`
        writes them (central.pub: the public half of this fleet's central signing key); returns the certificate and
        the signing key's fingerprint."""
        bundle = out / node_id
        issued = self.issue(node_id)
        self.write(bundle, "tls", issued)
        (bundle / "ca.crt").write_bytes(self.ca_file.read_bytes())
        signing = generate_key()
        save_private_key(signing, bundle / "node.key")
        (bundle / "central.pub").write_text(public_key_text(self.central_signing_key) + "\n")
        return issued, fingerprint(signing)
