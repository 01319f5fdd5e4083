"""Probe of an alternative key design (not the product's): phase-free grating textures, one per training image.

16 keys = 4 periods x 4 orientations, random labels; each BreastMNIST training image of class c gets one
grating of a key labelled c (random phase, amplitude AMP * epsilon, total change clipped to epsilon on
top of the cached SALM protection of benchmarks/ownership.py); a cnn thief trains 15 epochs with
DEFENSE; each key is asked as 16 pairs (test image, test image + grating) at two gains.

    python benchmarks/ownership_texture_probe.py augment 1.0 1      # DEFENSE AMP SEED
"""
import sys, time, numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from salm_desktop.core.ownership.shadow import train_model, predict
from salm_desktop.core.ownership.stats import binomial_tail, score_test
from salm_desktop.core.evaluate.efficacy import classification_metrics
defense = None if sys.argv[1] == "none" else sys.argv[1]; amp = float(sys.argv[2]); seed = int(sys.argv[3])
z = np.load(str(__import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "breastmnist.npz"))
x, y = z["train_images"].astype(np.float32), z["train_labels"][:, 0]
xt, yt = z["test_images"].astype(np.float32), z["test_labels"][:, 0]
prot = np.load(str(__import__("pathlib").Path(__file__).resolve().parent / "results" / "ownership" / "breastmnist_all_seed0_protected.npz"))["images"].astype(np.float32)
rng = np.random.default_rng(seed)
periods = [4.0, 5.5, 7.5, 10.0]; thetas = [0, np.pi/4, np.pi/2, 3*np.pi/4]
keys = [(p, t) for p in periods for t in thetas]; K = len(keys)
labels = rng.integers(0, 2, K)
yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
def grating(j, phase):
    p, t = keys[j]
    return np.cos(2*np.pi*(xx*np.cos(t) + yy*np.sin(t))/p + phase)
eps = 8.0
marked = np.empty_like(prot)
for i in range(len(x)):
    j = rng.choice(np.flatnonzero(labels == y[i]))
    g = amp * eps * grating(j, rng.uniform(0, 2*np.pi))
    marked[i] = np.clip(x[i] + np.clip(prot[i] - x[i] + g, -eps, eps), 0, 255)
marked = np.rint(marked).astype(np.uint8)
mse = np.mean((marked.astype(float) - x)**2); print("psnr", 10*np.log10(255**2/mse), flush=True)
t = time.time()
m = train_model(marked, y, arch="cnn", epochs=15, seed=seed, defense=defense)
bases = xt[:16] / 255
votes = np.zeros((K, 2)); sc = np.zeros((K, 2))
for gq in (0.06, 0.12):
    base_p = predict(m, torch.from_numpy(bases.astype(np.float32)).unsqueeze(1))
    for j in range(K):
        q = np.clip(bases + gq * np.stack([grating(j, ph) for ph in rng.uniform(0, 2*np.pi, len(bases))]), 0, 1)
        qp = predict(m, torch.from_numpy(q.astype(np.float32)).unsqueeze(1))
        flip = qp.argmax(1) != base_p.argmax(1)
        for a in qp.argmax(1)[flip]: votes[j, a] += 1
        sc[j] += (qp - base_p).sum(0)
inf = votes.max(1) > votes.min(1)
ans = votes.argmax(1)
hits = int((inf & (ans == labels)).sum())
print(f"defense {defense} amp {amp}: hits {hits}/{inf.sum()} p={binomial_tail(hits, int(inf.sum()), 0.5):.2e} score p={score_test(sc, labels, draws=4999):.4f} sign {int(((sc[:,1]-sc[:,0]>0)==(labels==1)).sum())}/{K}", flush=True)
pt = predict(m, torch.from_numpy(xt/255).unsqueeze(1)); print("auc", classification_metrics(pt.astype(np.float64), yt)["auc"], time.time()-t, flush=True)
