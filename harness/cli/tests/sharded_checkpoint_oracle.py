#!/usr/bin/env python3
"""The `safetensors` Python package as the oracle of sharded checkpoints.

Hugging Face checkpoints of large models are a directory of shards plus
model.safetensors.index.json ({"metadata": {"total_size": N}, "weight_map":
{tensor: shard file}}). Two directions, each against code that is not ours:

  python-writes: the weights of a `moe-harness reference` run, written here
    with safetensors.torch.save_file into three shards and a handwritten
    index (json.dumps(indent=2, sort_keys=True), as transformers'
    save_pretrained writes it), in the hub (per-expert, split here in
    Python) and in the fused layout (bf16: a dtype conversion on load). Then
    `moe-harness reference --checkpoint DIR` must load every tensor equal
    (its output model.safetensors holds the loaded fp32 weights) and give the
    same losses as the run from the single file.
  cpp-writes: the harness's writeShardedSafetensors (write_sharded, a test
    driver) writes shards; each must open with safetensors.safe_open, the
    index must be valid for Hugging Face (every tensor mapped once, to the
    shard holding it, shard names model-0000i-of-0000n.safetensors,
    total_size the sum of tensor bytes), and every value must be what the
    driver documents (element i of tensor k is 1000*k + i).

Usage: sharded_checkpoint_oracle.py MOE_HARNESS WRITE_SHARDED CASES_DIR
Exit 77 (a skip) when torch or safetensors is not importable.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
except ImportError as e:  # pragma: no cover - depends on the environment
    print(f"skip: {e}")
    sys.exit(77)


def read_all(path):
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited {p.returncode}:\n{p.stdout}")
    return p.stdout


def to_hub(fused):
    """The per-expert layout, computed here: gate_up_proj [E, 2I, H] holds the
    gate rows first, then the up rows; down_proj is [E, H, I]."""
    out = {}
    for name, t in fused.items():
        if name.endswith(".experts.gate_up_proj"):
            prefix = name[: -len(".gate_up_proj")]
            inter = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"] = t[e, :inter].clone()
                out[f"{prefix}.{e}.up_proj.weight"] = t[e, inter:].clone()
        elif name.endswith(".experts.down_proj"):
            prefix = name[: -len(".down_proj")]
            for e in range(t.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = t[e].clone()
        else:
            out[name] = t
    return out


def save_sharded(tensors, directory, num_shards):
    """Contiguous runs of the sorted names, one save_file per shard."""
    os.makedirs(directory)
    names = sorted(tensors)
    per = -(-len(names) // num_shards)
    weight_map = {}
    for i in range(num_shards):
        part = names[i * per:(i + 1) * per]
        file = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in part}, os.path.join(directory, file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")


def python_writes(harness, config, tmp):
    base = ["reference", "--config", config, "--steps", "2", "--seed", "4"]
    run([harness] + base + ["--out", os.path.join(tmp, "ref")])
    fused = read_all(os.path.join(tmp, "ref", "model.safetensors"))
    with open(os.path.join(tmp, "ref", "losses.json")) as f:
        ref_steps = json.load(f)["steps"]
    variants = {
        "hub_fp32": (to_hub(fused), {k: v for k, v in fused.items()}),
        # bf16 on disk: the harness loads it as fp32 (an exact widening).
        "fused_bf16": ({k: v.to(torch.bfloat16) for k, v in fused.items()},
                       {k: v.to(torch.bfloat16).to(torch.float32) for k, v in fused.items()}),
    }
    for tag, (on_disk, expected) in variants.items():
        d = os.path.join(tmp, tag)
        save_sharded(on_disk, d, num_shards=3)
        shutil.copy(config, os.path.join(d, "config.json"))
        out = os.path.join(tmp, "out_" + tag)
        run([harness] + base + ["--checkpoint", d, "--out", out])
        loaded = read_all(os.path.join(out, "model.safetensors"))
        assert sorted(loaded) == sorted(expected), f"{tag}: names {sorted(set(loaded) ^ set(expected))}"
        for k, v in expected.items():
            assert loaded[k].dtype == torch.float32 and torch.equal(loaded[k], v), f"{tag}: tensor {k} differs"
        if tag == "hub_fp32":
            with open(os.path.join(out, "losses.json")) as f:
                steps = json.load(f)["steps"]
            for s, (a, b) in enumerate(zip(steps, ref_steps)):
                assert a["loss"] == b["loss"], f"{tag}: step {s} loss {a['loss']} vs {b['loss']}"
        print(f"ok python-writes {tag}: {len(expected)} tensors equal")


DRIVER_TENSORS = [  # name, torch dtype, shape: as documented in write_sharded_main.cpp
    ("model.embed_tokens.weight", torch.float32, (6, 8)),
    ("model.norm.weight", torch.bfloat16, (8,)),
    ("model.layers.0.mlp.gate", torch.float16, (4, 8)),
    ("positions", torch.int64, (2, 3)),
    ("lm_head.weight", torch.float32, (64, 8)),
    ("model.layers.0.scale", torch.float64, (3,)),
]


def cpp_writes(write_sharded, tmp):
    expected = {}
    for k, (name, dtype, shape) in enumerate(DRIVER_TENSORS):
        n = 1
        for s in shape:
            n *= s
        expected[name] = (torch.arange(n, dtype=torch.float64) + 1000.0 * k).reshape(shape).to(dtype)
    total = sum(t.numel() * t.element_size() for t in expected.values())
    for limit, want_shards in ((1 << 20, 1), (400, 3), (1, len(DRIVER_TENSORS))):
        d = os.path.join(tmp, f"cpp_{limit}")
        files = run([write_sharded, d, str(limit)]).split()
        assert len(files) == want_shards, f"limit {limit}: {len(files)} shards, expected {want_shards}"
        n = len(files)
        for i, f in enumerate(files):
            assert f == f"model-{i + 1:05d}-of-{n:05d}.safetensors", f"shard name {f}"
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            index = json.load(f)
        assert set(index) == {"metadata", "weight_map"}, index.keys()
        assert index["metadata"]["total_size"] == total, (index["metadata"], total)
        assert sorted(index["weight_map"]) == sorted(expected), index["weight_map"]
        assert set(index["weight_map"].values()) == set(files)
        seen = {}
        for f in files:
            with safe_open(os.path.join(d, f), framework="pt") as h:
                assert h.metadata() == {"format": "pt"}, h.metadata()
                for k in h.keys():
                    assert k not in seen, f"{k} in {seen.get(k)} and {f}"
                    seen[k] = f
                    assert index["weight_map"][k] == f, f"{k}: index says {index['weight_map'][k]}, found in {f}"
                    t = h.get_tensor(k)
                    assert t.dtype == expected[k].dtype and torch.equal(t, expected[k]), f"{k} differs"
        assert sorted(seen) == sorted(expected)
        # The split is greedy in the driver's order.
        order = [seen[name] for name, _, _ in DRIVER_TENSORS]
        assert order == sorted(order), f"limit {limit}: shards out of order {order}"
        print(f"ok cpp-writes limit {limit}: {n} shards, {len(seen)} tensors equal")
    # transformers, when present, agrees on the index (optional: not a dependency).
    try:
        from transformers.utils import hub  # noqa: F401
        files, meta = hub.get_checkpoint_shard_files(os.path.join(tmp, "cpp_400"),
                                                     os.path.join(tmp, "cpp_400", "model.safetensors.index.json"))
        assert [os.path.basename(f) for f in files] == sorted(set(meta["weight_map"].values())), files
        print("ok transformers.utils.hub.get_checkpoint_shard_files reads the index")
    except ImportError:
        print("transformers not importable: its index check skipped")


def main():
    harness, write_sharded, cases = sys.argv[1:4]
    config = os.path.join(cases, "configs", "tiny_moe.json")
    tmp = tempfile.mkdtemp(prefix="moe_sharded_oracle_")
    try:
        cpp_writes(write_sharded, tmp)
        python_writes(harness, config, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
