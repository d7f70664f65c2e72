"""AsyCo ablations (one part switched off each) and short-run variants."""
from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo
from nnunetv2_asyco.training.variants.training_length import demo_variant, epoch_variants


class nnUNetTrainerAsyCo_noRemap(nnUNetTrainerAsyCo):
    """Decoder-head decoupling off: no remapped paths, so no inter-head term either."""
    remap_schedule = "off"
    weight_inter_head = 0.0


class nnUNetTrainerAsyCo_noBranchOutput(nnUNetTrainerAsyCo):
    """(i) branch-output consistency off."""
    weight_branch_output = 0.0


class nnUNetTrainerAsyCo_noInterHead(nnUNetTrainerAsyCo):
    """(ii) inter-head consistency off (remapped paths still supervised)."""
    weight_inter_head = 0.0


class nnUNetTrainerAsyCo_noRepresentation(nnUNetTrainerAsyCo):
    """(iii) representation consistency off."""
    weight_representation = 0.0


class nnUNetTrainerAsyCo_residualB(nnUNetTrainerAsyCo):
    """Asymmetric encoders: branch B gets a residual encoder with the plans' stage widths."""
    branch_b_encoder = "residual"


class nnUNetTrainerAsyCo_lowMemory(nnUNetTrainerAsyCo):
    """Memory mode: activation checkpointing of every encoder/decoder stage of both branches."""
    activation_checkpointing = True


class nnUNetTrainerAsyCo_halfUnlabeled(nnUNetTrainerAsyCo):
    """Memory mode: one unlabeled patch per two labeled ones (unlabeled_batch_ratio 0.5)."""
    unlabeled_batch_ratio = 0.5


for _base in (nnUNetTrainerAsyCo, nnUNetTrainerAsyCo_noRemap, nnUNetTrainerAsyCo_noBranchOutput,
              nnUNetTrainerAsyCo_noInterHead, nnUNetTrainerAsyCo_noRepresentation, nnUNetTrainerAsyCo_residualB,
              nnUNetTrainerAsyCo_lowMemory, nnUNetTrainerAsyCo_halfUnlabeled):
    globals().update(epoch_variants(_base, __name__))
del _base
globals().update(demo_variant(nnUNetTrainerAsyCo, __name__))
