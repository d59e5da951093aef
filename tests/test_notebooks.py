"""The Colab notebooks run end to end at a tiny size (their parameter cell overridden)."""
import os

import nbformat
import pytest
from nbclient import NotebookClient
from reference import REPO

NOTEBOOKS = os.path.join(REPO, "notebooks")


def _run(name, cwd, **params):
  """Executes notebooks/<name> in a fresh kernel after appending `params` to its parameter cell."""
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  cell.source += "\n# Test overrides.\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
  NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
  return nb


def _outputs(nb):
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  return text, images


@pytest.mark.xdist_group("notebooks")
def test_quickstart_then_pretrained_backbone_notebooks_run(tmp_path):
  workdir = str(tmp_path / "simclr")
  nb = _run("quickstart.ipynb", REPO, CONFIG="configs/simclr.py:tiny", WORKDIR=workdir, DOWNLOAD_CIFAR10=False,
            TSNE_POINTS=64, OVERRIDES={"data.source": "synthetic", "data.synthetic.num_train_examples": 256,
                                       "data.synthetic.num_eval_examples": 64})
  text, images = _outputs(nb)
  assert "'step': 6" in text and "kNN top-1 by step" in text, text[-2000:]
  assert images == 2  # The training curves and the t-SNE.
  assert os.path.isfile(os.path.join(workdir, "tsne.png"))

  export = str(tmp_path / "backbone")
  nb = _run("pretrained_backbone.ipynb", REPO, PRETRAINED=workdir, EXPORT_DIR=export, MAX_TRAIN=256, MAX_TEST=64)
  text, images = _outputs(nb)
  assert "features: (256, " in text and "linear probe top-1" in text, text[-2000:]
  assert images == 1 and os.path.isfile(os.path.join(export, "retrieval.png"))


def test_notebooks_have_a_parameter_cell_and_a_colab_badge():
  names = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))
  assert names == ["pretrained_backbone.ipynb", "quickstart.ipynb"]
  readme = open(os.path.join(REPO, "README.md")).read()
  for name in names:
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    assert len([c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]) == 1, name
    assert f"notebooks/{name}" in nb.cells[0].source and f"notebooks/{name}" in readme, name
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name}: commit without outputs"
