"""The paper's ablations (Tables 5-6, Figure 9) as named overrides of ``configs/prorec.py``.

  python launch.py --config=configs/ablations.py:dataset=beauty,ablation=no_ikd --workdir=...

``ablation`` is one of ``ABLATIONS``; the other keys are those of ``prorec.get_config``. Each entry
is the list of fields it changes, so the ablations table of BENCHMARKS.md states exactly what
differs from the default PRORec run.
"""
from configs import prorec

ABLATIONS = {
    "prorec": {},
    "no_ikd": {"generate.ikd": False},  # Table 6: CKA only
    "no_cka": {"align.cka_weight": 0.0},  # IKD only (Stage I without the alignment loss)
    "semantic_only": {"align.fusion": "semantic_only"},  # Table 5: codes from text alone
    "collab_only": {"align.fusion": "collab_only"},  # Table 5: codes from DIN alone
    "concat": {"align.fusion": "concat"},  # Table 5: concatenated (PCA-matched) embeddings
    "random_codes": {"codes.method": "random"},  # Figure 9 quantizers
    "rqvae": {"codes.method": "rqvae"},
    "rkmeans": {"codes.method": "rkmeans"},
    "k128": {"codes.k": 128},  # Figure 9: codebook size
    "k512": {"codes.k": 512},
}


def apply(config, name):
  """Sets the fields of ablation ``name`` on ``config`` (a misspelt field raises: locked config)."""
  if name not in ABLATIONS:
    raise ValueError(f"unknown ablation {name!r}; choose one of {tuple(ABLATIONS)}")
  for field, value in ABLATIONS[name].items():
    *parents, last = field.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[last] = value
  return config


def get_config(arg=None):
  parts = [p for p in (arg or "").split(",") if p]
  name = "prorec"
  rest = []
  for p in parts:
    if p.split("=", 1)[0].strip() == "ablation":
      name = p.split("=", 1)[1].strip()
    else:
      rest.append(p)
  return apply(prorec.get_config(",".join(rest)), name)
