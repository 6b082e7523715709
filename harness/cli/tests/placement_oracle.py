#!/usr/bin/env python3
"""Upstream PyTorch as the placement oracle (issue 16 point 7).

For every placement combination the harness declares, upstream
torch.distributed.tensor (the torch of the project's .venv) computes each
rank's local tensor, and the harness's `moe-harness layout --json` (the layout
its loaders slice with, computeLayout) must agree on
  - the rank's mesh coordinates (row-major mesh, last dim fastest),
  - the local shape (distribute_tensor's local tensor and
    compute_local_shape_and_global_offset),
  - the global offset per dim (compute_local_shape_and_global_offset: the
    first local element's global index; an empty piece's is the dim's size),
  - the decisive one: the global flat indices of the local elements, in local
    order. Upstream gets them by distributing arange(numel).reshape(shape):
    each local value IS its global flat index. Strided layouts are not
    blocks, so shapes and offsets alone would not see a wrong block order.

Upstream runs on a fake process group (torch.testing._internal.distributed.
fake_pg), one init per rank, with distribute_tensor(..., src_data_rank=None):
"skip the communications, simply split" (torch/distributed/tensor/_api.py),
i.e. each placement's own _split_tensor applied in mesh-dim order. No
collective runs.

Compared:
  - the explicit combinations in COMBINATIONS (uneven Shard with empty
    trailing pieces, Shard composed over several mesh dims, negative dims,
    StridedShard on the fused gate_up_proj [E, 2I, H] with split factor 2
    (tp 2/3/4, with uneven and empty pieces inside the blocks), and the
    FSDP-over-EP composition [StridedShard(0, S), Shard(0)] as the fsdp
    store writes it, even and with uneven FSDP pieces);
  - every parameter of every plan of the shipped cases (cases/*.json, their
    named plans in cases/plans and models in cases/configs) on each case's
    mesh, through `moe-harness layout --case`.
Mapped: Partial(sum|avg) is laid out like Replicate() (the whole shape on
  every rank; it is a pending reduction, not a layout). distribute_tensor
  would partition the VALUES, so the oracle distributes Replicate() there.
Excluded (EXCLUDED below): StridedShard whose dim length is not divisible by
  its split factor. Upstream's meaning of uneven _StridedShard is disputed
  (pytorch#168134: torch.chunk blocks vs the right-to-left sharding it is
  meant to express); the harness refuses such a placement (docs/styles.md
  "Placements"). The oracle checks that the harness refuses each of them
  with its message, and prints what upstream would do.

Usage: placement_oracle.py MOE_HARNESS CASES_DIR [--mutant NAME --expect-mismatch]
Exit 0 = agree (or, with --expect-mismatch, the planted bug was found),
1 = disagree (or a planted bug went unnoticed), 77 = skipped (no torch).
"""
import argparse, json, os, subprocess, sys

try:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    from torch.distributed.tensor.placement_types import _StridedShard
    from torch.testing._internal.distributed.fake_pg import FakeStore
except Exception as e:  # pragma: no cover
    print(f"SKIP: python torch.distributed.tensor unavailable: {e}")
    sys.exit(77)

torch.set_num_threads(1)

# (mesh, placements in the harness's text form, shape, what it covers)
COMBINATIONS = [
    ("tp=4", "[Shard(0)]", "9,3", "uneven Shard: 3, 3, 3, 0 (empty trailing piece)"),
    ("tp=4", "[Shard(0)]", "10,2", "uneven Shard: 3, 3, 3, 1"),
    ("tp=4", "[Shard(1)]", "3,2", "more ranks than columns: 1, 1, 0, 0"),
    ("ep=3", "[Shard(0)]", "2,4,3", "experts over ep=3: 1, 1, 0"),
    ("tp=3", "[Shard(-1)]", "4,5", "negative dim: 2, 2, 1"),
    ("dp=1", "[Shard(0)]", "4", "world size 1"),
    ("dp=2,ep=4", "[Shard(0), Shard(0)]", "5", "Shard of Shard, empty piece inside a non-empty one"),
    ("dp=2,ep=2", "[Shard(0), Shard(0)]", "5,4", "fsdp dense rows over dp x ep: 2, 1, 1, 1"),
    ("dp=2,tp=2", "[Shard(0), Shard(1)]", "5,3", "2-d blocks, uneven on both dims"),
    ("dp=2,tp=2", "[Replicate(), Shard(1)]", "3,5", "Replicate on the outer dim"),
    ("tp=2", "[Partial(sum)]", "3,2", "Partial: the whole shape on every rank"),
    ("tp=2", "[StridedShard(-2, 2)]", "8,32,32", "gate_up [E, 2I, H] under moe_tp, tp=2"),
    ("tp=3", "[StridedShard(-2, 2)]", "8,36,32", "gate_up under moe_tp, tp=3"),
    ("tp=4", "[StridedShard(1, 2)]", "2,6,3", "blocks of 3 over 4 ranks: 1, 1, 1, 0 per block"),
    ("tp=3", "[StridedShard(1, 2)]", "2,8,3", "blocks of 4 over 3 ranks: 2, 2, 0 per block"),
    ("tp=2", "[StridedShard(0, 3)]", "6,2", "split factor 3"),
    ("ep=2,tp=2", "[Shard(0), StridedShard(-2, 2)]", "8,32,32", "gate_up under ep_tp"),
    ("ep=2,tp=2", "[Shard(0), Shard(-1)]", "8,32,16", "down_proj under ep_tp"),
    ("dp=2,ep=2", "[StridedShard(0, 2), Shard(0)]", "8,6,4", "FSDP over EP (docs example)"),
    ("edp=2,ep=2", "[StridedShard(0, 2), Shard(0)]", "8,32,32", "FSDP over EP, ep2_edp2_fsdp experts"),
    ("dp=2,ep=3", "[StridedShard(0, 3), Shard(0)]", "6,4,2", "FSDP over ep=3"),
    ("dp=3,ep=2", "[StridedShard(0, 2), Shard(0)]", "4,2", "FSDP pieces uneven: 1, 1, 0 per ep block"),
    ("dp=2,ep=2,tp=2", "[StridedShard(0, 2), Shard(0), StridedShard(-2, 2)]", "8,32,32",
     "FSDP over ep_tp gate_up"),
]

# Harness refuses (length % split factor != 0); upstream is disputed.
EXCLUDED = [
    ("tp=2", "[StridedShard(1, 2)]", "2,5,3", "uneven StridedShard blocks (pytorch#168134)"),
    ("dp=2,ep=2", "[StridedShard(0, 2), Shard(0)]", "5,3", "FSDP over EP with uneven ep pieces (pytorch#168134)"),
]


def upstream_placement(text, ndim):
    text = text.strip()
    head, args = text[: text.index("(")], text[text.index("(") + 1 : -1]
    args = [a.strip() for a in args.split(",") if a.strip()]
    if head == "Replicate" or head == "Partial":
        return Replicate()
    dim = int(args[0])
    dim = dim + ndim if dim < 0 else dim
    if head == "Shard":
        return Shard(dim)
    if head == "StridedShard":
        return _StridedShard(dim, split_factor=int(args[1]))
    raise ValueError(f"unknown placement {text}")


def split_top_level(text):
    text = text.strip()
    if text.startswith("["):
        text = text[1:-1]
    out, depth, cur = [], 0, ""
    for c in text:
        depth += c == "("
        depth -= c == ")"
        if c == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += c
    return [p for p in (s.strip() for s in out + [cur]) if p]


def runs_of(indices):
    runs = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return runs


def expand(runs):
    return [s + k for s, n in runs for k in range(n)]


class Oracle:
    def __init__(self):
        self.compared = 0  # (tensor, rank) pairs
        self.tensors = 0
        self.mismatches = []

    def check_layout(self, source, mesh, entries):
        """mesh: [(name, size)]; entries: the harness's tensor JSON objects."""
        names = tuple(n for n, _ in mesh)
        sizes = tuple(s for _, s in mesh)
        world = 1
        for s in sizes:
            world *= s
        for rank in range(world):
            dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world)
            try:
                dmesh = init_device_mesh("cpu", sizes, mesh_dim_names=names)
                coord = list(dmesh.get_coordinate())
                for t in entries:
                    self.check_rank(source, mesh, dmesh, coord, rank, t)
            finally:
                dist.destroy_process_group()
        self.tensors += len(entries)

    def check_rank(self, source, mesh, dmesh, coord, rank, t):
        shape = tuple(t["shape"])
        pl = [upstream_placement(p, len(shape)) for p in split_top_level(t["placements"])]
        mine = t["ranks"][rank]
        where = (f"{source}: {t['param']} {list(shape)} {t['placements']} on "
                 f"{','.join(f'{n}={s}' for n, s in mesh)}, rank {rank} {coord}")
        self.compared += 1
        problems = []
        if mine["coords"] != coord:
            problems.append(f"mesh coords {mine['coords']} vs upstream {coord}")
        numel = 1
        for s in shape:
            numel *= s
        full = torch.arange(numel, dtype=torch.int64).reshape(shape)
        local = distribute_tensor(full, dmesh, pl, src_data_rank=None).to_local()
        up_shape, up_offset = compute_local_shape_and_global_offset(shape, dmesh, pl)
        if tuple(local.shape) != tuple(up_shape):  # upstream against itself
            problems.append(f"upstream disagrees with itself: local tensor {list(local.shape)} vs "
                            f"compute_local_shape_and_global_offset {list(up_shape)}")
        if mine["local_shape"] != list(local.shape):
            problems.append(f"local shape {mine['local_shape']} vs upstream {list(local.shape)}")
        if mine["offsets"] != list(up_offset):
            problems.append(f"global offset {mine['offsets']} vs upstream {list(up_offset)}"
                            + ("" if mine["box"] else " (first element; not a box)"))
        want = local.reshape(-1).tolist()
        got = expand(mine["index_runs"])
        if got != want:
            if sorted(got) == sorted(want):
                what = "the same elements in a different order"
            else:
                extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
                what = (f"{len(extra)} elements upstream does not place here (first {extra[:4]}), "
                        f"{len(missing)} missing (first {missing[:4]})")
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            problems.append(f"elements differ: {what}; local element {first} is global flat "
                            f"{got[first] if first < len(got) else '-'} vs upstream "
                            f"{want[first] if first < len(want) else '-'}; harness runs "
                            f"{mine['index_runs'][:4]} vs upstream {runs_of(want)[:4]}")
        for p in problems:
            self.mismatches.append(f"{where}: {p}")


def harness_json(harness, args):
    r = subprocess.run([harness, "layout", "--json"] + args, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"moe-harness layout {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def mesh_of(layout):
    return [(k, v) for k, v in layout["mesh"].items()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("harness")
    ap.add_argument("cases")
    ap.add_argument("--mutant", default="")
    ap.add_argument("--expect-mismatch", action="store_true",
                    help="succeed only when the oracle reports a mismatch (a planted bug was caught)")
    a = ap.parse_args()
    extra = ["--mutant", a.mutant] if a.mutant else []
    oracle = Oracle()

    for mesh, placements, shape, _ in COMBINATIONS:
        doc = harness_json(a.harness, ["--mesh", mesh, "--placements", placements, "--shape", shape] + extra)
        for layout in doc["layouts"]:
            oracle.check_layout("combination", mesh_of(layout), layout["tensors"])
    explicit = oracle.tensors

    doc = harness_json(a.harness, ["--case", a.cases] + extra)
    # Dedupe identical (mesh, shape, placements) across runs: upstream is
    # computed once for each.
    by_mesh = {}
    # The check builds a tensor of global flat indices per parameter: for the
    # realistic-width nightly config (experts.gate_up_proj [128, 1536, 2048],
    # 403M elements, 3.2 GB of int64 per rank view) that runs this machine out
    # of memory. Its placements are the same styles on the same meshes as the
    # tiny cases', so tensors over 2**26 elements are left out and counted.
    too_big = 0
    for layout in doc["layouts"]:
        key = tuple(mesh_of(layout))
        seen = by_mesh.setdefault(key, {})
        for t in layout["tensors"]:
            numel = 1
            for d in t["shape"]:
                numel *= d
            if numel > 2 ** 26:
                too_big += 1
                continue
            k = (tuple(t["shape"]), t["placements"], t["layout_placements"])
            seen.setdefault(k, dict(t, param=f"{t['param']} ({layout['source']})"))
    for mesh, tensors in by_mesh.items():
        oracle.check_layout("case", list(mesh), list(tensors.values()))
    runs = len(doc["layouts"])
    params = sum(len(l["tensors"]) for l in doc["layouts"])

    print(f"placement oracle: torch {torch.__version__}, upstream torch.distributed.tensor on a fake process group")
    print(f"compared: {explicit} explicit combinations + {oracle.tensors - explicit} distinct "
          f"(mesh, shape, placements) of {params} parameters in {runs} distinct case runs; "
          f"{oracle.compared} (tensor, rank) layouts: coords, local shape, offset, flat element indices")
    print("mapped: Partial(sum|avg) is compared as Replicate() (a pending reduction has the whole shape)")
    if too_big:
        print(f"left out: {too_big} case tensors of more than 2**26 elements (the realistic-width config)")

    refusals = []
    if not a.mutant:
        for mesh, placements, shape, why in EXCLUDED:
            r = subprocess.run([a.harness, "layout", "--json", "--mesh", mesh, "--placements", placements,
                                "--shape", shape], capture_output=True, text=True, timeout=120)
            ok = r.returncode == 2 and "not divisible into" in r.stderr
            print(f"excluded: {mesh} {placements} {shape}: {why}; harness "
                  f"{'refuses it' if ok else 'DID NOT refuse it (exit %d)' % r.returncode}")
            if not ok:
                refusals.append(f"{mesh} {placements} {shape}: the harness should refuse it "
                                f"(exit {r.returncode}: {r.stderr.strip() or r.stdout[:200]})")

    if a.mutant:
        print(f"mutant: {a.mutant}")
    for m in oracle.mismatches[:12]:
        print("MISMATCH " + m)
    if len(oracle.mismatches) > 12:
        print(f"... {len(oracle.mismatches) - 12} more mismatches")
    for r in refusals:
        print("MISMATCH " + r)
    bad = len(oracle.mismatches) + len(refusals)
    if a.expect_mismatch:
        if bad:
            print(f"OK: the oracle caught the planted bug ({bad} mismatches)")
            return 0
        print("FAIL: a planted bug went unnoticed: the harness and upstream agree")
        return 1
    print("OK: the harness's layouts agree with upstream DTensor" if not bad else f"FAIL: {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
