#!/usr/bin/env python3
"""PyTorch's own optimizer steps on the sizes of `benches/optim_step.rs`, for the README's ratios.

Optional: it needs PyTorch (`pip install torch`); nothing in the build or tests depends on it.

    python3 benches/torch_reference.py                # 2 threads, 1M / 4M / 16M parameters
    python3 benches/torch_reference.py --threads 4 --sizes 1,4

Times one `optimizer.step()` on one float32 CPU tensor (the gradient fixed, the state carried
over, as in the Rust bench) for torch.optim.Adam and AdamW with `fused=True` and with
`foreach=True`, and Adagrad (foreach). Prints the median of `--repeats` timed steps after
`--warmup` steps, in ms, as a markdown table, plus the same effective bandwidth the Rust bench
reports (bytes an ideal single pass reads and writes / time).
"""

import argparse
import statistics
import time


def bytes_per_param(states):
    # parameter and states read and written, gradient read, 4 bytes each
    return 4 * (3 + 2 * states)


def time_step(torch, make, n, warmup, repeats):
    param = torch.nn.Parameter(torch.rand(n, dtype=torch.float32))
    param.grad = torch.randn(n, dtype=torch.float32) * 1e-2
    optimizer = make([param])
    for _ in range(warmup):
        optimizer.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="1,4,16", help="Mi parameters, comma-separated")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    variants = [
        ("adam", "fused", 2, lambda p: torch.optim.Adam(p, lr=1e-3, fused=True)),
        ("adam", "foreach", 2, lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True)),
        ("adamw", "fused", 2, lambda p: torch.optim.AdamW(p, lr=1e-3, fused=True)),
        ("adamw", "foreach", 2, lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=True)),
        ("adagrad", "foreach", 1, lambda p: torch.optim.Adagrad(p, lr=1e-3, foreach=True)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| size | optimizer | torch path | ms | GB/s |")
    print("|---|---|---|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        n = size << 20
        for name, path, states, make in variants:
            seconds = time_step(torch, make, n, args.warmup, args.repeats)
            gbs = bytes_per_param(states) * n / seconds / 1e9
            print(f"| {size}M | {name} | {path} | {seconds * 1e3:.2f} | {gbs:.1f} |")


if __name__ == "__main__":
    main()
