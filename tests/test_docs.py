"""Documentation that states facts the code also holds must agree with the code."""
import ast
import os
import re

from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def documented_defaults(path: str) -> dict:
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", open(path).read(), flags=re.M)
    return {name: ast.literal_eval(value) for name, value in rows}


def test_every_documented_option_default_is_the_trainers():
    documented = documented_defaults(os.path.join(DOCS, "options.md"))
    assert len(documented) >= 15
    for name, value in documented.items():
        assert getattr(nnUNetTrainerAsyCo, name) == value, name


def test_every_loss_option_is_documented():
    from dataclasses import fields
    from nnunetv2_asyco.asyco_objective import AsyCoOptions
    documented = documented_defaults(os.path.join(DOCS, "options.md"))
    assert {f.name for f in fields(AsyCoOptions)} <= set(documented)
    assert {"remap_schedule", "p_remap", "branch_views", "branch_b_encoder"} <= set(documented)
