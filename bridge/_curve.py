"""CURVE keys and client authorisation for ZeroMQ links (tcp:// between machines).

ZeroMQ's CURVE mechanism (libsodium, shipped with pyzmq) encrypts the link and
proves each side's identity: a front end only talks to the decoder whose
public key it was given, and the decoder only admits front ends whose public
keys are in its ``authorized_clients`` folder (checked through ZAP).

A keys folder, as ``qhil keys generate DIR`` writes it::

    DIR/server.key              decoder public key: give it to every front end
    DIR/server.key_secret       decoder key pair, mode 0600: stays on the decoder host
    DIR/client.key              front-end public key
    DIR/client.key_secret       front-end key pair, mode 0600: copy it to the front end
    DIR/authorized_clients/     public keys the decoder admits (one *.key file each)

A decoder host needs ``server.key_secret`` and ``authorized_clients/``; a front
end needs ``client.key_secret`` and ``server.key``.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "keys"
>>> [p.name for p in generate_keys(d)]
['server.key', 'server.key_secret', 'client.key', 'client.key_secret', 'client.key']
>>> keys = CurveKeys.load(d)
>>> keys.server_public == keys.for_client().server_public, len(keys.authorized)
(True, 1)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

__all__ = [
    "AUTHORIZED_DIR",
    "CurveKeys",
    "ZapGate",
    "generate_keys",
    "restrict_ipc",
    "secure_client",
    "secure_server",
]

AUTHORIZED_DIR = "authorized_clients"
_log = logging.getLogger("qhil.bridge")


@dataclasses.dataclass(frozen=True)
class CurveKeys:
    """CURVE key material (Z85-encoded, 40 bytes each). Secrets never appear in repr.

    ``authorized``: client public keys the decoder admits. A side only needs its
    own part: the decoder ``server_secret`` (+ ``authorized``), a front end
    ``client_secret`` and ``server_public``; :meth:`for_server` and
    :meth:`for_client` check that part is there.
    """

    server_public: bytes = b""
    server_secret: bytes = dataclasses.field(default=b"", repr=False)
    client_public: bytes = b""
    client_secret: bytes = dataclasses.field(default=b"", repr=False)
    authorized: frozenset[bytes] = frozenset()
    folder: str = ""  # where they were loaded from ("" = made in memory)

    @classmethod
    def ephemeral(cls) -> CurveKeys:
        """Fresh key pairs that admit each other, never written anywhere: ``qhil run``
        uses them for the decoder process it spawns itself."""
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(
            server_public, server_secret, client_public, client_secret, frozenset({client_public})
        )

    @classmethod
    def load(cls, folder: str | Path) -> CurveKeys:
        """Load whatever of a keys folder is present (see the module docstring)."""
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(
                f"keys folder {str(root)!r} does not exist; create one with "
                f"`qhil keys generate {root}`"
            )
        found: dict[str, bytes] = {}
        for name in ("server", "client"):
            secret, public = root / f"{name}.key_secret", root / f"{name}.key"
            path = secret if secret.is_file() else public
            if path.is_file():
                found[f"{name}_public"], sec = _read_certificate(path)
                found[f"{name}_secret"] = sec or b""
        return cls(**found, authorized=_load_authorized(root), folder=str(root))

    def for_server(self) -> CurveKeys:
        """These keys, checked to be enough for a decoder."""
        if not self.server_secret:
            raise FileNotFoundError(
                f"keys folder {self.folder!r} has no server.key_secret; a decoder needs its "
                "own key pair (`qhil keys generate DIR` on the decoder host)"
            )
        if not self.authorized:
            raise FileNotFoundError(
                f"keys folder {self.folder!r} has no public keys in {AUTHORIZED_DIR}/, so no "
                f"front end could connect; copy each front end's client.key there"
            )
        return self

    def for_client(self) -> CurveKeys:
        """These keys, checked to be enough for a front end."""
        if not (self.client_secret and self.server_public):
            raise FileNotFoundError(
                f"keys folder {self.folder!r} needs client.key_secret (this front end's key "
                "pair) and server.key (the decoder's public key); copy both from the folder "
                "`qhil keys generate` wrote"
            )
        return self

    def reloaded(self) -> CurveKeys:
        """The authorized client keys read again from :attr:`folder` (on SIGHUP)."""
        if not self.folder:
            return self
        return dataclasses.replace(self, authorized=_load_authorized(Path(self.folder)))


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as ex:
        raise ValueError(
            f"cannot read CURVE key {str(path)!r} ({ex}); regenerate it with `qhil keys generate`"
        ) from None
    return public, secret


def _load_authorized(root: Path) -> frozenset[bytes]:
    folder = root / AUTHORIZED_DIR
    if not folder.is_dir():
        return frozenset()
    return frozenset(_read_certificate(p)[0] for p in sorted(folder.glob("*.key")))


def generate_keys(folder: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write a decoder key pair and one front-end key pair into ``folder`` (made 0700),
    and authorise that front end. Secret files are 0600. Returns the files written.

    Refuses to replace existing keys unless ``overwrite``: front ends would lose access.
    """
    root = Path(folder)
    existing = [root / n for n in ("server.key_secret", "client.key_secret")]
    if not overwrite and any(p.exists() for p in existing):
        raise FileExistsError(
            f"{str(root)!r} already holds keys; pass --overwrite to replace them (every "
            "front end then needs the new keys) or pick another folder"
        )
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (root / AUTHORIZED_DIR).mkdir(mode=0o700, exist_ok=True)
        written: list[Path] = []
        for name in ("server", "client"):
            public, secret = (Path(p) for p in zmq.auth.create_certificates(root, name))
            secret.chmod(0o600)
            written += [public, secret]
        dest = root / AUTHORIZED_DIR / "client.key"
        shutil.copyfile(root / "client.key", dest)
        written.append(dest)
    except OSError as ex:
        raise OSError(
            f"cannot write keys into {str(root)!r} ({ex.strerror}); pick a writable folder"
        ) from None
    return written


class ZapGate:
    """The ZAP handler of one decoder socket: admits the authorized client keys, counts
    and logs every refusal. Start it before the socket binds (ZeroMQ admits any
    CURVE client while no handler runs)."""

    def __init__(self, context: zmq.Context[Any], keys: CurveKeys) -> None:
        self._lock = threading.Lock()
        self._authorized = keys.authorized
        self.refused = 0
        self._auth = ThreadAuthenticator(context, log=_log)
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=self)

    def callback(self, domain: str, client_key: bytes) -> bool:
        """Called by pyzmq's authenticator thread for each CURVE handshake."""
        with self._lock:
            ok = client_key in self._authorized
            if not ok:
                self.refused += 1
        if not ok:
            _log.warning("refused a front end with unknown CURVE key %s", client_key.decode())
        return ok

    def update(self, keys: CurveKeys) -> None:
        """Admit ``keys.authorized`` from now on (sessions already open stay open)."""
        with self._lock:
            self._authorized = keys.authorized

    def stop(self) -> None:
        self._auth.stop()


def secure_server(sock: Any, keys: CurveKeys) -> None:
    """Make ``sock`` a CURVE server with the decoder's key pair."""
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public
    sock.curve_server = True


def secure_client(sock: Any, keys: CurveKeys) -> None:
    """Make ``sock`` a CURVE client that only completes a handshake with ``server_public``."""
    sock.curve_secretkey = keys.client_secret
    sock.curve_publickey = keys.client_public
    sock.curve_serverkey = keys.server_public


def restrict_ipc(endpoint: str) -> None:
    """Make an ipc:// socket file owner-only (0600), as the shm rings are."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if os.path.exists(path):
            os.chmod(path, 0o600)
