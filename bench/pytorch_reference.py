#!/usr/bin/env python3
"""PyTorch reference for `lockstep bench train`: the same models, batch and optimizer on Fashion-MNIST.

Prints (and with --json writes) the same fields as `lockstep bench train --json` where they apply:
samples_per_second is steady state (global samples over the timed steps' wall time, after warm-up).

  python bench/pytorch_reference.py --model mlp --threads 2
  python bench/pytorch_reference.py --model cnn --ddp 2        # DDP, gloo, 2 processes x 1 thread

Data is read from the gzip IDX files with numpy (no torchvision, no download).
"""
import argparse
import gzip
import json
import os
import socket
import statistics
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn


def read_idx(path):
    """Reads a gzip (or raw) IDX file into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0:
        raise SystemExit(f"{path}: not an IDX file (bad magic)")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0D: np.float32}[data[2]]
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * dims).reshape(shape)


def load_fashion(directory):
    """Training images as normalized float32 [N, 1, 28, 28] and labels as int64."""
    def find(stem):
        for name in (stem + ".gz", stem):
            path = os.path.join(directory, name)
            if os.path.exists(path):
                return path
        raise SystemExit(f"{directory}: missing {stem}(.gz); see launch/setup")
    images = read_idx(find("train-images-idx3-ubyte")).astype(np.float32) / 255.0
    labels = read_idx(find("train-labels-idx1-ubyte")).astype(np.int64)
    images = (images - images.mean()) / images.std()
    return torch.from_numpy(images.reshape(-1, 1, 28, 28).copy()), torch.from_numpy(labels.copy())


def make_model(name):
    """fashion-mlp (784-256-128-10), fashion-cnn (two 5x5 convs + pools, FC 1024, FC 10) or fashion-cnn-bn, as in configs/."""
    if name == "cnn-bn":
        # configs/fashion-cnn-bn.yaml: BatchNorm after each convolution (no conv bias), dropout 0.3 before the last layer.
        return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 5, padding=2, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Dropout(0.3), nn.Linear(1024, 10))
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))


# Optimizer settings of configs/fashion-mlp.yaml and configs/fashion-cnn.yaml.
OPTIMIZER = {"mlp": dict(lr=0.05, momentum=0.9, weight_decay=1e-4), "cnn": dict(lr=0.03, momentum=0.9, weight_decay=5e-4),
             "cnn-bn": dict(lr=0.05, momentum=0.9, weight_decay=5e-4)}


def train(rank, world, args, port, queue):
    torch.set_num_threads(args.threads)
    if world > 1:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(1)
    images, labels = load_fashion(args.data)
    model = make_model(args.model)
    parameter_count = sum(p.numel() for p in model.parameters())
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), **OPTIMIZER[args.model])
    loss_function = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(1)
    order = torch.randperm(images.shape[0], generator=generator)
    total = args.warmup + args.steps
    b = args.batch
    step_seconds = []
    if world > 1:
        dist.barrier()
    start = None
    for step in range(total):
        if step == args.warmup:
            start = time.perf_counter()
        began = time.perf_counter()
        # This rank's slice of the global batch, as the Lockstep loader shards it.
        first = (step * world + rank) * b % (images.shape[0] - b)
        index = order[first:first + b]
        x, y = images[index], labels[index]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(x), y)
        loss.backward()
        optimizer.step()
        if step >= args.warmup:
            step_seconds.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    if world > 1:
        # The job lasts as long as its slowest rank.
        t = torch.tensor([elapsed])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        elapsed = t.item()
        dist.destroy_process_group()
    if rank == 0:
        queue.put(dict(benchmark="train", implementation="pytorch", torch_version=torch.__version__,
                       config="fashion-" + args.model, world_size=world, threads_per_process=args.threads,
                       per_rank_batch=b, global_batch=b * world, warmup_steps=args.warmup, steps=args.steps,
                       samples_per_second=b * world * args.steps / elapsed,
                       samples_per_second_median_step=b * world / statistics.median(step_seconds),
                       step_seconds_median=statistics.median(step_seconds), parameter_count=parameter_count,
                       final_loss=float(loss.item())))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "cnn", "cnn-bn"], default="mlp")
    parser.add_argument("--batch", type=int, default=64, help="per-process batch")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--ddp", type=int, default=1, help="processes (DistributedDataParallel over gloo when > 1)")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args()

    if args.ddp > 1:
        context = mp.get_context("spawn")
        queue = context.SimpleQueue()
        port = free_port()
        processes = [context.Process(target=train, args=(rank, args.ddp, args, port, queue)) for rank in range(args.ddp)]
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        if any(p.exitcode != 0 for p in processes):
            raise SystemExit("a DDP process failed")
        result = queue.get()
    else:
        results = []

        class ListQueue:
            def put(self, item):
                results.append(item)
        train(0, 1, args, 0, ListQueue())
        result = results[0]
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
