"""The fast (planar) paths of frame_to_tensor / tensor_to_frame that keep the streaming
pipeline's pre/post-processing small next to inference must give exactly what the plain numpy
formulation gives, for every layout and depth."""
import cv2
import numpy as np
import pytest

from edge_deblur.runtime.preprocess import frame_to_tensor, tensor_to_frame

_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def ref_to_tensor(frame, stride, rgb):
    h, w = frame.shape[:2]
    channels = 0 if frame.ndim == 2 else frame.shape[2]
    img = frame
    if channels == 4:
        img = frame[..., :3]
    elif channels in (0, 1):
        g = frame if channels == 0 else frame[..., 0]
        img = np.repeat(g[..., None], 3, axis=2)
    x = img.astype(np.float32)
    x *= np.float32(1.0 / _SCALE[frame.dtype])
    if not rgb and channels in (3, 4):
        x = x[..., ::-1]
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        mode = cv2.BORDER_REFLECT_101 if (h > ph and w > pw) else cv2.BORDER_REPLICATE
        x = cv2.copyMakeBorder(np.ascontiguousarray(x), 0, ph, 0, pw, mode)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def ref_to_frame(t, h, w, dtype, channels, rgb, alpha):
    x = t[0][:, :h, :w].transpose(1, 2, 0)
    if not rgb:
        x = x[..., ::-1]
    scale = _SCALE[np.dtype(dtype)]
    out = np.clip(x * scale + 0.5, 0, scale).astype(dtype)
    if alpha is not None:
        out = np.concatenate([out, alpha[..., None]], axis=2)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 1), (32, 48, 3), (37, 53, 3), (5, 7, 3), (37, 53, 4)])
@pytest.mark.parametrize("rgb", [False, True])
def test_fast_paths_match_reference(dtype, shape, rgb):
    rng = np.random.default_rng(sum(shape))
    hi = np.iinfo(dtype).max
    frame = rng.integers(0, hi + 1, size=shape, dtype=dtype)
    t, info = frame_to_tensor(frame, 16, rgb)
    assert t.dtype == np.float32 and t.flags.c_contiguous
    np.testing.assert_array_equal(t, ref_to_tensor(frame, 16, rgb))
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        y = (rng.random(t.shape, dtype=np.float32) * 1.2 - 0.1).astype(np.float32)
        out = tensor_to_frame(y, info)
        alpha = frame[..., 3] if frame.shape[2] == 4 else None
        ref = ref_to_frame(y, shape[0], shape[1], dtype, frame.shape[2], rgb, alpha)
        assert out.shape == frame.shape and out.dtype == frame.dtype
        np.testing.assert_array_equal(out, ref)
    # the round trip of an identity model gives the frame back
    back = tensor_to_frame(t, info)
    assert back.shape == frame.shape and back.dtype == frame.dtype
    if frame.ndim == 3 and frame.shape[2] >= 3:
        np.testing.assert_array_equal(back, frame)
