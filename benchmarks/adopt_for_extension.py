"""Make a finished align/train stage from before run extensions existed extensible.

  .venv/bin/python benchmarks/adopt_for_extension.py --workdir=/tmp/prorec_runs/sports --stage=train

Checks that the workdir's config.json reproduces the stage's recorded fingerprint, then writes
the extension key and training limits into its marker; relaunching with a larger max_epochs or
patience then continues from the stage's checkpoints (README, Running) instead of retraining.
The key is computed on config.json brought up to the current code: fields it lacks take their
current defaults, which is right because new options default to the old behaviour.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import prorec  # noqa: E402
from prorec_jax import pipeline  # noqa: E402


def upgraded(saved):
  """The current default config of the saved run's dataset, with every saved value on top."""
  config = prorec.get_config(f"dataset={saved.data.name}")

  def overlay(node, values, path):
    for key, value in values.items():
      if key not in node:
        raise ValueError(f"config.json has {path}{key}, which this code does not know")
      if isinstance(value, dict):
        overlay(node[key], value, f"{path}{key}.")
      else:
        node[key] = tuple(value) if isinstance(node[key], tuple) else value
  overlay(config, saved.to_dict(), "")
  return config


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--stage", choices=("align", "train"), default="train")
  args = p.parse_args()
  config = upgraded(pipeline.load_config(args.workdir))
  limits = pipeline.adopt_for_extension(args.workdir, args.stage, config)
  print(f"{args.stage} in {args.workdir} can now be extended; its limits: {limits}")


if __name__ == "__main__":
  main()
