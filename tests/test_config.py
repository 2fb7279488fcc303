import pytest

from configs import prorec


def test_defaults_and_dataset_arg():
  c = prorec.get_config("dataset=beauty,variant=paper")
  assert c.data.name == "beauty"
  assert c.data.root == "../shared/data"
  assert (c.generate.model.num_encoder_layers, c.generate.model.num_decoder_layers,
          c.generate.model.width) == (1, 4, 128)
  assert c.codes.k == 256 and c.align.cka_weight == 1.0 and c.generate.ikd_weight == 1.0


def test_ablation_fields_exist():
  c = prorec.get_config("")
  for field in ("fusion", "mal", "cka_weight", "tau"):
    assert field in c.align
  for field in ("method", "k"):
    assert field in c.codes
  for field in ("ikd", "ikd_weight", "model"):
    assert field in c.generate


@pytest.mark.parametrize("variant", sorted(prorec.MODEL_SIZES))
def test_variants_set_model_size(variant):
  c = prorec.get_config(f"variant={variant}")
  for key, val in prorec.MODEL_SIZES[variant].items():
    assert c.generate.model[key] == val


def test_runlocal_shrinks_the_run():
  big, small = prorec.get_config("runlocal=False"), prorec.get_config("runlocal=True")
  assert small.data.synthetic.num_users < big.data.synthetic.num_users
  assert small.runlocal and not big.runlocal
  big, small = (prorec.get_config(f"dataset=beauty,runlocal={r}") for r in (False, True))
  assert small.generate.optim.max_epochs < big.generate.optim.max_epochs
  assert small.align.model.width < big.align.model.width


def test_config_is_locked():
  c = prorec.get_config("")
  with pytest.raises(AttributeError):
    c.data.nmae = "beauty"  # a typo must fail loudly
  with pytest.raises(AttributeError):
    _ = c.align.fuson


@pytest.mark.parametrize("arg,msg", [
    ("dataset=amazon", "unknown dataset"),
    ("variant=huge", "unknown variant"),
    ("datset=beauty", "unknown config arg"),
    ("beauty", "not key=value"),
    ("runlocal=maybe", "runlocal"),
])
def test_bad_args(arg, msg):
  with pytest.raises(ValueError, match=msg):
    prorec.get_config(arg)


def test_every_ablation_changes_exactly_its_fields():
  from configs import ablations  # pylint: disable=g-import-not-at-top

  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
  base = flat(prorec.get_config("dataset=beauty").to_dict())
  for name, fields in ablations.ABLATIONS.items():
    cfg = flat(ablations.get_config(f"dataset=beauty,ablation={name}").to_dict())
    changed = {k for k in base if base[k] != cfg[k]}
    assert changed == set(fields), name
  with pytest.raises(ValueError, match="unknown ablation"):
    ablations.get_config("ablation=no_such_thing")
