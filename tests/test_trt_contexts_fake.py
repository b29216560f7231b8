"""Who owns a TensorRT execution context, over the fake engine (tests/trt_fakes.py): each slot
executor has its own, made when it opens and dropped when it closes, and the backend's
synchronous ``infer`` has another. A context holds the input shape of its runs: shared, an
``infer`` at another frame size reshaped the pipeline's context behind its back (its next run
read and wrote the wrong shape), and two pipelines of one backend ran one context from two
streams, each with the other's shapes."""
import numpy as np
import pytest

from edge_deblur.errors import BackendError

from test_trt_slots_fake import frames, reference
from trt_fakes import FakeCuda, FakeEngine, no_kernels, open_fake_backend


def open_backend(monkeypatch, tmp_path, **engine_kw):
    cuda = FakeCuda()
    engine = FakeEngine(cuda, **engine_kw)
    return open_fake_backend(monkeypatch, tmp_path, engine, frame_kernels=no_kernels), engine, cuda


def test_infer_at_another_size_between_pipeline_runs_does_not_reshape_the_pipeline(monkeypatch, tmp_path):
    b, engine, _ = open_backend(monkeypatch, tmp_path)
    sched = b.pipeline(slots=2, gpu_preprocess=False)
    with sched.ex:
        assert len(list(sched.run(frames(3)))) == 3  # 41x30 frames; run() flushes at the end
        x = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
        assert np.array_equal(b.infer(x), 1.0 - x)  # another size, on the backend's own context
        more = frames(3, seed=1)
        got = list(sched.run(more))  # the pipeline's context still has its 41x30 shape
    for a, r in zip(got, reference(more, b.stride)):
        assert np.array_equal(a, r)
    assert sched.ex.ctx is None and b._ctx is not None
    b.close()


def test_two_pipelines_of_one_backend_each_own_a_context_and_a_profile(monkeypatch, tmp_path):
    b, engine, cuda = open_backend(monkeypatch, tmp_path, profiles=2)
    one, two = b.pipeline(slots=2, gpu_preprocess=False), b.pipeline(slots=2, gpu_preprocess=False)
    assert one.ex.ctx is not two.ex.ctx and b._ctx not in (one.ex.ctx, two.ex.ctx)
    ctx1, ctx2 = one.ex.ctx, two.ex.ctx
    assert (ctx1.profile_index, ctx2.profile_index) == (0, 1)  # TensorRT: concurrent contexts, separate profiles
    small, large = frames(4, h=20, w=24, seed=3), frames(4, h=30, w=41, seed=4)
    got1, got2 = [], []
    for f1, f2 in zip(small, large):  # interleaved, at two sizes: each run on its own context and shape
        got1 += one.submit(f1)
        got2 += two.submit(f2)
    got1 += one.flush()
    got2 += two.flush()
    for got, fs in ((got1, small), (got2, large)):
        assert len(got) == len(fs)
        for a, r in zip(got, reference(fs, b.stride)):
            assert np.array_equal(a, r)
    assert ctx1.runs == ctx2.runs == 4 and ctx1.shapes["input"] == (1, 3, 20, 24)
    one.ex.close()
    two.ex.close()
    assert one.ex.ctx is None and two.ex.ctx is None  # dropped: TensorRT frees a context with its last reference
    b.close()
    assert not cuda.open_objects()


def test_a_second_open_pipeline_of_a_one_profile_engine_is_refused(monkeypatch, tmp_path):
    """edge-deblur build makes one profile: a second context in concurrent use on it is what
    TensorRT forbids, so the second pipeline is an error naming the way out, not a shared context."""
    b, engine, cuda = open_backend(monkeypatch, tmp_path)
    one = b.pipeline(slots=2, gpu_preprocess=False)
    made = len(cuda.made)
    with pytest.raises(BackendError) as e:
        b.pipeline(slots=2, gpu_preprocess=False)
    msg = str(e.value)
    assert "1 optimization profile(s)" in msg and "close the other pipeline" in msg and "second TensorRTBackend" in msg
    assert all(o.closed for o in cuda.made[made:])  # the refused one made nothing it kept
    one.ex.close()
    two = b.pipeline(slots=2, gpu_preprocess=False)  # the profile is free again
    with two.ex:
        fs = frames(2)
        got = list(two.run(fs))
    assert all(np.array_equal(a, r) for a, r in zip(got, reference(fs, b.stride)))
    b.close()
    assert not cuda.open_objects()


def live_contexts(engine) -> int:
    """Contexts still referenced by someone other than the fake engine's own list."""
    import gc
    import weakref

    refs = [weakref.ref(c) for c in engine.contexts]
    engine.contexts.clear()
    gc.collect()
    live = [r() for r in refs if r() is not None]
    engine.contexts.extend(live)
    return len(live)


def test_a_stream_holds_one_context_not_the_probes_as_well(monkeypatch, tmp_path):
    """Deblurrer.open's probe runs backend.infer, which makes the backend's own context; the slot
    executor makes its own: two contexts' activation memory for one stream. Opening the executor
    drops the backend's (made again by a later infer)."""
    from edge_deblur.runtime.deblurrer import Deblurrer

    b, engine, cuda = open_backend(monkeypatch, tmp_path)
    d = Deblurrer(b)
    d.probe()  # as Deblurrer.open(probe=True)
    assert b._own_ctx is not None and live_contexts(engine) == 1
    sched = b.pipeline(slots=2, gpu_preprocess=False)
    assert b._own_ctx is None and b._buf_stack is None  # the probe's context and buffers are freed
    assert live_contexts(engine) == 1  # the executor's only
    with sched.ex:
        got = list(sched.run(frames(3)))
    assert len(got) == 3 and live_contexts(engine) == 0
    x = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    assert np.array_equal(b.infer(x), 1.0 - x)  # made again on demand
    assert live_contexts(engine) == 1
    b.close()
    assert not cuda.open_objects()


def test_a_refused_profile_is_not_a_fall_back_to_the_backends_context(monkeypatch, tmp_path):
    """A second stream of a one-profile engine: the refusal used to be caught and the stream ran
    synchronously on the backend's own context, which is on profile 0, the profile the first
    pipeline's context runs on. It is an error naming the way out; nothing ran, the sinks closed."""
    from edge_deblur.errors import ProfileInUseError
    from edge_deblur.io import StreamOptions
    from edge_deblur.runtime.deblurrer import Deblurrer
    from edge_deblur.runtime.pipeline import Pipeline

    b, engine, cuda = open_backend(monkeypatch, tmp_path)
    first = b.pipeline(slots=2, gpu_preprocess=False)  # another stream of this backend, open
    runs_before = sum(c.runs for c in engine.contexts)
    got = []
    pipe = Pipeline(Deblurrer(b), frames(4), lambda f, m: got.append(m.index), StreamOptions(slots=2))
    with pytest.raises(ProfileInUseError, match="close the other pipeline"), pipe:
        pipe.run()
    assert got == [] and pipe.schedule == "slots" and pipe._torn_down
    assert sum(c.runs for c in engine.contexts) == runs_before  # nothing ran on profile 0 beside it
    first.ex.close()
    b.close()


def test_a_refused_shape_names_the_executors_own_profile(monkeypatch, tmp_path):
    """An executor on profile 1 reported profile 0's min/max for a frame outside its profile."""
    p0 = ((1, 3, 4, 4), (1, 3, 32, 32), (1, 3, 128, 128))
    p1 = ((1, 3, 4, 4), (1, 3, 16, 16), (1, 3, 24, 24))
    b, engine, cuda = open_backend(monkeypatch, tmp_path, profiles=2, profile_list=[p0, p1])
    one, two = b.pipeline(slots=2, gpu_preprocess=False), b.pipeline(slots=2, gpu_preprocess=False)
    assert two.ex.profile_index == 1
    with pytest.raises(BackendError) as e:
        two.submit(frames(1, h=30, w=41)[0])  # padded 32x44: inside profile 0, outside profile 1
    assert "[1, 3, 4, 4] .. [1, 3, 24, 24]" in str(e.value) and "[1, 3, 128, 128]" not in str(e.value)
    one.ex.close()
    two.ex.close()
    b.close()


def test_tensorrt_slots_with_cpu_conversion_check_outputs_for_nan(monkeypatch, tmp_path):
    """The float output comes back to the host (CPU conversion): the guard sees NaN there."""
    from edge_deblur.io import StreamOptions
    from edge_deblur.runtime.deblurrer import Deblurrer
    from edge_deblur.runtime.pipeline import Pipeline
    from trt_fakes import FakeContext

    b, engine, cuda = open_backend(monkeypatch, tmp_path)
    run = FakeContext.execute_async_v3

    def nan_on_third(self, stream):
        ok = run(self, stream)
        if self.runs == 3:
            self.cuda.tensor(self.addresses["output"], self.get_tensor_shape("output"))[:] = np.nan
        return ok

    monkeypatch.setattr(FakeContext, "execute_async_v3", nan_on_third)
    fs = frames(5)
    got = []
    stats = Pipeline(Deblurrer(b), list(fs), lambda f, m: got.append(f), StreamOptions(slots=2), warmup=False).run()
    assert stats["schedule"] == "slots" and len(got) == 5
    assert stats["model_output"] == {"bad_frames": 1, "longest_bad_run": 1, "unchecked_frames": 0}
    assert np.array_equal(got[2], fs[2])  # passed through
    ref = reference(fs, b.stride)
    assert all(np.array_equal(got[i], ref[i]) for i in (0, 1, 3, 4))
    b.close()


@pytest.mark.parametrize("batch_max, expect", [(1, 1), (4, 4)])
def test_the_profiles_max_batch_bounds_a_batched_call(monkeypatch, tmp_path, batch_max, expect):
    """Several cameras batch their frames per call; an engine built with a batch-1 profile (every
    shipped Jetson profile) took a batch of 2 as outside its profile. The backend's max_batch is
    the profile's largest batch, and the multi-camera step splits its batches to it."""
    from edge_deblur.runtime.multicam import _batches

    profile = ((1, 3, 4, 4), (1, 3, 32, 32), (batch_max, 3, 128, 128))
    b, _, _ = open_backend(monkeypatch, tmp_path, profile=profile)
    assert b.max_batch == expect
    calls = list(_batches({(1, 3, 32, 32): list(range(4))}, b.max_batch))
    assert [len(m) for _, m in calls] == [expect] * (4 // expect)
    x = np.random.default_rng(0).random((expect, 3, 32, 32), dtype=np.float32)
    assert np.array_equal(b.infer(x), 1.0 - x)  # a batch of max_batch runs
    b.close()
