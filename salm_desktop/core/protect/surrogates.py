"""Surrogate classifiers for the min-min optimisation.

``cifar_resnet`` (the default for every size) is a small CIFAR-style ResNet: 3x3 stem, three
residual stages (16/32/64 channels in 2D, 8/16/32 in 3D), global average pooling, so one network
takes any input size. For inputs larger than 64 pixels per side a strided downsampling stem brings
them to about 64 first, which keeps a 512x512 CT slice cheap on the CPU while the input gradient
(and so the SALM mask) stays at full resolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SURROGATES = ("auto", "cifar_resnet", "small_cnn", "densenet121", "resnet18")


def _layers(dims: int):
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d
    if dims == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.AdaptiveAvgPool3d
    raise ValueError(f"only 2D and 3D samples are supported, got {dims}D")


def downsample_factor(spatial: tuple[int, ...], target: int = 64) -> int:
    """Power-of-two stride that brings the smallest side to about ``target``."""
    smallest = min(spatial)
    if smallest <= target:
        return 1
    return 2 ** int(math.floor(math.log2(smallest / target)))


class _Block(nn.Module):
    def __init__(self, dims: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        conv, bn, _ = _layers(dims)
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = bn(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(conv(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.short(x))


class Stem(nn.Module):
    """Strided convolutions until the input is about 64 pixels per side (identity for small input)."""

    def __init__(self, dims: int, out_ch: int, factor: int) -> None:
        super().__init__()
        conv, bn, _ = _layers(dims)
        layers: list[nn.Module] = []
        cin = 1
        while factor > 1:
            layers += [conv(cin, out_ch, 3, 2, 1, bias=False), bn(out_ch), nn.ReLU(inplace=True)]
            cin = out_ch
            factor //= 2
        layers += [conv(cin, out_ch, 3, 1, 1, bias=False), bn(out_ch), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CifarResNet(nn.Module):
    def __init__(self, dims: int, n_classes: int, factor: int = 1, widths: tuple[int, ...] | None = None) -> None:
        super().__init__()
        _, _, pool = _layers(dims)
        widths = widths or ((16, 32, 64) if dims == 2 else (8, 16, 32))
        self.stem = Stem(dims, widths[0], factor)
        blocks = []
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks.append(_Block(dims, cin, w, 1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = pool(1)
        self.fc = nn.Linear(cin, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


class SmallCNN(nn.Module):
    def __init__(self, dims: int, n_classes: int, factor: int = 1) -> None:
        super().__init__()
        conv, bn, pool = _layers(dims)
        maxpool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        w = 32 if dims == 2 else 16
        self.stem = Stem(dims, w, factor)
        self.features = nn.Sequential(
            maxpool(2), conv(w, 2 * w, 3, 1, 1, bias=False), bn(2 * w), nn.ReLU(inplace=True),
            maxpool(2), conv(2 * w, 4 * w, 3, 1, 1, bias=False), bn(4 * w), nn.ReLU(inplace=True),
        )
        self.pool = pool(1)
        self.fc = nn.Linear(4 * w, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


def build_surrogate(name: str, dims: int, n_classes: int, spatial: tuple[int, ...]) -> nn.Module:
    """A fresh surrogate. Seed the global torch RNG (or fork it) before calling for reproducibility."""
    name = (name or "auto").lower()
    factor = downsample_factor(spatial)
    if name in ("auto", "cifar_resnet"):
        return CifarResNet(dims, n_classes, factor)
    if name == "small_cnn":
        return SmallCNN(dims, n_classes, factor)
    if name == "densenet121":
        from monai.networks.nets import DenseNet121

        return DenseNet121(spatial_dims=dims, in_channels=1, out_channels=n_classes)
    if name == "resnet18":
        from monai.networks.nets import resnet18

        return resnet18(spatial_dims=dims, n_input_channels=1, num_classes=n_classes,
                        conv1_t_size=3, conv1_t_stride=1, no_max_pool=True)
    raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(SURROGATES)}")


def _bf16_under_autocast(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    return output.to(torch.bfloat16) if torch.is_autocast_enabled(output.device.type) else output


def first_layer_in_fp32(model: nn.Module, device_type: str) -> None:
    """``precision="bf16"``: the first convolution and the batch norm after it in float32, the rest in bf16.

    bf16 keeps 8 significant bits: an intensity near 0.5 moves in steps of 1/256, coarser than one PGD
    step (epsilon/10), so a bf16 first convolution sees a coarse copy of the noise. In float32 it sees
    every step; the batch norm after it removes each channel's mean, so its output, rounded to bf16
    for everything after it, keeps the noise's share. Without that cast the float32 activations (and
    layout conversions) ran on through the whole first stage (docs/benchmarks.md, issue 20). Outside
    autocast (the stop check) the model is plain float32.
    """
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    if first is None:
        return
    conv_forward = first.forward  # the class's forward, bound (fold_batch_norms strips this patch from its copy)

    def forward_fp32(inp: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, enabled=False):
            return conv_forward(inp.float())

    first.forward = forward_fp32
    modules = list(model.modules())
    after = modules[modules.index(first) + 1:]
    # the batch norm right after it hands bf16 on; in a folded model (fold_batch_norms) the convolution does
    norm = after[0] if after and isinstance(after[0], nn.modules.batchnorm._BatchNorm) else None
    (norm or first).register_forward_hook(_bf16_under_autocast)


def fold_batch_norms(model: nn.Module) -> nn.Module | None:
    """A copy of the eval-mode ``model`` with every batch norm folded into the convolution before it, in
    ``model``'s memory layout and with no parameter gradients (``precision="fp32_fast"``: the passes
    with the surrogate fixed). The batch norms' running statistics make each a per-channel affine map,
    so the copy computes the same function with a memory pass fewer per layer. None where the model
    cannot be traced (the caller keeps ``model``)."""
    import copy

    from torch.fx.experimental.optimization import fuse

    if model.training:
        raise ValueError("batch norms fold only in eval mode (their running statistics are fixed there)")
    plain = copy.deepcopy(model)
    for module in plain.modules():  # first_layer_in_fp32's patch would run the *unfolded* original: re-apply it after
        module.__dict__.pop("forward", None)
        module._forward_hooks.clear()
    try:
        folded = fuse(plain, inplace=True)
    except Exception:  # torch.fx cannot trace data-dependent control flow
        return None
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    if first is not None:
        layout = torch.channels_last if isinstance(first, nn.Conv2d) else torch.channels_last_3d
        if first.weight.is_contiguous(memory_format=layout):
            folded = folded.to(memory_format=layout)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval()
