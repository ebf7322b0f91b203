"""Distances between the distribution of validation images and a reference set (and Inception Score)."""

from sdcallbacks.metrics.distribution.cmmd import Cmmd, mmd_rbf
from sdcallbacks.metrics.distribution.fid import Fid
from sdcallbacks.metrics.distribution.inception_score import InceptionScore
from sdcallbacks.metrics.distribution.kid import Kid

__all__ = ["Cmmd", "Fid", "InceptionScore", "Kid", "mmd_rbf"]
