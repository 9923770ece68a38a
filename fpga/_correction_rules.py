"""What the front end does with a correction packet, and the counters that records: one definition.

Both front-end models use this module: the wall-clock ``CycleModel`` and the
cycle-accurate ``FrontendModel`` (the twin of ``rtl/qhil_frontend.v``, whose
judge stage implements the same table in Verilog). A correction that parses
(``parse_correction`` returns OK) is judged against the front end's state, in
this order:

1. ``END_OF_STREAM`` flag: the decoder acknowledges the end of the stream.
2. ``stream_id`` is not the front end's: ``UNKNOWN_STREAM``.
3. the shot is not awaiting a correction: ``DUPLICATE`` if it was started
   (its first round went through the front end), else ``UNKNOWN_SHOT``.
4. status DECODED: ``n_obs`` must equal the number of observables
   (``BAD_LENGTH``) and ``seq`` must echo the seq of the shot's last syndrome
   packet (``BAD_FIELD``); then the logical frame takes the flips.
5. status INCOMPLETE: ``n_frame`` must equal the shot's rounds (``BAD_LENGTH``).
6. status DECODER_ERROR: accepted as is.

>>> judge(Reason.OK, end_of_stream=False, stream_ok=True, started=True, pending=False,
...       status=0, n_obs_ok=True, seq_ok=True, n_frame_ok=True)
(<Verdict.REJECTED: 4>, <Reason.DUPLICATE: 7>)
>>> counters = CorrectionCounters()
>>> counters.apply(Verdict.DECODED, Reason.OK, latency_cycles=300, budget_cycles=250, flips=1)
>>> counters.registers()["BUDGET_MISSES"], counters.registers()["LOGICAL_FRAME"]
(1, 1)
"""

from __future__ import annotations

import enum

from qhil.bridge import CorrectionStatus, Reason
from qhil.fpga._regmap import REGISTERS, RegisterFile

__all__ = ["ACCEPTED", "CorrectionCounters", "Verdict", "judge", "saturate32"]

_REGISTER_NAMES = frozenset(r.name for r in REGISTERS)
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


class Verdict(enum.IntEnum):
    """The outcome of judging one correction packet."""

    DECODED = 0  # applied: frame flipped, latency timed
    INCOMPLETE = 1  # accepted: the decoder reports rounds of the shot missing
    DECODER_ERROR = 2  # accepted: the decoder failed on the shot
    END_OF_STREAM = 3  # the decoder acknowledged the end of the stream
    REJECTED = 4  # counted under its Reason; changes nothing else


ACCEPTED = (Verdict.DECODED, Verdict.INCOMPLETE, Verdict.DECODER_ERROR)


def judge(
    reason: Reason,
    *,
    end_of_stream: bool,
    stream_ok: bool,
    started: bool,
    pending: bool,
    status: int,
    n_obs_ok: bool,
    seq_ok: bool,
    n_frame_ok: bool,
) -> tuple[Verdict, Reason]:
    """Rule on one correction; the other arguments are ignored unless ``reason`` is OK.

    Args:
        reason: what ``parse_correction`` returned for the packet.
        end_of_stream: its flags carry ``FLAG_END_OF_STREAM``.
        stream_ok: its ``stream_id`` is the front end's.
        started: its shot's first round went through the front end.
        pending: its shot is awaiting a correction.
        status: its ``CorrectionStatus`` value (0..2 once parsed).
        n_obs_ok: its ``n_obs`` equals the number of observables.
        seq_ok: its ``seq`` equals that of the shot's last syndrome packet.
        n_frame_ok: its ``n_frame`` equals the shot's number of rounds.

    Returns:
        (verdict, reason): reason is OK unless the verdict is REJECTED.
    """
    if reason != Reason.OK:
        return Verdict.REJECTED, reason
    if end_of_stream:
        return Verdict.END_OF_STREAM, Reason.OK
    if not stream_ok:
        return Verdict.REJECTED, Reason.UNKNOWN_STREAM
    if not pending:
        return Verdict.REJECTED, Reason.DUPLICATE if started else Reason.UNKNOWN_SHOT
    if status == CorrectionStatus.DECODED:
        if not n_obs_ok:
            return Verdict.REJECTED, Reason.BAD_LENGTH
        if not seq_ok:
            return Verdict.REJECTED, Reason.BAD_FIELD
        return Verdict.DECODED, Reason.OK
    if status == CorrectionStatus.INCOMPLETE:
        return (
            (Verdict.INCOMPLETE, Reason.OK) if n_frame_ok else (Verdict.REJECTED, Reason.BAD_LENGTH)
        )
    return Verdict.DECODER_ERROR, Reason.OK


def saturate32(latency_cycles: int) -> int:
    """A latency as the 32-bit LAT_* registers hold it: modulo 2**64, saturated at 2**32 - 1."""
    return min(latency_cycles & _U64, _U32)


class CorrectionCounters:
    """The correction-side counters of the register map, updated by rulings and timeouts.

    Counts are Python ints; ``registers()`` gives them as the 32-bit (or
    64-bit LO/HI) registers hold them, wrapping like the RTL's counters.
    Latency: the arrival cycle minus the ``t_fpga`` the correction echoed,
    taken modulo 2**64; it misses the budget when it exceeds ``BUDGET``.
    """

    def __init__(self) -> None:
        self.rejections = {r.label: 0 for r in Reason if r != Reason.OK}
        self.accepted = 0
        self.shots_decoded = 0
        self.shots_incomplete = 0
        self.shots_decoder_error = 0
        self.shots_timed_out = 0
        self.budget_misses = 0
        self.lat_last = 0
        self.lat_max = 0
        self.frame = 0
        self.eos_acked = False

    def apply(
        self,
        verdict: Verdict,
        reason: Reason,
        *,
        latency_cycles: int = 0,
        budget_cycles: int = 0,
        flips: int = 0,
    ) -> None:
        """Count one ruling. For DECODED, ``flips`` (bit i: observable i) toggles the frame."""
        if verdict == Verdict.REJECTED:
            self.rejections[reason.label] += 1
        elif verdict == Verdict.END_OF_STREAM:
            self.eos_acked = True
        else:
            self.accepted += 1
            if verdict == Verdict.DECODED:
                self.shots_decoded += 1
                self.frame ^= flips
                lat = latency_cycles & _U64
                self.lat_last = saturate32(lat)
                self.lat_max = max(self.lat_max, self.lat_last)
                self.budget_misses += lat > budget_cycles
            elif verdict == Verdict.INCOMPLETE:
                self.shots_incomplete += 1
            else:
                self.shots_decoder_error += 1

    def registers(self) -> dict[str, int]:
        """The registers these counters feed, by name, unwrapped (SHOTS_DECODED: the LO/HI pair)."""
        regs = {
            name: n
            for label, n in self.rejections.items()
            if (name := f"CORR_{label.upper()}") in _REGISTER_NAMES  # seq_gap, stale have none
        }
        regs.update(
            CORR_ACCEPTED=self.accepted,
            SHOTS_DECODED=self.shots_decoded,
            SHOTS_INCOMPLETE=self.shots_incomplete,
            SHOTS_DECODER_ERROR=self.shots_decoder_error,
            SHOTS_TIMED_OUT=self.shots_timed_out,
            BUDGET_MISSES=self.budget_misses,
            LAT_LAST=self.lat_last,
            LAT_MAX=self.lat_max,
            LOGICAL_FRAME=self.frame,
        )
        return regs

    def write_to(self, regs: RegisterFile) -> None:
        """Set the registers (hardware-side writes, wrapping as the RTL's counters do)."""
        for name, value in self.registers().items():
            if name == "SHOTS_DECODED":
                regs.set64(name, value)
            else:
                regs.set(name, value)
