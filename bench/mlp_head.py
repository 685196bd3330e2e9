"""The ``mlp`` head: one batched ensemble against the loop over members it replaced, side by side.

Synthetic features of the demo's shapes (``tiny`` model: up1 64x32x32 and up2
48x64x64 at t = 50, 150; 256 px tiles; 3 classes; 132 train and 21 val tiles,
batch 8) and the default head (10 members, hidden 256, 128, 2048 sampled
pixels per tile).  Each implementation runs in its own child process, once per
phase, so that peak RSS (VmHWM) is that phase's own:

  * ``train``: one epoch of training steps (sampled pixels, loss, backward, AdamW);
  * ``val``: ``predict`` (majority vote over full maps) on the val tiles, what
    fit runs after every epoch and ``evaluate`` runs on the test split.

Peak RSS is the child's whole peak (torch alone is about 300 MiB); "growth"
is that peak minus the RSS just before the phase, i.e. what the head's compute
added.  Wall times follow the machine's load; CPU times (all threads) and
the interleaved repeats make the ratios more stable.

An epoch-equivalent is one train phase plus one val phase.  Both
implementations start from the same seeded weights (the batched head loads
the loop's state dict) and see the same features, labels and pixel samples.
Only the head's compute is timed, not making the synthetic features.

    python bench/mlp_head.py [--train-tiles 132] [--val-tiles 21] [--threads 0] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from pathsegdiff.store import BlockSpec
from pathsegdiff.train_head.fit import segmentation_loss
from pathsegdiff.train_head.heads import Features, HeadConfig, SegHead
from pathsegdiff.train_head.heads.mlp import PixelMLPEnsemble, gather_at, sample_pixels

BLOCKS = (BlockSpec("up1", 64, 32, 32), BlockSpec("up2", 48, 64, 64))
TIMESTEPS = (50, 150)
TILE, CLASSES, BATCH, IGNORE = 256, 3, 8, 255
IMPLS, PHASES = ("loop", "batched"), ("train", "val")


# --- the implementation before the batched one (pathsegdiff/train_head/mlp.py at 3599d6a), kept for comparison


class _Member(nn.Module):
    """One MLP: a first linear layer split by block, then ReLU/BatchNorm/Linear as in DDPM-seg."""

    def __init__(self, in_channels: dict[str, int], hidden: tuple[int, ...], n_classes: int):
        super().__init__()
        h0 = hidden[0]
        self.first = nn.ModuleDict({n: nn.Conv2d(c, h0, 1, bias=False) for n, c in in_channels.items()})
        self.first_bias = nn.Parameter(torch.zeros(h0))
        layers: list[nn.Module] = [nn.ReLU(), nn.BatchNorm1d(h0)]
        for a, b in zip(hidden[:-1], hidden[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.BatchNorm1d(b)]
        layers.append(nn.Linear(hidden[-1], n_classes))
        self.rest = nn.Sequential(*layers)

    def at_pixels(self, gathered: dict[str, torch.Tensor]) -> torch.Tensor:
        z = self.first_bias
        for name, g in gathered.items():
            w = self.first[name].weight
            z = z + F.linear(g, w.view(w.shape[0], -1))
        return self.rest(z)

    def full_map(self, blocks: dict[str, torch.Tensor], size: int) -> torch.Tensor:
        z = self.first_bias.view(1, -1, 1, 1)
        for name, x in blocks.items():
            y = self.first[name](x)
            z = z + (y if y.shape[-1] == size else F.interpolate(y, size=(size, size), mode="bilinear",
                                                                  align_corners=False))
        n, h = z.shape[0], z.shape[1]
        logits = self.rest(z.permute(0, 2, 3, 1).reshape(-1, h))
        return logits.view(n, size, size, -1).permute(0, 3, 1, 2)


class LoopMLPEnsemble(SegHead):
    """The old head: a Python loop over members, one tile at a time at inference."""

    def __init__(self, config: HeadConfig):
        super().__init__(config)
        self.members = nn.ModuleList(
            _Member(config.in_channels, config.mlp_hidden, config.n_classes) for _ in range(config.ensemble)
        )

    def training_logits(self, features: Features, labels: torch.Tensor, ignore_index: int):
        size = self.config.out_size
        idx, targets = sample_pixels(labels, self.config.pixels_per_tile, ignore_index)
        gathered = {b.name: gather_at(x, idx, size) for b, x in zip(self.config.blocks, self.stack(features))}
        logits = torch.cat([m.at_pixels(gathered) for m in self.members])
        return logits, targets.reshape(-1).repeat(len(self.members))

    def member_probabilities(self, features: Features):
        stacked = dict(zip((b.name for b in self.config.blocks), self.stack(features)))
        n = next(iter(stacked.values())).shape[0]
        for m in self.members:
            yield torch.cat([
                m.full_map({k: v[i : i + 1] for k, v in stacked.items()}, self.config.out_size).softmax(dim=1)
                for i in range(n)
            ])

    def vote(self, features: Features):
        mean, votes = None, None
        for p in self.member_probabilities(features):
            one_hot = F.one_hot(p.argmax(dim=1), p.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
            mean = p if mean is None else mean + p
            votes = one_hot if votes is None else votes + one_hot
        mean = mean / len(self.members)
        labels = (votes + 0.5 * mean).argmax(dim=1)
        entropy = -(mean * mean.clamp_min(1e-12).log()).sum(dim=1)
        return mean, labels, entropy

    def forward(self, features: Features) -> torch.Tensor:
        mean = None
        for p in self.member_probabilities(features):
            mean = p if mean is None else mean + p
        return (mean / len(self.members)).clamp_min(1e-12).log()

    @torch.no_grad()
    def predict(self, features: Features) -> torch.Tensor:
        return self.vote(features)[1]


# --- the measurement


def head_config() -> HeadConfig:
    return HeadConfig("mlp", BLOCKS, TIMESTEPS, CLASSES, TILE)


def build(impl: str) -> SegHead:
    """Both implementations with the same seeded weights (the batched head loads the loop's state dict)."""
    torch.manual_seed(0)
    loop = LoopMLPEnsemble(head_config())
    if impl == "loop":
        return loop
    head = PixelMLPEnsemble(head_config())
    head.load_state_dict(loop.state_dict())
    return head


def batch(step: int, n: int) -> tuple[dict, torch.Tensor]:
    """Seeded float16 features (read back as float32, as the loader gives them) and labels with 10 % ignore."""
    g = torch.Generator().manual_seed(step)
    feats = {t: {b.name: torch.randn(n, *b.shape, generator=g).half().float() for b in BLOCKS} for t in TIMESTEPS}
    labels = torch.randint(0, CLASSES, (n, TILE, TILE), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.1] = IGNORE
    return feats, labels


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM), from /proc (Linux).

    Not ``ru_maxrss``: Linux carries the parent's RSS at fork into a child's
    ``ru_maxrss`` across exec, so a child's small peak would read as the parent's size.
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def child(impl: str, phase: str, tiles: int) -> dict:
    head = build(impl)
    sizes = [min(BATCH, tiles - a) for a in range(0, tiles, BATCH)]
    # The val tiles are made first (44 MiB for 21), so the growth below is predict's own;
    # a train step's features are made inside the loop (untimed), as a loader would.
    val_batches = [batch(1000 + step, n)[0] for step, n in enumerate(sizes)] if phase == "val" else []
    before = rss_mib()
    seconds = cpu = 0.0
    if phase == "train":
        head.train()
        opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
        for step, n in enumerate(sizes):
            feats, labels = batch(step, n)
            torch.manual_seed(step)  # the same pixel samples for both implementations
            t0, c0 = time.perf_counter(), time.process_time()
            logits, targets = head.training_logits(feats, labels, IGNORE)
            loss = segmentation_loss(logits, targets, IGNORE, 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seconds, cpu = seconds + time.perf_counter() - t0, cpu + time.process_time() - c0
    else:
        head.eval()
        for feats in val_batches:
            t0, c0 = time.perf_counter(), time.process_time()
            head.predict(feats)
            seconds, cpu = seconds + time.perf_counter() - t0, cpu + time.process_time() - c0
    peak = rss_mib("VmHWM")
    return {"seconds": seconds, "cpu_s": cpu, "peak_rss_mib": peak, "growth_mib": peak - before}


def run_child(impl: str, phase: str, tiles: int, threads: int) -> dict:
    args = [sys.executable, __file__, "--child", impl, phase, str(tiles), "--threads", str(threads)]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"child {impl} {phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_outputs() -> tuple[float, float]:
    """Largest |difference| of the log mean probabilities and the share of differing votes, on 2 tiles."""
    loop, batched = build("loop").eval(), build("batched").eval()
    feats, _ = batch(2000, 2)
    with torch.no_grad():
        diff = (loop(feats) - batched(feats)).abs().max().item()
        votes = (loop.predict(feats) != batched.predict(feats)).float().mean().item()
    return diff, votes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-tiles", type=int, default=132, help="tiles in one training epoch (demo: 132)")
    ap.add_argument("--val-tiles", type=int, default=21, help="tiles predicted after each epoch (demo: 21)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each child (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repeats; medians are reported")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.child:
        impl, phase, tiles = a.child
        print(json.dumps(child(impl, phase, int(tiles))))
        return

    diff, votes = same_outputs()
    print(f"same weights, same features: max |log-prob difference| {diff:.2e}, votes differing {100 * votes:.4f} %")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {a.train_tiles} train tiles, "
          f"{a.val_tiles} val tiles, batch {BATCH}, {head_config().ensemble} members, hidden {head_config().mlp_hidden}; "
          f"medians of {a.repeat} interleaved repeat(s)")
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(a.repeat):  # interleaved, so that a change in the machine's load hits both
        for impl in IMPLS:
            for phase in PHASES:
                tiles = a.train_tiles if phase == "train" else a.val_tiles
                r = run_child(impl, phase, tiles, a.threads)
                runs.setdefault((impl, phase), []).append(r)
                print(f"  {impl:8} {phase:5} {r['seconds']:7.1f} s wall {r['cpu_s']:7.1f} s CPU "
                      f"peak RSS {r['peak_rss_mib']:6.0f} MiB (growth {r['growth_mib']:5.0f})", flush=True)
    res = {key: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for key, rs in runs.items()}
    print(f"\n{'':8} {'train s':>8} {'val s':>7} {'epoch-eq s':>11} {'epoch-eq CPU s':>15} "
          f"{'peak RSS MiB train/val':>23} {'RSS growth MiB train/val':>25}")
    for impl in IMPLS:
        tr, va = res[impl, "train"], res[impl, "val"]
        print(f"{impl:8} {tr['seconds']:8.1f} {va['seconds']:7.1f} {tr['seconds'] + va['seconds']:11.1f} "
              f"{tr['cpu_s'] + va['cpu_s']:15.1f} {tr['peak_rss_mib']:11.0f} / {va['peak_rss_mib']:<10.0f} "
              f"{tr['growth_mib']:12.0f} / {va['growth_mib']:<10.0f}")

    def ratio(key: str, *phases: str) -> str:
        old, new = (sum(res[impl, p][key] for p in phases) for impl in IMPLS)
        return f"{old / new:.2f}x" if new else "inf"

    print(f"\nloop / batched: epoch-equivalent wall time {ratio('seconds', *PHASES)} "
          f"(train {ratio('seconds', 'train')}, val {ratio('seconds', 'val')}), "
          f"CPU time {ratio('cpu_s', *PHASES)} (train {ratio('cpu_s', 'train')}, val {ratio('cpu_s', 'val')}); "
          f"peak RSS train {ratio('peak_rss_mib', 'train')}, val {ratio('peak_rss_mib', 'val')}; "
          f"RSS growth train {ratio('growth_mib', 'train')}, val {ratio('growth_mib', 'val')}")

if __name__ == "__main__":
    main()
