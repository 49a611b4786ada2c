"""A small synthetic person-segmentation data set in the Kaggle TikTok layout.

Stick-figure people (head, torso, limbs with a random pose, size and clothing)
over varied backgrounds, exact 0/255 masks, ids ``<video>_<frame>`` so that
grouping by video is exercised.  It lets the pipeline run end to end with no
real photos; the same seed always gives the same files.

    python -m tfx_pipeline.synthetic OUT --count 120 --size 160x128
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FRAMES_PER_VIDEO = (4, 10)


def generate(
    out_dir: str | Path, count: int, seed: int = 0, size: tuple[int, int] = (160, 128)
) -> list[str]:
    """Write ``count`` pairs under out_dir (images/, masks/, df.csv); returns the ids."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, ids = [], []
    video = 0
    while len(ids) < count:
        frames = min(int(rng.integers(*FRAMES_PER_VIDEO, endpoint=True)), count - len(ids))
        extension = "jpg" if rng.random() < 0.7 else "png"
        background = _background(rng, size)
        person = _Person(rng, size)
        for frame in range(frames):
            pair_id = f"vid{video:03d}_{frame:04d}"
            image, mask = _render(rng, background, person, frame, size)
            image_name, mask_name = f"images/{pair_id}.{extension}", f"masks/{pair_id}.png"
            image.save(out / image_name, **({"quality": 90} if extension == "jpg" else {}))
            mask.save(out / mask_name)
            rows.append((image_name, mask_name))
            ids.append(pair_id)
        video += 1
    with open(out / "df.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["images", "masks"])
        writer.writerows(rows)
    return ids


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """One of: gradient, smooth noise, stripes, random shapes (float RGB in [0, 255])."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.integers(4)
    if kind == 0:
        angle = rng.uniform(0, 2 * math.pi)
        t = x * math.cos(angle) + y * math.sin(angle)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    elif kind == 1:
        coarse = rng.uniform(0, 1, (max(2, height // 16), max(2, width // 16)))
        t = np.asarray(
            Image.fromarray((coarse * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC),
            np.float32,
        )
        t = t / 255.0
    elif kind == 2:
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 24)
        t = 0.5 + 0.5 * np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
    else:
        canvas = Image.new("L", size, 0)
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
            box = [x0, y0, x0 + rng.uniform(0.1, 0.5) * width, y0 + rng.uniform(0.1, 0.5) * height]
            shade = int(rng.integers(0, 256))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=shade)
        t = np.asarray(canvas, np.float32) / 255.0
    return c1 + (c2 - c1) * t[..., None]


class _Person:
    """Body proportions, colours and a base pose; frames wiggle the limbs like a dance."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int]) -> None:
        width, height = size
        self.height = rng.uniform(0.55, 0.95) * height
        self.cx = rng.uniform(0.3, 0.7) * width
        self.feet_y = rng.uniform(0.85, 1.05) * height
        self.thickness = rng.uniform(0.06, 0.1) * self.height
        self.skin = rng.uniform([90, 50, 30], [255, 210, 180])
        self.shirt = rng.uniform(0, 255, 3)
        self.trousers = rng.uniform(0, 255, 3)
        self.arms = rng.uniform(-2.6, 2.6, 2)  # angle from hanging down, radians
        self.legs = rng.uniform(0.05, 0.5, 2)
        self.phase = rng.uniform(0, 2 * math.pi)

    def draw(self, image: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, frame: int) -> None:
        h, cx = self.height, self.cx + 0.03 * self.height * math.sin(self.phase + frame)
        wiggle = 0.4 * math.sin(self.phase + 0.9 * frame)
        hip_y, shoulder_y = self.feet_y - 0.48 * h, self.feet_y - 0.8 * h
        head_r = 0.075 * h
        head_y = shoulder_y - 1.3 * head_r
        half = 0.11 * h
        torso = [
            (cx - half, shoulder_y),
            (cx + half, shoulder_y),
            (cx + 0.8 * half, hip_y),
            (cx - 0.8 * half, hip_y),
        ]
        width = max(2, int(self.thickness))
        for side, (arm, leg) in zip((-1, 1), zip(self.arms, self.legs, strict=True), strict=True):
            shoulder = (cx + side * half, shoulder_y + width / 2)
            hand = _limb(shoulder, 0.38 * h, side * (arm + wiggle))
            elbow = ((shoulder[0] + hand[0]) / 2 + side * 0.04 * h, (shoulder[1] + hand[1]) / 2)
            hip = (cx + side * 0.5 * half, hip_y)
            foot = _limb(hip, 0.48 * h, side * (leg + 0.3 * wiggle))
            for parts, colour in (
                ([shoulder, elbow, hand], self.shirt),
                ([hip, foot], self.trousers),
            ):
                for target, fill in ((image, _rgb(colour)), (mask, 255)):
                    target.line(parts, fill=fill, width=width, joint="curve")
            for target, fill in ((image, _rgb(self.skin)), (mask, 255)):
                target.ellipse(_circle(hand, width * 0.7), fill=fill)
        for target, fill in ((image, _rgb(self.shirt)), (mask, 255)):
            target.polygon(torso, fill=fill)
        for target, fill in ((image, _rgb(self.skin)), (mask, 255)):
            target.ellipse(
                [cx - 0.8 * head_r, head_y - head_r, cx + 0.8 * head_r, head_y + head_r], fill=fill
            )


def _limb(start: tuple[float, float], length: float, angle: float) -> tuple[float, float]:
    return start[0] + length * math.sin(angle), start[1] + length * math.cos(angle)


def _circle(centre: tuple[float, float], radius: float) -> list[float]:
    return [centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius]


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in np.clip(colour, 0, 255))
    return r, g, b


def _render(
    rng: np.random.Generator,
    background: np.ndarray,
    person: _Person,
    frame: int,
    size: tuple[int, int],
) -> tuple[Image.Image, Image.Image]:
    """Person over background, with texture on the clothes and sensor-like noise."""
    layer, mask = Image.new("RGB", size), Image.new("L", size, 0)
    person.draw(ImageDraw.Draw(layer), ImageDraw.Draw(mask), frame)
    foreground = np.asarray(mask) > 127
    texture = 1.0 + rng.normal(0, 0.08, (size[1], size[0], 1))
    pixels = np.where(foreground[..., None], np.asarray(layer, np.float32) * texture, background)
    pixels = pixels + rng.normal(0, 4.0, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image, mask


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="160x128", help="WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    ids = generate(args.out_dir, args.count, seed=args.seed, size=(width, height))
    print(f"wrote {len(ids)} pairs to {args.out_dir}")


if __name__ == "__main__":
    main()
