"""Cost of the default ``protect --evaluate`` check (one cnn-sgd-aug thief, 5 epochs) on BreastMNIST.

Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/release_evaluate_cost.py [TORCH_THREADS]

The cost does not depend on the pixel values, so the clean training split stands in for the
protected one here; the verdict printed is therefore the clean data's (expected: not protected).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from salm_desktop.core.evaluate.release_check import ReleaseEvaluation  # noqa: E402

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
data = REPO.parent / "shared" / "data" / "medmnist"
check = ReleaseEvaluation(data / "breastmnist.npz")
wall, cpu = time.time(), time.process_time()
result = check(data)
print(f"wall {time.time() - wall:.1f} s, cpu {time.process_time() - cpu:.1f} s, torch threads {torch.get_num_threads()}, "
      f"{result['train_samples']} training images, verdict {result['verdict']['verdict']}")
