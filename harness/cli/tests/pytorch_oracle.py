#!/usr/bin/env python3
"""Independent oracle for the reference model: a pure-PyTorch re-implementation
of Hugging Face Qwen3-MoE (written from the HF semantics, not from our C++),
torch.optim.AdamW and torch.nn.utils.clip_grad_norm_.

It runs the C++ `reference` driver for a few configs (fp32, 2 steps), reads its
files and recomputes step 1 (loss, CE, aux, grad norm, every gradient) and the
parameters after step 2. Exit 0 = agree, 1 = disagree, 77 = skipped (no torch).
"""
import json, math, os, struct, subprocess, sys, tempfile

try:
    import torch
    import torch.nn.functional as F
except Exception as e:  # pragma: no cover
    print(f"SKIP: python3 torch unavailable: {e}")
    sys.exit(77)

torch.set_num_threads(1)
DT = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:end]), dtype=DT[e["dtype"]]) if end > b else torch.empty(0, dtype=DT[e["dtype"]])
        out[name] = t.reshape(e["shape"]).clone()
    return out


def rms_norm(x, w, eps):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def top_k_lower_index(p, k):
    # descending, stable: equal probabilities keep ascending expert order
    return torch.sort(p, dim=-1, descending=True, stable=True)[1][:, :k]


def swiglu(x, g, u, d):
    return F.linear(F.silu(F.linear(x, g)) * F.linear(x, u), d)


def is_moe(c, i):
    return c["num_experts"] > 0 and i not in c["mlp_only_layers"] and (i + 1) % c["decoder_sparse_step"] == 0


def forward(c, P, ids):
    B, S = ids.shape
    H, D = c["hidden_size"], c["head_dim"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    h = P["model.embed_tokens.weight"][ids]
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    fr = torch.arange(S).float()[:, None] * inv[None, :]
    emb = torch.cat((fr, fr), -1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((S, S), float("-inf")).triu(1)
    router_logits = []
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, P[p + "input_layernorm.weight"], c["rms_norm_eps"])
        q = rms_norm(F.linear(x, P[p + "self_attn.q_proj.weight"]).view(B, S, nh, D), P[p + "self_attn.q_norm.weight"], c["rms_norm_eps"]).transpose(1, 2)
        k = rms_norm(F.linear(x, P[p + "self_attn.k_proj.weight"]).view(B, S, nkv, D), P[p + "self_attn.k_norm.weight"], c["rms_norm_eps"]).transpose(1, 2)
        v = F.linear(x, P[p + "self_attn.v_proj.weight"]).view(B, S, nkv, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        a = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(D) + mask, dim=-1, dtype=torch.float32).to(q.dtype)
        h = h + F.linear((a @ v).transpose(1, 2).reshape(B, S, nh * D), P[p + "self_attn.o_proj.weight"])
        x = rms_norm(h, P[p + "post_attention_layernorm.weight"], c["rms_norm_eps"]).view(B * S, H)
        if is_moe(c, i):
            logits = F.linear(x, P[p + "mlp.gate.weight"])
            router_logits.append(logits)
            probs = torch.softmax(logits, dim=-1, dtype=torch.float)
            sel = top_k_lower_index(probs.detach(), c["num_experts_per_tok"])
            w = probs.gather(1, sel)
            if c["norm_topk_prob"]:
                w = w / w.sum(-1, keepdim=True)
            w = w.to(x.dtype)
            gu, dn = P[p + "mlp.experts.gate_up_proj"], P[p + "mlp.experts.down_proj"]
            I = dn.shape[2]
            out = torch.zeros_like(x)
            for e in range(c["num_experts"]):
                tok, slot = torch.where(sel == e)
                if tok.numel() == 0:
                    continue
                y = swiglu(x[tok], gu[e][:I], gu[e][I:], dn[e]) * w[tok, slot, None]
                out = out.index_add(0, tok, y)
            if c.get("shared_expert_intermediate_size", 0) > 0:
                s = p + "mlp.shared_expert."
                out = out + torch.sigmoid(F.linear(x, P[p + "mlp.shared_expert_gate.weight"])) * swiglu(
                    x, P[s + "gate_proj.weight"], P[s + "up_proj.weight"], P[s + "down_proj.weight"])
        else:
            out = swiglu(x, P[p + "mlp.gate_proj.weight"], P[p + "mlp.up_proj.weight"], P[p + "mlp.down_proj.weight"])
        h = h + out.view(B, S, H)
    h = rms_norm(h, P["model.norm.weight"], c["rms_norm_eps"])
    head = P["model.embed_tokens.weight"] if c["tie_word_embeddings"] else P["lm_head.weight"]
    logits = F.linear(h, head).float()
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    # HF load_balancing_loss_func
    if router_logits:
        E, k = c["num_experts"], c["num_experts_per_tok"]
        rw = torch.softmax(torch.cat(router_logits, 0).float(), dim=-1)
        sel = top_k_lower_index(rw.detach(), k)
        mask_ = F.one_hot(sel, E).float()
        aux = torch.sum(mask_.mean(0) * rw.mean(0).unsqueeze(0)) * E
    else:
        aux = torch.zeros(())
    return ce + c["router_aux_loss_coef"] * aux, ce, aux


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check_config(tool, workdir, name, cfg, seed, failures):
    os.makedirs(workdir, exist_ok=True)
    cpath = os.path.join(workdir, name + ".json")
    with open(cpath, "w") as f:
        json.dump(cfg, f)
    out = os.path.join(workdir, name)
    lr, wd, clip = 3e-2, 0.1, 0.05  # small clip so clipping is active
    subprocess.run([tool, "reference", "--config", cpath, "--steps", "2", "--dtype", "fp32", "--seed", str(seed),
                    "--lr", str(lr), "--weight-decay", str(wd), "--max-grad-norm", str(clip), "--out", out], check=True)
    c = json.load(open(os.path.join(out, "config.json")))
    P = {k: v.requires_grad_(True) for k, v in read_safetensors(os.path.join(out, "model.safetensors")).items()}
    batches = read_safetensors(os.path.join(out, "batches.safetensors"))
    grads_cpp = read_safetensors(os.path.join(out, "grads_step1.safetensors"))
    final_cpp = read_safetensors(os.path.join(out, "model_final.safetensors"))
    losses = json.load(open(os.path.join(out, "losses.json")))["steps"]
    names = list(P.keys())
    opt = torch.optim.AdamW([P[n] for n in names], lr=lr, weight_decay=wd)
    for step in (1, 2):
        opt.zero_grad()
        loss, ce, aux = forward(c, P, batches[f"step_{step}"])
        loss.backward()
        rec = losses[step - 1]
        for key, mine in (("loss", loss), ("ce", ce), ("aux", aux)):
            d = abs(mine.item() - rec[key]) / max(abs(rec[key]), 1e-30)
            print(f"{name} step {step} {key}: cpp {rec[key]:.9g} torch {mine.item():.9g} rel {d:.2e}")
            if d > 1e-5:
                failures.append(f"{name} step {step} {key}")
        if step == 1:
            worst = max((rel(grads_cpp[n], P[n].grad), n) for n in names)
            print(f"{name} step 1 grads: worst rel diff {worst[0]:.2e} ({worst[1]})")
            if worst[0] > 1e-4:
                failures.append(f"{name} grads ({worst[1]})")
        norm = torch.nn.utils.clip_grad_norm_([P[n] for n in names], clip)
        d = abs(norm.item() - rec["grad_norm"]) / rec["grad_norm"]
        print(f"{name} step {step} grad_norm: cpp {rec['grad_norm']:.9g} torch {norm.item():.9g} rel {d:.2e}")
        if d > 1e-5:
            failures.append(f"{name} step {step} grad_norm")
        opt.step()
    worst = max((rel(final_cpp[n], P[n].detach()), n) for n in names)
    print(f"{name} params after step 2: worst rel diff {worst[0]:.2e} ({worst[1]})")
    # Adam divides by sqrt(v): where a gradient is tiny, its 1e-7-relative
    # difference moves the update by up to ~lr, hence a looser bound here.
    if worst[0] > 1e-4:
        failures.append(f"{name} final params ({worst[1]})")


def main():
    tool = sys.argv[1]
    base = {"model_type": "qwen3_moe", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "moe_intermediate_size": 8,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": True, "mlp_only_layers": [0],
            "decoder_sparse_step": 1, "router_aux_loss_coef": 0.01, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "tie_word_embeddings": False, "max_position_embeddings": 64,
            "experts_implementation": "grouped"}
    shared = dict(base, shared_expert_intermediate_size=12, tie_word_embeddings=True, norm_topk_prob=False,
                  experts_implementation="loop", mlp_only_layers=[], num_hidden_layers=3, num_experts_per_tok=3)
    failures = []
    with tempfile.TemporaryDirectory() as work:
        check_config(tool, work, "tiny_grouped", base, 3, failures)
        check_config(tool, work, "shared_tied_loop", shared, 4, failures)
    if failures:
        print("FAILED:", failures)
        return 1
    print("PyTorch oracle agrees")
    return 0


if __name__ == "__main__":
    sys.exit(main())
