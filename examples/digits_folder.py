"""Write scikit-learn's digits as PNG files, one subfolder per class: an image folder to try descent's folder route on.

Run it as: python examples/digits_folder.py digits_png  (digits_png/0/0000.png ... digits_png/9/1796.png)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_digits(folder: str | Path) -> int:
    """Every digit as an 8 x 8 grayscale PNG (pixels 0-16 scaled to 0-255) in folder/<digit>/; returns the count."""
    digits = load_digits()
    root = Path(folder)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8)).save(root / str(label) / f"{i:04d}.png")
    return len(digits.target)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "digits_png"
    print(f"wrote {write_digits(target)} images to {target}/<digit>/")
