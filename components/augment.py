"""Training augmentation: the main lever with ~1300 photos of people.

The sets mostly show one large, centred person in front of a street; users
send portraits and selfies, group photos, small people in wide scenes, blurry
phone shots and odd aspect ratios.  Each transform here widens what the model sees in that
direction while keeping the mask exact.
"""

from __future__ import annotations

import tensorflow as tf

# Decoded size relative to the model input; random crops take 1/MARGIN..1 of it.
MARGIN = 1.25
# Crops may change the aspect ratio by up to this factor (people are squashed
# differently by landscape and portrait photos at one model input size).
_ASPECT_JITTER = 1.3
_ZOOM_IN_P = 0.2
_ZOOM_IN_SHARE = (0.4, 1.0)  # the window's height as a share of the person's
_ZOOM_IN_MIN = 0.35  # and of the photo's, at least
_ZOOM_OUT_P = 0.35
_ZOOM_OUT_MIN = 0.4  # the person may shrink to this share of the frame
_NEW_BACKGROUND_P = 0.35
_BLUR_P = 0.25
_GRAY_P = 0.05


def _coin(p: float) -> tf.Tensor:
    return tf.random.uniform([]) < p


def _random_backdrop(height: int, width: int) -> tf.Tensor:
    """Smooth random colours with grain: a backdrop the model has never seen."""
    coarse = tf.random.uniform([tf.random.uniform([], 2, 9, tf.int32)] * 2 + [3])
    smooth = tf.image.resize(coarse[None], [height, width], method="bicubic")[0]
    grain = tf.random.normal([height, width, 3], stddev=tf.random.uniform([], 0.0, 0.08))
    return tf.clip_by_value(smooth + grain, 0.0, 1.0)


def _scenery(other: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """A zoomed-in patch of another photo: real texture (walls, shop fronts,
    foliage) that is background by construction."""
    other_h = tf.cast(tf.shape(other)[0], tf.float32)
    other_w = tf.cast(tf.shape(other)[1], tf.float32)
    scale = tf.random.uniform([], 0.3, 0.6)
    patch = tf.image.random_crop(
        other, [tf.cast(other_h * scale, tf.int32), tf.cast(other_w * scale, tf.int32), 3]
    )
    patch = tf.image.random_flip_left_right(patch)
    return tf.image.resize(patch, [height, width], method="bilinear")


def _background(other: tf.Tensor, height: int, width: int) -> tf.Tensor:
    return tf.cond(
        _coin(0.5),
        lambda: _scenery(other, height, width),
        lambda: _random_backdrop(height, width),
    )


def _crop(both: tf.Tensor) -> tf.Tensor:
    """A random crop of 1/MARGIN..1 of each side, the two sides drawn apart
    within the aspect jitter."""
    size = tf.cast(tf.shape(both)[:2], tf.float32)
    scale = tf.random.uniform([], 1.0 / MARGIN, 1.0)
    aspect = tf.exp(tf.random.uniform([], -1.0, 1.0) * tf.math.log(_ASPECT_JITTER) / 2)
    crop_h = tf.minimum(size[0], size[0] * scale * aspect)
    crop_w = tf.minimum(size[1], size[1] * scale / aspect)
    shape = tf.stack([tf.cast(crop_h, tf.int32), tf.cast(crop_w, tf.int32), tf.shape(both)[2]])
    return tf.image.random_crop(both, shape)


def _zoom_in(both: tf.Tensor) -> tf.Tensor:
    """A window on the person's head and shoulders or upper body, centred on the head,
    at the photo's aspect: portraits and selfies, where a face fills the frame, which
    the sets barely show (a model trained without it returned blank masks for close-ups
    of faces). Sized by the person, so a small person is zoomed in on too; the window
    keeps at least _ZOOM_IN_MIN of the photo's height, since photos are cached at a
    quarter above the model's input and more zoom would only blur."""
    size = tf.cast(tf.shape(both)[:2], tf.float32)
    person = both[..., 3] > 0.5
    rows = tf.cast(tf.where(tf.reduce_any(person, axis=1))[:, 0], tf.float32)
    top, bottom = tf.reduce_min(rows), tf.reduce_max(rows)
    height = bottom - top + 1.0
    crop_h = height * tf.random.uniform([], *_ZOOM_IN_SHARE)
    crop_h = tf.clip_by_value(crop_h, _ZOOM_IN_MIN * size[0], size[0])
    crop_w = tf.minimum(crop_h * size[1] / size[0], size[1])
    head = person[tf.cast(top, tf.int32) : tf.cast(top + height / 8, tf.int32) + 1]
    cols = tf.cast(tf.where(tf.reduce_any(head, axis=0))[:, 0], tf.float32)
    centre = (tf.reduce_min(cols) + tf.reduce_max(cols)) / 2
    y0 = top - crop_h * tf.random.uniform([], 0.0, 0.2)  # some headroom
    x0 = centre - crop_w * tf.random.uniform([], 0.3, 0.7)
    y0 = tf.clip_by_value(y0, 0.0, size[0] - crop_h)
    x0 = tf.clip_by_value(x0, 0.0, size[1] - crop_w)
    return tf.image.crop_to_bounding_box(
        both,
        tf.cast(y0, tf.int32),
        tf.cast(x0, tf.int32),
        tf.maximum(1, tf.cast(crop_h, tf.int32)),
        tf.maximum(1, tf.cast(crop_w, tf.int32)),
    )


def _zoom_out(image, mask, backdrop, height: int, width: int):
    """Shrinks the photo into a random spot of a new backdrop: small people in
    wide scenes, which the sets barely show."""
    scale = tf.random.uniform([], _ZOOM_OUT_MIN, 1.0)
    small_h = tf.maximum(1, tf.cast(height * scale, tf.int32))
    small_w = tf.maximum(1, tf.cast(width * scale, tf.int32))
    both = tf.image.resize(tf.concat([image, mask], -1), [small_h, small_w], method="area")
    both = tf.concat([both, tf.ones([small_h, small_w, 1])], -1)  # channel 4: inside
    top = tf.random.uniform([], 0, height - small_h + 1, tf.int32)
    left = tf.random.uniform([], 0, width - small_w + 1, tf.int32)
    placed = tf.image.pad_to_bounding_box(both, top, left, height, width)
    inside = placed[..., 4:]
    image = placed[..., :3] + (1.0 - inside) * backdrop
    return image, placed[..., 3:4]


def _blur(image: tf.Tensor) -> tf.Tensor:
    """A Gaussian blur of random strength: out-of-focus and shaken phone photos."""
    sigma = tf.random.uniform([], 0.5, 2.0)
    taps = tf.range(-4.0, 5.0)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel /= tf.reduce_sum(kernel)
    rows = tf.tile(tf.reshape(kernel, [9, 1, 1, 1]), [1, 1, 3, 1])
    cols = tf.tile(tf.reshape(kernel, [1, 9, 1, 1]), [1, 1, 3, 1])
    batch = tf.pad(image[None], [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT")
    batch = tf.nn.depthwise_conv2d(batch, rows, [1, 1, 1, 1], "VALID")
    batch = tf.nn.depthwise_conv2d(batch, cols, [1, 1, 1, 1], "VALID")
    return batch[0]


def _colour(image: tf.Tensor) -> tf.Tensor:
    image = tf.image.random_brightness(image, 0.15)
    image = tf.image.random_contrast(image, 0.75, 1.25)
    image = tf.image.random_saturation(image, 0.7, 1.3)
    image = tf.image.random_hue(image, 0.04)
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return tf.where(_coin(_GRAY_P), gray, image)


def augment(image: tf.Tensor, mask: tf.Tensor, other: tf.Tensor, height: int, width: int):
    """One training view of (image, mask); ``other`` is another photo of the set
    whose texture may serve as the new background."""
    both = tf.concat([image, mask], axis=-1)
    zoomed_in = tf.logical_and(_coin(_ZOOM_IN_P), tf.reduce_any(mask > 0.5))
    both = tf.cond(zoomed_in, lambda: _zoom_in(both), lambda: _crop(both))
    both = tf.image.random_flip_left_right(both)
    both = tf.image.resize(both, [height, width], method="bilinear")
    image, mask = both[..., :3], both[..., 3:]
    if tf.logical_and(tf.logical_not(zoomed_in), _coin(_ZOOM_OUT_P)):
        image, mask = _zoom_out(image, mask, _background(other, height, width), height, width)
    elif _coin(_NEW_BACKGROUND_P):
        image = mask * image + (1.0 - mask) * _background(other, height, width)
    if _coin(_BLUR_P):
        image = _blur(image)
    return tf.clip_by_value(_colour(image), 0.0, 1.0), tf.clip_by_value(mask, 0.0, 1.0)
