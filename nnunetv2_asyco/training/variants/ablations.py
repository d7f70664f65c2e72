"""Ablations: AsyCo with one part switched off or one open choice changed, and baseline controls.

Every class here changes one attribute of ``nnUNetTrainerAsyCo`` or
``nnUNetTrainerCPS`` (see their attributes for what each option means). The
quality benchmark finds them with :func:`ablation_trainers`, so a new ablation
needs nothing but its class here.
"""
from typing import List

from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo
from nnunetv2_asyco.training.cps import nnUNetTrainerCPS


# ---- one part of AsyCo switched off ------------------------------------------------------------
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


class nnUNetTrainerAsyCo_noRemappedSupervision(nnUNetTrainerAsyCo):
    """Remapped paths get consistency only, no supervised loss."""
    supervise_remapped_paths = False


# ---- branch-output consistency -------------------------------------------------------------------
class nnUNetTrainerAsyCo_cpsBranchOutput(nnUNetTrainerAsyCo):
    """Branch-output consistency as hard cross pseudo-labels instead of soft probability MSE."""
    branch_output_mode = "cps"


class nnUNetTrainerAsyCo_cpsBranchOutputWeight1(nnUNetTrainerAsyCo):
    """Hard cross pseudo-labels at CPS's own weight 1: CPS's loss plus AsyCo's remapping, inter-head and
    representation consistency."""
    branch_output_mode = "cps"
    weight_branch_output = 1.0


class nnUNetTrainerAsyCo_branchOutputWeight3(nnUNetTrainerAsyCo):
    """Soft branch-output consistency at weight 3: a weaker pull between the branches, whose shared errors a strong
    pull can reinforce when labels are few."""
    weight_branch_output = 3.0


class nnUNetTrainerAsyCo_branchOutputWeight30(nnUNetTrainerAsyCo):
    """Soft branch-output consistency at weight 30."""
    weight_branch_output = 30.0


class nnUNetTrainerAsyCo_classBalancedBranchOutput(nnUNetTrainerAsyCo):
    """Branch-output consistency with every class weighted equally (``consistency.class_balanced_mse``) at weight 1:
    plain MSE gives a small structure's disagreement almost no weight."""
    branch_output_mode = "class_balanced"
    weight_branch_output = 1.0


# ---- remapping -----------------------------------------------------------------------------------------
class nnUNetTrainerAsyCo_remapPerScale(nnUNetTrainerAsyCo):
    """Remapping drawn per deep-supervision scale instead of per direction."""
    remap_schedule = "per_scale"


class nnUNetTrainerAsyCo_remapAlways(nnUNetTrainerAsyCo):
    """Both remapped paths in every step (static remapping)."""
    remap_schedule = "always"


# ---- where consistency applies -------------------------------------------------------------------------
class nnUNetTrainerAsyCo_unlabeledConsistencyOnly(nnUNetTrainerAsyCo):
    """Consistency terms on the unlabeled samples only."""
    consistency_on_labeled = False


class nnUNetTrainerAsyCo_fullResConsistency(nnUNetTrainerAsyCo):
    """Consistency on the full-resolution output only, not on every deep-supervision scale."""
    consistency_scales = "full_res"


class nnUNetTrainerAsyCo_representationBottleneck(nnUNetTrainerAsyCo):
    """Representation consistency on the decoder stages and the bottleneck."""
    representation_layers = "decoder+bottleneck"


class nnUNetTrainerAsyCo_representationBottleneckOnly(nnUNetTrainerAsyCo):
    """Representation consistency on the bottleneck only: the decoders, whose features the remapped heads read,
    are left free to differ."""
    representation_layers = "bottleneck"


class nnUNetTrainerAsyCo_representationWeight01(nnUNetTrainerAsyCo):
    """Representation consistency at a tenth of its weight (0.1): 1 - cosine at weight 1 drives the cosine between
    the branches' decoder features to ~0.98."""
    weight_representation = 0.1


class nnUNetTrainerAsyCo_interHeadWeight1(nnUNetTrainerAsyCo):
    """Inter-head consistency at weight 1 instead of 10: at 10 (with remapped supervision) the heads become
    interchangeable and the term falls to ~2e-5."""
    weight_inter_head = 1.0


class nnUNetTrainerAsyCo_rampupShort(nnUNetTrainerAsyCo):
    """Consistency ramped up over the first 20% of training instead of 40%."""
    consistency_rampup_fraction = 0.2


class nnUNetTrainerAsyCo_rampupLong(nnUNetTrainerAsyCo):
    """Consistency ramped up over the first 80% of training instead of 40%: supervision alone leads for longer."""
    consistency_rampup_fraction = 0.8


class nnUNetTrainerAsyCo_lowConsistencyWeights(nnUNetTrainerAsyCo):
    """A tenth of the default consistency weights (a_bo = a_ih = 1, a_rep = 0.1)."""
    weight_branch_output = 1.0
    weight_inter_head = 1.0
    weight_representation = 0.1


# ---- asymmetry between the branches ------------------------------------------------------------------
class nnUNetTrainerAsyCo_residualB(nnUNetTrainerAsyCo):
    """Asymmetric encoders: branch B gets a residual encoder with the plans' stage widths."""
    branch_b_encoder = "residual"


class nnUNetTrainerAsyCo_sharedViews(nnUNetTrainerAsyCo):
    """Both branches read the same batch (the paper's setting)."""
    branch_views = "shared"


class nnUNetTrainerAsyCo_perturbedViewsCutout(nnUNetTrainerAsyCo):
    """Per-branch perturbed views plus a cut-out box in half of the unlabeled samples."""
    branch_views = "perturbed_cutout"


class nnUNetTrainerAsyCo_perturbedMixedViews(nnUNetTrainerAsyCo):
    """Per-branch perturbed views, and in each step one branch reads a CutMix of the unlabeled samples (the other's
    outputs are mixed to match, nnunetv2_asyco.view_mixing)."""
    branch_views = "perturbed_mixed"


# ---- baseline controls: CPS with one of AsyCo's options ------------------------------------------------
class nnUNetTrainerCPS_perturbedViews(nnUNetTrainerCPS):
    """Each branch reads its own perturbed copy of the unlabeled samples, as AsyCo's default does."""
    branch_views = "perturbed"


class nnUNetTrainerCPS_perturbedMixedViews(nnUNetTrainerCPS):
    """Perturbed views plus mixed views: pseudo-labels from the unmixed branch, mixed (CPS's CutMix idea)."""
    branch_views = "perturbed_mixed"


def ablation_trainers() -> List[type]:
    """Every trainer defined in this module, in the order above."""
    return [c for c in globals().values()
            if isinstance(c, type) and issubclass(c, (nnUNetTrainerAsyCo, nnUNetTrainerCPS)) and c.__module__ == __name__]
