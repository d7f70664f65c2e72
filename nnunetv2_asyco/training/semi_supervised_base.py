"""One semi-supervised base for every method: unlabeled loader, labeled subset, loss terms, checkpoint state.

A method subclasses ``nnUNetTrainerSemiSupervised`` and implements
``compute_loss_terms``; it may override ``build_network_architecture``,
``after_optimizer_step`` and the ``extra_checkpoint_state`` pair. The training
loop, augmentation, validation and checkpointing stay nnU-Net's.
"""
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import autocast
from torch import distributed as dist

from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context

from nnunetv2_asyco import nnunet_compat
from nnunetv2_asyco.consistency import sigmoid_rampup
from nnunetv2_asyco.data.unlabeled_data import UnlabeledCases, UnlabeledDataLoader, ingested_unlabeled_sources
from nnunetv2_asyco.network import unwrap
from nnunetv2_asyco.seeding import UNLABELED_BATCHES
from nnunetv2_asyco.training.package_trainer import PackageTrainer

NO_UNLABELED_DATA_MESSAGE = (
    "No unlabeled data for {dataset}, configuration {configuration}, fold {fold}. Semi-supervised training needs "
    "one of:\n"
    "  (a) unlabeled scans in nnUNet_raw/{dataset}/imagesUnlabeled (CASE_0000{ending}, channels as in imagesTr), "
    "then: nnUNetv2_asyco_preprocess_unlabeled -d {dataset} -c {configuration} -p {plans}\n"
    "  (b) a limited-label protocol on this fold: nnUNetv2_asyco_labeled_subset -d {dataset} -f {fold} -n N")


class NonFiniteTrainingError(RuntimeError):
    """Too many steps of a training run had a non-finite loss."""


class nnUNetTrainerSemiSupervised(PackageTrainer):
    # ---- options shared by every semi-supervised method ------------------------------
    unlabeled_batch_ratio: float = 1.0  # unlabeled samples per labeled sample in a step
    consistency_rampup_fraction: float = 0.4  # lambda(t) reaches 1 after this fraction of training
    loss_terms: Tuple[str, ...] = ("supervised",)  # names logged per epoch as train_<term>
    # Training stops at the end of an epoch in which more than this fraction of the steps had a non-finite loss
    # (each such step is skipped). A healthy run has none; a few come from an odd batch, a larger share means bad
    # data (NaN scans) or a diverged run, and a model trained on the rest would be silently wrong.
    max_non_finite_fraction: float = 0.1

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.check_supported()  # before any folder or data is touched
        self.dataloader_unlabeled = None
        self.iteration_in_epoch = 0
        self.skipped_steps = 0
        self.skipped_in_epoch = 0
        nnunet_compat.install_term_logger(self, self.term_log_keys() + ["consistency_weight"])

    def term_log_keys(self) -> List[str]:
        return [f"train_{t}" for t in self.loss_terms]

    # ---- method hooks ------------------------------------------------------------------
    def compute_loss_terms(self, data: torch.Tensor, target, unlabeled: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Unweighted loss terms of one step; must contain every name in ``loss_terms``."""
        raise NotImplementedError

    def combine_loss_terms(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """Called after every optimizer step that was taken (Mean Teacher updates its EMA here)."""

    def extra_checkpoint_state(self) -> dict:
        return {}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        pass

    # ---- unwrapping (DDP / torch.compile) -----------------------------------------------
    def unwrapped_network(self) -> torch.nn.Module:
        return unwrap(self.network)

    # ---- ramp-up -------------------------------------------------------------------------
    def training_progress(self) -> float:
        total = self.num_epochs * self.num_iterations_per_epoch
        return (self.current_epoch * self.num_iterations_per_epoch + self.iteration_in_epoch) / max(total, 1)

    def consistency_weight(self) -> float:
        return sigmoid_rampup(self.training_progress(), self.consistency_rampup_fraction)

    # ---- data ------------------------------------------------------------------------------
    def unlabeled_sources(self) -> List[Tuple[str, str]]:
        sources = ingested_unlabeled_sources(self.preprocessed_dataset_folder_base,
                                             self.configuration_manager.data_identifier)
        sources += [(self.preprocessed_dataset_folder, c) for c in self.unlabeled_fold_cases()]
        return sources

    def check_supported(self) -> None:
        if self.is_cascaded:
            raise RuntimeError(
                f"{self.__class__.__name__} does not support the cascade ({self.configuration_name}): unlabeled cases "
                f"would need predictions of the low-resolution stage. Train 3d_fullres or 3d_lowres instead.")

    def get_dataloaders(self):
        sources = self.unlabeled_sources()
        if not sources:
            raise RuntimeError(NO_UNLABELED_DATA_MESSAGE.format(
                dataset=self.plans_manager.dataset_name, configuration=self.configuration_name, fold=self.fold,
                ending=self.dataset_json["file_ending"], plans=self.plans_manager.plans_name))
        dl_tr, dl_val = super().get_dataloaders()
        self.dataloader_unlabeled = self.build_unlabeled_loader(UnlabeledCases(sources))
        self.print_to_log_file(f"Unlabeled cases: {len(sources)}, unlabeled batch size "
                               f"{self.dataloader_unlabeled_batch_size}")
        return dl_tr, dl_val

    @property
    def dataloader_unlabeled_batch_size(self) -> int:
        return max(1, int(round(self.batch_size * self.unlabeled_batch_ratio)))

    def build_unlabeled_loader(self, cases: UnlabeledCases):
        """nnU-Net's training augmentation (without label-only steps) on random unlabeled patches."""
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = self.get_training_transforms(
            self.configuration_manager.patch_size, rotation, None, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=False,
            foreground_labels=self.label_manager.foreground_labels, regions=None, ignore_label=None)
        loader = UnlabeledDataLoader(cases, self.dataloader_unlabeled_batch_size, initial_patch_size,
                                     self.configuration_manager.patch_size, self.label_manager, transforms)
        n_proc, pin_memory = get_allowed_n_proc_DA(), self.device.type == "cuda"
        if self.seed() is not None:
            return self.seeded_augmenter(loader, UNLABELED_BATCHES, n_proc, pin_memory)
        return nnunet_compat.augmenter(loader, n_proc, pin_memory, deterministic=False)

    def on_train_end(self):
        super().on_train_end()
        nnunet_compat.finish_augmenter(self.dataloader_unlabeled)

    # ---- one step ---------------------------------------------------------------------
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.iteration_in_epoch = 0
        self.skipped_in_epoch = 0
        self.logger.log("consistency_weight", self.consistency_weight(), self.current_epoch)

    def train_step(self, batch: dict) -> dict:
        data, target, unlabeled = self.step_inputs(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self.forward_context():
            terms = self.compute_loss_terms(data, target, unlabeled)
        # consistency terms are float32 already; the sum is formed outside autocast
        total = self.combine_loss_terms({k: v.float() for k, v in terms.items()})
        return self.finish_step(self.guarded_step(total), total, terms)

    def step_inputs(self, batch: dict):
        """The labeled data and target of nnU-Net's batch and an unlabeled batch, on the device."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        unlabeled = next(self.dataloader_unlabeled)["data"].to(self.device, non_blocking=True)
        return data, target, unlabeled

    def forward_context(self):
        """nnU-Net's mixed precision: autocast on CUDA."""
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def finish_step(self, step_taken: bool, total: torch.Tensor, terms: Dict[str, torch.Tensor]) -> dict:
        if step_taken:
            self.after_optimizer_step()
        self.iteration_in_epoch += 1
        out = {"loss": total.detach().cpu().numpy()}
        for name in self.loss_terms:
            out[f"train_{name}"] = terms[name].detach().float().cpu().numpy()
        return out

    def guarded_step(self, total: torch.Tensor) -> bool:
        """nnU-Net's backward/clip/step, skipped (with a log line) when the loss is not finite."""
        if not torch.isfinite(total):
            return self.skip_step(total)
        return nnunet_compat.backward_and_step(self, total)

    def skip_step(self, total: torch.Tensor) -> bool:
        self.skipped_steps += 1
        self.skipped_in_epoch += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.print_to_log_file(f"WARNING: non-finite loss ({total.item()}) in epoch {self.current_epoch}, "
                               f"iteration {self.iteration_in_epoch}; step skipped, weights unchanged "
                               f"({self.skipped_steps} skipped so far).")
        return False

    def stop_if_mostly_non_finite(self, steps_in_epoch: int) -> None:
        """Stop with a message instead of finishing a run whose loss was non-finite on many steps."""
        skipped = self.skipped_in_epoch
        if self.is_ddp:  # every rank must take the same decision, or the others wait forever
            counts = torch.tensor([skipped, steps_in_epoch], dtype=torch.float64, device=self.device)
            dist.all_reduce(counts)
            skipped, steps_in_epoch = int(counts[0]), int(counts[1])
        if steps_in_epoch and skipped > self.max_non_finite_fraction * steps_in_epoch:
            message = (
                f"Stopping: the loss was non-finite (NaN/inf) in {skipped} of {steps_in_epoch} steps of "
                f"epoch {self.current_epoch} (limit {self.max_non_finite_fraction:.0%}, {self.skipped_steps} in the "
                f"whole run); those steps were skipped, and a model trained on the rest is not trustworthy. Usual "
                f"causes: scans with NaN or extreme intensities (run nnUNetv2_asyco_preprocess_unlabeled again, it "
                f"checks them; check imagesTr with nnUNetv2_plan_and_preprocess --verify_dataset_integrity), or a "
                f"diverged run (lower the learning rate). The last checkpoint is from before this epoch.")
            self.print_to_log_file(message)
            raise NonFiniteTrainingError(message)

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        self.stop_if_mostly_non_finite(len(train_outputs))
        outputs = collate_outputs(train_outputs)
        for key in self.term_log_keys():
            values = np.asarray(outputs[key], dtype=np.float64)
            if self.is_ddp:
                gathered = [None for _ in range(dist.get_world_size())]
                dist.all_gather_object(gathered, values)
                values = np.concatenate([np.atleast_1d(g) for g in gathered])
            self.logger.log(key, float(np.nanmean(values)), self.current_epoch)
        self.print_to_log_file("loss terms: " + ", ".join(
            f"{k}={self.logger.get_value(k, step=-1):.4f}" for k in self.term_log_keys()))

    # ---- checkpoints: our state beside nnU-Net's (PackageTrainer writes them in one atomic write) -----
    def checkpoint_entries(self) -> dict:
        return {**super().checkpoint_entries(),
                nnunet_compat.EXTRA_STATE_KEY: {"skipped_steps": self.skipped_steps, **self.extra_checkpoint_state()}}

    def check_checkpoint(self, checkpoint: dict, filename: str) -> None:
        nnunet_compat.extra_state(checkpoint, filename, self.__class__.__name__)  # our state must be there
        super().check_checkpoint(checkpoint, filename)

    def after_checkpoint_loaded(self, checkpoint: dict) -> None:
        super().after_checkpoint_loaded(checkpoint)
        state = checkpoint[nnunet_compat.EXTRA_STATE_KEY]
        self.skipped_steps = state.get("skipped_steps", 0)
        self.load_extra_checkpoint_state(state)
