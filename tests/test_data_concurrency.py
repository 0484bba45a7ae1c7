"""Runs started at the same moment share one data_dir: training-set statistics happen once.

Two runs launched together must not both compute (and race to write) the same stats file:
one computes under a lock while the other waits and then reads its file.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from alexnet_jax.data import fashion_mnist_offline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    fashion_mnist_offline.missing_files(fashion_mnist_offline.DEFAULT_DIR) != [],
    reason=f"needs the Debian Fashion-MNIST files in {fashion_mnist_offline.DEFAULT_DIR} "
           "(apt-get install dataset-fashion-mnist)")

# Each child imports everything first, then waits for its sibling, so that the two really
# reach the unprepared dataset together rather than one after the other's slow imports.
CHILD = textwrap.dedent("""
    import os, sys, time
    from absl import logging
    from alexnet_jax.data import sources, stats
    from alexnet_jax.sweep import load_config

    logging.set_verbosity(logging.INFO)
    data_dir, me, other = sys.argv[1:4]
    config = load_config("configs/small_fashion_mnist.py")
    config.data.data_dir = data_dir
    open(os.path.join(data_dir, me), "w").close()
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(data_dir, other)):
      assert time.time() < deadline, "sibling never started"
      time.sleep(0.01)
    source = sources.open_source(config)
    splits = sources.resolve_splits(config, source)
    st = stats.for_config(config, source, splits)
    print("RESULT", splits.train.size, splits.val.size, source.split_size("test"),
          float(st.channel_mean[0]), flush=True)
""")


def test_two_processes_compute_stats_once(tmp_path):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             CUDA_VISIBLE_DEVICES="")
  procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir), me, other], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for me, other in (("a.ready", "b.ready"), ("b.ready", "a.ready"))]
  outputs = []
  for p in procs:
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, f"child failed:\n{err[-4000:]}"
    outputs.append((out, err))

  results = [next(line for line in out.splitlines() if line.startswith("RESULT"))
             for out, _ in outputs]
  assert results[0] == results[1]
  _, n_train, n_val, n_test, _ = results[0].split()
  assert (int(n_train), int(n_val), int(n_test)) == (54_000, 6_000, 10_000)

  logs = "".join(err for _, err in outputs)
  assert logs.count("Computing training-set statistics") == 1, logs[-4000:]
  # The two met at the lock: the point of starting them together.
  assert "Waiting for another process" in logs, logs[-4000:]
