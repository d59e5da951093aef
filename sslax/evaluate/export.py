r"""Exports the backbone of a pretraining workdir alone, as a standalone checkpoint.

  python -m sslax.evaluate.export --workdir=workdirs/simclr_cpu --out=exports/simclr_cpu_backbone

The export holds the backbone's params and BatchNorm statistics (no projector, optimizer
or method state) and its config; `sslax.load_pretrained(out)` loads it back.
"""
from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining workdir.")
_OUT = flags.DEFINE_string("out", None, "New directory for the exported backbone.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  from sslax.evaluate.pretrained import export_backbone

  print(f"Exported the backbone to {export_backbone(_WORKDIR.value, _OUT.value, _STEP.value)}")


if __name__ == "__main__":
  app.run(main)
