"""Settings come from defaults, TOML files with bases, and flags, in that order."""

import argparse

import pytest

from tfx_pipeline import config as config_lib


def test_a_variant_states_only_what_it_changes(tmp_path):
    (tmp_path / "real.toml").write_text("epochs = 14\nimage_width = 192\nmin_iou = 0.7\n")
    (tmp_path / "variants").mkdir()
    variant = tmp_path / "variants" / "square.toml"
    variant.write_text('base = "../real.toml"\nimage_width = 256\n')
    config = config_lib.load(variant, min_iou=0.5)
    assert (config.epochs, config.image_width, config.min_iou) == (14, 256, 0.5)
    assert config.image_height == config_lib.PipelineConfig().image_height


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epochs = 3\nseparable = false\n")
    parser = argparse.ArgumentParser()
    config_lib.add_arguments(parser)
    args = parser.parse_args(
        ["--config", str(path), "--separable", "true", "--max-train-minutes", "1.5"]
    )
    config = config_lib.from_args(args)
    assert (config.epochs, config.separable, config.max_train_minutes) == (3, True, 1.5)


def test_cycles_and_typos_are_errors(tmp_path):
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(ValueError, match="include each other"):
        config_lib.load(tmp_path / "a.toml")
    (tmp_path / "typo.toml").write_text("epoch = 3\n")
    with pytest.raises(ValueError, match="unknown setting.*epoch"):
        config_lib.load(tmp_path / "typo.toml")


def test_shipped_variant_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "configs").rglob("*.toml")):
        config_lib.load(path)
