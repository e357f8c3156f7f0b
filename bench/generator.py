"""Benchmark: StyleGAN2 synthesis throughput on CPU and its FLOP/s efficiency.

Builds the official FFHQ-256 generator architecture (``paper256``: 14 ws, 24.8 M
parameters; seeded random weights, which do not change the speed) and measures, in one
run and interleaved so that machine load affects both alike:

* ``G.synthesis(ws, noise_mode="const")`` at batch 1 and 8 (images/s), with our automatic
  path (CPU: NHWC, unfused modulation for batches > 1) and, for comparison, the official
  code's path (NCHW, fused grouped convolution in eval mode);
* a plain large ``conv2d`` (4x512x32x32, 3x3, 512 -> 512), the FLOP/s this machine reaches
  on convolution.

FLOPs of synthesis are counted analytically: 2 x multiply-adds of every modulated 3x3
convolution (the x2 transposed ones counted on their input pixels) and of every ToRGB 1x1
convolution (29.8 GFLOP per 256 px image). The FIR filters, modulation, noise and
activations are real work too but are not counted, so the fraction is conservative.

Clock: every call is timed both by the wall clock and by the process CPU time. The goal
uses ``--clock`` (default ``cpu``): on a machine shared with other jobs the wall clock
mostly measures how long the scheduler kept us waiting, differently for each call, while
FLOPs per CPU-second compare synthesis with the plain convolution on equal terms. Both
are printed; on an idle machine use ``--clock wall``. Threads: one by default (the same
for synthesis and the plain convolution). With several threads on a loaded machine, a
descheduled OpenMP thread leaves the others spinning at barriers, which burns CPU time
that has nothing to do with our code; ``--threads 0`` uses torch's default.

StyleGAN v1 row: the published 256x256 v1 synthesis network (``G_synthesis`` of the
ID-disentanglement paper: widths 512 up to 32 px, then 256/128/64; seeded random weights)
is timed in the same rounds with ``noise_mode="const"``. Its FLOPs: every 3x3 convolution
at its output resolution, the fused x2 transposed convolutions of the 128 and 256 blocks as
their 4x4 kernels on the input pixels, and the 1x1 ToRGB (blur, noise, instance norm and
style modulation not counted). Its goal lines are ``goal stylegan1_synthesis_...``.

Run: ``.venv/bin/python bench/generator.py`` (``--quick`` for a short run). Ends with goal
lines ``goal <name>: <value> (target >= 0.5) PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reenact.models import stylegan1  # noqa: E402
from reenact.models.stylegan2 import Generator, ffhq_config  # noqa: E402
from testing.goals import goal  # noqa: E402

GOAL_FRACTION = 0.5


def synthesis_flops(G: Generator) -> int:
    """Multiply-add FLOPs (x2) of the convolutions of one synthesis call for one image."""
    total = 0
    for res in G.synthesis.block_resolutions:
        block = getattr(G.synthesis, f"b{res}")
        for name in ("conv0", "conv1"):
            layer = getattr(block, name, None)
            if layer is None:
                continue
            out_ch, in_ch, kh, kw = layer.weight.shape
            pixels = (res // 2) ** 2 if layer.up == 2 else res * res
            total += 2 * out_ch * in_ch * kh * kw * pixels
        out_ch, in_ch, _, _ = block.torgb.weight.shape
        total += 2 * out_ch * in_ch * res * res
    return total


def stylegan1_flops(S: stylegan1.SynthesisNetwork) -> int:
    """Multiply-add FLOPs (x2) of the convolutions of one v1 synthesis call for one image."""
    total = 0
    for key, conv in S.convs.items():
        i = int(key)
        out_ch, in_ch, _, _ = conv.weight.shape
        res = 2 ** (i // 2 + 2)
        if i % 2 == 0 and res >= 128:  # fused transposed conv: 4x4 kernel on the input pixels
            total += 2 * out_ch * in_ch * 16 * (res // 2) ** 2
        else:
            total += 2 * out_ch * in_ch * 9 * res * res
    out_ch, in_ch, _, _ = S.torgb.weight.shape
    total += 2 * out_ch * in_ch * S.img_resolution**2
    return total


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best (wall seconds, process CPU seconds) of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=256, choices=[256, 512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best time counts")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1; 0 = torch's default)"
    )
    parser.add_argument("--no-official-path", action="store_true", help="skip the official-path comparison")
    parser.add_argument("--quick", action="store_true", help="batch 1 and 2, one round")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="clock the goal uses")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds = [1, 2], 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    G = Generator(**ffhq_config(args.resolution)).eval().requires_grad_(False)
    flops_per_image = synthesis_flops(G)
    print(
        f"FFHQ-{args.resolution} synthesis: num_ws={G.num_ws}, "
        f"{sum(p.numel() for p in G.parameters()) / 1e6:.1f} M parameters, "
        f"{flops_per_image / 1e9:.2f} GFLOP/image (convolutions), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    conv_x = torch.randn(4, 512, 32, 32)
    conv_w = torch.randn(512, 512, 3, 3) * 0.02
    conv_flops = 2 * 4 * 512 * 512 * 9 * 32 * 32
    paths: dict[str, dict[str, bool | None]] = {"auto": {"fused_modconv": None, "channels_last": None}}
    if not args.no_official_path:
        paths["official"] = {"fused_modconv": True, "channels_last": False}
    gen = torch.Generator().manual_seed(1)
    ws = {b: G.mapping(torch.randn([b, G.z_dim], generator=gen), None) for b in args.batches}
    torch.manual_seed(0)
    S1 = stylegan1.SynthesisNetwork(**stylegan1.published_config(256)).eval().requires_grad_(False)
    with torch.no_grad():
        for e in S1.epilogues:
            e.noise_const.normal_(generator=gen)
            e.noise_strength.fill_(0.1)
    v1_flops = stylegan1_flops(S1)
    ws1 = {b: torch.randn([b, S1.num_ws, S1.w_dim], generator=gen) for b in args.batches}
    print(
        f"StyleGAN v1 256 synthesis (published widths): num_ws={S1.num_ws}, "
        f"{sum(p.numel() for p in S1.parameters()) / 1e6:.1f} M parameters, "
        f"{v1_flops / 1e9:.2f} GFLOP/image (convolutions)"
    )

    conv_times: list[tuple[float, float]] = []
    syn_times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with torch.no_grad():
        F.conv2d(conv_x, conv_w, padding=1)  # warm-up
        for b in args.batches:
            for kw in paths.values():
                G.synthesis(ws[b][:1], noise_mode="const", **kw)
            S1(ws1[b][:1], noise_mode="const")
        for _ in range(args.rounds):
            conv_times.append(best_time(lambda: F.conv2d(conv_x, conv_w, padding=1), 2))
            for b in args.batches:
                for name, kw in paths.items():
                    calls = 3 if b == 1 else 1  # cheap calls get as many samples as the conv
                    t = best_time(lambda: G.synthesis(ws[b], noise_mode="const", **kw), calls)  # noqa: B023
                    syn_times.setdefault((name, b), []).append(t)
                calls = 3 if b == 1 else 1
                t = best_time(lambda: S1(ws1[b], noise_mode="const"), calls)  # noqa: B023
                syn_times.setdefault(("v1", b), []).append(t)
        conv_times.append(best_time(lambda: F.conv2d(conv_x, conv_w, padding=1), 2))

    k = 1 if args.clock == "cpu" else 0

    def best(times: list[tuple[float, float]], clock: int) -> float:
        return min(t[clock] for t in times)

    conv_rate = {c: conv_flops / best(conv_times, c) for c in (0, 1)}
    print(
        f"plain conv2d 4x512x32x32 3x3: {conv_rate[0] / 1e9:.1f} GFLOP/s wall, "
        f"{conv_rate[1] / 1e9:.1f} GFLOP per CPU-second (best of {len(conv_times)} rounds)"
    )
    fractions: dict[int, float] = {}
    for b in args.batches:
        t_wall, t_cpu = best(syn_times[("auto", b)], 0), best(syn_times[("auto", b)], 1)
        frac = {c: b * flops_per_image / best(syn_times[("auto", b)], c) / conv_rate[c] for c in (0, 1)}
        fractions[b] = frac[k]
        line = (
            f"batch {b}: {b / t_wall:.3f} images/s wall ({t_wall * 1000 / b:.0f} ms/image; "
            f"{t_cpu * 1000 / b:.0f} CPU-ms/image); fraction of plain conv2d FLOP rate: "
            f"{frac[0]:.2f} wall, {frac[1]:.2f} CPU"
        )
        if ("official", b) in syn_times:
            ratio = best(syn_times[("official", b)], k) / best(syn_times[("auto", b)], k)
            line += f"; official path (NCHW, fused) takes {ratio:.2f}x as long ({args.clock} clock)"
        print(line)
    v1_fractions: dict[int, float] = {}
    for b in args.batches:
        t_wall, t_cpu = best(syn_times[("v1", b)], 0), best(syn_times[("v1", b)], 1)
        frac = {c: b * v1_flops / best(syn_times[("v1", b)], c) / conv_rate[c] for c in (0, 1)}
        v1_fractions[b] = frac[k]
        print(
            f"StyleGAN v1 batch {b}: {b / t_wall:.3f} images/s wall ({t_wall * 1000 / b:.0f} ms/image; "
            f"{t_cpu * 1000 / b:.0f} CPU-ms/image); fraction of plain conv2d FLOP rate: "
            f"{frac[0]:.2f} wall, {frac[1]:.2f} CPU"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_mb:.0f} MB")
    for b in args.batches:
        print(goal(f"synthesis_flops_fraction_batch{b}_{args.clock}", fractions[b], ">=", GOAL_FRACTION, ".2f"))
    for b in args.batches:
        print(goal(f"stylegan1_synthesis_flops_fraction_batch{b}_{args.clock}", v1_fractions[b], ">=",
                   GOAL_FRACTION, ".2f"))


if __name__ == "__main__":
    main()
