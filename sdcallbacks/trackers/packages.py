"""Which tracker a user asked for and does not have: accelerate drops a ``log_with`` tracker whose package is
not installed with a debug line (a ``warnings.warn`` only when none is left), so the run logs to local files
and nobody is told how to fix it.

The names asked for are lost inside accelerate (``Accelerator.log_with`` holds the survivors only), so they
are read where the scripts users run take them: ``--report_to`` (diffusers' training scripts) and
``--log_with`` (kohya sd-scripts), each value one name or a comma-separated list.
"""

from __future__ import annotations

from collections.abc import Sequence

# accelerate's tracker name -> what to pip install for accelerate to offer it.
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": '"sdcallbacks[mlflow]"',  # mlflow-skinny: the client without the server
    "comet_ml": "comet-ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
}
FLAGS = ("--report_to", "--log_with")


def requested_trackers(argv: Sequence[str]) -> list[str]:
    """Tracker names in ``--report_to X`` / ``--report_to=X`` / ``--log_with X`` of a command line."""
    names: list[str] = []
    for index, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag not in FLAGS:
            continue
        if not value and index + 1 < len(argv):
            value = argv[index + 1]
        names += [name.strip() for name in value.split(",") if name.strip()]
    return names


def available_trackers() -> set[str]:
    """accelerate's trackers whose package is installed."""
    from accelerate import tracking

    return {str(tracker) for tracker in tracking.get_available_trackers()}


def install_hint(names: Sequence[str]) -> str:
    """``tensorboard (pip install tensorboard), aim (pip install aim)``."""
    return ", ".join(f"{name} (pip install {TRACKER_PACKAGES.get(name, name)})" for name in names)


def missing_trackers(requested: Sequence[str], present: Sequence[str]) -> list[str]:
    """The requested names accelerate knows but could not start because the package is missing."""
    available = available_trackers()
    return [
        name
        for name in dict.fromkeys(requested)
        if name in TRACKER_PACKAGES and name not in present and name not in available
    ]
