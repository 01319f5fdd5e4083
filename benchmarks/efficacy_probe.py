"""Quick probe of a salm-tex variant (issue 12): protect one dataset's training split with
``salm_texture.texture_shortcut(**VARIANT)`` and train the thieves named (SGD + cosine, crop + flip,
20 epochs) on it; prints PSNR / SSIM and, per thief, ranking power final / val-selected, the
few-clean refit and the per-epoch test AUC. Not cached; the grid (efficacy.py) is what counts.

    python benchmarks/efficacy_probe.py breastmnist '{"mask_ratio": 0.3}' cnn,resnet18 [SEED | PROTECT_SEED:THIEF_SEED]
    (thieves in the thief grammar: cnn = cnn-sgd-aug-20ep; cnn-sgd-aug-blur-20ep blurs every image)

VARIANT keys: mask_ratio, epsilon, pgd_steps, max_rounds, precision (ProtectSettings) and refine_steps,
smooth_share, smooth_k, texture (false: no texture; benchmarks/smooth_shortcut.py),
mask_scope ("class" | "sample"), mask_placement ("salient" | "least_salient"), tap_share, tap_ratio, typicality_slope, frequencies (per class [rows, columns] cycles per pixel) (texture_shortcut).
"""
import sys, time, json, numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))
from salm_desktop.core.protect import ProtectSettings
from salm_desktop.core.protect.salm_texture import texture_shortcut
from salm_desktop.core.evaluate.thieves import parse_thief, run_thief
from benchmarks.efficacy import image_quality, load_dataset
name = sys.argv[1]; variant = sys.argv[2]; archs = sys.argv[3].split(',')
seed, thief_seed = [int(v) for v in (sys.argv[4] if len(sys.argv) > 4 else '0').split(':') * 2][:2]  # "P" = "P:P"
kw = json.loads(variant)
skw = {k: kw.pop(k) for k in list(kw) if k in ('mask_ratio', 'epsilon', 'pgd_steps', 'max_rounds', 'precision')}
data = load_dataset(name)
x = data['train'][0].astype(np.float32) / 255; y = data['train'][1].astype(np.int64)
s = ProtectSettings(device='cpu', seed=seed, **skw)
smooth_share, smooth_k, texture = kw.pop('smooth_share', 0.0), kw.pop('smooth_k', 4), kw.pop('texture', True)
t0 = time.perf_counter()
d = texture_shortcut(x, y, s, **kw) if texture else np.zeros_like(x)
if smooth_share:  # probe: add the class-wise smooth pattern (benchmarks/smooth_shortcut.py)
    from benchmarks.smooth_shortcut import smooth_class_pattern
    d = np.clip(d + smooth_class_pattern(x, y, s.epsilon, smooth_share, smooth_k), -s.epsilon, s.epsilon)
    d = np.clip(x + d, 0, 1) - x
gen = time.perf_counter() - t0
prot = np.clip(np.rint((x + d) * 255), 0, 255).astype(np.uint8)
psnr, ssim = image_quality(data['train'][0], prot)
print(f'{variant} protect seed {seed} thief seed {thief_seed} gen {gen:.0f}s PSNR {psnr:.2f} SSIM {ssim:.4f} changed {np.mean(prot != data["train"][0]):.3f}', flush=True)
for a in archs:
    r = run_thief(prot, data['train'][1], data['val'], data['test'], parse_thief(a), thief_seed, clean_train_images=data['train'][0])
    print(f"  {a}: RP final {r['final']['rank_power']:.3f} val-sel {r['val_selected']['rank_power']:.3f} (ep {r['val_selected']['epoch']}) bal {r['final']['balanced_acc']:.3f} few-clean {r['few_clean_final']['rank_power']:.3f} {r['seconds']:.0f}s", flush=True)
    print('   hist auc', [h['auc'] for h in r['history']], flush=True)
