"""The learning curve of the review loop: test LWLRAP of the retrained BirdNET heads after 0, 25,
50, 100 and 200 answered queries, per query strategy, over seeds, with the time per round.

On a synthetic data set (``rfcxlib.synth.dataset.ensure_dataset(profile, data_seed)``, generated once
and cached), :func:`rfcxlib.review.curve.learning_curve` runs the loop without a person: a
committee of ``--members`` heads proposes, the synthetic truth answers (``synth_calls.csv``), the
committee retrains on the original rows plus the answers, and its test LWLRAP is recorded after
each number of answers. The committee at 0 answers is shared by the strategies of a seed.

Writes a JSON (``--out``, default ``benchmarks/results/review-<profile>.json``: every row, the
summary mean ± std, each strategy against random, the README's headline at ``--headline-at``
answers, the time per round) and the figure (``--figure``, default
``docs/images/review_curve_<profile>.png``). BirdNET's model files: CC BY-NC-SA 4.0.

Usage::

    python benchmarks/bench_review.py --profile mini     # heavy: a quiet machine (about 8 minutes on 2 cores)
    python benchmarks/bench_review.py --profile field
    python benchmarks/bench_review.py --profile tiny --answers 0 3 --seeds 0   # a check, about a minute
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("tiny", "mini", "field")


def run(args) -> dict:
    import pandas as pd

    from rfcxlib.data.tables import load_dataset
    from rfcxlib.embeddings.head_config import HeadConfig
    from rfcxlib.plots import review as review_plots
    from rfcxlib.review import committee, curve, oracle
    from rfcxlib.runner import profiles
    from rfcxlib.atomic import save_figure_atomic, write_json_atomic
    from rfcxlib.synth import dataset as synth

    hop_s = args.embed_hop_s or float(profiles.load_profile(args.profile)["parameters"].get("embed_hop_s", 1.0))
    dataset = load_dataset(synth.ensure_dataset(args.profile, args.data_seed))
    head = HeadConfig(embed_hop_s=hop_s, epochs=args.head_epochs)
    started = time.perf_counter()
    table = committee.embed_for(dataset, head, progress=True)
    embed_s = time.perf_counter() - started
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"review-{args.profile}.json")
    figure = Path(args.figure or ROOT / "docs" / "images" / f"review_curve_{args.profile}.png")
    settings = {"profile": args.profile, "data_seed": args.data_seed, "answers": args.answers, "seeds": args.seeds,
                "strategies": args.strategies, "members": args.members, "per_recording": args.per_recording,
                "head": head.to_dict()}

    def body(rows: pd.DataFrame) -> dict:
        summary = curve.summarise(rows)
        return {**settings, "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "dataset": repr(dataset), "embed_s": round(embed_s, 1),
                "wall_s": round(time.perf_counter() - started, 1), "round_s": round(curve.round_seconds(rows), 2),
                "curve": rows.to_dict("records"), "summary": summary.round(6).to_dict("records"),
                "versus_random": curve.verdicts(summary).to_dict("records"),
                "headline": curve.headline(summary, at=args.headline_at if args.headline_at in args.answers
                                           else max(args.answers))}

    rows = curve.learning_curve(dataset, table, oracle.TruthOracle(dataset.root), strategies=args.strategies,
                                answers=args.answers, seeds=args.seeds, head=head, members=args.members,
                                per_recording=args.per_recording, progress=True,
                                on_row=lambda partial: write_json_atomic(out, body(partial)))
    result = body(rows)
    write_json_atomic(out, result)
    summary = curve.summarise(rows)
    ax = review_plots.learning_curve(summary, title=f"{args.profile}: answered queries ▶ test LWLRAP "
                                                    f"({len(args.seeds)} seed(s), mean ± std)")
    save_figure_atomic(ax.figure, figure)
    result["figure"] = str(figure)
    return result


def report(result: dict) -> str:
    lines = [f"{result['dataset']}; committee of {result['members']} heads; {len(result['seeds'])} seed(s)",
             f"{'strategy':>13} {'answers':>7} {'test LWLRAP':>17} {'present':>8} {'s/round':>8}"]
    for r in result["summary"]:
        lines.append(f"{r['strategy']:>13} {r['answers']:>7} {r['test_lwlrap_mean']:>9.4f} ± {r['test_lwlrap_std']:.4f} "
                     f"{r['present_mean']:>8.1f} {r['round_s_mean']:>8.1f}")
    for v in result["versus_random"]:
        verdict = {True: "better than random", False: "no better than random", None: "one seed: no verdict"}[v["better"]]
        lines.append(f"{v['strategy']} at {v['answers']} answers: {v['minus_random']:+.4f} against random ({verdict})")
    h = result["headline"]
    lines.append(f"headline at {h['answers']} answers: best {h['best_strategy']} {h['best']}, random {h['random']}, "
                 f"none {h['none']}; {result['round_s']:.1f} s per round; figure {result.get('figure', '')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="mini", choices=PROFILES)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--answers", type=int, nargs="+", default=[0, 25, 50, 100, 200])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=["uncertainty", "disagreement", "random"])
    p.add_argument("--members", type=int, default=3, help="heads in the committee")
    p.add_argument("--per-recording", type=int, default=1)
    p.add_argument("--head-epochs", type=int, default=60)
    p.add_argument("--embed-hop-s", type=float, default=0.0, help="0: the profile's embed_hop_s")
    p.add_argument("--headline-at", type=int, default=100, help="answers of the README's headline")
    p.add_argument("--out", default="", help="JSON (default benchmarks/results/review-<profile>.json)")
    p.add_argument("--figure", default="", help="PNG (default docs/images/review_curve_<profile>.png)")
    args = p.parse_args(argv)
    result = run(args)
    print(report(result))
    print(f"wrote {args.out or ROOT / 'benchmarks' / 'results' / f'review-{args.profile}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
