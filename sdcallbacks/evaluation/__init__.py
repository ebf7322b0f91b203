"""Post-hoc evaluation of saved checkpoints with the validation core: ``sdcallbacks evaluate``."""

from sdcallbacks.evaluation.leaderboard import Leaderboard, ScoredModel, build_leaderboard
from sdcallbacks.evaluation.run import EvaluationResult, evaluate

__all__ = ["EvaluationResult", "Leaderboard", "ScoredModel", "build_leaderboard", "evaluate"]
