"""Network wrappers that carry the QA measures' inputs through nnU-Net's sliding window and mirroring.

nnU-Net's predictor accumulates whatever the network returns channel by channel (Gaussian-weighted sum over
tiles, mean over mirrors, mean over folds) and never mixes channels. A wrapper that returns the model's own
output *plus* extra channels therefore gets, for the first channels, exactly the logits ``nnUNetv2_predict``
gets (bit for bit), and for the extra channels the same aggregation of what the measures need, without a second
sliding window.
"""
import itertools
from typing import Sequence

import torch
from torch import nn

from nnunetv2_asyco.network import TwoBranchNetwork, unwrap
from nnunetv2_asyco.qa.measures import mirror_spread, probabilities


class _Wrapper(nn.Module):
    """Holds the model; loading weights goes to the model itself, so the predictor's per-fold
    ``network.load_state_dict(params)`` keeps working on checkpoints of the plain model."""

    channel_multiplier = 1
    extra_channels = 0

    def __init__(self, network: nn.Module):
        super().__init__()
        self.net = unwrap(network)  # eager: the wrapper's extra outputs are not part of a compiled graph

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.net.load_state_dict(state_dict, strict=strict, assign=assign)

    def output_channels(self, num_segmentation_heads: int) -> int:
        return num_segmentation_heads * self.channel_multiplier + self.extra_channels


class BranchLogits(_Wrapper):
    """``[ensemble logits, branch A logits, branch B logits]`` on the channel axis (3 x C channels).

    The ensemble is computed by the model's own ``_average_as_logits`` from the same branch outputs as
    ``TwoBranchNetwork.ensemble``, so its channels equal what ``nnUNetv2_predict`` accumulates.
    """

    channel_multiplier = 3

    def __init__(self, network: nn.Module):
        super().__init__(network)
        if not isinstance(self.net, TwoBranchNetwork):
            raise TypeError(f"BranchLogits needs a TwoBranchNetwork, got {type(self.net).__name__}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits_a = self.net.branch_a(x)
        logits_b = self.net.branch_b(x)
        return torch.cat((self.net._average_as_logits(logits_a, logits_b), logits_a, logits_b), 1)


class MirrorSpread(_Wrapper):
    """``[mirror-averaged logits, TTA spread]``: C + 1 channels; the predictor's own mirroring must be off.

    The spread is a variance over the mirrored predictions of one tile, which nnU-Net's mirroring (a running
    mean of logits) cannot give, so this wrapper mirrors: the same axis combinations in the same order and the
    same sum-then-divide as nnU-Net's ``_internal_maybe_mirror_and_predict``, so the logits stay identical.
    """

    extra_channels = 1

    def __init__(self, network: nn.Module, mirror_axes: Sequence[int], activation: str):
        super().__init__(network)
        if not mirror_axes:
            raise ValueError("The TTA spread needs mirroring: the model has no inference mirroring axes or TTA is "
                             "disabled (--disable_tta).")
        axes = [m + 2 for m in mirror_axes]  # batch and channel axes first, as nnU-Net does
        self.axes_combinations = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prediction = self.net(x)
        probs = [torch.stack([probabilities(p, self.activation) for p in prediction])]
        for axes in self.axes_combinations:
            mirrored = torch.flip(self.net(torch.flip(x, axes)), axes)
            prediction += mirrored
            probs.append(torch.stack([probabilities(p, self.activation) for p in mirrored]))
        prediction /= (len(self.axes_combinations) + 1)
        spread = mirror_spread(torch.stack(probs), self.activation, channel_dim=1)  # (B, *spatial)
        return torch.cat((prediction, spread[:, None].to(prediction.dtype)), 1)
