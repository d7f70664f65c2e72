"""``nnUNetv2_train ... -pretrained_weights CHECKPOINT`` for two-branch networks (AsyCo, CPS).

nnU-Net's ``run_training`` initialises the trainer and then calls
``load_pretrained_weights(trainer.network, CHECKPOINT)``, which requires every
key of the network (except the segmentation heads) to be in the checkpoint. A
``TwoBranchNetwork`` names its keys ``branch_a.*`` / ``branch_b.*``, so a stock
single-network checkpoint fails that check. ``install_pretrained_weights_hook``
routes two-branch networks to :func:`load_into_two_branches` and every other
network to nnU-Net's function unchanged (``nnunet_compat.route_pretrained_weights``).

Choices (README, "Compatibility"):

- a stock checkpoint initialises *both* branches with the same weights;
- segmentation heads are not transferred (nnU-Net's rule for pretrained
  weights), so each branch keeps its own random heads and the branches differ
  from the first step; no extra perturbation is added to branch B;
- a branch whose architecture differs from the checkpoint (``branch_b_encoder
  = "residual"`` with a plain checkpoint) keeps its random initialisation, and
  the message says so; branch A must match, as nnU-Net requires;
- a two-branch checkpoint (``branch_a.*``/``branch_b.*``) loads branch by branch.
"""
from typing import Dict, List, Tuple

import torch

from nnunetv2_asyco.network import TwoBranchNetwork, unwrap
from nnunetv2_asyco.nnunet_compat import route_pretrained_weights

HEAD_KEY = ".seg_layers."  # nnU-Net does not transfer segmentation heads
BRANCHES = ("branch_a", "branch_b")


def incompatibility(own: Dict[str, torch.Tensor], pretrained: Dict[str, torch.Tensor]) -> str:
    """'' when every non-head entry of ``own`` is in ``pretrained`` with the same shape, else the first problem."""
    for key, value in own.items():
        if HEAD_KEY in key:
            continue
        if key not in pretrained:
            return f"key {key!r} is missing in the checkpoint"
        if tuple(pretrained[key].shape) != tuple(value.shape):
            return f"key {key!r} has shape {tuple(pretrained[key].shape)} in the checkpoint, {tuple(value.shape)} here"
    return ""


def weights_per_branch(pretrained: Dict[str, torch.Tensor]) -> Dict[str, Dict[str, torch.Tensor]]:
    """A two-branch checkpoint split by branch; a single-network checkpoint given to both branches."""
    if any(k.startswith("branch_a.") for k in pretrained):
        return {b: {k[len(b) + 1:]: v for k, v in pretrained.items() if k.startswith(b + ".")} for b in BRANCHES}
    return {b: pretrained for b in BRANCHES}


def load_into_two_branches(network: TwoBranchNetwork, pretrained: Dict[str, torch.Tensor],
                           source: str = "the checkpoint") -> Tuple[List[str], Dict[str, str]]:
    """Load ``pretrained`` (a ``network_weights`` dict) into the branches; returns (loaded, {skipped: why})."""
    loaded, skipped = [], {}
    for name, weights in weights_per_branch(pretrained).items():
        branch = getattr(network, name)
        own = branch.state_dict()
        problem = incompatibility(own, weights)
        if problem and name == "branch_a":
            raise RuntimeError(
                f"-pretrained_weights {source} does not fit branch A of this network: {problem}. Pretrain with the "
                f"same plans and configuration (a stock nnUNetTrainer checkpoint of the same architecture works).")
        if problem:
            skipped[name] = problem
            continue
        own.update({k: v for k, v in weights.items() if k in own and HEAD_KEY not in k})
        branch.load_state_dict(own)
        loaded.append(name)
    return loaded, skipped


def load_checkpoint_into_two_branches(network, fname: str) -> None:
    """What ``-pretrained_weights`` does for a two-branch network (see the module docstring)."""
    checkpoint = torch.load(fname, map_location="cpu", weights_only=False)
    loaded, skipped = load_into_two_branches(unwrap(network), checkpoint["network_weights"], fname)
    print(f"Pretrained weights from {fname} loaded into {' and '.join(loaded)} "
          f"(segmentation heads not transferred, as in nnU-Net).")
    for name, why in skipped.items():
        print(f"WARNING: {name} keeps its random initialisation: {why}.")


def install_pretrained_weights_hook() -> None:
    """Route nnU-Net's ``-pretrained_weights`` loading of two-branch networks to :func:`load_into_two_branches`."""
    route_pretrained_weights(load_checkpoint_into_two_branches,
                             lambda network: isinstance(unwrap(network), TwoBranchNetwork))
