"""Images/second of the input pipeline alone, against a plain loop over the same data.

    python benchmarks/pipeline.py [--dir DIR] [--images 800] [--rounds 3] [--json out.json]

1. An image folder of real-sized JPEGs (500x375 like the Kaggle cat-and-dog photos, upscaled and
   tinted Fashion-MNIST from Debian's dataset-fashion-mnist, written to --dir or a temp folder) read
   by `ImageFolderSource` at 224 px through `Loader` (train, recipe `flip`) with 0, 1 and 2 workers,
   beside a plain PIL loop: open, convert RGB, resize to 224x224, flip, to numpy.
2. CIFAR-format arrays (32x32x3 uint8 in memory) through `Loader` (recipe `cifar`: pad-crop +
   flip) and through the device-resident `DeviceLoader` (the same batches, made by one jitted
   call per batch on the default device; timed to the last batch's completion), beside a plain
   numpy loop doing the same crop, flip, and stack. The host cost of the device path
   (drawing the epoch plan: order, crop windows, flips) is printed apart, per 50k examples.

The Loader figures exclude worker start-up (reported apart) and the batches its buffers filled
ahead; each round runs every contender once, interleaved, and the table shows medians and the
ratio to the plain loop (GUIDE §4: these machines are shared and noisy). Under each table: the
bytes of one Loader batch as it crosses to the device (uint8 images, normalized inside the step)
against the same batch with float32 images normalized on the host, as the Loader sent them before.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from jaxcnn.data.arrays import ArraySource  # noqa: E402
from jaxcnn.data.device import DeviceLoader  # noqa: E402
from jaxcnn.data.folder import ImageFolderSource  # noqa: E402
from jaxcnn.data.pipeline import Loader  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
FASHION_LABELS = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"
PHOTO_SIZE = (500, 375)  # (width, height) of a typical Kaggle cat-and-dog photo
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def fashion_mnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` Fashion-MNIST training images (n, 28, 28) and labels, read with gzip + numpy."""
    if not os.path.exists(FASHION_MNIST):
        sys.exit(f"{FASHION_MNIST} not found: apt-get install dataset-fashion-mnist")
    with gzip.open(FASHION_MNIST) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    with gzip.open(FASHION_LABELS) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n].astype(np.int32)
    return images, labels


def tint(gray: np.ndarray, label: int) -> np.ndarray:
    """A colour image from a gray one (a per-class tint), so JPEGs carry real chroma."""
    weights = np.array([0.6 + 0.04 * label, 0.9, 1.0 - 0.05 * label], np.float32)
    return np.clip(gray[..., None].astype(np.float32) * weights, 0, 255).astype(np.uint8)


def write_photos(root: pathlib.Path, n: int) -> None:
    """`n` 500x375 JPEGs (quality 90) in `root/<class>/` image-folder layout."""
    images, labels = fashion_mnist(n)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        photo = Image.fromarray(tint(image, label)).resize(PHOTO_SIZE, Image.BICUBIC)
        photo.save(folder / f"{i:05d}.jpg", quality=90)


def cifar_arrays(n: int) -> ArraySource:
    """`n` CIFAR-format images: Fashion-MNIST padded to 32x32 and tinted, uint8 (n, 32, 32, 3)."""
    images, labels = fashion_mnist(n)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    rgb = np.stack([tint(im, lab) for im, lab in zip(padded, labels)])
    return ArraySource(rgb, labels, class_names=[str(c) for c in range(10)], mean=MEAN, std=STD, name="cifar-format")


def plain_pil_loop(paths: list[str], size: int, rng: np.random.Generator) -> int:
    """What a hand-written loader does per file: open, RGB, resize, maybe flip, to numpy."""
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size, size), Image.BILINEAR)
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            np.asarray(image)
    return len(paths)


def plain_numpy_cifar_loop(images: np.ndarray, batch_size: int, rng: np.random.Generator) -> int:
    """Pad-4 random crop + flip per image and stack (uint8, as the Loader), in plain numpy."""
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    order = rng.permutation(len(images))
    done = 0
    for start in range(0, len(order) - batch_size + 1, batch_size):
        crops = []
        for i in order[start : start + batch_size]:
            y, x = rng.integers(0, 9, 2)
            crop = padded[i, y : y + 32, x : x + 32]
            crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
        done += len(np.stack(crops))
    return done


def time_loader_epoch(loader: Loader, epoch: int) -> float:
    """Images/second over one epoch, after the batches the loader's buffers may hold ahead."""
    ahead = loader.prefetch + 1 + loader.workers * (loader.prefetch + 1)
    stamps = []
    for _ in loader.epoch(epoch):
        stamps.append(time.perf_counter())
    skip = min(ahead, len(stamps) - 2)
    return (len(stamps) - 1 - skip) * loader.batch_size / (stamps[-1] - stamps[skip])


def transfer_bytes(loader: Loader, batch: dict) -> dict:
    """Bytes of `batch`, one of `loader`'s, as it crosses to the device (uint8 images) and as it
    would with float32 images normalized on the host."""
    as_float32 = {**batch, "image": loader.normalize.apply(batch["image"])}
    uint8, float32 = (sum(array.nbytes for array in b.values()) for b in (batch, as_float32))
    return {"uint8": uint8, "float32": float32, "ratio": float32 / uint8}


def time_device_epoch(loader: DeviceLoader, epoch: int) -> float:
    """Images/second over one epoch of the device path, until its last batch is computed."""
    start = time.perf_counter()
    jax.block_until_ready(list(loader.epoch(epoch)))
    return len(loader) * loader.batch_size / (time.perf_counter() - start)


def plan_seconds_per_50k(loader: DeviceLoader, repeats: int = 5) -> float:
    """Host seconds to draw one epoch's plan, scaled to a 50,000-example epoch (CIFAR-10's)."""
    seconds = []
    for epoch in range(100, 100 + repeats):  # epochs never drawn before: no cached tables
        start = time.perf_counter()
        loader.epoch_plan(epoch)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) * 50_000 / loader.num_examples


def time_call(fn, *args) -> float:
    start = time.perf_counter()
    n = fn(*args)
    return n / (time.perf_counter() - start)


def run(args) -> dict:
    results: dict[str, dict] = {}

    def bench(title: str, contenders: dict, startup: dict, sent: dict) -> None:
        rates = {name: [] for name in contenders}
        for r in range(args.rounds):
            for name, fn in contenders.items():
                rates[name].append(fn(r + 1))
        base = statistics.median(rates["plain loop"])
        rows = {name: {"images_per_s": statistics.median(v), "ratio": statistics.median(v) / base,
                       "startup_s": startup.get(name)} for name, v in rates.items()}
        results[title] = {"contenders": rows, "bytes_per_batch": sent}

    # 1. JPEG folder at 224 px.
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(args.dir or tmp)
        if not any(root.glob("*/*.jpg")):
            start = time.perf_counter()
            write_photos(root, args.images)
            print(f"wrote {args.images} {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEGs to {root} "
                  f"in {time.perf_counter() - start:.1f} s", flush=True)
        source = ImageFolderSource(root, image_size=args.size, channels=3, stats=(MEAN, STD))
        paths = list(source.paths)
        loaders, startup = {}, {}
        for workers in args.workers:
            loader = Loader(source, batch_size=args.batch_size, train=True, image_size=args.size, mean=MEAN,
                            std=STD, augment="flip", seed=0, workers=workers)
            start = time.perf_counter()
            first = next(loader.epoch(0))  # starts the workers; epoch 0 is not timed
            startup[f"Loader workers={workers}"] = time.perf_counter() - start
            loaders[f"Loader workers={workers}"] = loader
        rng = np.random.default_rng(0)
        contenders = {"plain loop": lambda r: time_call(plain_pil_loop, paths, args.size, rng)}
        contenders.update({name: (lambda r, ld=ld: time_loader_epoch(ld, r)) for name, ld in loaders.items()})
        bench(f"JPEG {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} folder -> {args.size} px, recipe flip, "
              f"batch {args.batch_size}, {len(source)} images", contenders, startup, transfer_bytes(loader, first))
        for loader in loaders.values():
            loader.close()

    # 2. CIFAR-format arrays at 32 px.
    arrays = cifar_arrays(args.cifar_images)
    loaders, startup = {}, {}
    for workers in args.workers:
        loader = Loader(arrays, batch_size=128, train=True, image_size=32, mean=MEAN, std=STD,
                        augment="cifar", seed=0, workers=workers)
        start = time.perf_counter()
        first = next(loader.epoch(0))
        startup[f"Loader workers={workers}"] = time.perf_counter() - start
        loaders[f"Loader workers={workers}"] = loader
    device = DeviceLoader(arrays, batch_size=128, train=True, image_size=32, mean=MEAN, std=STD, augment="cifar",
                          seed=0, mesh=jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)))
    start = time.perf_counter()
    jax.block_until_ready(next(device.epoch(0)))  # puts the data set on the device and compiles
    startup["DeviceLoader"] = time.perf_counter() - start
    print(f"DeviceLoader: drawing an epoch plan takes {plan_seconds_per_50k(device) * 1e3:.1f} ms of host time "
          "per 50k examples", flush=True)
    rng = np.random.default_rng(0)
    contenders = {"plain loop": lambda r: time_call(plain_numpy_cifar_loop, arrays.images, 128, rng)}
    contenders.update({name: (lambda r, ld=ld: time_loader_epoch(ld, r)) for name, ld in loaders.items()})
    contenders["DeviceLoader"] = lambda r: time_device_epoch(device, r)
    bench(f"CIFAR-format arrays 32 px, recipe cifar, batch 128, {len(arrays)} images", contenders, startup,
          transfer_bytes(loader, first))
    for loader in loaders.values():
        loader.close()
    return results


def print_table(results: dict) -> None:
    for title, result in results.items():
        print(f"\n{title}")
        print(f"  {'contender':<20} {'images/s':>10} {'ratio':>7} {'start-up':>9}")
        for name, row in result["contenders"].items():
            startup = f"{row['startup_s']:.1f} s" if row["startup_s"] is not None else ""
            print(f"  {name:<20} {row['images_per_s']:>10.0f} {row['ratio']:>6.2f}x {startup:>9}")
        sent = result["bytes_per_batch"]
        print(f"  bytes per batch to the device: {sent['uint8']:,} (uint8 images) against {sent['float32']:,} "
              f"(float32, normalized on the host): {sent['ratio']:.2f}x less")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", help="folder for the JPEGs (reused when it already holds */*.jpg); default: temp")
    p.add_argument("--images", type=int, default=800, help="JPEGs to write")
    p.add_argument("--cifar-images", type=int, default=10000, help="CIFAR-format images in memory")
    p.add_argument("--size", type=int, default=224, help="output size for the JPEG folder")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for the JPEG folder")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to compare")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; rounds={args.rounds}", flush=True)
    results = run(args)
    print_table(results)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
