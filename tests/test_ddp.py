"""Two-process DDP (gloo, CPU) at the module-and-loss level.

nnU-Net's launcher is NCCL-only, so this builds what the trainer builds under
``-num_gpus 2``: the two-branch module wrapped in DDP, nnU-Net's deep-supervised
Dice+CE (with its DDP batch dice) and the AsyCo objective with every term
active, each rank on different samples. After one optimizer step every
parameter of both branches must be identical across ranks.
"""
import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import tiny_plans
from nnunetv2_asyco.asyco_objective import AsyCoObjective
from nnunetv2_asyco.training.asyco import asyco_options_of, nnUNetTrainerAsyCo
from nnunetv2_asyco.branches import build_branches
from nnunetv2_asyco.network import RemapPlan, TwoBranchNetwork


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, result_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)  # identical initial weights on every rank, as DDP's broadcast would also ensure
    cm = PlansManager(tiny_plans()).get_configuration("cfg")
    net = TwoBranchNetwork(*build_branches(cm, 1, 3, True))
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    weights = np.array([1 / (2 ** i) for i in range(2)])
    weights[-1] = 1e-6  # what nnU-Net does under DDP without compile
    loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": True},
                                                 {}, weight_ce=1, weight_dice=1,
                                                 dice_class=MemoryEfficientSoftDiceLoss), weights / weights.sum())
    objective = AsyCoObjective(loss, "softmax", asyco_options_of(nnUNetTrainerAsyCo, representation_layers="decoder+bottleneck"))
    optimizer = torch.optim.SGD(ddp.parameters(), 1e-2, momentum=0.99, nesterov=True)

    g = torch.Generator().manual_seed(100 + rank)  # different samples per rank
    labeled = torch.randn(2, 1, 32, 32, generator=g)
    unlabeled = torch.randn(2, 1, 32, 32, generator=g)
    target = [torch.randint(0, 3, (2, 1, 32, 32), generator=g).float(),
              torch.randint(0, 3, (2, 1, 16, 16), generator=g).float()]
    out_a, out_b = ddp(torch.cat((labeled, unlabeled)), remap_plan=RemapPlan({"AB": (0, 1), "BA": (0, 1)}))
    terms = objective.terms(out_a, out_b, target, n_labeled=2)
    total = objective.combine(terms, consistency_weight=1.0)
    total.backward()
    optimizer.step()

    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world_size)]
    dist.all_gather(gathered, flat)
    term_values = {k: float(v) for k, v in terms.items()}
    if rank == 0:
        torch.save({"params": gathered, "terms": term_values}, os.path.join(result_dir, "result.pt"))
    dist.destroy_process_group()


def test_ddp_step_keeps_both_branches_identical_across_ranks(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "result.pt")
    p0, p1 = result["params"]
    assert torch.equal(p0, p1), "parameters diverged across ranks: some gradient was not synchronised"
    for name, value in result["terms"].items():
        assert value > 0, f"term {name} was not active"
    # and the step actually changed the weights (else equality would be trivial)
    torch.manual_seed(0)
    cm = PlansManager(tiny_plans()).get_configuration("cfg")
    initial = torch.cat([p.detach().flatten() for p in TwoBranchNetwork(*build_branches(cm, 1, 3, True)).parameters()])
    assert not torch.equal(initial, p0)
