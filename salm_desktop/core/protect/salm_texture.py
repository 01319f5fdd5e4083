"""SALM v2 candidate ``salm-tex``: a class-wise, crop- and flip-invariant texture inside the SALM mask.

Why: the first SALM default (sample-wise error-minimizing noise in a saliency mask, ``salm-v1``)
is tied to pixel positions; a thief's random crop shifts it and its flip mirrors it, so the
shortcut it offers is gone and the thief learns the anatomy (docs/robustness.md). A shortcut that
survives the thief's augmentation has to be the *same signal* after any shift and any horizontal
flip. A periodic pattern is: shifting it only changes its phase, mirroring it only changes its
phase, so its frequency (what a first-layer filter measures) stays. Each class gets one frequency
(rows alternating, columns alternating, checkerboard, period 4, ...); each image a random phase, so
the thief cannot use the absolute phase either (it has to learn the frequency, the easiest feature
there is for a convolution) and nothing but the frequency carries the class.

The pattern is saturated (+-epsilon, the L-inf budget) and kept only on the SALM mask: one mask per
class, the top ``mask_ratio`` pixels of the class's summed, per-sample-normalized |input gradient|
of a surrogate trained on clean data with crop + flip (the class-scope SALM mask of ``salm-tap`` /
``salm-ar``). Optional error-minimizing refinement (``refine_steps``) through random crop + flip
is available for measurement; the default does not use it (docs/benchmarks.md has the numbers).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: per class (rows frequency, columns frequency) in cycles per pixel; the first C are used
CLASS_FREQUENCIES: tuple[tuple[float, float], ...] = (
    (0.5, 0.0), (0.0, 0.5), (0.5, 0.5), (0.25, 0.0), (0.0, 0.25), (0.25, 0.25), (0.5, 0.25), (0.25, 0.5),
    (1 / 3, 0.0), (0.0, 1 / 3), (1 / 3, 1 / 3),
)


#: where the texture goes: the class's most salient pixels (SALM's rule) or its least salient ones
MASK_PLACEMENTS = ("salient", "least_salient")
#: whose saliency picks the pixels: the class's (the default), each image's own, or half of each (a probe)
MASK_SCOPES = ("class", "sample", "blend")
TARGETED_STEPS = 10  # PGD steps of the targeted part (salm-tex-tap); 10 keeps generation within EM's time
TARGETED_SHARE = 0.5  # salm-tex-tap: half the budget texture, half error-maximizing towards the other class


def class_frequencies(n_classes: int) -> list[tuple[float, float]]:
    if n_classes > len(CLASS_FREQUENCIES):
        raise ValueError(f"salm-tex has textures for at most {len(CLASS_FREQUENCIES)} classes, got {n_classes}")
    return list(CLASS_FREQUENCIES[:n_classes])


def _wave(n: int, f: float, phase: np.ndarray) -> np.ndarray:
    """cos(2 pi f k + phase) for k = 0..n-1, per row of ``phase`` (len m) -> m x n; constant 1 for f = 0."""
    if f == 0:
        return np.ones((len(phase), n))
    return np.cos(2 * math.pi * f * np.arange(n)[None, :] + phase[:, None])


def class_textures(shape: tuple[int, int, int], y: np.ndarray, rng: np.random.Generator,
                   frequencies=None) -> np.ndarray:
    """+-1 texture per image (N x H x W): its class's frequency, a random phase per image and axis.

    Phases are drawn from the multiples of pi/4 shifted by pi/8, so that no cosine sample is 0
    (the sign is always defined) and every phase a shift or mirror can produce is drawn equally often.
    """
    n, h, w = shape
    out = np.empty(shape, dtype=np.float32)
    freqs = class_frequencies(int(y.max()) + 1 if len(y) else 1) if frequencies is None else [tuple(f) for f in frequencies]
    for c, (fy, fx) in enumerate(freqs):
        members = np.flatnonzero(y == c)
        if members.size == 0:
            continue
        py = math.pi / 8 + math.pi / 4 * rng.integers(0, 8, members.size)
        px = math.pi / 8 + math.pi / 4 * rng.integers(0, 8, members.size)
        rows, cols = _wave(h, fy, py), _wave(w, fx, px)
        out[members] = np.sign(rows[:, :, None] * cols[:, None, :])
    return out


def unlabelled_textures(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """N x H x W textures of the class table, one drawn per image independently of any label (random phases): the
    texture augmentation of a hospital model that should ignore the protection (core/evaluate/utility.py)."""
    which = rng.integers(0, len(CLASS_FREQUENCIES), n)
    return class_textures((n, h, w), which, rng, CLASS_FREQUENCIES)


def texture_mask_scope(settings_scope: str) -> str:
    """The texture's mask scope for a ``ProtectSettings.mask_scope`` (module docstring of settings.py)."""
    return "sample" if settings_scope == "sample" else "class"


def _unit_sum(maps: torch.Tensor) -> torch.Tensor:
    """Each N x H x W map divided by its sum (so that two saliencies can be averaged on one scale)."""
    return maps / maps.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1)


def texture_shortcut(x: np.ndarray, y: np.ndarray, settings, progress=None, device: torch.device | str = "cpu",
                     refine_steps: int = 0, mask_scope: str | None = None, tap_share: float = 0.0,
                     frequencies=None, on_epoch=None, tap_ratio: float = 0.0,
                     mask_placement: str = "salient", typicality_slope: float = 0.0) -> np.ndarray:
    """The ``salm-tex`` noise for images ``x`` (N x H x W in [0, 1]) with labels ``y``: inside [-eps, eps],
    at most ``mask_ratio`` of each image's pixels non-zero, ``x + noise`` in [0, 1].

    ``mask_scope`` None takes it from the settings: ``"sample"`` there is each image's own saliency,
    ``"class"`` and ``"class_from_start"`` the class's (the texture's class mask comes from the clean
    surrogate, before any noise, so "from the start" is what it always is)."""
    from .masks import topk_mask
    from .peers import _class_saliency, _fit_window, clean_surrogate_setup

    if mask_placement not in MASK_PLACEMENTS:
        raise ValueError(f"unknown mask placement {mask_placement!r}; choose one of {', '.join(MASK_PLACEMENTS)}")
    if mask_scope is None:
        mask_scope = texture_mask_scope(settings.mask_scope)
    if mask_scope not in MASK_SCOPES:
        raise ValueError(f"unknown mask scope {mask_scope!r}; choose one of {', '.join(MASK_SCOPES)}")
    eps = float(settings.epsilon)
    rng = np.random.default_rng(int(settings.seed) + 17)
    tex = class_textures(x.shape, y, rng, frequencies)  # frequencies: per-class override, for probes
    device, C, xt, yt, model = clean_surrogate_setup(x, y, settings, progress, device, on_epoch)
    bs = max(2, settings.batch_size)
    if mask_scope == "class":
        score = _class_saliency(model, xt, yt, C, bs)[yt]
    else:  # each image's own saliency
        parts = []
        for start in range(0, len(xt), bs):
            z = xt[start:start + bs].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(z), yt[start:start + bs]), z)
            parts.append(g.abs().squeeze(1))
        score = torch.cat(parts)
        if mask_scope == "blend":  # probe: half the class's saliency, half the image's own, each summing to 1
            score = 0.5 * _unit_sum(score) + 0.5 * _unit_sum(_class_saliency(model, xt, yt, C, bs)[yt])
    if mask_placement == "least_salient":  # where a clean model looks least: its answers move least (issue 13)
        score = -score
    ratio = settings.mask_ratio_for(texture=True)
    if typicality_slope:  # probe: more texture on the images the clean surrogate finds typical of their class
        mask = _typicality_mask(model, xt, yt, score, ratio, typicality_slope, bs)
    else:
        mask = topk_mask(score.unsqueeze(1), ratio, None).squeeze(1).cpu().numpy()
    delta = tex * eps * (1.0 - tap_share) * mask
    if tap_share > 0:  # error-maximizing towards the other class on the clean surrogate, the rest of the budget
        delta = _targeted_part(model, xt, yt, delta, mask, eps, tap_share, settings, C)
    if tap_ratio > 0:  # probe: targeted error-maximizing at full budget on the next tap_ratio of pixels by saliency
        wider = topk_mask(score.unsqueeze(1), ratio + tap_ratio, None).squeeze(1).cpu().numpy()
        delta = _targeted_part(model, xt, yt, delta, wider & ~mask, eps, 1.0, settings, C)
    if refine_steps:
        delta = _refine_em(x, y, delta, mask, settings, refine_steps, device, progress)
    if progress is not None:
        progress.log(f"salm-tex: class textures {class_frequencies(C)}, mask {ratio:.2f} ({mask_scope})")
    return _fit_window(delta.astype(np.float32), x)


def _typicality_mask(model, xt, yt, score, ratio: float, slope: float, bs: int) -> np.ndarray:
    """Probe (issue 12): each image's mask share ``ratio * (1 + slope * (2 r - 1))``, r its within-class rank
    (0 = least typical) by the clean surrogate's logit margin; the mean share stays ``ratio``. Why: a thief's
    training ends near the max-margin solution, which uses the anatomy wherever it adds margin to the images
    the texture fits least; if those are the images whose anatomy looks like the other class, it adds none."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(xt[i:i + bs]).float() for i in range(0, len(xt), bs)])
    own = logits.gather(1, yt.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, yt.view(-1, 1), float("-inf")).max(1).values
    margin = (own - other).cpu().numpy()
    y = yt.cpu().numpy()
    rank = np.zeros(len(y))
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rank[members] = np.argsort(np.argsort(margin[members])) / max(1, members.size - 1)
    shares = np.clip(ratio * (1 + slope * (2 * rank - 1)), 0.0, 1.0)
    flat = score.flatten(1).cpu().numpy()
    order = np.argsort(-flat, axis=1, kind="stable")
    k = np.rint(shares * flat.shape[1]).astype(int)
    mask = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(mask, order, np.arange(flat.shape[1])[None, :] < k[:, None], axis=1)
    return mask.reshape(score.shape)


def _targeted_part(model, xt, yt, delta, mask, eps, share, settings, C) -> np.ndarray:
    """``delta`` plus PGD towards ``(y + 1) mod C`` inside ``mask``, at most ``share * eps``, through crop + flip."""
    from .peers import _crop_flip

    base = torch.from_numpy(delta.astype(np.float32)).unsqueeze(1).to(xt.device)
    m = torch.from_numpy(mask.astype(np.float32)).unsqueeze(1).to(xt.device)
    target = (yt + 1) % C
    steps = TARGETED_STEPS
    bound, step = share * eps, 2.5 * share * eps / steps
    gen = torch.Generator().manual_seed(int(settings.seed) + 29)
    bs = max(2, settings.batch_size)
    out = base.clone()
    for start in range(0, len(xt), bs):
        sl = slice(start, start + bs)
        a = torch.zeros_like(xt[sl])
        for _ in range(steps):
            a.requires_grad_(True)
            view = _crop_flip(torch.clamp(xt[sl] + base[sl] + a, 0, 1).cpu(), gen).to(xt.device)
            (g,) = torch.autograd.grad(F.cross_entropy(model(view), target[sl]), a)
            a = torch.clamp(a.detach() - step * torch.sign(g) * m[sl], -bound, bound)
        out[sl] = base[sl] + a
    return out.squeeze(1).cpu().numpy()


def _refine_em(x, y, delta, mask, settings, steps: int, device, progress) -> np.ndarray:
    """Error-minimizing sign steps on ``delta`` inside ``mask`` against a surrogate trained on the
    perturbed data, every step through a fresh random crop + flip (min-min over the augmentation)."""
    from .peers import _crop_flip, _n_classes, _surrogate

    eps, step = float(settings.epsilon), settings.effective_step
    C = _n_classes(y)
    xt = torch.from_numpy(x).unsqueeze(1)
    yt = torch.from_numpy(y.astype(np.int64))
    d = torch.from_numpy(delta.astype(np.float32)).unsqueeze(1)
    m = torch.from_numpy(mask.astype(np.float32)).unsqueeze(1)
    model = _surrogate(settings, C, x.shape[1:], torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(int(settings.seed) + 23)
    bs = max(2, settings.batch_size)
    for _ in range(max(1, settings.max_rounds // 2)):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for s in range(max(1, len(xt) // bs)):
            idx = perm[s * bs:(s + 1) * bs]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(_crop_flip(torch.clamp(xt[idx] + d[idx], 0, 1), gen)), yt[idx]).backward()
            opt.step()
        model.eval()
        for start in range(0, len(xt), bs):
            if progress is not None:
                progress.check()
            sl = slice(start, start + bs)
            db = d[sl].clone()
            for _ in range(steps):
                db.requires_grad_(True)
                view = _crop_flip(torch.clamp(xt[sl] + db, 0, 1), gen)
                (g,) = torch.autograd.grad(F.cross_entropy(model(view), yt[sl]), db)
                db = torch.clamp(db.detach() - step * torch.sign(g) * m[sl], -eps, eps)
            d[sl] = db.detach()
    return d.squeeze(1).numpy()
