"""The SALM / EM / random protection engine (sample-wise error-minimizing noise, min-min).

Flow of one job (docs/algorithm.md explains every choice):

1. Every sample is read once through ``Sample.read()`` (batch by batch), normalized through its
   series' IntensityMap and kept in a compact :class:`ArrayStore` bucketed by shape; the noise
   (float16) and the SALM masks (uint8) live in stores of the same layout.
2. Samples are grouped by dimensionality (2D / 3D); each group gets one fully convolutional
   surrogate that takes every shape of the group.
3. Rounds: ``train_steps`` SGD steps of the surrogate on the perturbed data (train mode), then for
   every batch ``pgd_steps`` projected sign-gradient *descent* steps on the noise with the surrogate
   in eval mode. The model input is ``clip(x + delta, 0, 1)`` (clip after adding); the noise is
   projected to ``|delta| <= epsilon`` and so that ``x + delta`` stays inside [0, 1]. SALM only
   updates the top ``mask_ratio`` pixels of each sample by |loss gradient| (optionally inside the
   foreground), everything else stays exactly zero. The accuracy of the (fixed) surrogate on the
   final noise of each batch, in eval mode, is the stop criterion.
4. The result is handed out per sample as native values already quantized to the stored type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from salm_desktop.core.model import IntensityMap, Sample, Series, short_hash
from salm_desktop.core.progress import Progress

from .clusters import intensity_features, kmeans
from .device import resolve_device, resolve_precision
from .masks import body_mask, topk_mask
from .peers import CANDIDATE_METHODS, PEER_METHODS, generate_peer
from .robust import random_transform, robust_mode
from .settings import ProtectSettings
from .store import ArrayStore
from .surrogates import build_surrogate, downsample_factor


@dataclass
class _Bucket:
    shape: tuple[int, ...]
    items: list[tuple[int, int]]  # (series index, sample index) per position
    clean: ArrayStore | None = None
    delta: ArrayStore | None = None
    mask: ArrayStore | None = None
    fg: ArrayStore | None = None
    labels: np.ndarray | None = None
    mask_set: np.ndarray | None = None
    eps: np.ndarray | None = None  # per position: the budget of its series in the normalized scale
    mean_free: np.ndarray | None = None  # per position: remove the noise's local mean (quantitative data)

    @property
    def n(self) -> int:
        return len(self.items)


@dataclass
class ProtectResult:
    series: list[Series]
    settings: ProtectSettings
    summary: dict = field(default_factory=dict)
    _where: dict = field(default_factory=dict, repr=False)  # (series_id, index) -> (bucket, pos)
    _labels: dict = field(default_factory=dict, repr=False)  # series_id -> list[int]
    _eps: dict = field(default_factory=dict, repr=False)  # series_id -> budget in the normalized scale

    def _series(self, series_id: str) -> Series:
        for s in self.series:
            if s.id == series_id:
                return s
        raise KeyError(f"unknown series {series_id}")

    def delta(self, series_id: str, index: int) -> np.ndarray:
        """The noise of one sample in the normalized scale (float32, exactly 0 outside the mask)."""
        bucket, pos = self._where[(series_id, index)]
        eps = float(self._eps.get(series_id, self.settings.epsilon))
        return np.clip(np.asarray(bucket.delta[pos], dtype=np.float32), -eps, eps)

    def protected(self, series_id: str, index: int) -> np.ndarray:
        """Native float32 values of one protected sample, already quantized to its stored format.

        Pixels whose noise is zero keep their exact original values.
        """
        series = self._series(series_id)
        return self._protected_from(series, index, series.samples[index].read())

    def _protected_from(self, series: Series, index: int, native: np.ndarray) -> np.ndarray:
        """:meth:`protected` from already decoded native values (the summary decodes each sample once)."""
        sample = series.samples[index]
        d = self.delta(series.id, index)
        out = sample.stored.quantize(native + d * np.float32(series.intensity.width))
        return np.where(d == 0, native, out).astype(np.float32)

    def labels_used(self, series_id: str) -> list[int]:
        return list(self._labels[series_id])

    def close(self) -> None:
        seen = set()
        for bucket, _ in self._where.values():
            if id(bucket) in seen:
                continue
            seen.add(id(bucket))
            for store in (bucket.clean, bucket.delta, bucket.mask, bucket.fg):
                if store is not None:
                    store.close()


@contextlib.contextmanager
def _deterministic(device: torch.device):
    prev_bench = torch.backends.cudnn.benchmark
    prev_det = torch.backends.cudnn.deterministic
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev_bench
        torch.backends.cudnn.deterministic = prev_det


def _sample_seed(seed: int, series_id: str, key: str) -> int:
    return int(short_hash(seed, series_id, key, length=8), 16)


def _project(d: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """|d| <= eps, and x + d inside [0, 1] (pixels outside the window may only move towards it)."""
    if isinstance(eps, torch.Tensor):  # one budget per sample (series differ in window and noise)
        d = torch.maximum(torch.minimum(d, eps), -eps)
    else:
        d = d.clamp(-eps, eps)
    lo = torch.clamp(-x, max=0.0)
    hi = torch.clamp(1.0 - x, min=0.0)
    return torch.maximum(torch.minimum(d, hi), lo)


def _first_conv_in_fp32(model: torch.nn.Module, device_type: str) -> None:
    """bf16 keeps 8 significant bits: an intensity near 0.5 moves in steps of 1/256, coarser than one
    PGD step (epsilon/10). The first convolution therefore sees the perturbed input in float32; its
    features, and everything after them, run in bf16."""
    first = next((m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))), None)
    if first is None:
        return
    conv_forward = first.forward

    def forward_fp32(inp: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, enabled=False):
            return conv_forward(inp.float())

    first.forward = forward_fp32


class _Job:
    def __init__(self, series: Sequence[Series], settings: ProtectSettings, progress: Progress | None) -> None:
        self.series = list(series)
        self.s = settings
        self.progress = progress or Progress()
        self.device = resolve_device(settings.device)
        self.eps = float(settings.epsilon)
        self.step = settings.effective_step
        self.ratio = settings.effective_mask_ratio
        self.use_mask = settings.method in ("salm", "salm-v1") and self.ratio < 1.0
        # class mask scopes: one top-k mask per class from this round on (round 1's saliency, or a pre-pass)
        self.class_masks = self.use_mask and settings.mask_scope != "sample"
        self.first_class_mask_round = 1 if settings.mask_scope == "class_from_start" else 2
        self.mode = settings.mask_mode
        self.done = 0
        self.total = 1
        self.rounds = 0
        self.accuracy: dict[int, float] = {}
        self.loss: dict[int, float] = {}  # dims -> surrogate's mean cross-entropy on the perturbed data, last round
        self.stop_round: dict[int, int] = {}  # dims -> first round that reached stop_accuracy
        self.buckets: dict[tuple[int, ...], _Bucket] = {}
        self._round = 0
        self.class_score: dict[int, torch.Tensor] = {}  # id(bucket) -> (n_classes, *shape), class mask scopes
        self.robust = robust_mode(settings.robust)
        self.eot_gen = torch.Generator().manual_seed(int(settings.seed) + 99) if self.robust != "off" else None
        self.precision = resolve_precision(settings.precision, self.device)
        self.pinned = self.device.type == "cuda"  # page-locked staging so host->device copies overlap compute
        self.pgd_sample_steps = 0  # sample x PGD steps actually run (early exit skips the rest)
        self.pgd_sample_steps_max = 0
        self._class_mask_cache: dict[tuple, torch.Tensor] = {}

    def _autocast(self):
        """bf16 autocast for the surrogate's passes ("bf16", "bf16_all"); a no-op for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _model_input(self, z: torch.Tensor) -> torch.Tensor:
        """bf16 path: channels-last input for the channels-last model (oneDNN/cuDNN skip layout reorders)."""
        if self.precision == "fp32":
            return z
        return z.contiguous(memory_format=torch.channels_last if z.ndim == 4 else torch.channels_last_3d)

    def _logits(self, model, z: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return model(self._model_input(z))

    def _view(self, z: torch.Tensor, training: bool = False) -> torch.Tensor:
        """What the surrogate sees of the perturbed input: itself, or a random transformation (robust)."""
        z = self._jitter(z)
        if self.eot_gen is None or (training and self.robust == "pgd"):
            return z
        return random_transform(z, self.eot_gen, 0.5 if self.robust == "pgd" else None)

    # -- budget and structure -----------------------------------------------------------------
    def _set_budgets(self) -> None:
        """One budget per series (normalized scale): settings.epsilon of the reader's window, or
        settings.epsilon_native in native units, capped at settings.noise_cap x the series' noise SD."""
        self.eps_series = {}
        self.noise_series = {}
        for ser in self.series:
            noise = series_noise_sd(ser) if self.s.noise_cap is not None else None
            if noise is not None:
                self.noise_series[ser.id] = noise
            self.eps_series[ser.id] = series_epsilon(ser, self.s, noise)
        for bucket in self.buckets.values():
            bucket.eps = np.array([self.eps_series[self.series[si].id] for si, _ in bucket.items], dtype=np.float32)
            bucket.mean_free = np.array([_local_mean_free(self.s, self.series[si]) for si, _ in bucket.items], dtype=bool)

    def _remove_local_mean(self, d: torch.Tensor, m: torch.Tensor | None, b: _Bucket, idx: np.ndarray) -> torch.Tensor:
        """Subtract the noise's mean over a Gaussian neighbourhood (SD LOCAL_MEAN_SIGMA pixels) (of the pixels it may change), so
        that a region's mean value (HU of a lesion, of the liver) stays where it was; the noise keeps
        its fine structure. Only for the samples whose series asks for it."""
        flags = b.mean_free[idx]
        if not flags.any():
            return d
        w = torch.ones_like(d) if m is None else m.to(d.dtype)
        # a Gaussian (not a box) neighbourhood: a box mean leaves ringing, i.e. a periodic pattern
        out = (d - _gaussian_smooth(d * w) / _gaussian_smooth(w).clamp_min(1e-6)) * w
        sel = torch.from_numpy(flags).to(d.device).view(-1, *([1] * (d.ndim - 1)))
        return torch.where(sel, out, d)

    def _budget_of(self, b: _Bucket, idx: np.ndarray):
        """(budget, step size) of the samples ``idx`` of ``b``: floats when they agree, else (n, 1, ...) tensors."""
        eps = b.eps[idx]
        if np.all(eps == eps[0]):
            e = float(eps[0])
            return e, (self.step * e / self.eps)
        e = torch.from_numpy(eps).to(self.device).view(-1, *([1] * (len(b.shape) + 1)))
        return e, e * (self.step / self.eps)

    def _jitter(self, z: torch.Tensor) -> torch.Tensor:
        """Shift the surrogate's input by a random sub-stride offset (circularly; borders are air/padding).

        A surrogate with a strided stem (factor 8 at 512 px) sees the image on a fixed sampling grid,
        so its input gradient, and the noise, carry that grid's period. A fresh phase every step
        averages the grid out of the noise; the shift is undone by autograd in the gradient.
        """
        stride = getattr(self, "_stride", 1)
        if stride <= 1:
            return z
        if not hasattr(self, "_jitter_gen"):
            self._jitter_gen = torch.Generator().manual_seed(int(self.s.seed) + 7)
        shifts = torch.randint(0, stride, (z.ndim - 2,), generator=self._jitter_gen).tolist()
        z = torch.roll(z, shifts=shifts, dims=tuple(range(2, z.ndim)))
        # random flips (and in-plane transposes of square images): an oriented texture, e.g. stripes,
        # stops being a shortcut, so the noise does not grow one
        flips = [2 + a for a in range(z.ndim - 2) if bool(torch.rand((), generator=self._jitter_gen) < 0.5)]
        if flips:
            z = torch.flip(z, flips)
        if z.shape[2] == z.shape[3] and bool(torch.rand((), generator=self._jitter_gen) < 0.5):
            z = z.transpose(2, 3)
        return self._antialias(z)

    def _antialias(self, z: torch.Tensor) -> torch.Tensor:
        """The blur before a strided stem, also in the stop check (the surrogate is trained on it):
        without it the noise learns a period-2 texture (above the stem's Nyquist frequency,
        detectable at any phase), a regular pattern a reader sees."""
        return _binomial_blur(z) if getattr(self, "_stride", 1) > 1 else z

    # -- reading ------------------------------------------------------------------------------
    def _validate(self) -> None:
        if not self.series or not any(s.samples for s in self.series):
            raise ValueError("nothing to protect: no samples")
        for si, ser in enumerate(self.series):
            for ki, smp in enumerate(ser.samples):
                if len(smp.shape) not in (2, 3):
                    raise ValueError(f"{smp.source.path}: only 2D images and 3D volumes can be protected, got shape {smp.shape}")
                if self.s.labels == "given" and self.s.method != "random" and smp.label is None:
                    raise ValueError(
                        f"series {ser.id}: sample {smp.key} has no label; use labels='clusters' for unlabelled data"
                    )

    def _read(self) -> None:
        for si, ser in enumerate(self.series):
            for ki, smp in enumerate(ser.samples):
                self.buckets.setdefault(tuple(smp.shape), _Bucket(tuple(smp.shape), [])).items.append((si, ki))
        n_all = sum(b.n for b in self.buckets.values())
        work_rounds = 0 if self.s.method == "random" else self.s.max_rounds
        self.total = n_all * (1 + work_rounds)
        feats: dict[tuple[int, int], np.ndarray] = {}
        bs = self.s.batch_size
        for bucket in self.buckets.values():
            shape = (bucket.n, *bucket.shape)
            bucket.clean = ArrayStore(shape, "float32")
            bucket.delta = ArrayStore(shape, "float16")
            if self.use_mask:
                bucket.mask = ArrayStore(shape, "uint8")
                bucket.mask_set = np.zeros(bucket.n, dtype=bool)
            if self.s.foreground and self.ratio < 1.0:
                bucket.fg = ArrayStore(shape, "uint8")
            labels = np.zeros(bucket.n, dtype=np.int64)
            for start in range(0, bucket.n, bs):
                for pos in range(start, min(start + bs, bucket.n)):
                    si, ki = bucket.items[pos]
                    ser = self.series[si]
                    smp = ser.samples[ki]
                    try:
                        native = smp.read()
                        x = ser.intensity.normalize(native)
                    except Exception as exc:  # a one-line reason naming the file
                        raise ValueError(f"{smp.source.path}: cannot read pixels ({exc})") from exc
                    if not np.all(np.isfinite(x)):
                        raise ValueError(f"{smp.source.path}: pixels contain NaN or infinity")
                    bucket.clean[pos] = x
                    if bucket.fg is not None:
                        bucket.fg[pos] = body_mask(native, ser.intensity)
                    if self.s.labels == "clusters":
                        feats[(si, ki)] = intensity_features(x)
                    else:
                        labels[pos] = -1 if smp.label is None else int(smp.label)
                self.done += min(start + bs, bucket.n) - start
                self.progress.update("protect", self.done, self.total, "reading samples", round=0)
            bucket.labels = labels
        if self.s.labels == "clusters":
            # One clustering per dimensionality group (2D and 3D features are not comparable).
            for dims in sorted({len(b.shape) for b in self.buckets.values()}):
                keys = [it for b in self.buckets.values() if len(b.shape) == dims for it in b.items]
                if len(keys) < self.s.n_clusters:
                    raise ValueError(f"{len(keys)} samples cannot form {self.s.n_clusters} clusters")
                assign = kmeans(np.stack([feats[k] for k in keys]), self.s.n_clusters, self.s.seed)
                lookup = dict(zip(keys, assign.tolist()))
                for b in self.buckets.values():
                    if len(b.shape) == dims:
                        b.labels = np.array([lookup[it] for it in b.items], dtype=np.int64)

    # -- random baseline ------------------------------------------------------------------------
    def _random(self) -> None:
        for bucket in self.buckets.values():
            numel = int(np.prod(bucket.shape))
            k = max(1, int(round(self.ratio * numel)))
            for pos, (si, ki) in enumerate(bucket.items):
                ser = self.series[si]
                rng = np.random.default_rng(_sample_seed(self.s.seed, ser.id, ser.samples[ki].key))
                allowed = np.flatnonzero(bucket.fg[pos].reshape(-1)) if bucket.fg is not None else np.arange(numel)
                chosen = rng.choice(allowed, size=min(k, allowed.size), replace=False) if k < allowed.size else allowed
                d = np.zeros(numel, dtype=np.float32)
                eps = float(bucket.eps[pos])
                d[chosen] = rng.uniform(-eps, eps, size=chosen.size).astype(np.float32)
                x = torch.from_numpy(np.asarray(bucket.clean[pos], dtype=np.float32))
                d_t = _project(torch.from_numpy(d.reshape(bucket.shape)), x, eps)
                bucket.delta[pos] = d_t.numpy().astype(np.float16)
                if (pos + 1) % self.s.batch_size == 0 or pos + 1 == bucket.n:
                    self.done += (pos % self.s.batch_size) + 1
                    self.progress.update("protect", self.done, self.total, "random noise")

    # -- published peers (peers.py) -------------------------------------------------------------
    def _peers(self) -> None:
        """One peer generation per image shape; L2/L0 peers may exceed epsilon per pixel, so the job's
        epsilon becomes the largest change actually made (the result clips the noise to it)."""
        largest = 0.0
        for bucket in self.buckets.values():
            if len(bucket.shape) != 2:
                raise ValueError(f"method {self.s.method!r} protects 2D images only; this job has samples of shape {bucket.shape}")
            delta = generate_peer(self.s.method, np.asarray(bucket.clean[:], dtype=np.float32), bucket.labels, self.s,
                                  self.progress, self.device)
            bucket.delta[:] = delta.astype(np.float16)
            largest = max(largest, float(np.abs(bucket.delta[:].astype(np.float32)).max(initial=0.0)))
            self.done += bucket.n * (1 + self.s.max_rounds) - bucket.n
            self.progress.update("protect", self.done, self.total, f"{self.s.method} noise")
        if largest > self.eps:
            self.eps = largest
            self.s = dataclasses.replace(self.s, epsilon=min(1.0, largest))
            # the result clips each series' noise to its own budget: L2/L0 peers keep what they made
            self.eps_series = {sid: max(e, min(1.0, largest)) for sid, e in self.eps_series.items()}

    # -- min-min ----------------------------------------------------------------------------------
    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self.pinned:
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _batch(self, bucket: _Bucket, idx: np.ndarray):
        x = self._to_device(np.ascontiguousarray(bucket.clean[idx], dtype=np.float32)).unsqueeze(1)
        d = self._to_device(np.asarray(bucket.delta[idx], dtype=np.float32)).unsqueeze(1)
        y = self._to_device(bucket.labels[idx])
        return x, d, y

    def _min_min(self, dims: int, buckets: list[_Bucket]) -> None:
        s = self.s
        n_classes = max(2, s.n_clusters if s.labels == "clusters" else int(max(b.labels.max() for b in buckets)) + 1)
        self._n_classes = n_classes
        spatial = min((b.shape for b in buckets), key=lambda sh: min(sh))
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(s.seed))
            model = build_surrogate(s.surrogate, dims, n_classes, spatial)
        self._stride = downsample_factor(spatial)
        model.to(self.device)
        if self.precision != "fp32":
            model.to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        if self.precision == "bf16":  # "bf16_all" leaves the first convolution in bf16 too (faster, coarser input)
            _first_conv_in_fp32(model, self.device.type)
        opt = torch.optim.SGD(model.parameters(), lr=s.surrogate_lr, momentum=0.9, weight_decay=5e-4)
        gen = np.random.default_rng(int(s.seed) + 1)
        sizes = np.array([b.n for b in buckets], dtype=np.float64)
        n_group = int(sizes.sum())
        perms = {id(b): [gen.permutation(b.n), 0] for b in buckets}

        def next_train_batch():
            b = buckets[int(gen.choice(len(buckets), p=sizes / sizes.sum()))]
            perm = perms[id(b)]
            if perm[1] + min(s.batch_size, b.n) > b.n:
                perm[0], perm[1] = gen.permutation(b.n), 0
            idx = np.sort(perm[0][perm[1]: perm[1] + s.batch_size])
            perm[1] += len(idx)
            return b, idx

        for rnd in range(1, s.max_rounds + 1):
            self._round = rnd
            # (a) surrogate SGD on the perturbed data
            model.train()
            for p in model.parameters():
                p.requires_grad_(True)
            for _ in range(s.train_steps):
                self.progress.check()  # a cancel must not wait for the surrogate's training steps
                b, idx = next_train_batch()
                x, d, y = self._batch(b, idx)
                if len(idx) < 2 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                    continue  # BatchNorm cannot train on a single sample
                opt.zero_grad(set_to_none=True)
                logits = self._logits(model, self._view(torch.clamp(x + d, 0, 1), training=True))
                loss = F.cross_entropy(logits.float(), y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
            # (b) noise: projected sign-gradient descent, surrogate fixed in eval mode
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            if self.class_masks and rnd == 1 == self.first_class_mask_round:
                self._class_saliency_pass(model, buckets)
            correct = 0
            loss_sum = 0.0
            for b in buckets:
                for idx in self._index_batches(b):
                    batch_correct, batch_loss = self._perturb_batch(model, b, idx)
                    correct += batch_correct
                    loss_sum += batch_loss
                    self.done += len(idx)
                    acc_so_far = correct / max(1, self.done - (self._read_total + (rnd - 1) * n_group))
                    self.progress.update(
                        "protect", self.done, self.total, f"round {rnd}: perturbing",
                        round=rnd, surrogate_accuracy=float(acc_so_far),
                    )
            acc = correct / n_group
            mean_loss = loss_sum / n_group
            self.rounds = max(self.rounds, rnd)
            self.accuracy[dims] = float(acc)
            self.loss[dims] = float(mean_loss)
            self.progress.log(f"{dims}D group: round {rnd}, surrogate accuracy on perturbed data {acc:.3f}, loss {mean_loss:.4f}")
            if acc >= s.stop_accuracy and (s.stop_loss is None or mean_loss <= s.stop_loss):
                self.stop_round.setdefault(dims, rnd)  # extra_rounds count from the first round that got there
            if dims in self.stop_round and rnd >= self.stop_round[dims] + s.extra_rounds:
                self.done += (s.max_rounds - rnd) * n_group
                break

    def _index_batches(self, b: _Bucket):
        """The bucket's sample indices in order, batch_size at a time."""
        for start in range(0, b.n, self.s.batch_size):
            yield np.arange(start, min(start + self.s.batch_size, b.n))

    def _add_class_saliency(self, b: _Bucket, y: torch.Tensor, grad: torch.Tensor) -> None:
        """Accumulate each sample's |gradient|, normalized to sum 1, into its class's saliency map."""
        g = grad.abs().squeeze(1)
        g = g / g.flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
        score = self.class_score.setdefault(id(b), torch.zeros((self._n_classes, *b.shape), device=self.device))
        score.index_add_(0, y, g)

    def _class_saliency_pass(self, model, buckets: list[_Bucket]) -> None:
        """mask_scope="class_from_start": one gradient pass over the clean samples, before round 1's
        noise steps, so that the class masks hold from round 1 on (no round spent on sample masks)."""
        for b in buckets:
            for idx in self._index_batches(b):
                self.progress.check()
                x, d, y = self._batch(b, idx)
                z = torch.clamp(x + d, 0, 1).requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(self._logits(model, self._view(z)).float(), y), z)
                self._add_class_saliency(b, y, grad)

    def _class_mask(self, b: _Bucket, y: torch.Tensor, fg: torch.Tensor | None) -> torch.Tensor:
        """The top pixels of each sample's class saliency (round 1 or the pre-pass). Without a foreground
        restriction all samples of a class share one mask: computed once per class, not once per sample."""
        if fg is not None:
            return topk_mask(self.class_score[id(b)][y].unsqueeze(1), self.ratio, fg)
        key = (id(b), self._round)
        if key not in self._class_mask_cache:
            self._class_mask_cache = {key: topk_mask(self.class_score[id(b)].unsqueeze(1), self.ratio)}
        return self._class_mask_cache[key][y]

    def _perturb_batch(self, model, b: _Bucket, idx: np.ndarray) -> tuple[int, float]:
        """Run the PGD steps on one batch; returns (correct predictions, summed loss) on its perturbed samples.

        Early exit (``early_exit_loss``): a sample whose loss is already at most the floor before a step
        keeps its noise and mask for the rest of the round and leaves the batch. In eval mode each
        sample's gradient is its own, so the others step on exactly as they would have.
        """
        s = self.s
        x, d, y = self._batch(b, idx)
        m = None
        fg = None
        fresh = None
        if self.use_mask:
            m = self._to_device(np.asarray(b.mask[idx], dtype=bool)).unsqueeze(1)
            if b.fg is not None:
                fg = self._to_device(np.asarray(b.fg[idx], dtype=bool)).unsqueeze(1)
            fresh = self._to_device(~b.mask_set[idx])
        fixed_class_mask = self.class_masks and self._round >= self.first_class_mask_round
        eps, step_size = self._budget_of(b, idx)
        if fixed_class_mask:
            # one mask per class: the top pixels of the class's accumulated saliency (round 1 or the pre-pass)
            m = self._class_mask(b, y, fg)
            d = d * m
        floor = s.early_exit_loss
        act = None  # positions of the samples still stepping; None: all of them
        self.pgd_sample_steps_max += len(idx) * s.pgd_steps
        for step in range(s.pgd_steps):
            if act is None:
                xa, ya, da, ma, fga, fra = x, y, d, m, fg, fresh
                eps_a, step_a, idx_a = eps, step_size, idx
            else:
                xa, ya, da = x[act], y[act], d[act]
                ma, fga, fra = (None if t is None else t[act] for t in (m, fg, fresh))
                # per-sample budgets (series with different windows in one batch) follow the active subset
                eps_a = eps[act] if torch.is_tensor(eps) else eps
                step_a = step_size[act] if torch.is_tensor(step_size) else step_size
                idx_a = idx[act.cpu().numpy()]
            self.pgd_sample_steps += len(ya)
            da.requires_grad_(True)
            logits = self._logits(model, self._view(torch.clamp(xa + da, 0, 1))).float()
            if floor is None:
                loss = F.cross_entropy(logits, ya)
            else:
                per_sample = F.cross_entropy(logits, ya, reduction="none")
                loss = per_sample.sum()  # only the sign / ranking of the gradient is used: the scale is free
            done = None
            if floor is not None:
                done = per_sample.detach() <= floor
                if fra is not None:
                    done &= ~fra  # a sample's first step always runs: it chooses the sample's mask
                if bool(done.all()):
                    break  # every remaining sample is at the floor: no backward pass at all
                if not bool(done.any()):
                    done = None
            (grad,) = torch.autograd.grad(loss, da)
            da = da.detach()
            prev_d, prev_m = da, ma
            if self.class_masks and not fixed_class_mask:
                self._add_class_saliency(b, ya, grad)
            if fixed_class_mask:
                da = da - step_a * torch.sign(grad) * ma
            elif self.use_mask:
                recompute = self.mode == "step" or (self.mode == "round" and step == 0)
                if recompute or bool(fra.any()):
                    new_m = topk_mask(grad.abs(), self.ratio, fga)
                    if recompute:
                        ma = new_m
                    else:
                        ma = torch.where(fra.view(-1, *([1] * (ma.ndim - 1))), new_m, ma)
                    if s.init == "random" and bool(fra.any()):
                        gen = torch.Generator().manual_seed(int(s.seed) * 1_000_003 + int(idx[0]))
                        r = (torch.rand(da.shape, generator=gen) * 2 - 1).to(self.device) * eps_a
                        da = torch.where(fra.view(-1, *([1] * (da.ndim - 1))), r, da)
                    fra = torch.zeros_like(fra)
                    da = da * ma
                da = da - step_a * torch.sign(grad) * ma
            else:
                da = da - step_a * torch.sign(grad)
            da = _project(self._remove_local_mean(da, ma, b, idx_a), xa, eps_a)
            if done is not None:  # samples at the floor keep their noise and mask
                keep = done.view(-1, *([1] * (da.ndim - 1)))
                da = torch.where(keep, prev_d, da)
                if ma is not None:
                    ma = torch.where(keep, prev_m, ma)
            if act is None:
                d, m, fresh = da, ma, fra
            else:
                d[act] = da
                if m is not None:
                    m[act] = ma
                    fresh[act] = fra
            if done is not None:
                still = torch.nonzero(~done).squeeze(1)
                act = still if act is None else act[still]
                if act.numel() == 0:
                    break
        with torch.no_grad():  # the stop criterion in float32 whatever the precision of the steps
            logits = model(self._model_input(self._antialias(torch.clamp(x + d, 0, 1))))
            pred = logits.argmax(1)
            loss_sum = float(F.cross_entropy(logits.float(), y, reduction="sum"))
        b.delta[idx] = d.detach().squeeze(1).cpu().numpy().astype(np.float16)
        if self.use_mask:
            b.mask[idx] = m.squeeze(1).cpu().numpy().astype(np.uint8)
            b.mask_set[idx] = True
        return int((pred == y).sum()), loss_sum

    def run(self) -> ProtectResult:
        t0 = time.perf_counter()
        self._validate()
        self._read()
        self._set_budgets()
        self._read_total = self.done
        with _deterministic(self.device):
            if self.s.method == "random":
                self._random()
            elif self.s.method in PEER_METHODS + CANDIDATE_METHODS:
                self._peers()
            else:
                for dims in sorted({len(sh) for sh in self.buckets}):
                    self._min_min(dims, [b for sh, b in self.buckets.items() if len(sh) == dims])
        gen_seconds = time.perf_counter() - t0
        result = ProtectResult(self.series, self.s)
        result._eps = dict(self.eps_series)
        for b in self.buckets.values():
            for pos, (si, ki) in enumerate(b.items):
                result._where[(self.series[si].id, ki)] = (b, pos)
        for si, ser in enumerate(self.series):
            labels = [0] * len(ser.samples)
            for b in self.buckets.values():
                for pos, (sj, ki) in enumerate(b.items):
                    if sj == si:
                        labels[ki] = int(b.labels[pos])
            result._labels[ser.id] = labels
        result.summary = self._summary(result, gen_seconds)
        self.progress.update("protect", self.total, self.total, "done", round=self.rounds,
                             surrogate_accuracy=result.summary["surrogate_accuracy"])
        return result

    def _summary(self, result: ProtectResult, gen_seconds: float) -> dict:
        changed = 0
        numel = 0
        max_native = 0.0
        max_norm = 0.0
        for ser in self.series:
            for ki, smp in enumerate(ser.samples):
                orig = smp.read()
                prot = result._protected_from(ser, ki, orig)
                diff = np.abs(prot.astype(np.float64) - orig)
                changed += int(np.count_nonzero(diff))
                numel += diff.size
                if diff.size:
                    max_native = max(max_native, float(diff.max()))
                    max_norm = max(max_norm, float(diff.max()) / ser.intensity.width)
        eps_native = {ser.id: ser.intensity.delta_to_native(self.eps_series[ser.id]) for ser in self.series}
        accs = list(self.accuracy.values())
        return {
            "method": self.s.method,
            "epsilon": self.eps,
            "epsilon_native": max(eps_native.values()),
            "epsilon_native_per_series": eps_native,
            "epsilon_per_series": dict(self.eps_series),
            "epsilon_unit_per_series": {ser.id: ser.intensity.unit for ser in self.series},
            "window_per_series": {ser.id: [ser.intensity.low, ser.intensity.high, ser.intensity.name] for ser in self.series},
            "noise_sd_native_per_series": dict(self.noise_series),
            "mask_ratio": self.ratio,
            "recompute_mask": self.mode,
            "foreground": bool(self.s.foreground),
            "robust": self.robust,
            "rounds": self.rounds,
            "seconds": round(gen_seconds, 3),
            "device": str(self.device),
            "samples": sum(len(s.samples) for s in self.series),
            "series": len(self.series),
            "labels": self.s.labels,
            "fraction_pixels_changed": changed / max(1, numel),
            "max_abs_change_native": max_native,
            "max_abs_change_normalized": max_norm,
            "surrogate_accuracy": (min(accs) if accs else None),
            "surrogate_loss": (max(self.loss.values()) if self.loss else None),
            "stop_round": (max(self.stop_round.values()) if self.stop_round else None),
            "extra_rounds": int(self.s.extra_rounds),
            "stop_loss": self.s.stop_loss,
            "seed": self.s.seed,
            "precision": self.precision,
            "pgd_steps_run_fraction": (round(self.pgd_sample_steps / self.pgd_sample_steps_max, 4)
                                       if self.pgd_sample_steps_max else None),
        }


LOCAL_MEAN_SIGMA = 4.0


def _binomial_blur(t: torch.Tensor) -> torch.Tensor:
    """[1 4 6 4 1]/16 along every spatial axis (Gaussian SD 1 px), replicate borders."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=t.dtype, device=t.device) / 16.0
    dims = t.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = 5
        pad = [0] * (2 * dims)
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = 2
        t = conv(F.pad(t, pad, mode="replicate"), k.view(shape))
    return t


def _gaussian_smooth(t: torch.Tensor, sigma: float = LOCAL_MEAN_SIGMA) -> torch.Tensor:
    """Separable Gaussian smoothing of (N, 1, *spatial), zero outside the image."""
    radius = int(round(3 * sigma))
    g = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=t.dtype, device=t.device) / sigma) ** 2)
    g = g / g.sum()
    dims = t.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = g.numel()
        pad = [0] * dims
        pad[axis] = radius
        t = conv(t, g.view(shape), padding=tuple(pad))
    return t


def _local_mean_free(settings: ProtectSettings, series: Series) -> bool:
    value = getattr(settings, "local_mean_free", "auto")
    return series.intensity.unit == "HU" if value == "auto" else bool(value)


def series_noise_sd(series: Series, max_samples: int = 3) -> float | None:
    """The series' own noise level (native units): median over a few samples of the robust SD of
    the high-pass residual in homogeneous body tissue (salm_desktop.core.fidelity.noise)."""
    from salm_desktop.core.fidelity.noise import noise_sd

    n = len(series.samples)
    picks = sorted({int(round(v)) for v in np.linspace(0, n - 1, min(max_samples, n))}) if n else []
    values = []
    for i in picks:
        native = series.samples[i].read()
        sd = noise_sd(native, body_mask(native, series.intensity))
        if sd is not None:
            values.append(sd)
    return float(np.median(values)) if values else None


def series_epsilon(series: Series, settings: ProtectSettings, noise: float | None = None) -> float:
    """The budget of one series in its normalized scale (a fraction of its window width).

    ``settings.epsilon_native`` (e.g. 12 from "12HU") wins over ``settings.epsilon``; a native
    budget in a unit the series does not have is refused with a one-line reason. With
    ``settings.noise_cap`` the budget is at most that fraction of ``noise`` (the series' noise SD).
    """
    width = series.intensity.width
    eps = float(settings.epsilon)
    if settings.epsilon_native is not None:
        unit = settings.epsilon_unit or ""
        if unit and series.intensity.unit != unit:
            have = series.intensity.unit or "arbitrary units"
            raise ValueError(f"series {series.id} ({series.modality}): a budget of {settings.epsilon_native:g} {unit} "
                             f"cannot apply to data in {have}; give it as a fraction of the window, e.g. 8/255")
        eps = float(settings.epsilon_native) / width
    if settings.noise_cap is not None:
        if noise is None:
            raise ValueError(f"series {series.id}: its noise level cannot be estimated, so the noise cap "
                             f"{settings.noise_cap:g} x noise SD cannot be applied")
        eps = min(eps, float(settings.noise_cap) * noise / width)
    return eps


def protect_series(series: Sequence[Series], settings: ProtectSettings | None = None,
                   progress: Progress | None = None) -> ProtectResult:
    """Protect every sample of ``series``. Nothing is written; see :class:`ProtectResult`.

    Raises ``ValueError`` (one line naming the file or series) on bad input and
    :class:`salm_desktop.core.progress.Cancelled` when ``progress`` is cancelled (within one batch).
    """
    return _Job(series, settings or ProtectSettings(), progress).run()


# -- mask preview ---------------------------------------------------------------------------------
_PREVIEW_CACHE: dict[tuple, torch.nn.Module] = {}


def _preview_model(dims: int, spatial: tuple[int, ...], seed: int, device: torch.device) -> torch.nn.Module:
    key = (dims, downsample_factor(spatial), seed, str(device))
    model = _PREVIEW_CACHE.get(key)
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))
            model = build_surrogate("cifar_resnet", dims, 2, spatial).to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        _PREVIEW_CACHE[key] = model
    return model


def preview_mask(sample: Sample, intensity: IntensityMap, mask_ratio: float, *, foreground: bool = False,
                 seed: int = 0, device: str = "auto") -> np.ndarray:
    """The pixels SALM would perturb first in ``sample`` (bool array of ``sample.shape``).

    A seeded surrogate (cached per dimensionality, input scale, seed and device) normalizes with the
    sample's own batch statistics (BatchNorm in train mode, no state is changed); the mask is the
    top ``mask_ratio`` pixels by |gradient of the loss| w.r.t. the input, optionally inside the
    foreground. It approximates the engine's first mask (the engine's surrogate is trained first).
    """
    if not 0 < mask_ratio <= 1:
        raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
    dev = resolve_device(device)
    x_np = intensity.normalize(sample.read())
    if x_np.ndim not in (2, 3):
        raise ValueError(f"{sample.source.path}: only 2D images and 3D volumes, got shape {x_np.shape}")
    fg_np = body_mask(sample.read(), intensity) if foreground else None
    if mask_ratio >= 1.0:
        return fg_np if fg_np is not None else np.ones(x_np.shape, dtype=bool)
    model = _preview_model(x_np.ndim, x_np.shape, seed, dev)
    x = torch.from_numpy(np.clip(x_np, 0, 1))[None, None].to(dev).requires_grad_(True)
    bn_modes = [(m, m.training, m.track_running_stats) for m in model.modules()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    try:
        for m, _, _ in bn_modes:  # batch statistics without touching the running buffers
            m.train()
            m.track_running_stats = False
            m._saved = (m.running_mean, m.running_var)
            m.running_mean, m.running_var = None, None
        label = int(sample.label) if sample.label is not None and 0 <= int(sample.label) < 2 else 0
        loss = F.cross_entropy(model(x), torch.tensor([label], device=dev))
        (grad,) = torch.autograd.grad(loss, x)
    finally:
        for m, training, track in bn_modes:
            m.running_mean, m.running_var = m._saved
            del m._saved
            m.track_running_stats = track
            m.train(training)
    allowed = torch.from_numpy(fg_np)[None, None].to(dev) if fg_np is not None else None
    mask = topk_mask(grad.abs(), mask_ratio, allowed)
    return mask[0, 0].cpu().numpy().astype(bool)
