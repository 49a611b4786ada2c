"""make prune refuses in one line what it must not touch (its deleting is checked
on real runs in tests/test_pipeline_e2e.py)."""

import pytest

from tfx_pipeline import local_runner, prune


def _error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        prune.main(list(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_a_root_without_a_store_is_named_and_not_created(tmp_path, capsys):
    root = tmp_path / "typo"
    assert "no ML Metadata store" in _error(capsys, "--pipeline-root", str(root))
    assert not root.exists()


def test_a_root_in_use_by_a_run_is_left_alone(tmp_path, capsys):
    (tmp_path / "metadata.sqlite").write_bytes(b"")
    with local_runner.only_run_in(str(tmp_path)):
        assert "another pipeline run" in _error(capsys, "--pipeline-root", str(tmp_path))


def test_object_store_roots_and_keeping_no_run_are_refused(tmp_path, capsys):
    assert "object store" in _error(capsys, "--pipeline-root", "gs://bucket/root")
    (tmp_path / "metadata.sqlite").write_bytes(b"")
    with pytest.raises(ValueError, match="at least 1"):
        prune.prune(str(tmp_path), keep_runs=0)
