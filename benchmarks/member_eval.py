"""What each network of stored ensemble fold models scores on its held-out fold, and what some of them score averaged.

    python benchmarks/member_eval.py /tmp/esc-bench/models/bench-default-fold{1,2,3,4,5}.pt --average 1 2

Feeds each model its held-out fold of the shared 16 kHz ESC-50 copy (see common.py) and prints, per model, each
member's accuracy alone, the accuracy of the members given to --average (1-based; averaged as the ensemble
averages them, or as --mean says), and the whole ensemble's; then the means over the models. Round 17 used it to
separate what the default's texture network adds from what its two CNNs score by themselves in the same run, and
round 18 to score stored ensembles with the other mean (`--mean geometric`). Members are scored without the
test-time shifts a recipe may put around the ensemble, unless --member-shifts: then each member is scored on its
own over copies moved by the recipe's test shifts, or by the bins given (models.ShiftAverage around each member,
not around their mean; round 19, the fast preset's CNN and texture network: `--member-shifts` on its candidate's
models, `--member-shifts -2 -1 0 1 2` on today's, which have none). The last figure of each line, "as trained",
is the ensemble's own recorded score (its shifts, if any, around the mean).
"""

import argparse

import torch
from common import fold_model, held_out, held_out_modulation

from esccli.models import ENSEMBLE_MEANS, apply_net, log_mean_probability, with_test_shifts, without_test_shifts


def member_accuracies(ensemble, x, y, average: list[int], mean=log_mean_probability,
                      shifts=(0,), modulation=None) -> tuple[list[float], float, float]:
    """Each member's accuracy alone, that of the `average` members (1-based) averaged by `mean` (a function of
    the members' outputs: models.ENSEMBLE_MEANS), and that of all of them averaged alike, each member counted with
    its weight in the ensemble; each member scored over copies of x moved by `shifts` mel bins
    (models.with_test_shifts), given the clips' `modulation` statistics if it hears them."""
    with torch.no_grad():
        outs = [apply_net(with_test_shifts(m.eval(), shifts), x, modulation) for m in ensemble.members]
    weights = getattr(ensemble, "weights", None) or [1.0] * len(outs)
    acc = lambda logits: float((logits.argmax(1) == y).float().mean())  # noqa: E731
    return ([acc(o) for o in outs], acc(mean([outs[k - 1] for k in average], [weights[k - 1] for k in average])),
            acc(mean(outs, weights)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--average", type=int, nargs="+", default=[1, 2], metavar="K",
                    help="the members (1-based) to average [default: 1 2]")
    ap.add_argument("--mean", choices=list(ENSEMBLE_MEANS),
                    help="how to average members [default: as each ensemble does (its recipe's ensemble_mean)]")
    ap.add_argument("--member-shifts", nargs="*", type=int, metavar="BINS",
                    help="score each member over copies moved by these many mel bins (around each member, not their "
                         "mean) [with no value: the recipe's test shifts]")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for path in args.models:
        lm, fold = fold_model(path)
        net = without_test_shifts(lm.model)
        if not hasattr(net, "members"):
            raise SystemExit(f"{path} is not an ensemble: it has no members to score apart")
        if not all(1 <= k <= len(net.members) for k in args.average):
            raise SystemExit(f"{path} has {len(net.members)} members: --average takes 1 … {len(net.members)}")
        mean = ENSEMBLE_MEANS[args.mean] if args.mean else net.mean
        shifts = [0] if args.member_shifts is None else args.member_shifts or lm.meta["train"]["recipe"].get(
            "test_shifts", [0])
        if args.member_shifts == [] and list(shifts) == [0]:
            print(f"{path}: its recipe has no test shifts: members scored on the clips as they are "
                  "(--member-shifts -2 -1 0 1 2 names some)")
        alone, some, whole = member_accuracies(net, *held_out(lm, fold), args.average, mean, shifts,
                                               held_out_modulation(lm, fold))
        trained = lm.meta["train"]["metrics"]["val_acc"]
        rows.append((alone, some, whole, trained))
        print(f"{path}: fold {fold}: members alone " + ", ".join(f"{a:.2%}" for a in alone)
              + f"; members {' + '.join(map(str, args.average))} averaged {some:.2%}; all {whole:.2%}"
              + f"; as trained {trained:.2%}")
    if len(rows) > 1 and len({len(r[0]) for r in rows}) == 1:
        n = len(rows)
        print(f"mean over {n} models: members alone "
              + ", ".join(f"{sum(r[0][k] for r in rows) / n:.2%}" for k in range(len(rows[0][0])))
              + f"; members averaged {sum(r[1] for r in rows) / n:.2%}; all {sum(r[2] for r in rows) / n:.2%}"
              + f"; as trained {sum(r[3] for r in rows) / n:.2%}")


if __name__ == "__main__":
    main()
