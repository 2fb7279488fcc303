"""What every report table shares: reading the records, mean and spread, markdown cells."""
import glob
import json
import math
import os


def load_records(directory):
  out = []
  for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
    with open(path) as f:
      rec = json.load(f)
    rec["file"] = os.path.basename(path)
    out.append(rec)
  return out


def mean_std(values):
  m = sum(values) / len(values)
  if len(values) < 2:
    return m, None
  return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def cell(values):
  m, s = mean_std(values)
  return f"{m:.4f}" if s is None else f"{m:.4f} ± {s:.4f}"


def table(header, rows):
  """A markdown table: ``header`` is the list of column titles, each row a list of cells."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def epochs(record, missing="-"):
  """Stage II "epochs run (best epoch)" of a pipeline record."""
  tr = record.get("train") or {}
  return f"{tr['epochs']} ({tr['best_epoch']})" if tr else missing


def finished(records):
  return [r for r in records if (r.get("results") or {}).get("test")]


def rel(m, s):
  return f"{100 * s / m:.1f}%" if m else "-"
