"""MP-IQE's size and step time: learned parameters of each Table 4 variant, and seconds per training step.

    python benchmarks/bench_mpiqe.py                       # ViT-B/16 (random init: no download), CPU
    python benchmarks/bench_mpiqe.py --device cuda --images 32 --steps 5

A step is what the trainer does for one batch: ``crops`` crops per image through the frozen CLIP
with the prompts, the text tower for the 20 prompts, the multimodal encoder, backward, Adam.
"""

from __future__ import annotations

import argparse
import time

import torch

from iqa_store.nets.mpiqe import MpiqeConfig, MpiqeModel
from iqa_store.nets.openclip import open_clip_module

VARIANTS = {"MP-IQE": {}, "w/o scene prompts": {"scene_prompts": False},
            "w/o distortion prompts": {"distortion_prompts": False},
            "w/o deep visual prompts": {"visual_depth": "none"},
            "shallow visual prompts": {"visual_depth": "shallow"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=2, help="images per step")
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    open_clip = open_clip_module()
    torch.manual_seed(0)
    clip = open_clip.create_model(args.arch, pretrained=None, force_quick_gelu=True)
    tokenizer = open_clip.get_tokenizer(args.arch)
    print("| variant | learned parameters | visual prompts | text contexts | multimodal encoder + head |")
    print("|---|---:|---:|---:|---:|")
    for name, change in VARIANTS.items():
        model = MpiqeModel(clip, tokenizer, MpiqeConfig(**change))
        learned = {k: p.numel() for k, p in model.named_parameters() if p.requires_grad}
        print(f"| {name} | {sum(learned.values()):,} | {_count(learned, 'visual_prompts'):,} | "
              f"{_count(learned, 'scene_context', 'distortion_context'):,} | {_count(learned, 'decoder', 'head'):,} |")
    model = MpiqeModel(clip, tokenizer, MpiqeConfig()).to(args.device).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-5)
    side = model.clip.visual.image_size[0] if isinstance(model.clip.visual.image_size, tuple) else 224
    pixels = torch.randn(args.images * args.crops, 3, side, side, device=args.device)
    for step in range(args.steps):
        started = time.perf_counter()
        output = model(pixels)
        loss = (output.score.mean() + output.scene_logits.logsumexp(-1).mean()
                + output.distortion_logits.logsumexp(-1).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        print(f"step {step}: {time.perf_counter() - started:.2f} s ({args.images} images x {args.crops} crops, "
              f"{args.device})")


def _count(learned: dict[str, int], *prefixes: str) -> int:
    return sum(n for name, n in learned.items() if name.startswith(prefixes))


if __name__ == "__main__":
    main()
