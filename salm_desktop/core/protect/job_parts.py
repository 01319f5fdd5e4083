"""Parts of the protection job (``engine._Job``) that do not train anything: reading the samples
into their stores, the per-series budgets and the noise's shape, and the generators that need no
surrogate (random noise, the published peers). Mixins, so the job keeps one ``self``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from salm_desktop.core.model import short_hash

from .budget import _binomial_blur, _binomial_blur_banded, _gaussian_smooth, _gaussian_smooth_banded, _local_mean_free, _project, series_epsilon, series_noise_sd
from .clusters import intensity_features, kmeans
from .masks import body_mask
from .peers import generate_peer
from .preview import uses_class_texture
from .store import ArrayStore


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


def _sample_seed(seed: int, series_id: str, key: str) -> int:
    return int(short_hash(seed, series_id, key, length=8), 16)


class _JobBudgets:
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

    def _remove_local_mean(self, d: torch.Tensor, m: torch.Tensor | None, b: _Bucket, idx: np.ndarray,
                           weight_sum: torch.Tensor | None = None) -> torch.Tensor:
        """Subtract the noise's mean over a Gaussian neighbourhood (SD LOCAL_MEAN_SIGMA pixels) (of the pixels it may change), so
        that a region's mean value (HU of a lesion, of the liver) stays where it was; the noise keeps
        its fine structure. Only for the samples whose series asks for it. ``weight_sum``: the smoothed
        mask, where the caller has it already (a class mask is the same for every step of a round)."""
        flags = b.mean_free[idx]
        if not flags.any():
            return d
        w = torch.ones_like(d) if m is None else m.to(d.dtype)
        if weight_sum is None:
            weight_sum = self._smooth(w).clamp_min(1e-6)
        out = (d - self._smooth(d * w) / weight_sum) * w
        sel = torch.from_numpy(flags).to(d.device).view(-1, *([1] * (d.ndim - 1)))
        return torch.where(sel, out, d)

    def _smooth(self, t: torch.Tensor) -> torch.Tensor:
        # a Gaussian (not a box) neighbourhood: a box mean leaves ringing, i.e. a periodic pattern;
        # fp32 (the reference path) keeps the convolution and its bytes, the fast paths the band product
        return _gaussian_smooth(t) if getattr(self, "precision", "fp32") == "fp32" else _gaussian_smooth_banded(t)

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
        if getattr(self, "_stride", 1) <= 1:
            return z
        # fp32 keeps the convolution (bit-identical to f0e4736); the faster paths the sparse band products
        return _binomial_blur(z) if getattr(self, "precision", "fp32") == "fp32" else _binomial_blur_banded(z)


class _JobInputs:
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

    # -- SALM on 2D 8-bit images: the class texture (salm_texture.py) ------------------------------
    def _texture_buckets(self) -> list[_Bucket]:
        """The buckets ``salm`` protects with the class texture: 2D samples of 8-bit display images
        (the MedMNIST-like data its efficacy was measured on). CT, MR, other windows and 3D keep min-min,
        whose clinical-fidelity targets (no periodic pattern, noise-relative budget) were measured there."""
        from .salm_texture import CLASS_FREQUENCIES

        chosen = [b for b in self.buckets.values()
                  if all(uses_class_texture(self.s.method, self.series[si].intensity, len(b.shape)) for si, _ in b.items)]
        if any(int(b.labels.max(initial=0)) >= len(CLASS_FREQUENCIES) for b in chosen):
            self.progress.log(f"more than {len(CLASS_FREQUENCIES)} classes: the class texture has no frequency for "
                              "each, so these 2D images are protected with min-min instead")
            return []
        return chosen

    def _texture(self, buckets: list[_Bucket]) -> None:
        from .peers import TAP_EPOCHS
        from .salm_texture import texture_shortcut

        settings = dataclasses.replace(self.s, mask_ratio=self.s.mask_ratio_for(texture=True))
        for bucket in buckets:
            share = bucket.n * self.s.max_rounds  # this bucket's part of the job's progress total
            start = self.done

            def on_epoch(epoch: int, share=share, start=start) -> None:
                self.done = start + share * epoch // (TAP_EPOCHS + 1)
                self.progress.update("protect", self.done, self.total, f"class texture: surrogate epoch {epoch}/{TAP_EPOCHS}",
                                     epoch=epoch, epochs=TAP_EPOCHS)

            eps = float(np.min(bucket.eps)) if bucket.eps is not None else float(self.eps)  # never above a sample's own budget
            delta = texture_shortcut(np.asarray(bucket.clean[:], dtype=np.float32), bucket.labels,
                                     dataclasses.replace(settings, epsilon=eps), self.progress, self.device,
                                     on_epoch=on_epoch)
            if bucket.fg is not None:  # "foreground only" asked for: no texture outside the body
                delta = delta * np.asarray(bucket.fg[:], dtype=np.float32)
            bucket.delta[:] = delta.astype(np.float16)
            self.done = start + share
            self.progress.update("protect", self.done, self.total, "class texture")
            self.ratio_series.update({self.series[si].id: settings.mask_ratio for si, _ in bucket.items})  # for the summary

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
