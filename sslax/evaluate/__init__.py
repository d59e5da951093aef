"""Evaluation of SSL representations: kNN, linear probe, fine-tuning, baselines, plots."""
from sslax.evaluate.knn import knn_accuracy, knn_classify
from sslax.evaluate.linear import linear_probe
from sslax.evaluate.pretrained import Backbone, PretrainedError, export_backbone, load_pretrained, random_backbone
from sslax.evaluate.subsets import class_balanced_subset

__all__ = ["Backbone", "PretrainedError", "class_balanced_subset", "export_backbone", "knn_accuracy", "knn_classify",
           "linear_probe", "load_pretrained", "random_backbone"]
