"""`train_and_evaluate` on two fake devices: a run that switches mesh shape when it resumes
ends where a run on one mesh does. Prints the comparison as JSON.

    JAX_NUM_CPU_DEVICES=2 python tests/mesh_helpers/train_meshes.py DIR
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import test_train  # noqa: E402
from alexnet_jax import train  # noqa: E402


def config(folder, data_dir, data, model, max_steps=-1):
  c = test_train.tiny_config(folder, data_dir)
  c.num_epochs = 2
  c.eval_batch_size = 9  # Odd: every eval batch is padded to split over data=2.
  c.mesh.data, c.mesh.model = data, model
  c.max_steps = max_steps
  return c


def main():
  out = sys.argv[1]
  folder = test_train.make_folder_dataset(os.path.join(out, "images"))
  data_dir = os.path.join(out, "data")
  straight = os.path.join(out, "straight")
  switched = os.path.join(out, "switched")
  a = train.train_and_evaluate(config(folder, data_dir, 2, 1), straight)
  # Towers on two devices for 3 steps, then resumed data-parallel from that checkpoint.
  train.train_and_evaluate(config(folder, data_dir, 1, 2, max_steps=3), switched)
  b = train.train_and_evaluate(config(folder, data_dir, 2, 1), switched)
  step_a, params_a = test_train._final_params(straight)
  step_b, params_b = test_train._final_params(switched)
  flat_a, flat_b = test_train._flatten(params_a), test_train._flatten(params_b)
  err = max(float(np.max(np.abs(np.asarray(flat_a[k]) - np.asarray(flat_b[k]))) /
                  max(float(np.max(np.abs(np.asarray(flat_a[k])))), 1e-30)) for k in flat_a)
  metric_err = max(abs(a[s][k] - b[s][k]) for s in ("val",) for k in a[s])
  metric_err = max(metric_err, max(abs(a["test"]["center"][k] - b["test"]["center"][k])
                                   for k in a["test"]["center"]))
  print("RESULT " + json.dumps({"steps": [step_a, step_b], "params": err, "metrics": metric_err,
                                "final": a}), flush=True)


if __name__ == "__main__":
  main()
