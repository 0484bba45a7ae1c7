r"""ImageNet (or any class-folder tree) -> ArrayRecord shards of 256-px JPEGs, once.

    python -m alexnet_jax.data.prepare --src=ILSVRC2012_img_train.tar --out=DIR --split=train
    python -m alexnet_jax.data.prepare --src=ILSVRC2012_img_val.tar --val_labels=LABELS \
        --classes_from=DIR/train --out=DIR --split=val
    python -m alexnet_jax.data.prepare --src=/data/images/train --out=DIR --split=train
    python -m alexnet_jax.data.prepare --out=DIR --split=train --verify

Sources: the ILSVRC-2012 train tar (a tar of per-class tars n01440764.tar, ...), the flat val tar
with `--val_labels` (one synset per line, in file-name order, as ImageNet's devkit and TFDS's
validation_labels.txt give them), or a folder tree root/<class>/**/<image>. Classes are the
sorted class names, unless `--classes_from` names a prepared split (or its manifest) whose class
list is reused, so val labels mean what train labels mean.

What is written, in DIR/<split>/:
- `<split>-00000-of-000NN.array_record`: records in class order, then file-name order (readers
  shuffle by index; grain does). Written with group_size:1 for random access. A record is
  `label: int32 LE | n: uint16 LE | file name: n bytes UTF-8 | JPEG bytes`; `parse_record` reads it.
- images get their shorter side resized to `--size` (default 256) with the exact antialiased
  bilinear of `decode.resize_shorter`, aspect kept: NOT cropped to a square, so the pipeline can
  still choose its crop (centre square for the paper, other crops for other recipes) and nothing
  of a 4:3 photo is thrown away before it has to be. Smaller images are scaled up. EXIF
  orientation is applied, grayscale/CMYK/RGBA/16-bit become 8-bit RGB (see `decode`), and the
  result is re-encoded once as baseline JPEG, quality 90, 4:2:0 chroma by default. Measured on a
  real photo (matplotlib's grace_hopper.jpg at 300x256): q90 4:2:0 22 KB, mean |error| 2.5 grey
  levels, ~4000 decodes/s per core; q95 32 KB, 1.9, ~3100/s; q90 4:4:4 27 KB, 1.7, ~2900/s.
  The smallest and fastest wins: its error is well below the paper's PCA colour noise (std ~12
  grey levels along the main colour axis). `--quality` changes it.
- `manifest.json`, written LAST: classes, counts per class and per shard, sha256 and byte size of
  every shard, size, quality, the source and the skipped files. No manifest = not finished.
- while running, `.progress.json` records the plan and each finished shard; shards appear
  atomically (written under a dot-name, renamed when complete), so a killed run leaves only whole
  shards, and rerunning the same command skips every shard whose sha256 matches the record.

Bad input: a corrupt, truncated or non-image file is skipped; the log lists each once at the end
with the count, and the manifest keeps them under "skipped". An empty class folder is kept as a
class with zero images (dropping it would shift every later label) and warned about. `--verify`
re-reads every shard: a missing, truncated or altered shard, or counts that differ from the
manifest, are reported and exit with status 1.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import io
import json
import logging
import multiprocessing
import os
import sys
import tarfile
import time

from PIL import Image

from alexnet_jax import files
from alexnet_jax.data import decode as decode_lib
# The format and its readers live in `prepared`; re-exported for this command's callers.
from alexnet_jax.data.prepared import (FORMAT, MANIFEST, PROGRESS, RECORD_LAYOUT,  # noqa: F401
                                       ArrayRecordImages, PrepareError, _load_json,
                                       _load_manifest, make_record, parse_record, sha256_file,
                                       verify)

WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk: random access; JPEG won't compress

log = logging.getLogger("prepare")


# --- records ----------------------------------------------------------------------------------

# --- what to convert --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)  # slots: ImageNet lists 1.28M of them
class Item:
  """One source image: where its bytes are (`offset`/`size` inside a tar; size -1: whole file)."""
  name: str
  label: int
  path: str
  offset: int = 0
  size: int = -1

  def where(self) -> str:
    return self.path if self.size < 0 else f"{self.path}:{self.name}"


@dataclasses.dataclass
class Plan:
  kind: str
  classes: list[str]
  items: list[Item]


def plan(src: str, *, val_labels: str | None = None, classes: list[str] | None = None) -> Plan:
  """Lists the images of `src` in a fixed order with their labels."""
  src = os.path.abspath(os.path.expanduser(src))
  if os.path.isdir(src):
    found = _folder_classes(src)
    kind = "folder"
  elif os.path.isfile(src) and tarfile.is_tarfile(src):
    with tarfile.open(src, "r:") as tar:
      members = [m for m in tar if m.isfile()]
      if members and all(m.name.endswith(".tar") for m in members):
        found, kind = _train_tar_classes(src, tar, members), "train_tar"
      else:
        if not val_labels:
          raise PrepareError(f"--src={src} is a flat tar of images (the val layout): give its "
                             "labels with --val_labels=FILE (one synset per line, in file-name order)")
        found, kind = _val_tar_classes(src, members, val_labels), "val_tar"
  else:
    raise PrepareError(f"--src={src} is neither a directory of class folders nor a readable tar")
  class_names = classes if classes is not None else sorted(found)
  unknown = sorted(set(found) - set(class_names))
  if unknown:
    raise PrepareError(f"classes {unknown[:5]}{'...' if len(unknown) > 5 else ''} of {src} are not "
                       f"in the --classes_from list ({len(class_names)} classes)")
  items = []
  for label, name in enumerate(class_names):
    items.extend(dataclasses.replace(it, label=label) for it in found.get(name, []))
  if not items:
    raise PrepareError(f"--src={src} holds no files to convert")
  return Plan(kind, class_names, items)


def _folder_classes(root: str) -> dict[str, list[Item]]:
  found = {}
  for entry in sorted(os.scandir(root), key=lambda e: e.name):
    if not entry.is_dir() or entry.name.startswith("."):
      continue
    items = []
    for dirpath, dirnames, filenames in os.walk(entry.path):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
      for f in sorted(filenames):
        if not f.startswith("."):
          full = os.path.join(dirpath, f)
          items.append(Item(os.path.relpath(full, root), -1, full))
    found[entry.name] = items
  if not found:
    raise PrepareError(f"--src={root} has no class folders (expected {root}/<class>/<image>)")
  return found


def _train_tar_classes(src: str, tar: tarfile.TarFile, members) -> dict[str, list[Item]]:
  found = {}
  for m in members:
    synset = os.path.basename(m.name)[:-len(".tar")]
    try:
      with tarfile.open(fileobj=tar.extractfile(m), mode="r:") as inner:
        found[synset] = sorted(
            (Item(f"{synset}/{os.path.basename(f.name)}", -1, src, m.offset_data + f.offset_data,
                  f.size) for f in inner if f.isfile()), key=lambda it: it.name)
    except tarfile.TarError as e:
      raise PrepareError(f"{src}:{m.name} is not a readable tar ({e}); the download may be damaged")
  return found


def _val_tar_classes(src: str, members, labels_path: str) -> dict[str, list[Item]]:
  with open(labels_path) as f:
    synsets = [line.strip() for line in f if line.strip()]
  members = sorted(members, key=lambda m: os.path.basename(m.name))
  if len(synsets) != len(members):
    raise PrepareError(f"--val_labels={labels_path} has {len(synsets)} labels but {src} holds "
                       f"{len(members)} files; it needs one synset per line, in file-name order")
  found = collections.defaultdict(list)
  for synset, m in zip(synsets, members):
    found[synset].append(Item(os.path.basename(m.name), -1, src, m.offset_data, m.size))
  return dict(found)


def read_classes(path: str) -> list[str]:
  """The class list of a prepared split (its directory or manifest)."""
  manifest = path if path.endswith(".json") else os.path.join(path, MANIFEST)
  try:
    with open(manifest) as f:
      return json.load(f)["classes"]
  except (OSError, KeyError, ValueError) as e:
    raise PrepareError(f"--classes_from={path}: cannot read a class list from {manifest} ({e})")


# --- conversion (runs in worker processes) ----------------------------------------------------

_progress = None  # a shared counter of images done, set in each worker
_open_tars: dict[str, io.BufferedReader] = {}


def _init_worker(counter) -> None:
  global _progress
  _progress = counter


def _read(item: Item) -> bytes:
  if item.size < 0:
    with open(item.path, "rb") as f:
      return f.read()
  f = _open_tars.get(item.path)
  if f is None:
    f = _open_tars[item.path] = open(item.path, "rb")
  f.seek(item.offset)
  return f.read(item.size)


def convert(data: bytes, size: int, quality: int, where: str | None = None) -> bytes:
  """Image bytes -> RGB JPEG bytes with the shorter side `size` (raises decode.ImageError)."""
  image = decode_lib.resize_shorter(decode_lib.decode(data, 3, path=where), size)
  buf = io.BytesIO()
  Image.fromarray(image, mode="RGB").save(buf, "JPEG", quality=quality)
  return buf.getvalue()


def write_shard(task: dict) -> dict:
  """Converts `task['items']` into one shard, written under a dot-name and renamed when whole."""
  from array_record.python.array_record_module import ArrayRecordWriter
  final = os.path.join(task["dir"], task["file"])
  tmp = os.path.join(task["dir"], f".{task['file']}.{os.getpid()}.tmp")
  counts, skipped, pending = collections.Counter(), [], 0
  writer = ArrayRecordWriter(tmp, WRITER_OPTIONS)
  try:
    for item in task["items"]:
      try:
        jpeg = convert(_read(item), task["size"], task["quality"], item.where())
      except decode_lib.ImageError as e:
        skipped.append({"file": item.where(), "reason": str(e)})
      except OSError as e:  # unreadable file (permissions, I/O error): skipped like a bad image
        skipped.append({"file": item.where(), "reason": f"{item.where()}: unreadable ({e})"})
      else:
        writer.write(make_record(jpeg, item.label, item.name))
        counts[item.label] += 1
      pending += 1
      if _progress is not None and pending == 16:
        with _progress.get_lock():
          _progress.value += pending
        pending = 0
    if not writer.ok():  # it reports failures (disk full, bad path) here, not by raising
      raise OSError(f"ArrayRecordWriter failed on {tmp}")
    writer.close()
    digest, nbytes = sha256_file(tmp)
    os.replace(tmp, final)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  if _progress is not None:
    with _progress.get_lock():
      _progress.value += pending
  return {"file": task["file"], "index": task["index"], "count": sum(counts.values()),
          "sha256": digest, "bytes": nbytes, "class_counts": {str(k): v for k, v in sorted(counts.items())},
          "skipped": skipped}


# --- the command ------------------------------------------------------------------------------

def prepare(src: str, out: str, split: str, *, size: int = 256, quality: int = 90,
            workers: int | None = None, images_per_shard: int = 5000,
            val_labels: str | None = None, classes_from: str | None = None,
            progress: bool = True) -> dict:
  """Converts `src` into DIR/<split>/ (see the module docstring); returns the manifest."""
  if not 1 <= quality <= 100:
    raise PrepareError(f"--quality={quality} must be in 1..100 (90-95 keeps JPEG error small)")
  if size < 1 or images_per_shard < 1:
    raise PrepareError("--size and --images_per_shard must be positive")
  directory = os.path.join(os.path.abspath(os.path.expanduser(out)), split)
  os.makedirs(directory, exist_ok=True)
  with _exclusive(directory):
    the_plan = plan(src, val_labels=val_labels,
                    classes=read_classes(classes_from) if classes_from else None)
    settings = {"format": FORMAT, "record_layout": RECORD_LAYOUT, "split": split,
                "source": os.path.abspath(os.path.expanduser(src)), "source_kind": the_plan.kind,
                "size": size, "quality": quality, "images_per_shard": images_per_shard,
                "resize": "shorter side to size, antialiased bilinear, aspect kept, not cropped",
                "plan_sha256": _plan_digest(the_plan)}
    existing = _load_json(os.path.join(directory, MANIFEST))
    if existing is not None:
      if {k: existing.get(k) for k in settings} == settings:
        log.info("%s is already prepared; --verify re-checks it", directory)
        return existing
      raise PrepareError(f"{directory} holds a finished dataset prepared with other settings or "
                         "source; use another --out or --split, or delete it first")
    return _run(the_plan, settings, directory, workers or _cores(), progress)


def _cores() -> int:
  try:
    return len(os.sched_getaffinity(0))  # the cores this job may use, not all of the machine's
  except AttributeError:
    return os.cpu_count() or 1


def _run(the_plan: Plan, settings: dict, directory: str, workers: int, progress: bool) -> dict:
  n = len(the_plan.items)
  per = settings["images_per_shard"]
  num_shards = -(-n // per)
  split = settings["split"]
  tasks = [{"dir": directory, "index": i, "file": f"{split}-{i:05d}-of-{num_shards:05d}.array_record",
            "items": the_plan.items[i * per:(i + 1) * per], "size": settings["size"],
            "quality": settings["quality"]} for i in range(num_shards)]
  # A killed run leaves its unfinished shards (.train-....tmp) and, if it died inside an atomic
  # write, a half-written progress file (..progress.json.XXXX.tmp); the directory lock says no
  # other run is writing here, so every hidden temporary in the split's folder is stale.
  for stale in glob.glob(os.path.join(directory, ".*.tmp")):
    os.remove(stale)
  progress_path = os.path.join(directory, PROGRESS)
  done = _resume(progress_path, settings, directory)
  todo = [t for t in tasks if t["file"] not in done]
  if done:
    log.info("resuming: %d of %d shards already written and checked", len(done), num_shards)
  bar = _Bar(n, sum(len(t["items"]) for t in tasks if t["file"] in done), enabled=progress)

  def finished(result):
    done[result["file"]] = result
    files.write_json(progress_path, {"settings": settings, "done": done})

  if workers <= 1 or len(todo) <= 1:
    _init_worker(None)
    for task in todo:
      finished(write_shard(task))
      bar.update(bar.done + len(task["items"]))
  else:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["alexnet_jax.data.prepare"])  # imported once, then forked
    counter = ctx.Value("q", 0)
    with ctx.Pool(min(workers, len(todo)), _init_worker, (counter,)) as pool:
      results = pool.imap_unordered(write_shard, todo)
      start = bar.done
      while True:
        try:
          finished(results.next(timeout=0.5))
        except multiprocessing.TimeoutError:
          pass
        except StopIteration:
          break
        bar.update(start + counter.value)
  bar.close()
  manifest = _manifest(the_plan, settings, [done[t["file"]] for t in tasks])
  files.write_json(os.path.join(directory, MANIFEST), manifest)
  os.remove(progress_path)
  _log_summary(manifest, directory)
  return manifest


def _resume(progress_path: str, settings: dict, directory: str) -> dict:
  state = _load_json(progress_path)
  if state is None:
    return {}
  if state.get("settings") != settings:
    raise PrepareError(f"{directory} holds an unfinished run with other settings or source; "
                       "rerun that command to finish it, or delete the directory")
  done = {}
  for name, shard in state["done"].items():
    path = os.path.join(directory, name)
    if os.path.exists(path) and sha256_file(path) == (shard["sha256"], shard["bytes"]):
      done[name] = shard
    else:
      log.warning("%s does not match its recorded checksum; writing it again", path)
  return done


def _manifest(the_plan: Plan, settings: dict, shards: list[dict]) -> dict:
  per_class = [0] * len(the_plan.classes)
  for s in shards:
    for label, count in s["class_counts"].items():
      per_class[int(label)] += count
  skipped = [x for s in shards for x in s["skipped"]]
  return {**settings, "classes": the_plan.classes, "num_images": sum(per_class),
          "class_counts": per_class, "num_skipped": len(skipped), "skipped": skipped,
          "empty_classes": [c for c, k in zip(the_plan.classes, per_class) if k == 0],
          "shards": [{k: s[k] for k in ("file", "count", "sha256", "bytes", "class_counts")}
                     for s in shards],
          "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _log_summary(manifest: dict, directory: str) -> None:
  log.info("wrote %d images of %d classes in %d shards to %s", manifest["num_images"],
           len(manifest["classes"]), len(manifest["shards"]), directory)
  if manifest["empty_classes"]:
    log.warning("%d classes have no images: %s", len(manifest["empty_classes"]),
                ", ".join(manifest["empty_classes"]))
  if manifest["skipped"]:
    log.warning("skipped %d files that are not readable images (also listed in %s):\n  %s",
                manifest["num_skipped"], MANIFEST,
                "\n  ".join(s["reason"] for s in manifest["skipped"]))


def _plan_digest(the_plan: Plan) -> str:
  h = hashlib.sha256(json.dumps(the_plan.classes).encode())
  for it in the_plan.items:
    h.update(f"{it.label}\0{it.name}\0{it.path}\0{it.offset}\0{it.size}\n".encode())
  return h.hexdigest()


@contextlib.contextmanager
def _exclusive(directory: str):
  with open(os.path.join(directory, ".lock"), "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise PrepareError(f"another prepare is writing {directory}; wait for it to end") from None
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


class _Bar:
  """One self-overwriting line on stderr: images done, rate, time left."""

  def __init__(self, total: int, done: int, enabled: bool):
    self.total, self.done, self.enabled = total, done, enabled
    self.start_done, self.start, self.last = done, time.monotonic(), 0.0

  def update(self, done: int) -> None:
    self.done = done
    now = time.monotonic()
    if not self.enabled or now - self.last < 0.5:
      return
    self.last = now
    rate = (done - self.start_done) / max(now - self.start, 1e-9)
    left = (self.total - done) / rate if rate > 0 else float("nan")
    eta = f"{left / 60:.0f} min left" if left == left else ""
    sys.stderr.write(f"\r{done}/{self.total} images ({100 * done / self.total:.1f}%), "
                     f"{rate:.0f} img/s, {eta}   ")
    sys.stderr.flush()

  def close(self) -> None:
    if self.enabled:
      self.last = 0.0
      self.update(self.done)
      sys.stderr.write("\n")  # the next log line starts on its own line


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m alexnet_jax.data.prepare",
      description="Convert ImageNet tars or a class-folder tree into ArrayRecord shards of "
                  "JPEGs with the shorter side resized once.")
  parser.add_argument("--src", help="ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar (with "
                      "--val_labels) or a folder tree root/<class>/<image>")
  parser.add_argument("--out", required=True, help="output root; shards go to OUT/<split>/")
  parser.add_argument("--split", required=True, help="split name, e.g. train or val")
  parser.add_argument("--size", type=int, default=256, help="shorter side in pixels")
  parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the re-encoding")
  parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
  parser.add_argument("--images_per_shard", type=int, default=5000)
  parser.add_argument("--val_labels", help="for the val tar: one synset per line, file-name order")
  parser.add_argument("--classes_from", help="prepared split (dir or manifest) whose classes to reuse")
  parser.add_argument("--verify", action="store_true", help="re-check a prepared split and exit")
  parser.add_argument("--no_progress", action="store_true", help="no progress line on stderr")
  args = parser.parse_args(argv)
  # The command's own handler on its own logger: the root logger may already belong to absl
  # (imported with the data package), which would swallow INFO lines, and changing the root
  # logger would change logging for everything else in a process that calls main().
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
  log.addHandler(handler)
  level, propagate = log.level, log.propagate
  log.setLevel(logging.INFO)
  log.propagate = False
  try:
    return _main(args, parser)
  finally:
    log.removeHandler(handler)
    log.setLevel(level)
    log.propagate = propagate


def _main(args, parser) -> int:
  try:
    if args.verify:
      problems = verify(args.out, args.split)
      for p in problems:
        log.error("%s", p)
      if problems:
        return 1
      log.info("%s/%s: every shard matches the manifest", args.out, args.split)
      return 0
    if not args.src:
      parser.error("--src is required unless --verify")
    prepare(args.src, args.out, args.split, size=args.size, quality=args.quality,
            workers=args.workers, images_per_shard=args.images_per_shard,
            val_labels=args.val_labels, classes_from=args.classes_from,
            progress=not args.no_progress)
  except PrepareError as e:
    log.error("%s", e)
    return 2
  return 0


if __name__ == "__main__":
  # Run the imported module's main, so worker processes find write_shard under its real name.
  from alexnet_jax.data import prepare as _module
  sys.exit(_module.main())
