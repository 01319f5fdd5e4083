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
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from salm_desktop.core.model import Series
from salm_desktop.core.progress import Progress

# Split out of this module (budget, preview, result, job_parts); the old names stay importable here.
from .budget import _project, _projection_bounds, series_epsilon, series_noise_sd  # noqa: F401
from .device import resolve_device, resolve_precision
from .class_masks import _JobClassMasks
from .job_parts import _Bucket, _JobBudgets, _JobInputs
from .masks import topk_mask
from .peers import CANDIDATE_METHODS, PEER_METHODS
from .preview import preview_mask  # noqa: F401
from .result import ProtectResult, job_summary
from .robust import random_transform, robust_mode
from .settings import ProtectSettings
from .surrogates import build_surrogate, downsample_factor, first_layer_in_fp32, fold_batch_norms


NORM_RECALIBRATION_BATCHES = 4  # per bucket and round: about 1/40 of a round's passes at batch 64


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


class _Job(_JobInputs, _JobBudgets, _JobClassMasks):
    def __init__(self, series: Sequence[Series], settings: ProtectSettings, progress: Progress | None) -> None:
        self.series = list(series)
        self.s = settings
        self.progress = progress or Progress()
        self.device = resolve_device(settings.device)
        self.eps = float(settings.epsilon)
        self.step = settings.effective_step
        self.ratio = settings.effective_mask_ratio
        self.use_mask = settings.method in ("salm", "salm-v1") and self.ratio < 1.0
        self.variant = ""  # salm / salm-v1: which variant ran (``_variant_name``)
        self.ratio_series: dict[str, float] = {}  # series id -> the mask ratio its variant used (class texture: its own)
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
        self._class_weight_sum: dict = {}  # the smoothed class masks of _class_mask_cache's entry
        self._fold_failed = False  # fp32_fast: the surrogate could not be traced (logged once)

    def _autocast(self):
        """bf16 autocast for the surrogate's passes ("bf16", "bf16_all"); a no-op for fp32 and fp32_fast."""
        if not self.precision.startswith("bf16"):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _model_input(self, z: torch.Tensor) -> torch.Tensor:
        """bf16 and fp32_fast: channels-last input for the channels-last model (oneDNN/cuDNN skip layout reorders)."""
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
            first_layer_in_fp32(model, self.device.type)
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
            if s.recalibrates_norms:
                self._recalibrate_norms(model, buckets)
            # (b) noise: projected sign-gradient descent, surrogate fixed in eval mode
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            fixed = self._fixed_surrogate(model)
            if self.class_masks and rnd == 1 == self.first_class_mask_round:
                self._class_saliency_pass(fixed, buckets)
            correct = 0
            loss_sum = 0.0
            for b in buckets:
                for idx in self._index_batches(b):
                    batch_correct, batch_loss = self._perturb_batch(fixed, b, idx)
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

    def _recalibrate_norms(self, model, buckets: list[_Bucket]) -> None:
        """Re-estimate every batch norm's running statistics as the plain average over a few batches of the
        perturbed data, seen as in training (``_view``), with the round's weights.

        Why: ten SGD steps per round at momentum 0.1 leave the running statistics behind the weights, and the
        PGD steps and the stop check run in eval mode on them. On a CT series of a few distinct slices the
        eval-mode loss then grew round after round (to 10-450) while the surrogate fit its training batches,
        and the stop criterion was never reached; with this it was in 3-4 rounds (docs/benchmarks.md, issue 20).
        Spread evenly over each bucket, at most NORM_RECALIBRATION_BATCHES batches each, no random draws."""
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        bs = self.s.batch_size
        batches = []
        for b in buckets:
            count = min(b.n, NORM_RECALIBRATION_BATCHES * bs)
            picks = np.unique(np.linspace(0, b.n - 1, count).round().astype(np.int64))
            batches += [(b, picks[i:i + bs]) for i in range(0, len(picks), bs) if len(picks[i:i + bs]) >= 2]
        if not norms or not batches:  # a batch norm cannot train on one sample: its statistics stay as they are
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative: every batch below counts the same
        model.train()
        with torch.no_grad():
            for b, idx in batches:
                self.progress.check()
                x, d, _ = self._batch(b, idx)
                self._logits(model, self._view(torch.clamp(x + d, 0, 1), training=True))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    def _fixed_surrogate(self, model):
        """What the round's fixed-surrogate passes run: ``model`` (fp32, the reference), or on the fast paths
        its copy with the batch norms folded into the convolutions (surrogates.fold_batch_norms; the same
        function, cheaper; bf16 keeps its first convolution in float32 there too)."""
        if self.precision == "fp32":
            return model
        folded = fold_batch_norms(model)
        if folded is None:
            if not self._fold_failed:
                self.progress.log(f"surrogate {self.s.surrogate!r} cannot be traced: its batch norms stay unfolded")
            self._fold_failed = True
            return model
        if self.precision == "bf16":
            first_layer_in_fp32(folded, self.device.type)
        return folded

    def _index_batches(self, b: _Bucket):
        """The bucket's sample indices in order, batch_size at a time."""
        for start in range(0, b.n, self.s.batch_size):
            yield np.arange(start, min(start + self.s.batch_size, b.n))

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
        lower, upper = _projection_bounds(x, eps)  # the projection of every step, as one clamp (exactly _project)
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
                eps_a, step_a, idx_a, lower_a, upper_a = eps, step_size, idx, lower, upper
            else:
                xa, ya, da = x[act], y[act], d[act]
                ma, fga, fra = (None if t is None else t[act] for t in (m, fg, fresh))
                # per-sample budgets (series with different windows in one batch) follow the active subset
                eps_a = eps[act] if torch.is_tensor(eps) else eps
                step_a = step_size[act] if torch.is_tensor(step_size) else step_size
                idx_a = idx[act.cpu().numpy()]
                lower_a, upper_a = lower[act], upper[act]
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
            shared = self._class_mask_weight_sum(b, ya) if fixed_class_mask and fga is None and b.mean_free[idx_a].any() else None
            da = self._remove_local_mean(da, ma, b, idx_a, shared).clamp(lower_a, upper_a)
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
                textured = self._texture_buckets()
                self._texture(textured)
                rest = [b for b in self.buckets.values() if all(b is not t for t in textured)]
                for dims in sorted({len(b.shape) for b in rest}):
                    self._min_min(dims, [b for b in rest if len(b.shape) == dims])
                self.variant = _variant_name(bool(textured), bool(rest))
        gen_seconds = time.perf_counter() - t0
        for ser in self.series:
            self.ratio_series.setdefault(ser.id, self.ratio)
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
        result.summary = summary = job_summary(self, gen_seconds)
        self.progress.update("protect", self.total, self.total, "done", round=self.rounds,
                             surrogate_accuracy=summary["surrogate_accuracy"])
        return result

def _variant_name(textured: bool, min_min: bool) -> str:
    """Which SALM variant ran, for the summary and the report (docs/algorithm.md, "Which variant runs")."""
    if textured and min_min:
        return "class texture (2D 8-bit images) + min-min (the others)"
    return "class texture" if textured else "min-min"


def protect_series(series: Sequence[Series], settings: ProtectSettings | None = None,
                   progress: Progress | None = None) -> ProtectResult:
    """Protect every sample of ``series``. Nothing is written; see :class:`ProtectResult`.

    Raises ``ValueError`` (one line naming the file or series) on bad input and
    :class:`salm_desktop.core.progress.Cancelled` when ``progress`` is cancelled (within one batch).
    """
    return _Job(series, settings or ProtectSettings(), progress).run()
