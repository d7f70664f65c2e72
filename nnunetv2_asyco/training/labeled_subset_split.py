"""nnU-Net's split, restricted to the labeled subset when one is recorded for the fold.

The subset a run trains on is part of the run: it is written into every
checkpoint (``SUBSET_KEY``) and debug.json (``labeled_subset_of_run``), and
``--c`` refuses a checkpoint whose subset differs from the fold's current one.
"""
from typing import Optional

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_asyco.data.labeled_subset import load_labeled_subset, subset_file

SUBSET_KEY = "asyco_labeled_subset"  # checkpoint entry beside nnU-Net's; None: the fold trains on all its labels


class SubsetChangedError(RuntimeError):
    """A run would continue on another labeled subset than the one it started with."""


class LabeledSubsetSplitMixin:
    """Trains on the recorded labeled subset; validation cases stay exactly nnU-Net's."""

    def labeled_subset(self):
        return load_labeled_subset(self.preprocessed_dataset_folder_base, self.fold)

    def subset_of_run(self) -> Optional[dict]:
        """What defines the run's labeled cases: the case list and the seed of the draw (None: all labels)."""
        subset = self.labeled_subset()
        if subset is None:
            return None
        return {"labeled": list(subset["labeled"]), "seed": subset["seed"], "n_labeled": subset["n_labeled"]}

    def check_subset_of_checkpoint(self, checkpoint: dict, filename: str) -> None:
        """Refuse to continue a run on another labeled subset than the one its checkpoint was trained on."""
        if SUBSET_KEY not in checkpoint:  # written before runs recorded their subset: nothing to compare with
            self.print_to_log_file(f"WARNING: {filename} does not record its labeled subset (written by an earlier "
                                   f"release); continuing without checking it.")
            return
        # the fold's subset now (the file), not the one this process may have read before
        recorded, current = checkpoint[SUBSET_KEY], self.subset_of_run()
        if recorded == current:
            return

        def describe(s):
            return "all training cases of the fold (no subset)" if s is None else \
                f"{s['n_labeled']} labeled cases (seed {s['seed']}): {', '.join(s['labeled'][:8])}" + \
                ("..." if len(s["labeled"]) > 8 else "")
        raise SubsetChangedError(
            f"{filename} was trained on {describe(recorded)}, but fold {self.fold} now has {describe(current)} "
            f"({subset_file(self.preprocessed_dataset_folder_base, self.fold)}). Continuing would silently mix two "
            f"protocols. Either restore the run's subset (nnUNetv2_asyco_labeled_subset -d "
            f"{self.plans_manager.dataset_name} -f {self.fold} -n {recorded['n_labeled'] if recorded else 'N'} "
            f"--seed {recorded['seed'] if recorded else 'S'} --overwrite) and continue with --c, or start a fresh "
            f"run on the new subset: nnUNetv2_train without --c, after moving {self.output_folder} away.")

    def do_split(self):
        tr_keys, val_keys = nnUNetTrainer.do_split(self)
        subset = self.labeled_subset()
        # what this run trains on, read once: checkpoints record it, and nnU-Net writes plain attributes to debug.json
        self.labeled_subset_of_run = self.subset_of_run()
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
