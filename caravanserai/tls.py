"""TLS contexts for the server's and the agent's listeners and for clients that pin a CA."""

from __future__ import annotations

import ssl


class TLSConfigError(ValueError):
    """A certificate, key or CA file that cannot be used (the message is one line)."""


def server_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """A listener's context from a PEM certificate (chain) and key; None for plain HTTP."""
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        raise TLSConfigError("TLS needs both a certificate file and a key file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load TLS certificate {cert_file} / key {key_file}: "
                             f"{exc.strerror or exc}") from None
    return context


def client_context(ca_file: str | None) -> ssl.SSLContext | None:
    """A client context trusting ``ca_file`` (a private CA); None: the system's defaults."""
    if not ca_file:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load CA file {ca_file}: {exc}") from None
