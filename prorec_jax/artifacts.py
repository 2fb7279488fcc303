"""Stage outputs in the workdir: atomic writes and config-fingerprinted skip/resume.

Every stage writes into ``workdir/<stage>/`` and finishes by writing ``done.json`` holding the
fingerprint of the config sections it read plus the fingerprints of the stages it consumed. A stage
is skipped when ``done.json`` matches and all its outputs exist, so a killed run resumes where it
stopped and a changed upstream stage invalidates everything downstream.
"""
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
from absl import logging

DONE = "done.json"


def _read_umask():
  mask = os.umask(0)  # the only portable way to read it; done once, at import, not in threads
  os.umask(mask)
  return mask


_UMASK = _read_umask()


def _atomic(path, write_fn, mode):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
  os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts in shared workdirs must be readable
  try:
    with os.fdopen(fd, mode) as f:
      write_fn(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_npy(path, array):
  _atomic(path, lambda f: np.save(f, array), "wb")


def save_npz(path, **arrays):
  _atomic(path, lambda f: np.savez(f, **arrays), "wb")


def save_json(path, obj):
  _atomic(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), "w")


def save_jsonl(path, rows):
  _atomic(path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "w")


def load_json(path):
  with open(path) as f:
    return json.load(f)


def load_item_matrix(path, num_items, producer):
  """A float32 [num_items + 1, D] per-item matrix (row 0 = padding), checked for shape and
  finiteness; ``producer`` names the stage to run when the file is missing."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} missing; run --stage={producer} first")
  x = np.load(path)
  if x.ndim != 2 or x.shape[0] != num_items + 1:
    raise ValueError(f"{path}: shape {x.shape}, expected [{num_items + 1}, D] "
                     f"(num_items + 1 rows, row 0 = padding)")
  bad = np.flatnonzero(~np.isfinite(x).all(1))
  if bad.size:
    raise ValueError(f"{path}: non-finite values in {bad.size} rows (first: item {bad[0]})")
  return x.astype(np.float32)


def _to_plain(obj):
  if hasattr(obj, "to_dict"):
    obj = obj.to_dict()
  if isinstance(obj, dict):
    return {str(k): _to_plain(v) for k, v in sorted(obj.items())}
  if isinstance(obj, (list, tuple)):
    return [_to_plain(v) for v in obj]
  return obj


def fingerprint(config, sections, workdir=None, upstream=(), ignore=()):
  """Hash of the named config sections (dotted paths) and of the upstream stages' fingerprints,
  leaving out the fields in ``ignore`` (dotted paths inside those sections)."""
  payload = {"config": {s: _to_plain(_get(config, s)) for s in sections}}
  for dotted in ignore:
    section = next((s for s in sections if dotted.startswith(s + ".")), None)
    if section is None:
      raise ValueError(f"fingerprint: {dotted!r} is in none of the sections {sections}")
    *parents, last = dotted[len(section) + 1:].split(".")
    node = payload["config"][section]
    for part in parents:
      node = node[part]
    node.pop(last)
  if upstream:
    payload["upstream"] = {u: stage_fingerprint(workdir, u) for u in upstream}
  blob = json.dumps(payload, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def content_digest(directory):
  """Hash of the arrays (``*.npy``, ``*.npz``) a stage wrote, checkpoints left out: equal
  digests mean two runs consumed bit-identical stage outputs, whatever their config fingerprints
  say (a rebuilt stage can carry the same fingerprint and different floating-point results)."""
  h = hashlib.sha256()
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if name.endswith((".npy", ".npz")) and os.path.isfile(path):
      h.update(name.encode() + b"\0")
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
  return h.hexdigest()[:16]


def _get(config, dotted):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def stage_dir(workdir, stage):
  return os.path.join(workdir, stage)


def stage_fingerprint(workdir, stage):
  """The recorded fingerprint of a finished stage; errors if the stage has not run."""
  path = os.path.join(stage_dir(workdir, stage), DONE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"stage {stage!r} has no finished output in {workdir}; run --stage={stage} first")
  return load_json(path)["fingerprint"]


def is_done(workdir, stage, fp, outputs):
  sdir = stage_dir(workdir, stage)
  path = os.path.join(sdir, DONE)
  if not os.path.exists(path):
    return False
  if load_json(path).get("fingerprint") != fp:
    return False
  return all(os.path.exists(os.path.join(sdir, o)) for o in outputs)


def mark_done(workdir, stage, fp, **info):
  save_json(os.path.join(stage_dir(workdir, stage), DONE), dict(fingerprint=fp, **info))


def _read_marker(path):
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    text = f.read().strip()
  try:
    marker = json.loads(text)
  except json.JSONDecodeError:
    marker = None
  # Markers written before extensions hold the bare fingerprint (which may parse as a number).
  return marker if isinstance(marker, dict) else {"fingerprint": text}


def start(workdir, stage, fp, extend=None, outputs=()):
  """Called when a stage (re)starts. Partial work (checkpoints) is kept when it was made with
  the same fingerprint; otherwise the stage directory is emptied so nothing stale is resumed.

  ``extend`` = (key, limits) for stages that train: ``limits`` maps the config fields that only
  bound training (e.g. ``{"generate.optim.max_epochs": 64}``) to their values and ``key`` is the
  fingerprint without them. When only limits changed and none went down, the work is kept and the
  stage continues from its checkpoints, as if it had been started with the new limits; its old
  ``outputs`` are removed, so nothing reads the shorter run's results as the new config's.
  """
  sdir = stage_dir(workdir, stage)
  marker = os.path.join(sdir, ".fingerprint")
  if os.path.isdir(sdir):
    old = _read_marker(marker)
    if old.get("fingerprint") != fp:
      key, limits = extend or (None, {})
      old_limits = old.get("limits", {})
      if (key is not None and old.get("extend_key") == key
          and all(v >= old_limits.get(k, v) for k, v in limits.items())):
        logging.info("%s: only training limits changed (%s); continuing from the checkpoints "
                     "in %s", stage, limits, sdir)
        clear_done(workdir, stage)
        for name in outputs:
          if os.path.exists(os.path.join(sdir, name)):
            os.remove(os.path.join(sdir, name))
      else:
        shutil.rmtree(sdir)
  os.makedirs(sdir, exist_ok=True)
  write_marker(workdir, stage, fp, extend)


def write_marker(workdir, stage, fp, extend=None):
  """The marker ``start`` reads: the fingerprint of the work in the stage directory and, for
  stages that train, its extension key and limits."""
  payload = dict(fingerprint=fp)
  if extend:
    payload.update(extend_key=extend[0], limits=extend[1])
  save_json(os.path.join(stage_dir(workdir, stage), ".fingerprint"), payload)


def begin(workdir, stage, fp, outputs, extend=None):
  """The preamble of every stage: False (and a log line) when ``outputs`` exist and were made with
  fingerprint ``fp``, so the stage is skipped; otherwise ``start`` it and return True."""
  if is_done(workdir, stage, fp, outputs):
    logging.info("%s: outputs in %s match the config; skipping", stage, stage_dir(workdir, stage))
    return False
  start(workdir, stage, fp, extend, outputs)
  return True


def clear_done(workdir, stage):
  path = os.path.join(stage_dir(workdir, stage), DONE)
  if os.path.exists(path):
    os.remove(path)
