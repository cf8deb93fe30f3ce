"""Images as arrays: a folder with one subfolder per class (Keras' image_dataset_from_directory layout), or digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.errors import InputError

# The formats keras.utils.image_dataset_from_directory reads.
IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# data.color_mode -> (Pillow's mode, channels)
COLOR_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3), "rgba": ("RGBA", 4)}


def read_image_folder(
    folder: str, image_size: tuple[int, int] | None, color_mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Every image under folder/<class>/ as uint8 (images, height, width, channels), and its class name.

    Classes are the subfolder names, in sorted order; images are read in sorted path order, one at a
    time into one array. `image_size` is (height, width): every image resized to it (bilinear); None
    keeps each image's own size, which must then be the same for all.
    """
    root = Path(folder)
    if color_mode not in COLOR_MODES:
        raise InputError(f"unknown data.color_mode {color_mode!r}: use one of {', '.join(COLOR_MODES)}")
    files, labels = _image_files(root)
    mode, channels = COLOR_MODES[color_mode]
    images: np.ndarray | None = None
    first: Path | None = None
    for i, path in enumerate(files):
        image = _read(path, mode, image_size)
        if images is None:
            images, first = np.empty((len(files), *image.shape[:2], channels), np.uint8), path
        elif image.shape[:2] != images.shape[1:3]:
            raise InputError(
                f"images differ in size: {first} is {_size(images.shape[1:3])}, {path} is {_size(image.shape[:2])} "
                "(height x width): set data.image_size=[64,64] (or any size) to resize them all"
            )
        images[i] = image.reshape(images.shape[1:])
    return images, np.asarray(labels)


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 images of 8 x 8 x 1, pixel values 0-16 as scikit-learn gives them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype("float32")[..., np.newaxis], digits.target


def _image_files(root: Path) -> tuple[list[Path], list[str]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(
            f"image folder {root} has no class subfolders: put each class's images in its own subfolder "
            f"({root}/cat/1.png, {root}/dog/1.png)"
        )
    if len(classes) == 1:
        raise InputError(
            f"image folder {root} has one class folder ({classes[0].name}): classification needs at least two"
        )
    files: list[Path] = []
    labels: list[str] = []
    for folder in classes:
        found = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        for path in found:
            if path.suffix.lower() not in IMAGE_FORMATS:
                raise InputError(
                    f"{path} is not an image ({', '.join(IMAGE_FORMATS)}): move it out of the class folder"
                )
        if not found:
            raise InputError(f"class folder {folder} holds no images: add images to it or remove it")
        files += found
        labels += [folder.name] * len(found)
    return files, labels


def _read(path: Path, mode: str, image_size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if image_size is not None and image.size != (image_size[1], image_size[0]):
                image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)  # Pillow: (w, h)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {path} as an image: {reason}: replace or remove the file") from None


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}"
