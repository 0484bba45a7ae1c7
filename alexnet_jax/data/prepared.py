"""Reading what `python -m alexnet_jax.data.prepare` writes: the record format, the manifest,
`verify`, and random access for the grain source (`ArrayRecordImages`).

Kept apart from the converter so that training reads shards without loading the conversion
code, and so that the format is stated in one place for both sides.
"""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import os
import struct

FORMAT = "alexnet-jax prepared images v1"
RECORD_LAYOUT = "label:int32le | name_len:uint16le | name:utf-8 | jpeg"
MANIFEST = "manifest.json"
PROGRESS = ".progress.json"
_HEADER = struct.Struct("<iH")


class PrepareError(ValueError):
  """Input or output that cannot work; the message names the file and the fix."""



def make_record(jpeg: bytes, label: int, name: str) -> bytes:
  encoded = name.encode("utf-8")[:65535]
  return _HEADER.pack(label, len(encoded)) + encoded + jpeg


def parse_record(record: bytes) -> tuple[bytes, int, str]:
  """(jpeg bytes, label, original file name) of one record."""
  label, n = _HEADER.unpack_from(record)
  start = _HEADER.size + n
  return record[start:], label, record[_HEADER.size:start].decode("utf-8", errors="replace")



def sha256_file(path: str) -> tuple[str, int]:
  h, n = hashlib.sha256(), 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      h.update(chunk)
      n += len(chunk)
  return h.hexdigest(), n



def _load_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError as e:
    raise PrepareError(f"{path} is not valid JSON ({e}); delete it and rerun") from None



def verify(out: str, split: str) -> list[str]:
  """Re-reads every shard of DIR/<split>; returns the problems found (empty: all good)."""
  from array_record.python.array_record_module import ArrayRecordReader
  directory = os.path.join(os.path.abspath(os.path.expanduser(out)), split)
  manifest = _load_manifest(directory)
  problems = []
  per_class = [0] * len(manifest["classes"])
  for shard in manifest["shards"]:
    path = os.path.join(directory, shard["file"])
    if not os.path.exists(path):
      problems.append(f"{path}: missing")
      continue
    digest, nbytes = sha256_file(path)
    if (digest, nbytes) != (shard["sha256"], shard["bytes"]):
      problems.append(f"{path}: {nbytes} bytes with sha256 {digest[:12]}..., the manifest says "
                      f"{shard['bytes']} bytes, {shard['sha256'][:12]}... (partial or altered)")
      continue
    try:
      reader = ArrayRecordReader(path)
      records = reader.read_all()
      reader.close()
    except Exception as e:  # array_record raises bare RuntimeErrors for damaged files
      problems.append(f"{path}: unreadable ({e})")
      continue
    counts = collections.Counter(parse_record(r)[1] for r in records)
    if len(records) != shard["count"] or {str(k): v for k, v in counts.items()} != shard["class_counts"]:
      problems.append(f"{path}: {len(records)} records, the manifest says {shard['count']}")
    for label, count in counts.items():
      per_class[label] += count
  if not problems and per_class != manifest["class_counts"]:
    problems.append(f"{directory}: per-class counts differ from the manifest's class_counts")
  known = {s["file"] for s in manifest["shards"]}
  for path in glob.glob(os.path.join(directory, f"{split}-*.array_record")):
    if os.path.basename(path) not in known:
      problems.append(f"{path}: not in the manifest (left from another run?)")
  return problems


def _load_manifest(directory: str) -> dict:
  manifest = _load_json(os.path.join(directory, MANIFEST))
  if manifest is None:
    hint = (" (an unfinished run: rerun the same prepare command to finish it)"
            if os.path.exists(os.path.join(directory, PROGRESS)) else "")
    raise PrepareError(f"{directory} has no {MANIFEST}{hint}; prepare it with "
                       "python -m alexnet_jax.data.prepare --src=... --out=... --split=...")
  if manifest.get("format") != FORMAT:
    raise PrepareError(f"{directory}/{MANIFEST} is not a {FORMAT!r} manifest")
  return manifest


class ArrayRecordImages:
  """Random access to a prepared split: `images[i] -> (jpeg bytes, label)`.

  `ArrayRecordImages(DIR, "train")` or `ArrayRecordImages(DIR/train)`. Picklable (readers
  open lazily in each process), so grain workers can share it.
  """

  def __init__(self, path: str, split: str | None = None):
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    directory = os.path.join(path, split) if split else path
    self.directory = os.path.abspath(os.path.expanduser(directory))
    self.manifest = _load_manifest(self.directory)
    self.classes: list[str] = self.manifest["classes"]
    paths = []
    for shard in self.manifest["shards"]:
      p = os.path.join(self.directory, shard["file"])
      actual = os.path.getsize(p) if os.path.exists(p) else None
      if actual != shard["bytes"]:
        raise PrepareError(f"{p}: {'missing' if actual is None else f'{actual} bytes'}, the "
                           f"manifest says {shard['bytes']}; check with --verify and rerun prepare")
      if shard["count"]:
        paths.append(p)
    self._source = ArrayRecordDataSource(paths) if paths else []
    if len(self._source) != self.manifest["num_images"]:
      raise PrepareError(f"{self.directory}: shards hold {len(self._source)} records, the manifest "
                         f"says {self.manifest['num_images']}; check with --verify")

  def __len__(self) -> int:
    return self.manifest["num_images"]

  def __getitem__(self, index: int) -> tuple[bytes, int]:
    jpeg, label, _ = parse_record(self._source[index])
    return jpeg, label

  def __getitems__(self, indices) -> list[tuple[bytes, int]]:
    return [parse_record(r)[:2] for r in self._source.__getitems__(indices)]

  def record(self, index: int) -> tuple[bytes, int, str]:
    """(jpeg bytes, label, original file name)."""
    return parse_record(self._source[index])
