"""The two-slot schedule on the CPU: worker threads stand in for CUDA streams and futures for
events. Checks the order of operations, that outputs come out in input order and equal a
one-by-one run, that frame N+1 uploads and N-1 downloads while N computes (observed, not
timed), that a recurrent state is carried in frame order across slots and reset on a cut or a
size change, and that a failing stage surfaces at collect."""
import threading

import numpy as np
import pytest

from edge_deblur.errors import InputError
from edge_deblur.runtime.backends.base import Backend
from edge_deblur.runtime.gpu_pipeline import (
    CpuSlotExecutor,
    SlotExecutor,
    SlotScheduler,
    pair_state_tensors,
    run_sync,
)
from edge_deblur.runtime.preprocess import frame_to_tensor, tensor_to_frame


class Invert(Backend):
    """A model: y = 1 - x (stride 4)."""

    name = "invert"

    def __init__(self, before=None):
        super().__init__()
        self.stride = 4
        self.before = before
        self.calls = 0

    def infer(self, x):
        i = self.calls
        self.calls += 1
        if self.before:
            self.before(i)
        return (1.0 - x).astype(np.float32)


def frames(n, sizes=((30, 41),), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]


def one_by_one(backend, fs):
    out = []
    for f in fs:
        x, info = frame_to_tensor(f, backend.stride)
        out.append(tensor_to_frame(backend.infer(x), info))
    return out


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_outputs_in_input_order_and_equal_to_one_by_one(slots):
    fs = frames(9, sizes=((30, 41), (17, 64), (30, 41), (8, 9)))
    with CpuSlotExecutor(Invert(), slots=slots) as ex:
        got = list(SlotScheduler(ex).run(fs))
    want = one_by_one(Invert(), fs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and np.array_equal(g, w)


def test_push_api_returns_each_output_once_in_order():
    fs = frames(5)
    with CpuSlotExecutor(Invert()) as ex:
        sched = SlotScheduler(ex)
        out = []
        for i, f in enumerate(fs):
            ready = sched.submit(f)
            assert len(ready) == (1 if i >= 2 else 0)  # frame i-2 is collected to free its slot
            out += ready
            assert sched.in_flight == min(i + 1, 2)
        out += sched.flush()
        assert sched.in_flight == 0 and sched.flush() == []
    assert all(np.array_equal(a, b) for a, b in zip(out, one_by_one(Invert(), fs)))


class Recorder(SlotExecutor):
    """Records the calls the scheduler makes (the ordering logic, without any device)."""

    def __init__(self, slots=2):
        self.slots = slots
        self.log = []
        self.held = {}

    def stage(self, slot, index, frame):
        assert slot not in self.held, f"slot {slot} reused before its frame {self.held.get(slot)} was collected"
        self.held[slot] = index
        self.log.append(("stage", index, slot))

    def upload(self, slot):
        self.log.append(("upload", self.held[slot], slot))

    def compute(self, slot, after, reset=False):
        self.log.append(("compute", self.held[slot], slot, after))

    def download(self, slot):
        self.log.append(("download", self.held[slot], slot))

    def collect(self, slot):
        i = self.held.pop(slot)
        self.log.append(("collect", i, slot))
        return i


def test_schedule_order_two_slots():
    rec = Recorder()
    out = list(SlotScheduler(rec).run(range(5)))
    assert out == [0, 1, 2, 3, 4]
    log = rec.log
    pos = {e[:2]: k for k, e in enumerate(log)}
    for i in range(5):
        s = i % 2
        assert log[pos[("stage", i)]][2] == s
        assert pos[("stage", i)] < pos[("upload", i)] < pos[("compute", i)] < pos[("download", i)] < pos[("collect", i)]
        # computes are chained in frame order (recurrent state, one model at a time)
        assert log[pos[("compute", i)]][3] == (None if i == 0 else (i - 1) % 2)
        if i >= 2:  # the slot is freed by collecting frame i-2 just before frame i is staged
            assert pos[("collect", i - 2)] < pos[("stage", i)]
        if i >= 1:  # but frame i is enqueued before frame i-1 is collected: they are in flight together
            assert pos[("stage", i)] < pos[("collect", i - 1)]
    assert [e[1] for e in log if e[0] == "collect"] == [0, 1, 2, 3, 4]


def test_sync_schedule_waits_for_each_frame():
    rec = Recorder(slots=1)
    assert list(run_sync(rec, range(3))) == [0, 1, 2]
    kinds = [e[0] for e in rec.log]
    assert kinds == ["stage", "upload", "compute", "download", "collect"] * 3


def test_upload_next_and_download_previous_happen_while_computing():
    """Compute of frame k refuses to finish until frame k+1's upload and frame k-1's download
    have started: only a schedule that overlaps them gets through (a sync one would time out)."""
    n = 6
    started = {(st, i): threading.Event() for st in ("upload", "download") for i in range(n)}
    seen = {}

    def hook(stage, phase, index, slot):
        if phase == "start" and stage in ("upload", "download"):
            started[(stage, index)].set()

    def before(k):
        if 0 < k < n - 1:
            seen[k] = (started[("upload", k + 1)].wait(10), started[("download", k - 1)].wait(10))

    with CpuSlotExecutor(Invert(before=before), hook=hook) as ex:
        out = list(SlotScheduler(ex).run(frames(n)))
        tl = ex.timeline()
    assert len(out) == n
    assert seen == {k: (True, True) for k in range(1, n - 1)}
    stages = {(t.stage, t.index): t for t in tl}
    for k in range(1, n - 1):  # the recorded intervals overlap too
        c = stages[("compute", k)]
        assert stages[("upload", k + 1)].start_ms < c.end_ms
        assert stages[("download", k - 1)].start_ms < c.end_ms
        assert stages[("compute", k - 1)].end_ms <= c.start_ms  # one compute at a time, in order


class Counter(Backend):
    """A recurrent model: the state counts frames; the output is the state value everywhere."""

    name = "counter"

    def __init__(self):
        super().__init__()
        self.stride = 1
        self.state_specs = [{"input": "state_in", "output": "state_out"}]

    def zero_state(self, n, h, w):
        return {"state_in": np.zeros((n, 1, 1, 1), np.float32)}

    def infer_state(self, x, state):
        s = state["state_in"] + 1
        return np.broadcast_to(s / 255.0, x.shape).astype(np.float32), {"state_in": s}

    def infer(self, x):
        return self.infer_state(x, self.zero_state(x.shape[0], 1, 1))[0]


def test_recurrent_state_is_carried_in_frame_order_and_reset():
    fs = frames(7, sizes=((8, 8),)) + frames(2, sizes=((12, 8),))  # size change at frame 7
    with CpuSlotExecutor(Counter()) as ex:
        sched = SlotScheduler(ex, scene_cut=0)  # random frames: only the explicit cut counts
        out = []
        for i, f in enumerate(fs):
            out += sched.submit(f, reset=(i == 4))  # a scene cut at frame 4
        out += sched.flush()
    values = [int(o[0, 0, 0]) for o in out]
    assert values == [1, 2, 3, 4, 1, 2, 3, 1, 2]


def test_errors_surface_at_collect():
    def before(k):
        if k == 2:
            raise RuntimeError("model exploded on frame 2")

    with CpuSlotExecutor(Invert(before=before)) as ex:
        sched = SlotScheduler(ex)
        got = []
        with pytest.raises(RuntimeError, match="frame 2"):
            for f in frames(6):
                got += sched.submit(f)
            got += sched.flush()
    assert len(got) == 2  # frames 0 and 1 came out before the failure


def test_bad_frame_is_an_input_error_at_collect():
    with CpuSlotExecutor(Invert()) as ex:
        with pytest.raises(InputError):
            list(SlotScheduler(ex).run([np.zeros((4, 4, 5), np.uint8)]))


def test_state_tensor_pairing():
    assert pair_state_tensors(["input", "state_in"], ["output", "state_out"]) == {"state_in": "state_out"}
    assert pair_state_tensors(["input", "state_in_a", "state_in_b"], ["output", "state_out_b", "state_out_a"]) == {
        "state_in_a": "state_out_a", "state_in_b": "state_out_b"}
    assert pair_state_tensors(["x", "state_h"], ["y", "state_h_out"]) == {"state_h": "state_h_out"}
    assert pair_state_tensors(["x", "state_h"], ["y", "new_state_h"]) == {"state_h": "new_state_h"}
    assert pair_state_tensors(["x", "state1"], ["y", "state2"]) == {"state1": "state2"}  # by order
    assert pair_state_tensors(["input"], ["output"]) == {}
    with pytest.raises(InputError, match="cannot pair"):
        pair_state_tensors(["x", "state_a", "state_b"], ["y", "state_c"])


def test_scene_cut_resets_the_state_in_the_slot_schedule():
    rng = np.random.default_rng(5)
    scene = [np.clip(rng.normal(128, 30, (16, 24, 3)), 0, 255).astype(np.uint8) for _ in range(4)]
    dark = [(f // 5).astype(np.uint8) for f in scene[:3]]  # a cut to a dark scene at frame 4
    with CpuSlotExecutor(Counter()) as ex:
        sched = SlotScheduler(ex)
        out = list(sched.run(scene + dark))
        assert sched.scene_cuts == 1
    assert [int(o[0, 0, 0]) for o in out] == [1, 2, 3, 4, 1, 2, 3]
    with CpuSlotExecutor(Counter()) as ex:
        sched = SlotScheduler(ex, scene_cut=0)  # off
        assert [int(o[0, 0, 0]) for o in sched.run(scene + dark)] == list(range(1, 8)) and sched.scene_cuts == 0
