"""Atomic file writes: a reader, a concurrent run or a killed process never leaves or sees half a file.

Every file the project writes outside orbax (config.json, final.json, metrics rewrites on
resume, report tables and plots, data statistics, converted weights) goes through `atomic_write`:
the bytes go to a uniquely named temporary file in the same directory, which replaces the target
only once it is complete. Same directory, because `os.replace` is atomic only within a filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Any, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = False) -> Iterator[IO]:
  """`with atomic_write(p) as f: f.write(...)`: `p` appears whole when the block ends, or not at all."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # A dot-name, so globs such as `*.png` or `*/final.json` never pick up a file in flight.
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    # mkstemp makes the file private (0600); results are meant to be shared, so give it the
    # mode a plain open() would have.
    os.chmod(tmp, 0o666 & ~_umask())
    with os.fdopen(fd, "wb" if binary else "w") as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def _umask() -> int:
  # os.umask can only be read by setting it, which would briefly change the mode of files
  # other threads (orbax's async writers) create; Linux reports it without touching it.
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
  with atomic_write(path) as f:
    json.dump(obj, f, indent=2, sort_keys=True)


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_write(path) as f:
    f.write(text)
