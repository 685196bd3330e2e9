"""The batched pixel-MLP ensemble against a plain loop over per-member modules, and its checkpoint layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pathsegdiff.store import BlockSpec
from pathsegdiff.train_head.heads import mlp
from pathsegdiff.train_head.checkpoint import HeadMeta, build_head, load_head, save_head
from pathsegdiff.train_head.heads import HeadConfig
from pathsegdiff.train_head.heads.stacked import StackedBatchNorm, StackedLinear, _BatchNormLinear, normalised_linear

# Three blocks: coarser than, finer than and at the label resolution.
BLOCKS = (BlockSpec("up1", 5, 4, 4), BlockSpec("up2", 3, 8, 8), BlockSpec("up3", 2, 16, 16))
SIZE, K = 16, 3


def config(**kw) -> HeadConfig:
    return HeadConfig("mlp", BLOCKS, (50, 150), n_classes=K, out_size=SIZE,
                      **{"ensemble": 4, "mlp_hidden": (8, 6), **kw})


def features(b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {t: {blk.name: torch.randn(b, *blk.shape, generator=g) for blk in BLOCKS} for t in (50, 150)}


class LoopMember(nn.Module):
    """One member as DDPM-seg writes it (and as this head did before): Linear, [ReLU, BatchNorm1d, Linear]..."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        h = cfg.mlp_hidden
        self.first = nn.ModuleDict({n: nn.Conv2d(c, h[0], 1, bias=False) for n, c in cfg.in_channels.items()})
        self.first_bias = nn.Parameter(torch.zeros(h[0]))
        layers: list[nn.Module] = [nn.ReLU(), nn.BatchNorm1d(h[0])]
        for a, b in zip(h[:-1], h[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.BatchNorm1d(b)]
        self.rest = nn.Sequential(*layers, nn.Linear(h[-1], cfg.n_classes))

    def forward(self, pixels: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, C_b) per block -> (N, K)."""
        z = self.first_bias + sum(F.linear(x, self.first[n].weight.flatten(1)) for n, x in pixels.items())
        return self.rest(z)


class LoopEnsemble(nn.Module):
    """The reference: a Python loop over members, on upsampled full maps."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(LoopMember(cfg) for _ in range(cfg.ensemble))

    def training_logits(self, features, labels, ignore_index):
        idx, targets = mlp.sample_pixels(labels, self.cfg.pixels_per_tile, ignore_index)
        pixels = {b.name: mlp.gather_at(self.stack(features, b.name), idx, SIZE) for b in BLOCKS}
        return torch.cat([m(pixels) for m in self.members]), targets.reshape(-1).repeat(len(self.members))

    def member_probabilities(self, features) -> torch.Tensor:
        """(k, B, K, H, W)."""
        up = {b.name: F.interpolate(self.stack(features, b.name), size=(SIZE, SIZE), mode="bilinear",
                                    align_corners=False) for b in BLOCKS}
        pixels = {n: x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for n, x in up.items()}
        n = next(iter(up.values())).shape[0]
        return torch.stack([m(pixels).view(n, SIZE, SIZE, K).permute(0, 3, 1, 2).softmax(1) for m in self.members])

    @staticmethod
    def stack(features, block: str) -> torch.Tensor:
        return torch.cat([features[t][block] for t in (50, 150)], 1)


def pair(seed: int = 0, **kw) -> tuple[mlp.PixelMLPEnsemble, LoopEnsemble]:
    """A seeded batched head and the loop reference holding the same weights (loaded from its state dict)."""
    torch.manual_seed(seed)
    head = build_head(config(**kw))
    reference = LoopEnsemble(config(**kw))
    reference.load_state_dict(head.state_dict(), strict=True)
    return head, reference


@pytest.mark.parametrize("chunk", [mlp.PIXELS_PER_CHUNK, 7])  # one chunk of 120 pixels, or 18 chunks
def test_batched_training_step_equals_the_loop_over_members(chunk, monkeypatch):
    monkeypatch.setattr(mlp, "PIXELS_PER_CHUNK", chunk)
    head, reference = pair(pixels_per_tile=40)
    x, labels = features(), torch.randint(0, K, (3, SIZE, SIZE))
    labels[0, :4] = 255
    head.train(), reference.train()
    optimisers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (head, reference)]
    for step in range(2):
        losses = []
        for model, opt in zip((head, reference), optimisers):
            torch.manual_seed(step)  # the same pixel samples
            logits, targets = model.training_logits(x, labels, 255)
            losses.append((logits, targets))
            opt.zero_grad()
            F.cross_entropy(logits, targets, ignore_index=255).backward()
            opt.step()
        torch.testing.assert_close(losses[0][0], losses[1][0], atol=1e-5, rtol=1e-4)
        assert torch.equal(losses[0][1], losses[1][1])
    # Weights after two steps (so every gradient) and the BatchNorm running statistics.
    want = reference.state_dict()
    have = head.state_dict()
    assert have.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(have[key], want[key], atol=1e-5, rtol=1e-4, msg=key)


def test_batched_inference_equals_the_loop_over_members():
    head, reference = pair(seed=3)
    x = features(seed=1)
    head.train(), reference.train()
    torch.manual_seed(0)
    head.training_logits(x, torch.randint(0, K, (3, SIZE, SIZE)), 255)  # running statistics away from 0, 1
    reference.load_state_dict(head.state_dict())
    head.eval(), reference.eval()
    with torch.no_grad():
        p = reference.member_probabilities(x)  # (k, B, K, H, W)
        mean, labels, entropy = head.vote(x)
        torch.testing.assert_close(head(x), p.mean(0).log(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mean, p.mean(0), atol=1e-6, rtol=1e-5)
    votes = F.one_hot(p.argmax(2), K).sum(0).permute(0, 3, 1, 2)  # (B, K, H, W)
    assert torch.equal(labels, (votes + 0.5 * p.mean(0)).argmax(1))
    torch.testing.assert_close(entropy, -(p.mean(0) * p.mean(0).log()).sum(1), atol=1e-5, rtol=1e-5)


def test_chunks_of_pixels_do_not_change_the_maps(monkeypatch):
    head = build_head(config()).eval()
    x = features()
    whole = head.vote(x)
    monkeypatch.setattr(mlp, "PIXELS_PER_CHUNK", 7)  # not a divisor of 256
    for a, b in zip(whole, head.vote(x)):
        torch.testing.assert_close(a, b)


def test_checkpoint_keeps_the_per_member_layout(tmp_path):
    head, reference = pair()
    keys = set(head.state_dict())
    assert "members.3.first.up2.weight" in keys and "members.0.rest.4.running_var" in keys
    assert keys == set(reference.state_dict())
    assert head.state_dict()["members.1.first.up1.weight"].shape == (8, 10, 1, 1)  # a 1x1 Conv2d weight
    meta = HeadMeta(head.config, ("a", "b", "c"), 255, "identity", {})
    save_head(tmp_path, head, meta)
    loaded, _ = load_head(tmp_path)
    x = features()
    torch.testing.assert_close(loaded(x), head.eval()(x))


def test_weights_of_the_loop_layout_load_into_the_batched_head():
    """What a checkpoint written before the ensemble was batched holds: per-member modules' state dicts."""
    torch.manual_seed(5)
    reference = LoopEnsemble(config())
    with torch.no_grad():
        for name, value in reference.state_dict().items():
            if "running" in name:
                value.uniform_(0.5, 1.5)
    head = build_head(config())
    head.load_state_dict(reference.state_dict(), strict=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(head.state_dict()[key], value), key
    x = features()
    with torch.no_grad():
        torch.testing.assert_close(head.eval()(x), reference.eval().member_probabilities(x).mean(0).log(),
                                   atol=1e-5, rtol=1e-5)


def test_a_seed_gives_the_weights_separate_members_drew():
    """So a seed gives the same run as before the ensemble was batched."""
    torch.manual_seed(7)
    reference = LoopEnsemble(config()).state_dict()
    torch.manual_seed(7)
    head = build_head(config()).state_dict()
    assert all(torch.equal(head[k], v) for k, v in reference.items())


def test_the_written_out_backward_matches_numerical_gradients():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 9, dtype=torch.double, requires_grad=True)  # non-negative, as after a ReLU
    params = [torch.randn(*shape, dtype=torch.double, requires_grad=True) for shape in ((2, 3), (2, 3), (2, 4, 3), (2, 4))]

    def norm_then_linear(x, gamma, beta, weight, bias):
        mean, var = x.mean(2), x.var(2, correction=0)  # x's own statistics, as while training
        chunks = (x[..., :4], x[..., 4:])  # the pixels come in chunks; the statistics span them
        return torch.cat(_BatchNormLinear.apply(mean, var, gamma, beta, weight, bias, 1e-5, *chunks), 2)

    assert torch.autograd.gradcheck(norm_then_linear, (x, *params))


@pytest.mark.parametrize("batch_stats", [True, False])
def test_normalised_linear_is_batchnorm_then_linear(batch_stats):
    torch.manual_seed(0)
    norm, linear = StackedBatchNorm(2, 3), StackedLinear(2, 3, 4)
    with torch.no_grad():
        for p in (norm.weight, norm.bias, norm.running_mean):
            p.normal_()
        norm.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    x = torch.randn(2, 3, 50)
    have = torch.cat(normalised_linear(norm, linear, [x[..., :20], x[..., 20:]], batch_stats), 2)  # (k, out, N)
    for m in range(2):
        bn = nn.BatchNorm1d(3).train(batch_stats)
        bn.load_state_dict({k: v if k == "num_batches_tracked" else v[m] for k, v in before.items()})
        want = F.linear(bn(x[m].T), linear.weight[m], linear.bias[m]).T  # (out, N)
        torch.testing.assert_close(have[m], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(norm.running_mean[m], bn.running_mean)
        torch.testing.assert_close(norm.running_var[m], bn.running_var)
        assert norm.num_batches_tracked == bn.num_batches_tracked
