"""First contact with the commands: --help, the k=v argument parser, and bad input."""

import os
import subprocess
import sys

import pytest

from alexnet_jax import config as config_lib
from alexnet_jax import sweep

FMNIST = "configs/small_fashion_mnist.py"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, env=None):
  return subprocess.run([sys.executable, "-m", "alexnet_jax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})


def test_parse_kv_keeps_order_and_reads_bare_keys():
  assert config_lib.parse_kv(" lrn=0, towers = 1,,runlocal ") == [
      ("lrn", "0"), ("towers", "1"), ("runlocal", None)]
  assert config_lib.parse_kv(None) == [] == config_lib.parse_kv("")


def test_variants_and_sweep_arguments_read_the_same_text_the_same_way():
  text = " seed = 3 , runlocal "
  c = config_lib.base_config()
  config_lib.apply_variant(c, text, runlocal=lambda c: c.update({"max_steps": 7}))
  a = sweep.parse_arg(text, {"seed": 0, "runlocal": False}, "test")
  assert (c.seed, c.max_steps) == (a["seed"], 7) == (3, 7) and a["runlocal"] is True
  # `flag=0` turns a flag off in both.
  c = config_lib.base_config()
  config_lib.apply_variant(c, "runlocal=0", runlocal=lambda c: c.update({"max_steps": 7}))
  assert c.max_steps == -1
  assert sweep.parse_arg("runlocal=0", {"runlocal": False}, "test")["runlocal"] is False


def test_a_variant_without_its_value_says_so():
  with pytest.raises(ValueError, match="'towers': towers needs a value"):
    config_lib.apply_variant(config_lib.base_config(), "towers")


def test_help_lists_the_variant_switches_without_loading_jax():
  out = _main("--help")
  assert out.returncode == 0, out.stderr
  for switch in config_lib.VARIANT_HELP:
    assert switch in out.stdout
  assert "--traceback" in out.stdout and "alexnet-train" in out.stdout
  # --help is fast because the command imports JAX (and the data pipeline) only to train.
  probe = subprocess.run([sys.executable, "-c", "import sys, alexnet_jax.main; "
                          "print(sorted(m for m in ('jax', 'tensorflow', 'alexnet_jax.train') "
                          "if m in sys.modules))"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
  assert probe.stdout.strip() == "[]", probe.stderr


@pytest.mark.parametrize("args, names", [
    ([f"--config={FMNIST}:lnr=0"], ["'lnr'", "lrn=0|1"]),
    ([f"--config={FMNIST}:lrn=2"], ["'lrn=2'", "boolean"]),
    ([f"--config={FMNIST}", "--config.optim.lrr=0.1"], ["--config.optim.lrr", "'lrr'", '"lr"']),
    ([f"--config={FMNIST}", "--config.batch_size=abc"], ["--config.batch_size=abc", "int"]),
    ([f"--config={FMNIST}", "--config.model.towers=3"], ["config.model.towers=3", "use 1 or 2"]),
    (["--config=configs/nope.py"], ["--config", "configs/nope.py", "No such file"]),
    ([f"--config={FMNIST}", "--wrkdir=x"], ["'wrkdir'", "workdir"]),
])
def test_bad_input_ends_with_one_line_and_exit_2(args, names, tmp_path):
  workdir = tmp_path / "run"
  out = _main(*args, f"--workdir={workdir}")
  assert out.returncode == 2, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
  for name in names:
    assert name in lines[0]
  assert not workdir.exists()


def test_traceback_on_request():
  out = _main(f"--config={FMNIST}:lnr=0", "--workdir=unused", "--traceback")
  assert out.returncode != 0 and "Traceback (most recent call last)" in out.stderr
  assert "unknown argument 'lnr'" in out.stderr
