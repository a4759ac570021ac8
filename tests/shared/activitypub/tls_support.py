"""A certificate authority of the tests' own and a server certificate it signs, for TLS peers on
127.0.0.1: what a private CA in front of fediverse peers looks like to our client."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The names the server certificate is valid for (every *.localhost name is loopback).
SERVER_NAMES = ("localhost", "peer.localhost", "takahe.localhost")


@dataclass(frozen=True)
class OwnCA:
    """A CA's certificate file, and a server context presenting a certificate it signed."""

    ca_file: Path
    server_context: ssl.SSLContext


def make_own_ca(directory: Path) -> OwnCA:
    """A new CA (its certificate in ``directory/ca.pem``) and a server certificate for
    SERVER_NAMES and 127.0.0.1, signed by it."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rose Ash test CA")])
    ca_cert = (
        certificate_builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAMES[0])])
    alternative_names: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_NAMES]
    alternative_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server_cert = (
        certificate_builder(server_name, ca_name, server_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain_file = directory / "server.pem"
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM) + key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file)
    return OwnCA(ca_file=ca_file, server_context=context)


def certificate_builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def write_ca_directory(ca_file: Path, directory: Path) -> Path:
    """``directory`` as SSL_CERT_DIR wants it: the CA certificate under its subject hash
    (``<hash>.0``, what ``openssl rehash`` names it)."""
    certificate = x509.load_pem_x509_certificate(ca_file.read_bytes())
    (directory / f"{subject_hash(certificate.subject):08x}.0").write_bytes(ca_file.read_bytes())
    return directory


def subject_hash(name: x509.Name) -> int:
    """OpenSSL's X509_NAME_hash: SHA-1 of the name's canonical encoding (every value a
    lowercased UTF8String with its spaces collapsed, the outer SEQUENCE header dropped), its
    first four bytes read little-endian."""
    canonical = x509.Name(
        [
            x509.RelativeDistinguishedName(
                x509.NameAttribute(
                    attribute.oid,
                    " ".join(str(attribute.value).lower().split()),
                    _ASN1Type.UTF8String,
                )
                for attribute in rdn
            )
            for rdn in name.rdns
        ]
    )
    der = canonical.public_bytes()
    header = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    return int.from_bytes(hashlib.sha1(der[header:]).digest()[:4], "little")  # noqa: S324
