from __future__ import annotations

import re

import pytest

from qhil.fpga import REGISTERS, Register, RegisterFile
from qhil.fpga._regmap import CTRL_BITS, STATUS_BITS


def test_offsets_are_unique_aligned_and_32_bit() -> None:
    offsets = [r.offset for r in REGISTERS]
    assert len(set(offsets)) == len(offsets)
    assert all(o % 4 == 0 and o >= 0 for o in offsets)
    assert offsets == sorted(offsets), "the map is listed in address order"
    assert all(0 <= r.reset < 2**32 for r in REGISTERS)
    assert {r.access for r in REGISTERS} == {"rw", "ro"}


def test_names_are_unique_identifiers() -> None:
    names = [r.name for r in REGISTERS]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", n) for n in names)


def test_register_rejects_bad_definitions() -> None:
    with pytest.raises(ValueError, match="not 4-byte aligned"):
        Register("X", 0x02, "rw", 0, "")
    with pytest.raises(ValueError, match="not 4-byte aligned"):
        Register("X", -4, "rw", 0, "")
    with pytest.raises(ValueError, match="access must be one of"):
        Register("X", 0x00, "wo", 0, "")
    with pytest.raises(ValueError, match="does not fit in 32 bits"):
        Register("X", 0x00, "rw", 2**32, "")


def test_64_bit_values_are_adjacent_lo_hi_pairs() -> None:
    by_name = {r.name: r for r in REGISTERS}
    los = [n.removesuffix("_LO") for n in by_name if n.endswith("_LO")]
    his = [n.removesuffix("_HI") for n in by_name if n.endswith("_HI")]
    assert sorted(los) == sorted(his) == ["CYCLE", "ROUNDS_EMITTED", "SHOTS_DECODED"]
    for base in los:
        lo, hi = by_name[f"{base}_LO"], by_name[f"{base}_HI"]
        assert hi.offset == lo.offset + 4
        assert lo.offset % 8 == 0, "a 64-bit pair starts 8-byte aligned"
        assert lo.access == hi.access == "ro"


def test_reset_values() -> None:
    regs = RegisterFile()
    assert regs.read("ID") == int.from_bytes(b"QHIL", "big")
    assert regs.read("VERSION") >> 16 == 1
    assert regs.read("ROUND_PERIOD") == 250
    assert regs.read("BUDGET") == 2500
    assert regs.read("FABRIC_MHZ") == 250
    snap = regs.snapshot()
    assert snap == {r.name: r.reset for r in REGISTERS}
    assert list(snap) == [r.name for r in REGISTERS]


def test_read_and_write_by_name_and_offset() -> None:
    regs = RegisterFile()
    regs.write("BUDGET", 1234)
    assert regs.read("BUDGET") == 1234
    assert regs.read(0x18) == 1234
    regs.write(0x14, 77)
    assert regs.read("ROUND_PERIOD") == 77
    regs.write("STREAM_ID", 2**32 - 1)
    assert regs.read("STREAM_ID") == 2**32 - 1
    regs.write("STREAM_ID", 2**32 + 5)  # wraps to 32 bits like the RTL
    assert regs.read("STREAM_ID") == 5


def test_every_rw_register_is_writable_and_every_ro_is_not() -> None:
    regs = RegisterFile()
    writable = [r.name for r in REGISTERS if r.access == "rw"]
    assert writable == ["CTRL", "STREAM_ID", "ROUND_PERIOD", "BUDGET", "CORR_TIMEOUT"]
    for r in REGISTERS:
        if r.access == "rw":
            regs.write(r.name, 3)
            assert regs.read(r.offset) == 3
        else:
            with pytest.raises(PermissionError) as info:
                regs.write(r.offset, 3)
            msg = str(info.value)
            assert f"register {r.name} is read-only" in msg
            assert "writable registers: " + ", ".join(writable) in msg
            assert regs.read(r.name) == r.reset, "a refused write changes nothing"


def test_hardware_side_set_updates_read_only_counters() -> None:
    regs = RegisterFile()
    regs.set("CORR_ACCEPTED", 9)
    assert regs.read("CORR_ACCEPTED") == 9
    regs.set("CORR_ACCEPTED", -1)
    assert regs.read("CORR_ACCEPTED") == 2**32 - 1


def test_set64_and_read64_round_trip_through_the_pair() -> None:
    regs = RegisterFile()
    value = (0xDEAD_BEEF << 32) | 0x0123_4567
    regs.set64("CYCLE", value)
    assert regs.read("CYCLE_LO") == 0x0123_4567
    assert regs.read("CYCLE_HI") == 0xDEAD_BEEF
    assert regs.read64("CYCLE") == value
    regs.set64("ROUNDS_EMITTED", 2**32)
    assert regs.read64("ROUNDS_EMITTED") == 2**32
    assert (regs.read("ROUNDS_EMITTED_LO"), regs.read("ROUNDS_EMITTED_HI")) == (0, 1)
    regs.set64("SHOTS_DECODED", 2**64 + 3)  # wraps at 64 bits
    assert regs.read64("SHOTS_DECODED") == 3
    snap = regs.snapshot()
    assert (snap["CYCLE_LO"], snap["CYCLE_HI"]) == (0x0123_4567, 0xDEAD_BEEF)


def test_snapshot_is_a_copy() -> None:
    regs = RegisterFile()
    snap = regs.snapshot()
    snap["BUDGET"] = 1
    regs.write("BUDGET", 99)
    assert snap["BUDGET"] == 1
    assert regs.snapshot()["BUDGET"] == 99
    assert all(type(v) is int for v in snap.values())


def test_iterating_the_file_yields_the_map() -> None:
    assert tuple(RegisterFile()) == REGISTERS


@pytest.mark.parametrize("key", ["NOPE", "budget", 0x24, 0x02, 0x1000])
def test_unknown_keys_raise_key_error_listing_valid_names(key: str | int) -> None:
    regs = RegisterFile()
    for call in (
        lambda: regs.read(key),
        lambda: regs.write(key, 1),
        lambda: regs.set(key, 1),  # type: ignore[arg-type]
    ):
        with pytest.raises(KeyError) as info:
            call()
        msg = str(info.value)
        what = f"offset {key:#x}" if isinstance(key, int) else f"name {key!r}"
        assert f"no register at {what}" in msg
        assert "registers: " + ", ".join(r.name for r in REGISTERS) in msg


def test_read64_of_a_non_pair_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="BUDGET_LO"):
        RegisterFile().read64("BUDGET")


def test_bit_maps_match_the_register_docs() -> None:
    docs = {r.name: r.doc for r in REGISTERS}
    for name, bit in CTRL_BITS.items():
        assert f"bit{bit} {name}" in docs["CTRL"]
    for name, bit in STATUS_BITS.items():
        assert f"bit{bit} {name}" in docs["STATUS"]
    assert sorted(CTRL_BITS.values()) == list(range(len(CTRL_BITS)))
    assert sorted(STATUS_BITS.values()) == list(range(len(STATUS_BITS)))


def test_register_files_are_independent() -> None:
    a, b = RegisterFile(), RegisterFile()
    a.write("BUDGET", 1)
    assert b.read("BUDGET") == 2500
