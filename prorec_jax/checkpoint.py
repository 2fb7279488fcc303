"""Orbax checkpoints of a train state plus the loop's JSON bookkeeping (epoch, best score, history).

Saves are synchronous so a checkpoint that exists is complete; orbax writes each step to a temp
directory and renames it, so a kill mid-save leaves the previous checkpoint intact.
"""
import os

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """Keeps the latest ``max_to_keep`` epochs and, separately, the best one."""

  def __init__(self, directory, max_to_keep=2):
    directory = os.path.abspath(directory)
    opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                        enable_async_checkpointing=False)
    self._latest = ocp.CheckpointManager(os.path.join(directory, "latest"), options=opts)
    best_opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             enable_async_checkpointing=False)
    self._best = ocp.CheckpointManager(os.path.join(directory, "best"), options=best_opts)

  @staticmethod
  def _save(mngr, step, state, loop_state):
    # A run killed between save_best(e) and save_latest(e) redoes epoch e on resume and saves
    # best step e again: replace it (orbax refuses an existing step even with force=True).
    if step in mngr.all_steps():
      mngr.delete(step)
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop_state)), force=True)
    mngr.wait_until_finished()

  @staticmethod
  def _restore(mngr, step, abstract_state):
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore()))
    return out.state, out.loop

  def save_latest(self, step, state, loop_state):
    self._save(self._latest, step, state, loop_state)

  def save_best(self, step, state, loop_state):
    self._save(self._best, step, state, loop_state)

  def restore_latest(self, abstract_state):
    """(state, loop_state) of the newest checkpoint, or None when there is none."""
    return self._restore(self._latest, self._latest.latest_step(), abstract_state)

  def restore_best(self, abstract_state):
    return self._restore(self._best, self._best.latest_step(), abstract_state)

  def close(self):
    self._latest.close()
    self._best.close()
