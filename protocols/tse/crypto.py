"""Signature algorithms of TR-03151 (ecdsa-plain-SHA256 / -SHA384), plain signatures and TSE public keys.

A TSE signs with ECDSA and writes the signature *plain* (BSI TR-03111): ``r ‖ s``, each the size of the curve's
order (32 bytes on P-256 / brainpoolP256r1, 48 on brainpoolP384r1 / P-384). ``cryptography`` speaks DER
(``SEQUENCE { INTEGER r, INTEGER s }``), so :func:`plain_to_der` / :func:`der_to_plain` convert.

The public key travels as the uncompressed point ``04 ‖ X ‖ Y`` (65 or 97 bytes); the TSE's serial number is the
SHA-256 of exactly those bytes. The bytes do not say which curve they are on, so :func:`load_public_key` tries the
curves of that size and keeps the one the point lies on (hardware TSEs use brainpoolP384r1, cloud TSEs P-256).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature


@dataclass(frozen=True)
class SignatureAlgorithm:
    """One signature algorithm: its TR-03151 name and OID, the hash and the length of ``r`` (bytes)."""

    name: str
    oid: str
    hash_name: str

    def hash(self) -> hashes.HashAlgorithm:
        return hashes.SHA256() if self.hash_name == "SHA256" else hashes.SHA384()


ECDSA_PLAIN_SHA256: Final = SignatureAlgorithm("ecdsa-plain-SHA256", "0.4.0.127.0.7.1.1.4.1.3", "SHA256")
ECDSA_PLAIN_SHA384: Final = SignatureAlgorithm("ecdsa-plain-SHA384", "0.4.0.127.0.7.1.1.4.1.4", "SHA384")
ALGORITHMS: Final = {a.name: a for a in (ECDSA_PLAIN_SHA256, ECDSA_PLAIN_SHA384)}
ALGORITHMS_BY_OID: Final = {a.oid: a for a in (ECDSA_PLAIN_SHA256, ECDSA_PLAIN_SHA384)}

CURVES: Final[dict[str, ec.EllipticCurve]] = {
    "brainpoolP384r1": ec.BrainpoolP384R1(),
    "P-256": ec.SECP256R1(),
    "brainpoolP256r1": ec.BrainpoolP256R1(),
    "P-384": ec.SECP384R1(),
}
#: the curves a point of this many bytes (uncompressed) may lie on, most likely first
CURVES_BY_POINT_LENGTH: Final = {65: ("P-256", "brainpoolP256r1"), 97: ("brainpoolP384r1", "P-384")}
#: the curve names ``cryptography`` uses, back to ours
_CURVE_NAMES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "brainpoolP256r1": "brainpoolP256r1",
                       "brainpoolP384r1": "brainpoolP384r1"}  # fmt: skip


def coordinate_size(curve_name: str) -> int:
    """Bytes of ``r`` (and ``s``) in a plain signature on this curve."""
    return (CURVES[curve_name].key_size + 7) // 8


def curve_name_of(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    name = key.curve.name
    if name not in _CURVE_NAMES:
        raise ValueError(f"curve {name} is not used by TSEs (brainpoolP384r1, P-256, brainpoolP256r1, P-384)")
    return _CURVE_NAMES[name]


def plain_to_der(signature: bytes) -> bytes:
    """``r ‖ s`` (two halves of equal length) to the DER form ``cryptography`` verifies."""
    if not signature or len(signature) % 2:
        raise ValueError(f"a plain ECDSA signature has two halves of equal length, got {len(signature)} bytes")
    half = len(signature) // 2
    return encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))


def der_to_plain(signature: bytes, size: int) -> bytes:
    """The DER signature ``cryptography`` makes, as ``r ‖ s`` with ``size`` bytes each."""
    r, s = decode_dss_signature(signature)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def public_key_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed point ``04 ‖ X ‖ Y``."""
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def serial_number(public_key: bytes | ec.EllipticCurvePublicKey) -> bytes:
    """The TSE serial number: SHA-256 of the uncompressed public key."""
    raw = public_key if isinstance(public_key, bytes) else public_key_bytes(public_key)
    return hashlib.sha256(raw).digest()


def load_public_key(point: bytes) -> tuple[ec.EllipticCurvePublicKey, str]:
    """The key and the curve's name for an uncompressed point; ``ValueError`` saying why when it is none."""
    if not point:
        raise ValueError("the public key is empty")
    if point[0] != 0x04:
        raise ValueError(f"the public key is not an uncompressed point (first byte 0x{point[0]:02x}, expected 0x04)")
    names = CURVES_BY_POINT_LENGTH.get(len(point))
    if names is None:
        raise ValueError(f"a public key of {len(point)} bytes fits no TSE curve (65 bytes: 256-bit, 97: 384-bit)")
    for name in names:
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(CURVES[name], point), name
        except ValueError:
            continue
    raise ValueError(f"the public key ({len(point)} bytes) is not a point on {' or '.join(names)}")


def verify_plain(key: ec.EllipticCurvePublicKey, algorithm: SignatureAlgorithm, signature: bytes, data: bytes) -> str:
    """Empty string if ``signature`` (plain ``r ‖ s``) verifies over ``data``; otherwise why not."""
    size = (key.curve.key_size + 7) // 8
    if len(signature) != 2 * size:
        return f"has {len(signature)} bytes, {2 * size} expected on {curve_name_of(key)}"
    try:
        key.verify(plain_to_der(signature), data, ec.ECDSA(algorithm.hash()))
    except InvalidSignature:
        return "does not verify"
    return ""


def sign_plain(key: ec.EllipticCurvePrivateKey, algorithm: SignatureAlgorithm, data: bytes) -> bytes:
    """ECDSA over ``data`` as plain ``r ‖ s``."""
    return der_to_plain(key.sign(data, ec.ECDSA(algorithm.hash())), (key.curve.key_size + 7) // 8)


__all__ = [
    "ALGORITHMS", "ALGORITHMS_BY_OID", "CURVES", "ECDSA_PLAIN_SHA256", "ECDSA_PLAIN_SHA384", "SignatureAlgorithm",
    "coordinate_size", "curve_name_of", "der_to_plain", "load_public_key", "plain_to_der", "public_key_bytes",
    "serial_number", "sign_plain", "verify_plain",
]  # fmt: skip
