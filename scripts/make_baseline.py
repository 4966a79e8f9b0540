#!/usr/bin/env python3
"""Write baseline logits for `fh-run verify --baseline` with Hugging Face transformers.

For users who have PyTorch and transformers (not run in CI: this project's
machines have no model hub and no PyTorch). The output is a safetensors file
with, for each sequence i, `tokens.<i>` (I64 [T]) and `logits.<i>` (F32 [T, V]):
row t is the next-token logits after reading tokens[0..t] (teacher forcing).

Usage:
  python3 scripts/make_baseline.py --model google/gemma-3-1b-it --out ref.safetensors \
      --text "The capital of France is" --text "def fib(n):" [--dtype float32]
  python3 scripts/make_baseline.py --model ./Llama-3.2-1B --out ref.safetensors --prompts prompts.txt

Then:
  fh-convert --in <checkpoint dir> --out model.fhm --dtype f32
  fh-run verify --model model.fhm --baseline ref.safetensors --kv f32

Eager attention and float32 give the reference fhkit's float32 runtime is
measured against (transformers' default SDPA kernels reorder the arithmetic).
"""
import argparse

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory or hub id")
    ap.add_argument("--out", required=True, help="output .safetensors")
    ap.add_argument("--text", action="append", default=[], help="a text to run (repeatable)")
    ap.add_argument("--prompts", help="a file with one text per line")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--no-bos", action="store_true", help="do not add the tokenizer's special tokens")
    args = ap.parse_args()

    texts = list(args.text)
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        ap.error("give at least one --text or --prompts")

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(
        args.model, torch_dtype=getattr(torch, args.dtype), attn_implementation="eager")
    model.eval()
    tensors = {}
    with torch.no_grad():
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=not args.no_bos, return_tensors="pt").input_ids
            logits = model(ids).logits[0].float()
            tensors[f"tokens.{i}"] = ids[0].to(torch.int64).contiguous()
            tensors[f"logits.{i}"] = logits.contiguous()
    save_file(tensors, args.out, metadata={"producer": "transformers " + __import__("transformers").__version__,
                                          "model": args.model, "dtype": args.dtype})
    print(f"wrote {len(texts)} sequences to {args.out}")


if __name__ == "__main__":
    main()
