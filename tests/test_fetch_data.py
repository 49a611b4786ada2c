"""make data: clear advice without credentials; finds the data set inside an archive."""

import pytest

from tfx_pipeline import fetch_data


def test_without_credentials_it_says_what_to_do(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    assert fetch_data.main([str(tmp_path / "tiktok")]) == 2
    err = capsys.readouterr().err
    assert "kaggle.json" in err and f"DATA_DIR={tmp_path / 'tiktok'}" in err


def test_credentials_from_the_kaggle_file(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    (tmp_path / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert fetch_data.credentials() == ("u", "k")


def test_dataset_root_is_found_however_nested(tmp_path):
    root = tmp_path / "segmentation_full_body_tik_tok_dancing_dataset" / "v1"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (tmp_path / "images").mkdir()  # a stray images/ without masks/ is not it
    assert fetch_data.dataset_root(tmp_path) == root
    with pytest.raises(FileNotFoundError):
        fetch_data.dataset_root(root / "images")
