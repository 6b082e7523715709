#!/usr/bin/env python3
"""The consolidated Hugging Face checkpoint layout (issue 19) against two
independent loaders.

Runs a case that saves in the consolidated layout (default
dp2_ep2_save_hf_resume: 4 ranks save at step K = 2 with `--save-format hf`,
2 ranks resume under tp=2; --case picks another, e.g. one per model family),
then takes the checkpoint the saving job wrote and checks that:
 1. `moe-harness reference --checkpoint CKPT --first-step K+1 --steps 1`
    (the harness's single-device reference, reading the per-expert hub keys
    through its own loader) gives the loss the saving run had at step K+1:
    the loss of the weights at K on the batch of step K+1;
 2. Hugging Face's `from_pretrained(CKPT)` loads it with no missing,
    unexpected or mismatched keys, and its forward pass on that batch gives
    the same loss.
Both within the case's fp32 loss tolerance (1e-5).

--plant swap_experts exchanges experts 0 and 1 of the first MoE layer in the
checkpoint's model file (what a saver writing experts under the wrong index
produces) and requires both loaders to see a different loss: exit 0 when
caught, 1 when the planted bug went unnoticed.

Usage: hf_checkpoint_oracle.py MOE_HARNESS CASES_DIR [--case NAME] [--plant swap_experts]
Exit 0 = pass, 1 = fail, 77 = skipped (no torch/transformers).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile

try:
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
except Exception as e:  # pragma: no cover
    print(f"SKIP: torch/transformers/safetensors unavailable in this python: {e}")
    sys.exit(77)

torch.set_num_threads(1)
LOSS_ABS = 1e-5  # the cases' fp32 loss tolerance


def swap_experts(ckpt):
    """Swaps experts 0 and 1 of the first MoE layer's per-expert keys."""
    path = os.path.join(ckpt, "model.safetensors")
    t = load_file(path)
    prefix = None
    for k in sorted(t):
        if ".experts.0." in k:
            prefix = k.split(".experts.0.")[0] + ".experts."
            break
    if prefix is None:
        raise SystemExit("no per-expert key 'experts.0.' in the checkpoint: the hub layout is missing")
    n = 0
    for k in list(t):
        if k.startswith(prefix + "0."):
            other = prefix + "1." + k[len(prefix) + 2:]
            t[k], t[other] = t[other], t[k]
            n += 1
    save_file(t, path, metadata={"format": "pt"})
    print(f"planted: swapped {n} tensors of {prefix}0 and {prefix}1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tool")
    ap.add_argument("cases")
    ap.add_argument("--case", default="dp2_ep2_save_hf_resume")
    ap.add_argument("--plant", choices=["swap_experts"])
    a = ap.parse_args()
    CASE, RUN_ID = a.case, a.case + ".fp32"
    work = tempfile.mkdtemp(prefix="hf_ckpt_oracle_")
    try:
        report = os.path.join(work, "report")
        r = subprocess.run([a.tool, "run", os.path.join(a.cases, CASE + ".json"), "--report", report],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-4000:] + r.stderr[-4000:])
            print(f"FAIL: the case {CASE} did not pass (exit {r.returncode})")
            return 1
        run_dir = os.path.join(report, "runs", RUN_ID)
        ckpt = os.path.join(run_dir, "checkpoint")
        saved = json.load(open(os.path.join(run_dir, "save_result.json")))
        state = json.load(open(os.path.join(ckpt, "trainer_state.json")))
        k = state["info"]["step"]
        position = state["info"]["data_position"]
        if position != k + 1:
            print(f"FAIL: trainer_state.json data_position {position}, expected step {k} + 1")
            return 1
        run_loss = next(s["loss"] for s in saved["steps"] if s["step"] == position)
        files = sorted(os.listdir(ckpt))
        print(f"checkpoint of step {k}: {files}; the saving run's loss at step {position}: {run_loss!r}")
        if a.plant:
            swap_experts(ckpt)

        # 1. The harness's reference.
        out = os.path.join(work, "reference")
        r = subprocess.run([a.tool, "reference", "--config", os.path.join(ckpt, "config.json"), "--checkpoint", ckpt,
                            "--first-step", str(position), "--steps", "1", "--dtype", "fp32",
                            "--seed", str(state["info"]["seed"]), "--batch-size", str(state["info"]["batch_size"]),
                            "--seq-len", str(state["info"]["seq_len"]), "--out", out],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            print(f"FAIL: moe-harness reference exited {r.returncode}")
            return 1
        rec = json.load(open(os.path.join(out, "losses.json")))["steps"][0]
        ids = load_file(os.path.join(out, "batches.safetensors"))[f"step_{position}"]
        ref_diff = abs(rec["loss"] - run_loss)
        print(f"reference from the checkpoint: step {rec['step']} loss {rec['loss']!r} (|diff| {ref_diff:.3g})")

        # 2. Hugging Face.
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            ckpt, output_loading_info=True, dtype=torch.float32)
        bad = {key: v for key, v in info.items() if v}
        print(f"from_pretrained: {type(model).__name__}, loading info {info}")
        model.train()  # as hf_oracle.py: dropout is 0; the aux term is in the loss as in training
        with torch.no_grad():
            o = model(input_ids=ids, labels=ids, output_router_logits=True)
        hf_loss = o.loss.float().item()
        hf_diff = abs(hf_loss - run_loss)
        print(f"Hugging Face from the checkpoint: loss {hf_loss!r} (|diff| {hf_diff:.3g})")

        ok = not bad and ref_diff <= LOSS_ABS and hf_diff <= LOSS_ABS
        if a.plant:
            caught = ref_diff > LOSS_ABS and hf_diff > LOSS_ABS
            print("PASS: the planted swap changes both losses" if caught
                  else "FAIL: the planted expert swap went unnoticed by a loader")
            return 0 if caught else 1
        if bad:
            print(f"FAIL: from_pretrained reported {bad}")
        if not ok:
            print(f"FAIL: a loss differs from the saving run's by more than {LOSS_ABS}")
            return 1
        print("PASS")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
