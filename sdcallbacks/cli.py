"""The ``sdcallbacks`` command: ``demo``, ``evaluate``, ``watch``, ``score``, ``schema``,
``check-config``, ``build-world``.

Config errors print the file, key path and expectation, and exit with code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sdcallbacks.config.loading import ConfigError

if TYPE_CHECKING:
    from sdcallbacks.config.schema import RunConfig

EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C
DESCRIPTION = (
    "Validation callbacks for Stable Diffusion fine-tuning: sample, score, keep the best step, stop early. "
    "Config errors print the file, key path and expectation, and exit with code 2."
)


def _cmd_schema(args: argparse.Namespace) -> int:
    from sdcallbacks.config.schema import RunConfig

    print(json.dumps(RunConfig.model_json_schema(), indent=2))
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from sdcallbacks.config.loading import load_config
    from sdcallbacks.metrics import build_metrics
    from sdcallbacks.prompts.library import expand_jobs, load_prompts
    from sdcallbacks.selection.checks import check_config

    config = load_config(args.config)
    prompts = load_prompts(config)
    check_config(config, build_metrics(config.metrics.enabled()))  # builds only; nothing loads
    print(
        f"{args.config}: OK, {len(prompts)} prompts, {len(expand_jobs(prompts))} images per validation, "
        f"metrics: {', '.join(config.metrics.enabled()) or 'none'}"
    )
    return 0


def _cmd_build_world(args: argparse.Namespace) -> int:
    from sdcallbacks.testing.world import build_tiny_world

    world = build_tiny_world(args.cache_dir)
    print(world.root)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from sdcallbacks.demo import run_demo

    try:
        result = run_demo(
            output_dir=args.output_dir,
            max_steps=args.steps,
            validate_every=args.validate_every,
            cache_dir=args.cache_dir,
            report_to=None if args.no_wandb else "wandb",
            progress_bar=True,
            save_top_k=args.save_top_k,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted. {_partial_outputs(args.output_dir)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    print(f"demo finished after {result.steps} steps")
    print(
        f"  val/tag_accuracy/mean: baseline (LoRA off) {result.baseline_score:.3f} -> "
        f"best {result.best_score:.3f} at step {result.best_step} (gain {result.gain:+.3f})"
    )
    print(f"  grids and images:  {result.samples_dir}")
    print(f"  metrics.jsonl:     {result.metrics_path}")
    print(f"  W&B offline run:   {result.wandb_dir or 'not logged'}")
    print(f"  best checkpoint:   {result.best_model_path}")
    if not (math.isfinite(result.gain) and result.gain >= args.min_gain):
        print(f"FAILED: the gain {result.gain:+.3f} is below {args.min_gain}", file=sys.stderr)
        return 1
    print(f"OK: the LoRA learned the concept (gain >= {args.min_gain})")
    return 0


def _partial_outputs(output_dir: Path) -> str:
    """Where an interrupted demo left what it had finished (every record is flushed as it is written)."""
    names = ("metrics.jsonl", "samples", "checkpoints", "config.yaml")
    found = [output_dir.resolve() / name for name in names if (output_dir / name).exists()]
    if not found:
        return "Training had not started; nothing was written (an unfinished tiny-world build is discarded)."
    return "Partial outputs, complete up to the last finished validation:\n" + "\n".join(
        f"  {path}" for path in found
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from sdcallbacks.checkpoints import CheckpointError
    from sdcallbacks.config.loading import load_config
    from sdcallbacks.evaluation import evaluate

    config = _with_trackers(load_config(args.config), args)
    try:
        result = evaluate(
            config,
            args.base,
            args.checkpoints,
            args.out,
            step_pattern=args.step_pattern,
            progress=True,
            **_base_options(args),
        )
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: every model scored so far is in {args.out / 'evaluations.jsonl'}; run the "
            "same command again to go on",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    board = result.leaderboard
    print(board.to_markdown())
    print()
    print(
        f"scored {len(result.scored)}, reused {len(result.reused)} from evaluations.jsonl, "
        f"skipped {len(result.skipped)}"
    )
    for skipped in result.skipped:
        print(f"  skipped {skipped['path']}: {skipped['reason']}")
    print(f"best by {board.ranked_by} ({board.mode}): {board.best or 'none'}")
    for kind, path in result.files.items():
        print(f"  {kind + ':':<9} {path}")
    return 0


def _cmd_wandb_report(args: argparse.Namespace) -> int:
    from sdcallbacks.report import ReportError, read_run
    from sdcallbacks.report.wandb_report import RunPath, build_report, save_report, write_spec

    try:
        report = build_report(read_run(args.outputs), RunPath.parse(args.run_path), args.title)
        if args.spec is not None:
            print(f"W&B report spec: {write_spec(report, args.spec)}")
        else:
            print(f"W&B report: {save_report(report)}")
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from sdcallbacks.report import ReportError, write_report

    try:
        files = write_report(args.folder, args.out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    for line in files.torn_lines:
        print(f"skipped metrics.jsonl line {line}: a torn record (the run stopped mid-write)")
    print(f"report: {files.html}")
    print(f"plots:  {len(files.plots)} PNG files in {files.html.with_name(files.html.stem + '_files')}")
    if args.open:
        import webbrowser

        webbrowser.open(files.html.resolve().as_uri())
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from sdcallbacks.calibration import (
        calibrate,
        read_ratings,
        read_scores,
        summary_markdown,
        write_calibration,
    )
    from sdcallbacks.config.loading import ConfigError

    try:
        table = read_scores(args.scores)
        ratings = read_ratings(args.ratings, set(table.ids))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    result = calibrate(table, ratings, folds=args.folds, seed=args.seed)
    print(summary_markdown(result))
    for kind, path in write_calibration(result, args.out).items():
        print(f"  {kind + ':':<12} {path}")
    return 0


def _cmd_taggers(args: argparse.Namespace) -> int:
    from sdcallbacks.config.loading import ConfigError
    from sdcallbacks.tagger_comparison import compare_taggers, to_markdown, write_results

    taggers = [t.strip() for t in args.taggers.split(",") if t.strip()]
    try:
        results = compare_taggers(
            args.images,
            args.tags,
            taggers,
            threshold=args.threshold,
            character_threshold=args.character_threshold,
            device=args.device,
        )
    except (ConfigError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    print(to_markdown(results))
    if args.out is not None:
        write_results(results, args.out)
        print(f"written: {args.out}")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from sdcallbacks.checkpoints import CheckpointError
    from sdcallbacks.config.loading import load_config
    from sdcallbacks.evaluation import Evaluator, Watcher
    from sdcallbacks.evaluation.run import launched_processes

    config = _with_trackers(load_config(args.config), args)
    if not args.folder.is_dir():
        print(f"error: {args.folder}: no such folder (the trainer's output folder)", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    processes = launched_processes(args.device)
    evaluator = Evaluator(config, args.base, args.out, processes=processes, **_base_options(args))
    watcher = Watcher(
        evaluator,
        args.folder,
        step_pattern=args.step_pattern,
        stable_polls=args.stable_polls,
        on_stop=args.on_stop,
    )
    idle = None if args.idle_exit is None else args.idle_exit * 60
    say = print if processes.is_main else (lambda *a, **k: None)  # one voice under accelerate launch
    say(f"watching {args.folder} every {args.poll}s (Ctrl-C to end); outputs in {args.out}", flush=True)
    try:
        outcome = watcher.run(poll_s=args.poll, idle_exit_s=idle)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        say(
            f"\ninterrupted after {len(watcher.outcome.scored)} checkpoints; run it again to go on",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    say(f"watch ended ({outcome.reason}): scored {len(outcome.scored)}, passed over {len(outcome.skipped)}")
    if outcome.stop is not None:
        say(f"  early stop at step {outcome.stop['step']} ({outcome.stop['reason']}): {args.out / 'STOP'}")
    if watcher.selection is not None and watcher.selection.best_model_path:
        say(f"  best: step {watcher.selection.best_step} -> {watcher.selection.best_model_path}")
    say(f"  leaderboard: {args.out / 'leaderboard.md'}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from sdcallbacks.metrics.images import ImageFolderError
    from sdcallbacks.score_command import prepare_output, score_folder, write_scores
    from sdcallbacks.weights import WeightsFormatError, WeightsNotFoundError

    names = [n.strip() for n in (args.metrics or "").split(",") if n.strip()]
    if not names and args.config is None:
        print(
            "error: name the metrics (--metrics a,b) or give a --config with a metrics section",
            file=sys.stderr,
        )
        return EXIT_CONFIG_ERROR
    try:
        prepare_output(args.out)  # before scoring: a bad --out must not cost the scoring
        records, values, folder = score_folder(args.images, names, args.prompts, args.config)
    except (ImageFolderError, WeightsNotFoundError, WeightsFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    write_scores(args.out, records, values)
    print(f"scored {len(records)} images from {folder.root} ({len(folder.skipped)} unreadable, skipped)")
    unprompted = sum(1 for record in records if not record.prompt.strip())
    if unprompted:
        print(
            f"  {unprompted} images have no prompt (no --prompts entry, .txt caption or PNG parameters): "
            "prompt metrics skipped them (see <key>/skipped)"
        )
    for key, value in sorted(values.items()):
        if "/prompt/" not in key:
            print(f"  {key:<44} {value:.4f}")
    print(f"  per-image scores: {args.out}")
    return 0


def _with_trackers(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``config`` with the command line's tracker options: ``--tensorboard-dir``, ``--wandb-run-id``."""
    trackers = config.trackers
    if args.tensorboard_dir is not None:
        trackers = trackers.model_copy(update={"tensorboard_dir": args.tensorboard_dir})
    if getattr(args, "wandb_run_id", None):
        wandb = trackers.wandb.model_copy(update={"create_run": True, "run_id": args.wandb_run_id})
        trackers = trackers.model_copy(update={"wandb": wandb})
    return config.model_copy(update={"trackers": trackers})


def _base_options(args: argparse.Namespace) -> dict[str, str | None]:
    """How ``evaluate`` and ``watch`` load and run the base model, from :func:`_scoring_arguments`."""
    return {
        "base_config": args.base_config,
        "device": args.device,
        "dtype": args.dtype,
        "mixed_precision": args.mixed_precision,
    }


def _scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``evaluate`` and ``watch`` share: the config, the base model, the output folder, devices."""
    parser.add_argument("--config", type=Path, required=True, help="the run config (prompts, metrics)")
    parser.add_argument(
        "--base",
        required=True,
        help="the base model: a diffusers folder, a hub id, or a single .safetensors/.ckpt model file",
    )
    parser.add_argument(
        "--base-config",
        help="for a single-file --base: a local diffusers folder of the same architecture, whose configs "
        "describe its components (needed offline unless its hub repo's configs are cached)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the leaderboard and samples")
    parser.add_argument(
        "--step-pattern", help="regular expression with a group 'step' (or 'epoch') read from the names"
    )
    parser.add_argument("--device", help="default: cuda if available, else cpu (e.g. cuda:1 beside training)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument(
        "--tensorboard-dir",
        type=Path,
        help="also write TensorBoard events here (e.g. the trainer's logging dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdcallbacks", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a LoRA on the tiny offline world with the callback active")
    demo.add_argument("--output-dir", type=Path, default=Path("sdcallbacks_demo"))
    demo.add_argument("--steps", type=int, default=600)
    demo.add_argument("--validate-every", type=int, default=100)
    demo.add_argument(
        "--cache-dir", type=Path, default=None, help="tiny world cache (default ~/.cache/sdcallbacks)"
    )
    demo.add_argument(
        "--min-gain", type=float, default=0.3, help="required gain of the best step over baseline"
    )
    demo.add_argument("--no-wandb", action="store_true", help="do not log to W&B (offline) at all")
    demo.add_argument(
        "--save-top-k",
        type=int,
        default=1,
        help="best validations whose checkpoints are kept; -1 keeps every one (for sdcallbacks evaluate)",
    )
    demo.set_defaults(func=_cmd_demo)

    evaluate = sub.add_parser(
        "evaluate", help="score the base model and every saved checkpoint of a run: a leaderboard"
    )
    evaluate.add_argument("checkpoints", nargs="+", help="checkpoints, folders of them, or globs")
    _scoring_arguments(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    watch = sub.add_parser("watch", help="beside a running trainer: score each checkpoint it writes")
    watch.add_argument("folder", type=Path, help="the trainer's output folder")
    _scoring_arguments(watch)
    watch.add_argument("--poll", type=float, default=30.0, help="seconds between looks at the folder")
    watch.add_argument(
        "--stable-polls", type=int, default=2, help="polls a checkpoint must stay unchanged before it is read"
    )
    watch.add_argument("--idle-exit", type=float, help="end after this many minutes without a new checkpoint")
    watch.add_argument("--on-stop", help="shell command run once when early stopping fires (e.g. kill PID)")
    watch.add_argument(
        "--wandb-run-id", help="log into this W&B run (the trainer's), at each checkpoint's step"
    )
    watch.set_defaults(func=_cmd_watch)

    report = sub.add_parser("report", help="one HTML page of a run's curves, grids and tables")
    report.add_argument("folder", type=Path, help="output folder of a run, of evaluate or of watch")
    report.add_argument("--out", type=Path, help="the HTML file (default FOLDER/report.html)")
    report.add_argument("--open", action="store_true", help="open it in the default browser")
    report.set_defaults(func=_cmd_report)

    wandb_report = sub.add_parser(
        "wandb-report", help="a W&B report of a run: monitored key with CI, deltas, grids, samples"
    )
    wandb_report.add_argument("run_path", help="the W&B run: ENTITY/PROJECT/RUN_ID")
    wandb_report.add_argument(
        "--outputs",
        type=Path,
        required=True,
        help="the run's output folder (its metrics.jsonl names the keys)",
    )
    wandb_report.add_argument("--title", help="report title (default 'Validation: RUN_ID')")
    wandb_report.add_argument(
        "--spec", type=Path, help="write the report's JSON view spec here instead of saving it (offline)"
    )
    wandb_report.set_defaults(func=_cmd_wandb_report)

    calibrate = sub.add_parser("calibrate", help="check the metrics against your ratings; fit a score")
    calibrate.add_argument(
        "--ratings", type=Path, required=True, help="CSV: image,rating[,rater] (1-5) or better,worse[,rater]"
    )
    calibrate.add_argument(
        "--scores", type=Path, required=True, help="the metrics.jsonl whose images were rated"
    )
    calibrate.add_argument(
        "--out", type=Path, default=Path("calibration"), help="calibration.json, score.yaml"
    )
    calibrate.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    calibrate.add_argument("--seed", type=int, default=0, help="bootstrap and fold seed")
    calibrate.set_defaults(func=_cmd_calibrate)

    taggers = sub.add_parser("taggers", help="compare WD14-format taggers on images with known tags")
    taggers.add_argument("--images", type=Path, required=True, help="folder of the images")
    taggers.add_argument(
        "--tags", type=Path, required=True, help="known tags: CSV (file,tags) or JSON lines {file, tags}"
    )
    taggers.add_argument(
        "--taggers",
        required=True,
        help="comma-separated hub ids or local folders (model.onnx + selected_tags.csv)",
    )
    taggers.add_argument("--threshold", type=float, default=0.35, help="general tags: p > threshold")
    taggers.add_argument("--character-threshold", type=float, default=0.85)
    taggers.add_argument("--device", default="cpu")
    taggers.add_argument("--out", type=Path, help="also write the table as .csv or .json")
    taggers.set_defaults(func=_cmd_taggers)

    score = sub.add_parser("score", help="score a folder of existing images (no training)")
    score.add_argument("images", type=Path, help="folder of images (searched recursively)")
    score.add_argument("--metrics", help="comma-separated metric names, e.g. clip_score,aesthetic_laion")
    score.add_argument("--prompts", type=Path, help=".jsonl or .csv mapping file -> prompt[, seed]")
    score.add_argument(
        "--config", type=Path, help="YAML/JSON/TOML with a metrics section (models, references)"
    )
    score.add_argument("--out", type=Path, default=Path("scores.jsonl"))
    score.set_defaults(func=_cmd_score)

    schema = sub.add_parser("schema", help="print the config's JSON schema")
    schema.set_defaults(func=_cmd_schema)

    check = sub.add_parser("check-config", help="validate a config file and its prompt files")
    check.add_argument("config", type=Path)
    check.set_defaults(func=_cmd_check_config)

    world = sub.add_parser("build-world", help="build (or find) the cached tiny world and print its folder")
    world.add_argument("--cache-dir", type=Path, default=None)
    world.set_defaults(func=_cmd_build_world)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # sdcallbacks' own INFO lines only: libraries that log INFO on the root logger (open_clip) stay quiet.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("sdcallbacks").setLevel(logging.INFO)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
