#!/usr/bin/env python3
"""PyTorch reference for the sequence configs: the shapes of configs/text-transformer.yaml and configs/text-lstm.yaml.

Reports tokens/s (batch × sequence length × steps / wall time of the timed steps), to set beside
`lockstep bench train --config configs/text-transformer.yaml` (whose samples/s × 64 is tokens/s).

  python bench/pytorch_text_reference.py --model transformer --threads 1
  python bench/pytorch_text_reference.py --model lstm --threads 2

Token ids are drawn at random over the vocabulary (--vocab, default 116: the fortunes corpus's 114 distinct bytes plus
Lockstep's padding and unknown ids); the speed of these models does not depend on which ids they see.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn


class Block(nn.Module):
    """Pre-LN Transformer block as Lockstep's TransformerBlock: x + attn(LN(x)), x + MLP(LN(x)), GELU, causal."""

    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x, mask):
        h = self.norm1(x)
        x = x + self.attention(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """configs/text-transformer.yaml: embedding 64, learned positions, 2 blocks (4 heads, MLP 256), LayerNorm, logits."""

    def __init__(self, vocab, length, dim=64, heads=4, mlp=256, blocks=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.zeros(length, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp) for _ in range(blocks)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("mask", torch.triu(torch.full((length, length), float("-inf")), diagonal=1))

    def forward(self, tokens):
        x = self.embedding(tokens) + self.position
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.norm(x))


class LSTMModel(nn.Module):
    """configs/text-lstm.yaml: embedding 32, one LSTM layer of 128, logits at every step."""

    def __init__(self, vocab, dim=32, hidden=128):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        return self.head(self.lstm(self.embedding(tokens))[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["transformer", "lstm"], default="transformer")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step (the configs' batch_size)")
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=116)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    if args.model == "transformer":
        model = Transformer(args.vocab, args.length)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=0.01)
    else:
        model = LSTMModel(args.vocab)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    loss_function = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(1)
    step_seconds = []
    start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        began = time.perf_counter()
        tokens = torch.randint(0, args.vocab, (args.batch, args.length + 1), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1])
        loss = loss_function(logits.reshape(-1, args.vocab), tokens[:, 1:].reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the configs' clip_grad_norm
        optimizer.step()
        if step >= args.warmup:
            step_seconds.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    tokens_per_step = args.batch * args.length
    result = dict(benchmark="train", implementation="pytorch", torch_version=torch.__version__, config="text-" + args.model,
                  world_size=1, threads_per_process=args.threads, per_rank_batch=args.batch, sequence_length=args.length,
                  steps=args.steps, warmup_steps=args.warmup, samples_per_second=args.batch * args.steps / elapsed,
                  tokens_per_second=tokens_per_step * args.steps / elapsed,
                  tokens_per_second_median_step=tokens_per_step / statistics.median(step_seconds),
                  parameter_count=sum(p.numel() for p in model.parameters()))
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
