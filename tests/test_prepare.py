"""The ImageNet `prepare` command on small generated folder trees and tars."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from alexnet_jax.data import decode as dec
from alexnet_jax.data import prepare as prep

CLASSES = {"n001": [(60, 80), (90, 50), (40, 40)], "n002": [(70, 70), (33, 99)],
           "n003": [(50, 75), (80, 60), (64, 48), (20, 30)]}


def image_bytes(h: int, w: int, seed: int, fmt: str = "JPEG") -> bytes:
  rng = np.random.default_rng(seed)
  # smooth content, so re-encoding error stays near JPEG's usual one grey level
  coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
  array = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR))
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
  return buf.getvalue()


def make_tree(root, bad: bool = True, empty: bool = False) -> dict[str, bytes]:
  """root/<class>/<file>; returns {relative name: bytes} of the good images."""
  good = {}
  for c, (cls, shapes) in enumerate(CLASSES.items()):
    os.makedirs(root / cls)
    for i, (h, w) in enumerate(shapes):
      name = f"{cls}/{cls}_{i}.JPEG"
      good[name] = image_bytes(h, w, 10 * c + i)
      (root / name).write_bytes(good[name])
  png = f"n002/n002_rgba.png"  # RGBA PNG under a class: converted, alpha dropped
  rgba = np.dstack([np.full((30, 45, 3), 120, np.uint8), np.full((30, 45), 7, np.uint8)])
  buf = io.BytesIO()
  Image.fromarray(rgba).save(buf, "PNG")
  good[png] = buf.getvalue()
  (root / png).write_bytes(good[png])
  if bad:
    (root / "n001" / "notes.txt").write_text("not an image\n")
    whole = image_bytes(64, 64, 99)
    (root / "n003" / "n003_cut.JPEG").write_bytes(whole[: len(whole) // 2])
  if empty:
    os.makedirs(root / "n004")
  return good


def read_all(out, split="train"):
  images = prep.ArrayRecordImages(str(out), split)
  return images, [images.record(i) for i in range(len(images))]


def test_record_layout_round_trips():
  record = prep.make_record(b"\xff\xd8jpeg", 123, "n01/ä.JPEG")
  assert record[:4] == (123).to_bytes(4, "little")
  assert prep.parse_record(record) == (b"\xff\xd8jpeg", 123, "n01/ä.JPEG")


def test_folder_tree_converts_labels_and_resizes(tmp_path, caplog):
  good = make_tree(tmp_path / "src", empty=True)
  with caplog.at_level(logging.INFO, logger="prepare"):
    manifest = prep.prepare(str(tmp_path / "src"), str(tmp_path / "out"), "train", size=32,
                            workers=1, images_per_shard=3, progress=False)
  classes = sorted(CLASSES) + ["n004"]
  assert manifest["classes"] == classes
  assert manifest["class_counts"] == [3, 3, 4, 0]  # n002 has its PNG too; n004 is empty
  assert manifest["empty_classes"] == ["n004"] and "n004" in caplog.text
  assert manifest["num_images"] == len(good) == 10
  # 12 files in name order by 3: notes.txt in the 2nd shard, n003_cut.JPEG in the 4th
  assert [s["count"] for s in manifest["shards"]] == [3, 2, 3, 2]
  skipped = sorted(os.path.basename(s["file"]) for s in manifest["skipped"])
  assert skipped == ["n003_cut.JPEG", "notes.txt"] and manifest["num_skipped"] == 2
  assert "skipped 2 files" in caplog.text and "notes.txt" in caplog.text

  images, records = read_all(tmp_path / "out")
  assert len(images) == 10 and images.classes == classes
  assert sorted(r[2] for r in records) == sorted(good)
  for jpeg, label, name in records:
    assert classes[label] == name.split("/")[0]
    out = dec.decode(jpeg, 3)
    source = dec.decode(good[name], 3)
    h, w = source.shape[:2]
    assert min(out.shape[:2]) == 32
    assert out.shape[:2] == dec._shorter_side_shape(h, w, 32)  # aspect kept, not cropped
    expected = dec.resize_shorter(source, 32)
    # exactly the reference resize, JPEG-encoded once at quality 90 ...
    buf = io.BytesIO()
    Image.fromarray(expected).save(buf, "JPEG", quality=90)
    np.testing.assert_array_equal(out, dec.decode(buf.getvalue(), 3), err_msg=name)
    # ... which costs a few grey levels on these tiny, steep-gradient images (~1 on photos)
    assert np.abs(out.astype(int) - expected).mean() < 3.0, name
  assert images[0] == records[0][:2]
  assert images.__getitems__([3, 1]) == [records[3][:2], records[1][:2]]
  clone = pickle.loads(pickle.dumps(images))  # as grain hands it to worker processes
  assert len(clone) == 10 and clone[5] == images[5] and clone.manifest == images.manifest
  assert prep.verify(str(tmp_path / "out"), "train") == []


def write_train_tar(path, tree_root):
  """The ILSVRC-2012 train layout: a tar of per-class tars of flat files."""
  with tarfile.open(path, "w") as outer:
    for cls in sorted(os.listdir(tree_root)):
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode="w") as inner:
        for f in sorted(os.listdir(tree_root / cls)):
          inner.add(tree_root / cls / f, arcname=f)
      info = tarfile.TarInfo(f"{cls}.tar")
      info.size = len(buf.getvalue())
      buf.seek(0)
      outer.addfile(info, buf)


def test_train_tar_in_parallel_equals_the_folder_tree(tmp_path):
  make_tree(tmp_path / "src")
  write_train_tar(tmp_path / "train.tar", tmp_path / "src")
  from_tree = prep.prepare(str(tmp_path / "src"), str(tmp_path / "a"), "train", size=24,
                           workers=1, images_per_shard=4, progress=False)
  from_tar = prep.prepare(str(tmp_path / "train.tar"), str(tmp_path / "b"), "train", size=24,
                          workers=2, images_per_shard=4, progress=False)
  assert from_tar["source_kind"] == "train_tar"
  for key in ("classes", "class_counts", "num_images", "num_skipped"):
    assert from_tar[key] == from_tree[key], key
  # the same bytes in the same order: shards are identical files
  assert [s["sha256"] for s in from_tar["shards"]] == [s["sha256"] for s in from_tree["shards"]]
  assert any(s["file"].endswith("train.tar:n001/notes.txt") for s in from_tar["skipped"])


def test_val_tar_takes_labels_in_file_name_order(tmp_path):
  make_tree(tmp_path / "src", bad=False)
  prep.prepare(str(tmp_path / "src"), str(tmp_path / "out"), "train", size=16, workers=1,
               progress=False)
  files, synsets = {}, []
  for i, cls in enumerate(["n003", "n001", "n003", "n002"]):
    files[f"ILSVRC2012_val_{i + 1:08d}.JPEG"] = image_bytes(40, 30 + i, 50 + i)
    synsets.append(cls)
  with tarfile.open(tmp_path / "val.tar", "w") as tar:
    for name in reversed(sorted(files)):  # tar order is not file-name order
      info = tarfile.TarInfo(name)
      info.size = len(files[name])
      tar.addfile(info, io.BytesIO(files[name]))
  labels = tmp_path / "labels.txt"
  labels.write_text("\n".join(synsets) + "\n")
  with pytest.raises(prep.PrepareError, match="--val_labels"):
    prep.prepare(str(tmp_path / "val.tar"), str(tmp_path / "out"), "val", size=16)
  manifest = prep.prepare(str(tmp_path / "val.tar"), str(tmp_path / "out"), "val", size=16,
                          workers=1, val_labels=str(labels), progress=False,
                          classes_from=str(tmp_path / "out" / "train"))
  assert manifest["classes"] == sorted(CLASSES)
  _, records = read_all(tmp_path / "out", "val")
  got = {name: manifest["classes"][label] for _, label, name in records}
  assert got == {name: cls for name, cls in zip(sorted(files), synsets)}
  labels.write_text("n001\n")
  with pytest.raises(prep.PrepareError, match="has 1 labels but"):
    prep.prepare(str(tmp_path / "val.tar"), str(tmp_path / "out2"), "val", size=16,
                 val_labels=str(labels))


def test_verify_catches_truncated_missing_and_stray_shards(tmp_path):
  make_tree(tmp_path / "src", bad=False)
  out = tmp_path / "out"
  manifest = prep.prepare(str(tmp_path / "src"), str(out), "train", size=16, workers=1,
                          images_per_shard=4, progress=False)
  shards = [out / "train" / s["file"] for s in manifest["shards"]]
  assert prep.main(["--out", str(out), "--split", "train", "--verify"]) == 0
  data = shards[0].read_bytes()
  shards[0].write_bytes(data[: len(data) - 100])  # a partial copy
  shards[1].unlink()
  (out / "train" / "train-00099-of-00099.array_record").write_bytes(b"")
  problems = prep.verify(str(out), "train")
  assert len(problems) == 3
  assert "partial or altered" in problems[0] and str(shards[0]) in problems[0]
  assert problems[1] == f"{shards[1]}: missing"
  assert "not in the manifest" in problems[2]
  assert prep.main(["--out", str(out), "--split", "train", "--verify"]) == 1
  with pytest.raises(prep.PrepareError, match=str(shards[0])):
    prep.ArrayRecordImages(str(out), "train")


def test_verify_recounts_records(tmp_path):
  from array_record.python.array_record_module import ArrayRecordWriter
  make_tree(tmp_path / "src", bad=False)
  out = tmp_path / "out"
  manifest = prep.prepare(str(tmp_path / "src"), str(out), "train", size=16, workers=1,
                          images_per_shard=4, progress=False)
  # A shard rewritten with one record fewer, and the manifest's checksum updated to match it:
  # only the record count can tell.
  shard = manifest["shards"][0]
  path = str(out / "train" / shard["file"])
  records = [r for r in prep.ArrayRecordImages(str(out), "train")._source.__getitems__([0, 1, 2])]
  writer = ArrayRecordWriter(path, prep.WRITER_OPTIONS)
  for r in records:
    writer.write(r)
  writer.close()
  shard["sha256"], shard["bytes"] = prep.sha256_file(path)
  (out / "train" / "manifest.json").write_text(json.dumps(manifest))
  problems = prep.verify(str(out), "train")
  assert any("3 records, the manifest says 4" in p for p in problems), problems


def test_resume_after_a_killed_run_skips_finished_shards(tmp_path, monkeypatch):
  make_tree(tmp_path / "src")
  out = tmp_path / "out"
  reference = prep.prepare(str(tmp_path / "src"), str(tmp_path / "ref"), "train", size=16,
                           workers=1, images_per_shard=3, progress=False)
  real = prep.write_shard
  calls = []

  def dies_on_third(task):
    calls.append(task["file"])
    if len(calls) == 3:  # killed while writing: a half-written temporary file stays behind
      (out / "train" / f".{task['file']}.999.tmp").write_bytes(b"half")
      raise KeyboardInterrupt
    return real(task)

  monkeypatch.setattr(prep, "write_shard", dies_on_third)
  with pytest.raises(KeyboardInterrupt):
    prep.prepare(str(tmp_path / "src"), str(out), "train", size=16, workers=1,
                 images_per_shard=3, progress=False)
  directory = out / "train"
  assert not (directory / "manifest.json").exists()
  assert sorted(json.loads((directory / ".progress.json").read_text())["done"]) == calls[:2]
  with pytest.raises(prep.PrepareError, match="rerun the same prepare command"):
    prep.ArrayRecordImages(str(out), "train")

  # damage one finished shard: the resumed run must notice and write it again
  first = directory / calls[0]
  first.write_bytes(first.read_bytes()[:-10])
  calls.clear()
  monkeypatch.setattr(prep, "write_shard", lambda task: calls.append(task["file"]) or real(task))
  manifest = prep.prepare(str(tmp_path / "src"), str(out), "train", size=16, workers=1,
                          images_per_shard=3, progress=False)
  assert calls[0] == first.name and first.name.startswith("train-00000")
  assert "train-00001-of-00004.array_record" not in calls  # finished and intact: skipped
  assert len(calls) == 3
  assert not list(directory.glob(".*.tmp")) and not (directory / ".progress.json").exists()
  strip = lambda m: {k: v for k, v in m.items() if k not in ("created", "source", "skipped")}
  assert strip(manifest) == strip(reference)
  assert prep.verify(str(out), "train") == []
  # finished: a rerun changes nothing; other settings are refused
  assert prep.prepare(str(tmp_path / "src"), str(out), "train", size=16, workers=1,
                      images_per_shard=3, progress=False) == manifest
  with pytest.raises(prep.PrepareError, match="other settings"):
    prep.prepare(str(tmp_path / "src"), str(out), "train", size=16, quality=95, workers=1,
                 images_per_shard=3, progress=False)


def test_bad_sources_give_errors_naming_them(tmp_path):
  (tmp_path / "flat").mkdir()
  (tmp_path / "flat" / "a.jpg").write_bytes(image_bytes(10, 10, 0))
  with pytest.raises(prep.PrepareError, match="no class folders"):
    prep.prepare(str(tmp_path / "flat"), str(tmp_path / "out"), "train")
  (tmp_path / "noimages" / "cls").mkdir(parents=True)
  with pytest.raises(prep.PrepareError, match="no files to convert"):
    prep.prepare(str(tmp_path / "noimages"), str(tmp_path / "out"), "train")
  (tmp_path / "x.bin").write_bytes(b"junk")
  with pytest.raises(prep.PrepareError, match="x.bin is neither"):
    prep.prepare(str(tmp_path / "x.bin"), str(tmp_path / "out"), "train")
  assert prep.main(["--src", str(tmp_path / "x.bin"), "--out", str(tmp_path / "o"),
                    "--split", "train"]) == 2
  with pytest.raises(prep.PrepareError, match="no manifest.json"):
    prep.verify(str(tmp_path / "o"), "train")


def test_cli_converts_a_tree(tmp_path, capsys):
  make_tree(tmp_path / "src", bad=False)
  assert prep.main([f"--src={tmp_path / 'src'}", f"--out={tmp_path / 'out'}", "--split=train",
                    "--size=20", "--workers=1"]) == 0
  assert "10/10 images (100.0%)" in capsys.readouterr().err
  manifest = json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())
  assert manifest["size"] == 20 and manifest["quality"] == 90 and manifest["num_images"] == 10


def test_a_run_killed_for_real_resumes_to_the_same_shards(tmp_path):
  # SIGKILL the command (and its workers) once a shard is recorded, then rerun it.
  src = tmp_path / "src"
  for c in range(2):
    os.makedirs(src / f"c{c}")
    for i in range(30):
      (src / f"c{c}" / f"{i:02d}.jpg").write_bytes(image_bytes(480, 640, 100 * c + i))
  command = [sys.executable, "-m", "alexnet_jax.data.prepare", f"--src={src}",
             f"--out={tmp_path / 'out'}", "--split=train", "--size=64", "--workers=2",
             "--images_per_shard=4"]
  run = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True)
  progress = tmp_path / "out" / "train" / ".progress.json"
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline and run.poll() is None:
    if progress.exists() and json.loads(progress.read_text())["done"]:
      break
    time.sleep(0.02)
  assert run.poll() is None, "the run ended before it could be killed; give it more images"
  os.killpg(run.pid, signal.SIGKILL)
  run.wait()
  time.sleep(0.5)  # let orphaned workers see their parent gone
  assert not (tmp_path / "out" / "train" / "manifest.json").exists()
  done_before = json.loads(progress.read_text())["done"]
  assert 1 <= len(done_before) < 15
  # Whether the kill landed inside an atomic write of the progress file is luck; make sure the
  # rerun also meets the temporary such a kill leaves.
  (tmp_path / "out" / "train" / "..progress.json.killed.tmp").write_text('{"half')

  resumed = subprocess.run(command, stderr=subprocess.PIPE, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr
  assert "resuming:" in resumed.stderr and "60/60 images (100.0%)" in resumed.stderr
  manifest = json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())
  assert manifest["num_images"] == 60 and manifest["class_counts"] == [30, 30]
  for shard in manifest["shards"]:
    if shard["file"] in done_before:
      assert shard["sha256"] == done_before[shard["file"]]["sha256"]
  assert prep.verify(str(tmp_path / "out"), "train") == []
  assert not list((tmp_path / "out" / "train").glob(".*.tmp"))
