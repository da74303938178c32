"""MetaIQA: network size and the time of one meta-step, first- against second-order.

    python benchmarks/bench_metaiqa.py                      # resnet18, 224 px, 2 tasks x (6 + 4) images
    python benchmarks/bench_metaiqa.py --tasks 5 --support 75 --query 50 --device cuda   # the defaults' size

Random initialisation (times do not depend on the weights); each configuration is timed
``--repeats`` times and the fastest is printed, with the gradient's relative difference between
the two orders (how far the first-order approximation is from the exact meta-gradient).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from iqa_store.nets.metaiqa import MetaIQANet
from iqa_store.train.metaiqa import Task, bilevel_loss


def meta_step(net: MetaIQANet, tasks: list[Task], second_order: bool) -> tuple[float, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    started = time.perf_counter()
    bilevel_loss(net, tasks, F.mse_loss, 1e-2, 1, second_order).backward()
    if tasks[0].support[0].is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return seconds, torch.cat([p.grad.flatten() for p in net.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--support", type=int, default=6)
    parser.add_argument("--query", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    net = MetaIQANet(args.backbone).to(args.device).train()
    backbone = sum(p.numel() for p in net.backbone.parameters())
    head = sum(p.numel() for p in net.head.parameters())
    print(f"{args.backbone} + head: {backbone:,} + {head:,} parameters; {args.tasks} tasks x ({args.support} support + "
          f"{args.query} query) images of {args.size} px on {args.device} ({torch.get_num_threads()} threads)")

    def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 3, args.size, args.size, device=args.device), torch.rand(n, device=args.device)
    tasks = [Task(images(args.support), images(args.query)) for _ in range(args.tasks)]
    gradients = {}
    for second_order in (False, True):
        state = {k: v.clone() for k, v in net.state_dict().items()}  # the same BatchNorm statistics for both
        times = []
        for _ in range(args.repeats):
            net.load_state_dict(state)
            seconds, gradients[second_order] = meta_step(net, tasks, second_order)
            times.append(seconds)
        print(f"  {'second' if second_order else 'first'}-order: {min(times):.2f} s per meta-step")
    exact, approximate = gradients[True], gradients[False]
    print(f"  |g_first - g_second| / |g_second| = {float((approximate - exact).norm() / exact.norm()):.3g}")


if __name__ == "__main__":
    main()
