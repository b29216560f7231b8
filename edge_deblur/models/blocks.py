"""Building blocks made of plain ops (Conv2d, ReLU, add, PixelShuffle) that ONNX, TensorRT,
Torch-Pruning and INT8 Q/DQ all understand."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RepConv3x3(nn.Module):
    """Train-time multi-branch 3x3 conv (RepVGG without BN): 3x3 + 1x1 (+ identity when
    in == out). All branches are linear, so they fold exactly into one 3x3 conv for deployment.

    With ``online=True`` (default) the forward pass folds the kernels first and runs a single
    convolution: the same function and the same gradients for the branch parameters, at the
    cost of one plain conv. ``online=False`` runs the branches separately (used by tests to
    check the folding)."""

    def __init__(self, in_ch: int, out_ch: int, online: bool = True):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.online = online
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1)
        self.has_identity = in_ch == out_ch

    def fused_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.conv3.weight + F.pad(self.conv1.weight, (1, 1, 1, 1))
        if self.has_identity:
            eye = torch.zeros_like(self.conv3.weight)
            idx = torch.arange(self.out_ch, device=eye.device)
            eye[idx, idx, 1, 1] = 1.0
            w = w + eye
        b = self.conv3.bias + self.conv1.bias
        return w, b

    def forward(self, x):
        if self.online:
            w, b = self.fused_weight_bias()
            return F.conv2d(x, w, b, padding=1)
        y = self.conv3(x) + self.conv1(x)
        if self.has_identity:
            y = y + x
        return y

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        w, b = self.fused_weight_bias()
        conv = nn.Conv2d(self.in_ch, self.out_ch, 3, padding=1).to(w.device, w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        return conv


def conv3x3(in_ch: int, out_ch: int, rep: bool) -> nn.Module:
    return RepConv3x3(in_ch, out_ch) if rep else nn.Conv2d(in_ch, out_ch, 3, padding=1)


class ResBlock(nn.Module):
    """x + conv(relu(conv(x))): two 3x3 convs with a free middle width (prunable)."""

    def __init__(self, ch: int, mid: int | None = None, rep: bool = False):
        super().__init__()
        mid = mid or ch
        self.conv1 = conv3x3(ch, mid, rep)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(mid, ch, rep)

    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(x)))


class StripBlock(nn.Module):
    """x + pw2(relu(dw_h(t) + dw_v(t))), t = pw1(x): long horizontal (1 x k) and vertical (k x 1)
    depthwise convs between two 1x1 convs. Motion blur spans tens of pixels, and undoing it needs
    filters that long; stacked 3x3 convs reach that far only in theory. Plain Conv2d ops (grouped
    for the depthwise pair) that ONNX, TensorRT, Torch-Pruning and INT8 handle; a few hundred
    MMACs per 1280x720 frame at half resolution. ``pw2`` starts at zero: the block is the
    identity until trained."""

    def __init__(self, ch: int, kernel: int = 21, mid: int | None = None):
        super().__init__()
        if kernel < 3 or kernel % 2 == 0:
            raise ValueError(f"strip kernel must be odd and >= 3, got {kernel}")
        mid = mid or ch
        self.pw1 = nn.Conv2d(ch, mid, 1)
        self.dw_h = nn.Conv2d(mid, mid, (1, kernel), padding=(0, kernel // 2), groups=mid)
        self.dw_v = nn.Conv2d(mid, mid, (kernel, 1), padding=(kernel // 2, 0), groups=mid)
        self.act = nn.ReLU(inplace=True)
        self.pw2 = nn.Conv2d(mid, ch, 1)
        nn.init.zeros_(self.pw2.weight)
        nn.init.zeros_(self.pw2.bias)

    def forward(self, x):
        t = self.pw1(x)
        return x + self.pw2(self.act(self.dw_h(t) + self.dw_v(t)))


class LayerNorm2d(nn.Module):
    """LayerNorm over channels written with plain ops (ReduceMean, Sub, Mul, Sqrt, Div)."""

    def __init__(self, ch: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        d = x - mu
        var = (d * d).mean(1, keepdim=True)
        return d / torch.sqrt(var + self.eps) * self.weight + self.bias


class SimpleGate(nn.Module):
    def forward(self, x):
        c = x.shape[1] // 2
        return x[:, :c] * x[:, c:]


def reparameterize_(model: nn.Module) -> nn.Module:
    """Replace every RepConv3x3 in ``model`` (in place) by its folded plain Conv2d."""
    for name, child in list(model.named_children()):
        if isinstance(child, RepConv3x3):
            setattr(model, name, child.fuse())
        else:
            reparameterize_(child)
    return model
