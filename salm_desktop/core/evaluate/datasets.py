"""Read labelled splits for the efficacy check: MedMNIST-style npz files or PNG folder trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"}


def load_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of ``split`` from an npz (``{split}_images`` / ``{split}_labels``) or a
    folder tree ``path/split/<class>/<image>`` (class folders sorted; integer names keep their value).

    Raises ValueError with one line naming the file and the reason.
    """
    path = Path(path)
    if path.is_file():
        try:
            with np.load(path) as z:
                if f"{split}_images" not in z or f"{split}_labels" not in z:
                    raise ValueError(f"{path}: no '{split}_images'/'{split}_labels' arrays (has {', '.join(sorted(z.files))})")
                images, labels = z[f"{split}_images"], z[f"{split}_labels"]
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"{path}: not a readable npz file ({exc.__class__.__name__})") from exc
        labels = np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(np.int64)
        if len(images) != len(labels):
            raise ValueError(f"{path}: {split} has {len(images)} images but {len(labels)} labels")
        return np.asarray(images), labels
    if path.is_dir():
        root = path / split
        if not root.is_dir():
            raise ValueError(f"{path}: no '{split}' folder")
        classes = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
        if not classes:
            raise ValueError(f"{root}: no class folders")
        from PIL import Image

        images, labels = [], []
        for ci, cdir in enumerate(classes):
            value = int(cdir.name) if cdir.name.isdigit() else ci
            for f in sorted(cdir.rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    try:
                        with Image.open(f) as im:
                            arr = np.asarray(im)
                    except Exception as exc:
                        raise ValueError(f"{f}: not a readable image ({exc.__class__.__name__})") from exc
                    if arr.ndim == 3:
                        raise ValueError(f"{f}: colour images are not supported by the efficacy check")
                    images.append(arr)
                    labels.append(value)
        if not images:
            raise ValueError(f"{root}: no images")
        if len({a.shape for a in images}) > 1:
            raise ValueError(f"{root}: images of different sizes; the efficacy check needs one size")
        return np.stack(images), np.asarray(labels, dtype=np.int64)
    raise ValueError(f"{path}: no such file or folder")
