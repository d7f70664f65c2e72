"""torch.compile of the two-branch module: training path (several remap plans) and inference ensemble.

Run: python benchmarks/cost/check_compile.py  (CPU inductor; the same module is what nnU-Net compiles on CUDA).
Measured on this 2-core CPU (2026-11-25): both paths compile and match eager outputs; ~57 s compile time.
nnU-Net itself only compiles on CUDA (nnUNet_compile), where this module is compiled as self.network.
"""
import os
import sys
import time

import torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tests'))
from conftest import tiny_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2_asyco.branches import build_branches
from nnunetv2_asyco.network import TwoBranchNetwork, RemapPlan
cm = PlansManager(tiny_plans()).get_configuration("cfg")
net = TwoBranchNetwork(*build_branches(cm, 1, 3, True))
c = torch.compile(net)
x = torch.randn(2, 1, 32, 32)
t = time.time()
for plan in (RemapPlan({"AB": (0, 1), "BA": ()}), RemapPlan({"AB": (), "BA": (0, 1)}), RemapPlan({"AB": (0, 1), "BA": ()})):
    a, b = c(x, remap_plan=plan)
    (a.default[0].mean() + b.default[0].mean() + sum(v.mean() for v in a.remapped.values())).backward()
ref_a, _ = net(x, remap_plan=RemapPlan({"AB": (0, 1), "BA": ()}))
print("train path ok", torch.allclose(a.default[0], ref_a.default[0], atol=1e-4), round(time.time() - t, 1), "s")
net.eval(); net.set_deep_supervision(False)
with torch.no_grad():
    print("ensemble ok", torch.allclose(c(x), net(x), atol=1e-4))
