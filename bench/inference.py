"""Ensemble inference time: K separate members against one Shared-MotherNet (Appendix C, Figure B).

For each spec: compile it (g = 1 unless --clusters), give the MotherNet random weights (with
random BatchNorm statistics), hatch every member from it, build the Shared-MotherNet from the
hatched members, check that it reproduces them, then time `TrainedEnsemble.predict_proba`
(the mean of the K softmax outputs) on random inputs for both: median of --repeats timed
passes after --warmup untimed ones, in eval mode, no grad, on the CPU. Prints seconds per
example, the speedup, parameter counts and forward MACs, and the command to repeat it.

    python bench/inference.py                      # examples/v5.mnet and examples/mnist1d.mnet
    python bench/inference.py --spec examples/mlp.mnet --batch 256 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mncompile.api import load
from mncompile.compiler import compile_ensemble
from mncompile.passes.share_plan import Refusal
from mncompile.runtime import TrainedEnsemble, build_shared, hatch, load_shared_module, verify_shared
from mncompile.runtime.folder import load_folder
from mncompile.runtime.shared import param_counts
from mncompile.shapes import infer_net
from mncompile.table import human, render
from mncompile.writer import write_folder

ROOT = Path(__file__).resolve().parent.parent


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random weights and BatchNorm statistics, so that BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)


def time_predict(ens: TrainedEnsemble, x: torch.Tensor, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        ens.predict_proba(x, batch_size=len(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ens.predict_proba(x, batch_size=len(x))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_spec(spec: Path, args: argparse.Namespace) -> list[object]:
    e = load(spec)
    out = compile_ensemble(e, clusters=args.clusters, source_name=spec.name)
    refused = [f"{m}: {sp.reason}" for m, sp in out.shares.items() if isinstance(sp, Refusal)]
    for line in refused:
        print(f"{spec.name}: cluster {line}: its members stay separate in both ensembles")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gen"
        write_folder(folder, out.files)
        models, plan, tables = load_folder(folder)
        shared_classes = load_shared_module(folder).SHARED if (folder / "shared.py").is_file() else {}
        torch.manual_seed(args.seed)
        members: dict[str, torch.nn.Module] = {}
        alone: dict[str, torch.nn.Module] = {}
        shared: list[torch.nn.Module] = []
        counts = []
        diff = 0.0
        x_check = torch.randn(8, *plan.input)
        for c in plan.clusters:
            mother_name = c.mother.name
            if len(c.members) == 1:
                # a cluster of one net: trained alone, nothing to share
                net = models.MODELS[c.members[0]]()
                randomise(net, args.seed)
                members[c.members[0]] = alone[c.members[0]] = net.eval()
                continue
            mother = models.MODELS[mother_name]()
            randomise(mother, args.seed)
            hatched = {}
            for m in c.members:
                net = models.MODELS[m]()
                net.load_state_dict(hatch(mother, tables[m]))
                hatched[m] = net.eval()
            members.update(hatched)
            if mother_name not in shared_classes:
                alone.update(hatched)
                continue
            s = build_shared(shared_classes[mother_name], hatched).eval()
            diff = max(diff, verify_shared(s, hatched, x_check))
            counts.append(param_counts(s, hatched, mother))
            shared.append(s)
    if not shared:
        raise SystemExit(f"{spec}: no cluster is shared at this g: nothing to compare")
    names = list(plan.member_names)
    separate = TrainedEnsemble(names, {m: members[m] for m in names})
    one = TrainedEnsemble(names, alone, shared)
    macs = sum(infer_net(n, e.input, e.classes).macs for n in e.nets)
    alone_params = sum(p.numel() for m in alone.values() for p in m.parameters())
    total = sum(c["members_params"] for c in counts) + alone_params
    own = sum(c["shared_params"] for c in counts) + alone_params
    paper = sum(c["paper_saving"] for c in counts)
    chi = 1 - sum(c["members"] * c["mother_params"] for c in counts) / (total - alone_params)
    print(f"{spec.name}: {len(names)} members, g = {len(plan.clusters)}, {len(shared)} shared; the shared "
          f"models reproduce the hatched members to {diff:.2g} (max |logit difference|)")
    print(f"  parameters: separate {human(total)}, shared {human(own)} (saves {human(total - own)}; "
          f"the paper's (K-1)|M| = {human(paper)}, chi = {chi:.3f}); separate {human(macs)} MACs/example")
    rows = []
    for batch in args.batch:
        x = torch.randn(batch, *plan.input)
        agree = float((separate.predict_proba(x) - one.predict_proba(x)).abs().max())
        t_sep = time_predict(separate, x, args.warmup, args.repeats)
        t_sh = time_predict(one, x, args.warmup, args.repeats)
        print(f"  batch {batch}: separate {t_sep / batch * 1e3:.4f} ms/example, "
              f"shared {t_sh / batch * 1e3:.4f} ms/example: {t_sep / t_sh:.2f}x "
              f"(probabilities agree to {agree:.2g})")
        rows.append([spec.name, len(names), batch, human(total), human(own), f"{t_sep / batch * 1e3:.4f}",
                     f"{t_sh / batch * 1e3:.4f}", f"{t_sep / t_sh:.2f}x"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", action="append", type=Path,
                   help="spec to time (repeatable; default examples/v5.mnet and examples/mnist1d.mnet)")
    p.add_argument("--clusters", "-g", type=int, default=None,
                   help="number of MotherNets (default: one per architecture class)")
    p.add_argument("--batch", type=int, action="append",
                   help="examples per timed pass (repeatable; default 1 and 64)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes first (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = args.spec or [ROOT / "examples" / "v5.mnet", ROOT / "examples" / "mnist1d.mnet"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; random weights "
          f"(timing only); median of {args.repeats} passes after {args.warmup} untimed")
    args.batch = args.batch or [1, 64]
    rows = [row for s in specs for row in bench_spec(s, args)]
    print()
    print(render(["spec", "K", "batch", "params separate", "params shared", "ms/example separate",
                  "ms/example shared", "speedup"], rows))
    print("\nrepeat: python bench/inference.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
