"""``relay`` closes the loop: twin front end -> zmq over tcp -> DecoderService (as `qhil serve`)."""

from __future__ import annotations

import threading
import types

import numpy as np
import pymatching
import pytest
import stim

from qhil.bridge import BridgeSpec, open_bridge
from qhil.fpga import FrontEnd, FrontEndConfig, RelayStats, relay
from qhil.host import DecoderService, HostStats, ServiceConfig


def _circuit(d: int = 3, rounds: int = 2, p: float = 0.02) -> stim.Circuit:
    return stim.Circuit.generated(
        "surface_code:rotated_memory_z",
        distance=d,
        rounds=rounds,
        after_clifford_depolarization=p,
        before_measure_flip_probability=p,
    )


def test_relay_through_zmq_tcp_to_the_decoder_service() -> None:
    circuit = _circuit(d=3, rounds=3, p=0.02)
    meas = circuit.compile_sampler(seed=3).sample(40)
    dets, _ = circuit.compile_m2d_converter().convert(measurements=meas, separate_observables=True)
    matching = pymatching.Matching.from_detector_error_model(
        circuit.detector_error_model(decompose_errors=True)
    )
    predicted = matching.decode_batch(dets)
    service = DecoderService.from_circuit(circuit, config=ServiceConfig())
    spec = BridgeSpec(transport="zmq", endpoint="tcp://127.0.0.1:*")
    with open_bridge(spec, side="host") as host:
        served: list[HostStats] = []
        thread = threading.Thread(target=lambda: served.append(service.serve(host.rx, host.tx)))
        thread.start()
        with open_bridge(host.spec, side="fpga") as board:
            fe = FrontEnd.open(circuit, target="model", config=FrontEndConfig(max_in_flight=2))
            stats = relay(fe, fe.replay_buffer(meas), board.tx, board.rx, max_in_flight=2)
        thread.join(timeout=30)
    assert not thread.is_alive() and served[0].stopped_by == "end_of_stream"
    assert stats.shots_sent == 40 and stats.end_of_stream_acked
    rounds = fe.program.num_rounds  # the final data-qubit round included
    assert stats.packets_up == 40 * rounds + 1 and stats.packets_down == 40 + 1
    assert fe.regs.read64("SHOTS_DECODED") == fe.regs["CORR_ACCEPTED"] == 40
    assert fe.status()["DONE"]
    assert fe.logical_frame == int(np.bitwise_xor.reduce(predicted[:, 0].astype(int)))
    assert predicted.any(), "the sample makes the decoder flip the frame"


def test_relay_checks_its_inputs_and_names_a_dead_decoder() -> None:
    circuit = _circuit()
    fe = FrontEnd.open(circuit, target="model")
    replay = fe.replay_buffer(np.zeros((1, circuit.num_measurements), dtype=bool))
    small = types.SimpleNamespace(max_packet=fe.max_packet - 1)
    with pytest.raises(ValueError, match="larger slot_size"):
        relay(fe, replay, small, small)  # type: ignore[arg-type]
    with open_bridge(BridgeSpec(transport="shm", n_slots=8), side="fpga") as lonely:
        with pytest.raises(ValueError, match="max_in_flight must be >= 1"):
            relay(fe, replay, lonely.tx, lonely.rx, max_in_flight=0)
        with pytest.raises(RuntimeError, match=r"nothing moved for 0.2 s.*qhil serve"):
            relay(fe, replay, lonely.tx, lonely.rx, stall_timeout_s=0.2)
    with pytest.raises(ValueError, match="packets_up must be >= 0"):
        RelayStats(0, -1, 0, False, 0.0)
