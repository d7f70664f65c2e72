"""``nnUNetv2_asyco_trainer_dir``: print the folder that nnUNet_extTrainer must point at."""
import os


def trainer_dir() -> str:
    import nnunetv2_asyco.trainers as thin_modules
    return os.path.dirname(os.path.abspath(thin_modules.__file__))


def main() -> None:
    print(trainer_dir())


if __name__ == "__main__":
    main()
