"""Item text clean-up shared by the readers."""
import re

# Template words that leak into IDGenRec's title keywords ("title gloom categories toys games").
DEBRIS = frozenset({"title", "categories", "description", "na"})
_SPACE = re.compile(r"\s+")


def clean_title(text):
  if not text:
    return ""
  words = [w for w in _SPACE.split(str(text).strip()) if w and w.lower() not in DEBRIS]
  return " ".join(words)


def clean_attributes(values):
  """Drops missing, placeholder and repeated attribute names, keeping their order."""
  out, seen = [], set()
  for v in values or ():
    if v is None:
      continue
    v = _SPACE.sub(" ", str(v)).strip()
    if not v or v.lower() in ("unknown", "na", "n/a", "none") or v in seen:
      continue
    seen.add(v)
    out.append(v)
  return tuple(out)
