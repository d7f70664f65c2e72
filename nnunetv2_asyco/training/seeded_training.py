"""``nnUNet_asyco_seed``: seeded initialisation and data streams for any nnUNetTrainer (see nnunetv2_asyco.seeding).

``SeededTrainingMixin`` goes before ``nnUNetTrainer`` in a trainer's bases.
Unseeded (the variable not set), it changes nothing.
"""
from torch import distributed as dist

from nnunetv2_asyco.nnunet_compat import augmenter, nnunet_augmenters_from
from nnunetv2_asyco.seeding import (LABELED_BATCHES, METHOD, NETWORK_INIT, VALIDATION_BATCHES, OwnRandomStream,
                                    seed_process, stream_seed, training_seed)


class SeededTrainingMixin:
    def seed(self):
        """The training seed, or None for nnU-Net's unseeded training."""
        return training_seed()

    def process_rank(self) -> int:
        # DDP ranks must draw different batches: their streams include the rank
        return dist.get_rank() if self.is_ddp else 0

    def initialize(self):
        seed = self.seed()
        if seed is None:
            return super().initialize()
        # the network is built inside nnUNetTrainer.initialize: every method's first network (branch A, the
        # student, labeled-only's network) gets the same weights for one seed
        seed_process(stream_seed(seed, NETWORK_INIT))
        super().initialize()
        seed_process(stream_seed(seed, METHOD, self.process_rank()))
        self.print_to_log_file(f"Seeded training: nnUNet_asyco_seed={seed}")

    def seeded_augmenter(self, loader, purpose: int, num_processes: int, pin_memory: bool):
        """An augmenter whose batches come from this seed's stream for ``purpose`` (one per worker)."""
        stream = OwnRandomStream(loader, self.seed(), purpose, self.process_rank())
        return augmenter(stream, num_processes, pin_memory, deterministic=True)

    def get_dataloaders(self):
        if self.seed() is None:
            return super().get_dataloaders()
        purposes = iter((LABELED_BATCHES, VALIDATION_BATCHES))  # the order nnU-Net builds them in
        with nnunet_augmenters_from(lambda loader, n, pin: self.seeded_augmenter(loader, next(purposes), n, pin)):
            return super().get_dataloaders()
