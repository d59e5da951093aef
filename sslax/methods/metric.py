"""The classic metric-learning losses on two views of each image (`method=metric`).

The losses contrastive self-supervised learning grew out of, with the two augmented views
of an image as a positive pair and every other image of the global batch as negatives
(no labels): the contrastive loss with a margin (Hadsell et al. 2006), the triplet loss with
batch-all / batch-hard / semi-hard mining (Schroff et al. 2015; Hermans et al. 2017), the
N-pair loss (Sohn 2016), the lifted structured loss (Oh Song et al. 2016), NCE (Gutmann &
Hyvarinen 2010), InfoNCE (Oord et al. 2018, as SimCLR's NT-Xent) and the soft
nearest-neighbour loss (Frosst et al. 2019). The losses are in sslax/losses.py.
"""
from __future__ import annotations

from sslax import losses
from sslax.config_utils import Field
from sslax.methods.common import TwoViewMethod

METRIC_LOSSES = ("contrastive", "triplet", "n_pair", "lifted", "nce", "infonce", "snnl")


class MetricLearning(TwoViewMethod):
  """`metric.loss` between the projections of the two views, pairs from the global batch.

  Every loss but N-pair works on L2-normalised projections (N-pair's inner products are
  unnormalised and its regulariser bounds their norms, as in the paper).
  """

  name = "metric"
  config_fields = {
      "loss": Field("triplet", "the metric-learning loss", choices=METRIC_LOSSES),
      "contrastive_margin": Field(1.0, "contrastive: distance beyond which a negative pair costs nothing "
                                       "(normalised embeddings: distances in [0, 2])", gt=0),
      "triplet_margin": Field(0.2, "triplet: the margin alpha on squared distances (FaceNet: 0.2)", gt=0),
      "triplet_mining": Field("semi_hard", "triplet: which negatives", choices=losses.TRIPLET_MINING),
      "lifted_margin": Field(1.0, "lifted structured: the margin alpha", gt=0),
      "n_pair_l2": Field(0.002, "N-pair: weight of the embedding-norm regulariser", ge=0),
      "temperature": Field(0.1, "nce, infonce and snnl: the softmax temperature", gt=0),
  }

  def pair_loss(self, z1, z2, axis_name):
    c = self.settings
    kind = c.loss
    if kind == "contrastive":
      return losses.contrastive_margin_loss(z1, z2, margin=float(c.contrastive_margin), axis_name=axis_name)
    if kind == "triplet":
      return losses.triplet_loss(z1, z2, margin=float(c.triplet_margin), mining=c.triplet_mining,
                                 axis_name=axis_name)
    if kind == "n_pair":
      return losses.n_pair_loss(z1, z2, l2_reg=float(c.n_pair_l2), axis_name=axis_name)
    if kind == "lifted":
      return losses.lifted_structured_loss(z1, z2, margin=float(c.lifted_margin), axis_name=axis_name)
    if kind == "nce":
      return losses.nce_pair_loss(z1, z2, temperature=float(c.temperature), axis_name=axis_name)
    if kind == "infonce":
      return losses.nt_xent(z1, z2, temperature=float(c.temperature), axis_name=axis_name)
    return losses.soft_nearest_neighbor_loss(z1, z2, temperature=float(c.temperature), axis_name=axis_name)
