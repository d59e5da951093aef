"""Evaluation of frozen SSL representations."""
from sslax.evaluate.knn import knn_accuracy, knn_classify

__all__ = ["knn_accuracy", "knn_classify"]
