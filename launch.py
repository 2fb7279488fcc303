"""Entry point: python launch.py --config=configs/prorec.py:dataset=beauty --workdir=runs/beauty --stage=all"""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from prorec_jax import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", "configs/prorec.py", "Config file[:args].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for all stage outputs.", required=True)
_STAGE = flags.DEFINE_enum("stage", "all", pipeline.ORDER + ("all",), "Stage to run.")
_FORCE = flags.DEFINE_bool("force", False, "Redo the stage(s) even if outputs match the config.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first.")


def main(argv):
  del argv
  if _MULTIHOST.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  missing = pipeline.run(_STAGE.value, _CONFIG.value, _WORKDIR.value, _FORCE.value)
  if _STAGE.value == "all":
    print("\nMetrics (full ranking over the catalog):\n" + pipeline.metrics_table(_WORKDIR.value))
    if "eval" in missing:
      print("\nNo PRORec metrics yet: the eval stage is not implemented (issue #6). "
            "The rows above are reference baselines computed by the data stage.")
  logging.info("done: %s", _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
