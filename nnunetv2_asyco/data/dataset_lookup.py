"""``-d`` of our commands: nnU-Net's dataset lookup, with a one-line error instead of its traceback."""
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name


def dataset_name(dataset_name_or_id, error_class):
    """DatasetXXX_Name for a name or id; ``error_class`` (our command's error) when nnU-Net knows no such dataset."""
    try:
        return maybe_convert_to_dataset_name(dataset_name_or_id)
    except (RuntimeError, ValueError) as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error_class(f"-d {dataset_name_or_id}: {first_line}. Check the id (ls $nnUNet_raw $nnUNet_preprocessed) "
                          f"and that nnUNet_raw and nnUNet_preprocessed are set.") from None
