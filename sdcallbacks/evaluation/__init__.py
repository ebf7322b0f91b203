"""Saved checkpoints scored with the validation core: ``sdcallbacks evaluate`` (after the fact) and
``sdcallbacks watch`` (beside a running trainer)."""

from sdcallbacks.evaluation.leaderboard import Leaderboard, ScoredModel, build_leaderboard
from sdcallbacks.evaluation.run import EvaluationResult, Evaluator, evaluate
from sdcallbacks.evaluation.watch import Watcher, WatchOutcome

__all__ = [
    "EvaluationResult",
    "Evaluator",
    "Leaderboard",
    "ScoredModel",
    "WatchOutcome",
    "Watcher",
    "build_leaderboard",
    "evaluate",
]
