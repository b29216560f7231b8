"""edgenet: a conv-only encoder-decoder with a global residual, built for CPU and edge GPUs.

PixelUnshuffle(2) puts the work at half resolution from the first layer; every level is 3x3
convs + ReLU with residual adds; down is a 2x2 stride-2 conv, up a 1x1 conv + PixelShuffle(2);
the output is added to the input (global residual). With ``rep=True`` the 3x3 convs are
multi-branch at train time and fold into single convs for deployment (``rep=False``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import RepConv3x3, ResBlock, StripBlock, conv3x3


class EdgeNet(nn.Module):
    def __init__(
        self,
        widths: list[int] = (16, 32, 64, 128),
        enc_blocks: list[int] = (1, 1, 1),
        mid_blocks: int = 2,
        dec_blocks: list[int] = (1, 1, 1),
        block_mid: dict | None = None,
        strip_levels: list[int] = (),
        strip_kernel: int = 21,
        in_ch: int = 3,
        rep: bool = True,
    ):
        super().__init__()
        widths, enc_blocks, dec_blocks = list(widths), list(enc_blocks), list(dec_blocks)
        levels = len(widths)
        if levels < 1:
            raise ValueError("widths must name at least one level")
        if len(enc_blocks) != levels - 1 or len(dec_blocks) != levels - 1:
            raise ValueError(
                f"enc_blocks and dec_blocks need {levels - 1} entries for {levels} widths, "
                f"got {enc_blocks} and {dec_blocks}"
            )
        # block_mid: optional {"enc.0.1": 12, ...} middle widths of pruned blocks
        bm = dict(block_mid or {})

        def block(ch, key):
            return ResBlock(ch, bm.get(key, ch), rep)

        # strip_levels: levels (0 = half resolution) that get a StripBlock before their encoder
        # blocks and after their decoder blocks (long 1xk / kx1 depthwise convs for long blur)
        strip_levels = sorted(set(int(i) for i in strip_levels))
        if any(not 0 <= i < levels - 1 for i in strip_levels):
            raise ValueError(f"strip_levels must be in [0, {levels - 2}] for {levels} widths, got {strip_levels}")
        self.strip_levels = strip_levels

        def strip(ch, key):
            return StripBlock(ch, strip_kernel, bm.get(key, ch))

        self.enc_strip = nn.ModuleDict({str(i): strip(widths[i], f"enc_strip.{i}") for i in strip_levels})
        self.dec_strip = nn.ModuleDict({str(i): strip(widths[i], f"dec_strip.{i}") for i in strip_levels})
        self.stride = 2 * 2 ** (levels - 1)
        self.unshuffle = nn.PixelUnshuffle(2)
        self.head = conv3x3(in_ch * 4, widths[0], rep)
        self.act = nn.ReLU(inplace=True)
        self.enc = nn.ModuleList(
            nn.Sequential(*[block(widths[i], f"enc.{i}.{j}") for j in range(enc_blocks[i])])
            for i in range(levels - 1)
        )
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(levels - 1))
        self.mid = nn.Sequential(*[block(widths[-1], f"mid.{j}") for j in range(mid_blocks)])
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i + 1], widths[i] * 4, 1), nn.PixelShuffle(2))
            for i in range(levels - 1)
        )
        self.dec = nn.ModuleList(
            nn.Sequential(*[block(widths[i], f"dec.{i}.{j}") for j in range(dec_blocks[i])])
            for i in range(levels - 1)
        )
        self.tail = nn.Conv2d(widths[0], in_ch * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self._init()

    def _init(self):
        # start as the identity (global residual), and each residual block near it
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        for m in self.modules():
            if isinstance(m, ResBlock):
                last = m.conv2.conv3 if hasattr(m.conv2, "conv3") else m.conv2
                last.weight.data.mul_(0.1)
                if hasattr(m.conv2, "conv1"):
                    m.conv2.conv1.weight.data.mul_(0.1)

    def encode(self, x: torch.Tensor):
        """Input -> (bottleneck features before the middle blocks, encoder skips)."""
        return self._encode_levels(self.act(self.head(self.unshuffle(x))))

    def _encode_levels(self, h: torch.Tensor):
        """Features after the head -> (bottleneck features before the middle blocks, skips)."""
        skips = []
        for i, (enc, down) in enumerate(zip(self.enc, self.down)):
            if str(i) in self.enc_strip:
                h = self.enc_strip[str(i)](h)
            h = enc(h)
            skips.append(h)
            h = self.act(down(h))
        return h, skips

    def decode(self, h: torch.Tensor, skips, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck features after the middle blocks -> output (with the global residual)."""
        for i in reversed(range(len(self.up))):
            h = self.up[i](h) + skips[i]
            h = self.dec[i](h)
            if str(i) in self.dec_strip:
                h = self.dec_strip[str(i)](h)
        return self.shuffle(self.tail(h)) + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, skips = self.encode(x)
        return self.decode(self.mid(h), skips, x)


class EdgeNetRecurrent(EdgeNet):
    """edgenet with an explicit recurrent state at the bottleneck (1/stride resolution).

    ``forward(x, state) -> (y, state_out)``: the state is a graph input and output, never hidden
    in the module, so ONNX/TensorRT export it as ``state_in``/``state_out`` and the runtime
    carries it from frame to frame (zeros at the first frame, after a size change or a cut)."""

    recurrent = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        w = self.down[-1].out_channels if len(self.down) else self.head.out_channels
        self.state_channels = w
        self.fuse_state = nn.Conv2d(2 * w, w, 1)
        with torch.no_grad():  # start by ignoring the state
            self.fuse_state.weight.zero_()
            self.fuse_state.weight[:, :w, 0, 0].copy_(torch.eye(w))
            self.fuse_state.bias.zero_()

    @staticmethod
    def recurrent_parameter_names() -> list[str]:
        """Weights an image edgenet does not have (they start as the identity on the image path)."""
        return ["fuse_state.weight", "fuse_state.bias"]

    def state_shape(self, height: int, width: int, batch: int = 1):
        return (batch, self.state_channels, height // self.stride, width // self.stride)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        h, skips = self.encode(x)
        h = self.mid(self.act(self.fuse_state(torch.cat([h, state], 1))))
        return self.decode(h, skips, x), h


class EdgeNetFrames(EdgeNet):
    """edgenet that also sees the last ``prev_frames`` input frames, carried as an explicit state.

    ``forward(x, state) -> (y, state_out)``: ``state`` holds the previous ``prev_frames`` (padded)
    input frames at full resolution, newest first (``3 * prev_frames`` channels, zeros where a
    stream has no earlier frame yet); ``state_out`` is ``x`` followed by all but the oldest of
    them. The frames enter at the first conv, unaligned: ``state_head`` (a conv like ``head``, on
    the unshuffled state) is added to ``head``'s output. That is one conv over the concatenated
    channels, written so that each graph input's PixelUnshuffle folds into its own conv
    (compress/cpu_layout.py). The encoder's receptive field (96 px at 1/32 of the frame for
    edgenet M5) covers the motion between consecutive frames. The state is the input itself, so
    no error feeds back from one output to the next, and a zero state (a stream's first frame)
    gives exactly the image model's output when the model is made from one
    (:func:`edge_deblur.models.grow.to_recurrent`): ``state_head`` starts at zero."""

    recurrent = True
    state_scale = 1  # the state is at the padded frame's resolution

    def __init__(self, *args, prev_frames: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        if int(prev_frames) < 1:
            raise ValueError(f"prev_frames must be >= 1, got {prev_frames}")
        self.prev_frames = int(prev_frames)
        self.frame_channels = self.tail.out_channels // 4  # in_ch
        self.state_channels = self.frame_channels * self.prev_frames
        self.state_head = conv3x3(4 * self.state_channels, self.tail.in_channels, isinstance(self.head, RepConv3x3))
        with torch.no_grad():  # the state starts silent: the output is the image model's until trained
            for p in self.state_head.parameters():
                p.zero_()

    def recurrent_parameter_names(self) -> list[str]:
        """Weights an image edgenet does not have (they start at zero)."""
        return [f"state_head.{k}" for k in self.state_head.state_dict()]

    def state_shape(self, height: int, width: int, batch: int = 1):
        return (batch, self.state_channels, height, width)

    def encode(self, x: torch.Tensor, state: torch.Tensor | None = None):
        if state is None:
            return super().encode(x)
        return self._encode_levels(self.act(self.head(self.unshuffle(x)) + self.state_head(self.unshuffle(state))))

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        h, skips = self.encode(x, state)
        keep = self.state_channels - self.frame_channels
        return self.decode(self.mid(h), skips, x), torch.cat([x, state[:, :keep]], 1)


# the registry checks spec keys against the constructor's signature
import inspect as _inspect  # noqa: E402

EdgeNetRecurrent.__init__.__signature__ = _inspect.signature(EdgeNet.__init__)
_sig = _inspect.signature(EdgeNet.__init__)
EdgeNetFrames.__init__.__signature__ = _sig.replace(parameters=[
    *_sig.parameters.values(), _inspect.Parameter("prev_frames", _inspect.Parameter.KEYWORD_ONLY, default=2)])
