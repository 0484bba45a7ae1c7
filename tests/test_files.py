"""atomic_write: the target is either the old file or the whole new one, never a mix."""

import json
import os

import pytest

from alexnet_jax import files


def test_writes_whole_file_and_leaves_no_temporaries(tmp_path):
  path = tmp_path / "sub" / "final.json"  # Missing parent directories are made.
  files.write_json(path, {"b": 1, "a": [1, 2]})
  assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
  files.write_text(path, "replaced")
  assert path.read_text() == "replaced"
  with files.atomic_write(tmp_path / "x.bin", binary=True) as f:
    f.write(b"\x00\x01")
  assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"
  assert sorted(os.listdir(tmp_path / "sub")) == ["final.json"]
  # The mode of a plain open(), not mkstemp's private 0600.
  mask = os.umask(0o022)
  try:
    files.write_text(tmp_path / "shared.md", "x")
  finally:
    os.umask(mask)
  assert (tmp_path / "shared.md").stat().st_mode & 0o777 == 0o644


def test_failure_mid_write_keeps_the_old_file(tmp_path):
  path = tmp_path / "report.md"
  path.write_text("old")
  with pytest.raises(RuntimeError, match="disk"):
    with files.atomic_write(path) as f:
      f.write("half of the new")
      # The half-written file is invisible: the target still reads as before.
      assert path.read_text() == "old"
      raise RuntimeError("disk full")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["report.md"]
