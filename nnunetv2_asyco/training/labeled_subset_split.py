"""nnU-Net's split, restricted to the labeled subset when one is recorded for the fold."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_asyco.data.labeled_subset import load_labeled_subset


class LabeledSubsetSplitMixin:
    """Trains on the recorded labeled subset; validation cases stay exactly nnU-Net's."""

    def labeled_subset(self):
        return load_labeled_subset(self.preprocessed_dataset_folder_base, self.fold)

    def do_split(self):
        tr_keys, val_keys = nnUNetTrainer.do_split(self)
        subset = self.labeled_subset()
        if subset is None:
            return tr_keys, val_keys
        stale = sorted(set(subset["labeled"]) - set(tr_keys))
        if stale:
            raise RuntimeError(
                f"The labeled subset of fold {self.fold} names cases that are not training cases of this fold "
                f"({stale[:5]}...). splits_final.json changed after the subset was written; write it again with "
                f"nnUNetv2_asyco_labeled_subset -d {self.plans_manager.dataset_name} -f {self.fold} ... --overwrite")
        self.print_to_log_file(f"Labeled subset: {len(subset['labeled'])} of {len(tr_keys)} training cases of fold "
                               f"{self.fold} keep their labels (seed {subset['seed']}).")
        return list(subset["labeled"]), val_keys

    def unlabeled_fold_cases(self):
        """Training cases of this fold outside the labeled subset (empty without a subset)."""
        subset = self.labeled_subset()
        return [] if subset is None else list(subset["unlabeled"])
