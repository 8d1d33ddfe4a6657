"""Signed test videos: the tests make their own C2PA signing chains and sign with c2pa-python.

Each chain is root -> intermediate -> signer, ES256, made with ``cryptography``.
C2PA accepts a signing certificate only with ``digitalSignature`` key usage and
an extended key usage it allows (``emailProtection`` here; c2pa-rs also accepts
document signing and a few others), not a CA, and chained through the
intermediate that the signer sends.  Videos are signed with c2pa-python's
Builder and no timestamp authority.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AI = IPTC + "trainedAlgorithmicMedia"
CAPTURE = IPTC + "digitalCapture"


@dataclass(frozen=True)
class Chain:
    """A root (the trust anchor to configure) and a signer with its intermediate."""

    root_pem: Path
    chain_pem: bytes  # signer then intermediate
    key_pem: bytes
    organization: str

    def signer(self) -> c2pa.Signer:
        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self.chain_pem, self.key_pem, None))


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    path_length: int | None = None,
    ocsp_url: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    usage = dict.fromkeys(
        (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, **usage), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    if ocsp_url:
        access = x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_chain(directory: Path, organization: str, ocsp_url: str | None = None) -> Chain:
    """root -> intermediate -> signer (ES256); the signer's EKU is emailProtection."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    names = [_name(f"{organization} {role}", organization) for role in ("Root CA", "Intermediate CA", "Signer")]
    root = _certificate(names[0], keys[0], names[0], keys[0], ca=True, path_length=1)
    intermediate = _certificate(names[1], keys[1], names[0], keys[0], ca=True, path_length=0)
    signer = _certificate(names[2], keys[2], names[1], keys[1], ca=False, ocsp_url=ocsp_url)

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    root_pem = directory / "root.pem"
    root_pem.write_bytes(pem(root))
    key_pem = keys[2].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Chain(root_pem, pem(signer) + pem(intermediate), key_pem, organization)


def manifest(source_type: str | None, *, edit_of_parent: bool = False) -> dict[str, Any]:
    if edit_of_parent:
        actions: list[dict[str, Any]] = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
            {"action": "c2pa.edited", "digitalSourceType": source_type},
        ]
    else:
        actions = [{"action": "c2pa.created", **({"digitalSourceType": source_type} if source_type else {})}]
    return {
        "claim_generator_info": [{"name": "motionguard-tests", "version": "1.0"}],
        "title": "test clip",
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}}],
    }


def sign(source: Path, dest: Path, chain: Chain, source_type: str | None, *, edit_of_parent: bool = False) -> Path:
    """Embed a signed manifest in a copy of the MP4 ``source`` (no timestamp authority)."""
    with (
        c2pa.Builder(manifest(source_type, edit_of_parent=edit_of_parent)) as builder,
        chain.signer() as signer,
        open(source, "rb") as src,
        open(dest, "w+b") as dst,
    ):
        if edit_of_parent:
            parent = {"title": "parent", "relationship": "parentOf", "label": "parent"}
            builder.add_ingredient(parent, "video/mp4", src)
            src.seek(0)
        builder.sign(signer, "video/mp4", src, dst)
    return dest


def flip_inside_mdat(source: Path, dest: Path, count: int = 64) -> Path:
    data = bytearray(source.read_bytes())
    start = data.index(b"mdat") + 200
    data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
    dest.write_bytes(data)
    return dest
