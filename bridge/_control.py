"""Session control messages of the ZeroMQ link. This module is the one place they are defined.

Data packets (wire format v1, ``_wire.py``) travel as one-frame messages.
Control messages travel as two frames, an empty frame then the body below, so
no data packet can ever be read as one. A front end opens a session with
HELLO; the decoder answers WELCOME or REFUSED; BYE ends the session. Over
tcp:// with CURVE, ZeroMQ has already authenticated the peer that sent them.

Body, little-endian, 36 + text_len bytes (at most :data:`CONTROL_MAX` bytes)::

    offset size field
         0    4 magic      b"QCTL"
         4    1 version    1
         5    1 kind       Kind: HELLO, WELCOME, REFUSED, BYE
         6    1 code       Refusal (REFUSED only, else 0)
         7    1 reserved   0
         8    8 session    the front end's random session id (echoed by the decoder)
        16    8 instance   the sender's random process-instance id
        24    8 layout     layout_fingerprint() of the experiment (0 = not checked)
        32    2 text_len   bytes of text that follow
        34    2 reserved   0
        36    T text       UTF-8, why (REFUSED) or who (HELLO: the front end's name)

>>> body = encode_control(Kind.HELLO, session=7, instance=9, layout=0, text="bench-1")
>>> msg = parse_control(body)
>>> msg.kind, msg.session, msg.instance, msg.text
(<Kind.HELLO: 1>, 7, 9, 'bench-1')
>>> parse_control(b"QCTL")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
qhil.bridge._control.ControlError: control message of 4 bytes is shorter than its 36-byte header...
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
import struct
import zlib
from collections.abc import Sequence

__all__ = [
    "CONTROL_MAGIC",
    "CONTROL_MAX",
    "CONTROL_VERSION",
    "ControlError",
    "ControlMessage",
    "Kind",
    "Refusal",
    "encode_control",
    "layout_fingerprint",
    "new_id",
    "parse_control",
]

CONTROL_MAGIC = b"QCTL"
CONTROL_VERSION = 1
_HEADER = struct.Struct("<4sBBBxQQQHxx")  # the table above, through its named offsets
_TEXT_MAX = 200
CONTROL_MAX = _HEADER.size + _TEXT_MAX


class Kind(enum.IntEnum):
    """What a control message does."""

    HELLO = 1  # front end -> decoder: open a session
    WELCOME = 2  # decoder -> front end: session open
    REFUSED = 3  # decoder -> front end: not served; ``code`` says why
    BYE = 4  # front end -> decoder: session over


class Refusal(enum.IntEnum):
    """Why a decoder refused a peer (the ``code`` of a REFUSED message)."""

    NONE = 0
    BUSY = 1  # another front end holds the session and is active
    BAD_HELLO = 2  # unsupported control version or malformed HELLO
    LAYOUT = 3  # the front end's experiment differs from the decoder's
    NOT_IN_SESSION = 4  # data from a peer with no session (e.g. after a decoder restart)

    @property
    def label(self) -> str:
        return self.name.lower()


class ControlError(ValueError):
    """A control message that cannot be parsed; the receiver counts and drops it."""


@dataclasses.dataclass(frozen=True)
class ControlMessage:
    """One parsed control message (see the module docstring for the fields)."""

    kind: Kind
    session: int
    instance: int
    layout: int = 0
    code: Refusal = Refusal.NONE
    text: str = ""


def encode_control(
    kind: Kind,
    *,
    session: int,
    instance: int,
    layout: int = 0,
    code: Refusal = Refusal.NONE,
    text: str = "",
) -> bytes:
    """The body frame of one control message; ``text`` is cut to 200 UTF-8 bytes."""
    raw = text.encode("utf-8")[:_TEXT_MAX].decode("utf-8", "ignore").encode("utf-8")
    head = _HEADER.pack(
        CONTROL_MAGIC, CONTROL_VERSION, int(kind), int(code), session, instance, layout, len(raw)
    )
    return head + raw


def parse_control(body: bytes | memoryview) -> ControlMessage:
    """Parse a control body; raises :class:`ControlError` naming what is wrong."""
    body = bytes(body)
    if len(body) < _HEADER.size:
        raise ControlError(
            f"control message of {len(body)} bytes is shorter than its {_HEADER.size}-byte "
            "header; is the peer a qhil front end or decoder of this version?"
        )
    magic, version, kind, code, session, instance, layout, n_text = _HEADER.unpack_from(body)
    if magic != CONTROL_MAGIC:
        raise ControlError(f"control magic {magic!r} is not {CONTROL_MAGIC!r}")
    if version != CONTROL_VERSION:
        raise ControlError(
            f"control version {version} is not {CONTROL_VERSION}; run the same qhil on both sides"
        )
    if kind not in Kind._value2member_map_ or code not in Refusal._value2member_map_:
        raise ControlError(f"control kind {kind} / code {code} is not defined")
    if len(body) != _HEADER.size + n_text or n_text > _TEXT_MAX:
        raise ControlError(
            f"control text_len={n_text} disagrees with the message's {len(body)} bytes"
        )
    text = body[_HEADER.size :].decode("utf-8", "replace")
    return ControlMessage(Kind(kind), session, instance, layout, Refusal(code), text)


def layout_fingerprint(bits_per_round: Sequence[int], num_observables: int) -> int:
    """A nonzero 64-bit tag of an experiment's packet layout, so a HELLO from a front end
    running another experiment is refused at once, with both layouts named.

    >>> layout_fingerprint((4, 4), 1) == layout_fingerprint([4, 4], 1)
    True
    >>> layout_fingerprint((4, 4), 1) != layout_fingerprint((4, 8), 1)
    True
    """
    text = ",".join(str(int(b)) for b in bits_per_round) + f"/{int(num_observables)}"
    return (zlib.crc32(text.encode()) << 32) | (len(bits_per_round) << 16) | 1


def new_id() -> int:
    """A random nonzero 64-bit id (sessions, process instances)."""
    return secrets.randbits(64) | 1
