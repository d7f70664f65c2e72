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


# ---- alternatives for the choices the abstract leaves open (ablation, issue 4) -------------
class nnUNetTrainerAsyCo_cpsBranchOutput(nnUNetTrainerAsyCo):
    """Branch-output consistency as hard cross pseudo-labels instead of soft probability MSE."""
    branch_output_mode = "cps"


class nnUNetTrainerAsyCo_cpsBranchOutputWeight1(nnUNetTrainerAsyCo):
    """Hard cross pseudo-labels as branch-output consistency at CPS's own weight (1, not the soft term's 10): CPS's
    loss with AsyCo's remapping, inter-head and representation consistency on top."""
    branch_output_mode = "cps"
    weight_branch_output = 1.0


class nnUNetTrainerAsyCo_branchOutputWeight3(nnUNetTrainerAsyCo):
    """Soft branch-output consistency at weight 3 instead of 10: with 2 labeled cases the branches' shared errors
    may be reinforced by a strong pull towards each other's probabilities."""
    weight_branch_output = 3.0


class nnUNetTrainerAsyCo_branchOutputWeight30(nnUNetTrainerAsyCo):
    """Soft branch-output consistency at weight 30 instead of 10 (at 2.5% labels weight 3 and hard pseudo-labels at
    weight 1 both scored lower than 10)."""
    weight_branch_output = 30.0


class nnUNetTrainerAsyCo_classBalancedBranchOutput(nnUNetTrainerAsyCo):
    """Branch-output consistency with every class weighted equally (squared difference over the class's probability
    mass, consistency.class_balanced_mse) at weight 1: at 2.5% labels the runs differ mostly in whether a small
    class is learnt, and plain MSE gives a small class's disagreement almost no weight."""
    branch_output_mode = "class_balanced"
    weight_branch_output = 1.0


class nnUNetTrainerAsyCo_remapPerScale(nnUNetTrainerAsyCo):
    """Remapping drawn per deep-supervision scale instead of per direction."""
    remap_schedule = "per_scale"


class nnUNetTrainerAsyCo_remapAlways(nnUNetTrainerAsyCo):
    """Both remapped paths in every step."""
    remap_schedule = "always"


class nnUNetTrainerAsyCo_noRemappedSupervision(nnUNetTrainerAsyCo):
    """Remapped paths get consistency only, no supervised loss."""
    supervise_remapped_paths = False


class nnUNetTrainerAsyCo_unlabeledConsistencyOnly(nnUNetTrainerAsyCo):
    """Consistency terms on the unlabeled samples only."""
    consistency_on_labeled = False


class nnUNetTrainerAsyCo_fullResConsistency(nnUNetTrainerAsyCo):
    """Consistency on the full-resolution output only, not on every deep-supervision scale."""
    consistency_scales = "full_res"


class nnUNetTrainerAsyCo_representationBottleneck(nnUNetTrainerAsyCo):
    """Representation consistency on the decoder stages and the bottleneck."""
    representation_layers = "decoder+bottleneck"


class nnUNetTrainerAsyCo_lowConsistencyWeights(nnUNetTrainerAsyCo):
    """The first defaults, a tenth of today's consistency weights (a_bo = a_ih = 1, a_rep = 0.1): with them the
    probability-MSE terms were ~1% of the supervised loss and AsyCo trained like two supervised networks."""
    weight_branch_output = 1.0
    weight_inter_head = 1.0
    weight_representation = 0.1


class nnUNetTrainerAsyCo_sharedViews(nnUNetTrainerAsyCo):
    """Both branches read the same batch (the paper's setting, and our default until the 3000-iteration benchmark)."""
    branch_views = "shared"


class nnUNetTrainerAsyCo_perturbedViewsCutout(nnUNetTrainerAsyCo):
    """Per-branch perturbed views plus a cut-out box in half of the unlabeled samples."""
    branch_views = "perturbed_cutout"


class nnUNetTrainerAsyCo_perturbedMixedViews(nnUNetTrainerAsyCo):
    """Per-branch perturbed views, and in each step one branch reads a CutMix of the unlabeled samples (the other's
    outputs are mixed to match, nnunetv2_asyco.view_mixing)."""
    branch_views = "perturbed_mixed"


# every ablation trainer: one part off, or the alternative for one open choice (the quality benchmark runs these)
ABLATIONS = (nnUNetTrainerAsyCo_noRemap, nnUNetTrainerAsyCo_noBranchOutput, nnUNetTrainerAsyCo_noInterHead,
             nnUNetTrainerAsyCo_noRepresentation, nnUNetTrainerAsyCo_cpsBranchOutput,
             nnUNetTrainerAsyCo_cpsBranchOutputWeight1, nnUNetTrainerAsyCo_branchOutputWeight3,
             nnUNetTrainerAsyCo_branchOutputWeight30, nnUNetTrainerAsyCo_classBalancedBranchOutput,
             nnUNetTrainerAsyCo_remapPerScale, nnUNetTrainerAsyCo_remapAlways,
             nnUNetTrainerAsyCo_noRemappedSupervision, nnUNetTrainerAsyCo_unlabeledConsistencyOnly,
             nnUNetTrainerAsyCo_fullResConsistency, nnUNetTrainerAsyCo_representationBottleneck,
             nnUNetTrainerAsyCo_lowConsistencyWeights, nnUNetTrainerAsyCo_sharedViews,
             nnUNetTrainerAsyCo_perturbedViewsCutout, nnUNetTrainerAsyCo_perturbedMixedViews)


class nnUNetTrainerAsyCo_residualB(nnUNetTrainerAsyCo):
    """Asymmetric encoders: branch B gets a residual encoder with the plans' stage widths."""
    branch_b_encoder = "residual"


class nnUNetTrainerAsyCo_lowMemory(nnUNetTrainerAsyCo):
    """Memory mode: activation checkpointing of every encoder/decoder stage of both branches."""
    activation_checkpointing = True


class nnUNetTrainerAsyCo_halfUnlabeled(nnUNetTrainerAsyCo):
    """Memory mode: one unlabeled patch per two labeled ones (unlabeled_batch_ratio 0.5)."""
    unlabeled_batch_ratio = 0.5


for _base in (nnUNetTrainerAsyCo, nnUNetTrainerAsyCo_residualB, nnUNetTrainerAsyCo_lowMemory,
              nnUNetTrainerAsyCo_halfUnlabeled) + ABLATIONS:
    globals().update(epoch_variants(_base, __name__))
del _base
globals().update(demo_variant(nnUNetTrainerAsyCo, __name__))
