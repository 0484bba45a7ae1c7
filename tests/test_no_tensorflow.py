"""Training, evaluation, reports, launching and weight import never load TensorFlow.

TensorFlow is at most an extra for building TFDS catalogue datasets; where it is installed
(a developer's machine) importing it would still cost seconds and claim GPU memory.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent("""
    import sys
    import alexnet_jax.main, alexnet_jax.train, alexnet_jax.report, alexnet_jax.launch
    import alexnet_jax.pretrained, alexnet_jax.data, alexnet_jax.data.stats
    from alexnet_jax.data import sources
    from alexnet_jax.sweep import load_config
    c = load_config("configs/small_fashion_mnist.py:runlocal")
    c.data.data_dir = sys.argv[1]
    import alexnet_jax.data as data
    info = data.dataset_info(c)
    next(data.train_iterator(c))
    next(data.eval_batches(c, "val"))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    print("LOADED", loaded)
""")


def test_the_package_runs_without_importing_tensorflow(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "LOADED []" in out.stdout, out.stdout
