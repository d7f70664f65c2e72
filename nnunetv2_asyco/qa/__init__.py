"""Quality control at prediction time: where the two branches of a model disagree (``nnUNetv2_asyco_predict_qa``).

measures.py   per-voxel disagreement between branch probabilities; mirroring (TTA) spread of one network
outputs.py    network wrappers whose extra output channels carry what the measures need through nnU-Net's
              sliding window and mirroring
predictor.py  nnU-Net's predictor with those wrappers, handing each case to the export workers
export.py     per-case export (segmentation, map, statistics); light imports, as it runs in spawned workers
geometry.py   a per-voxel map back to the case's original geometry and file format
table.py      per-case and per-class statistics, case score, ranking, qa.csv and qa.md
figures.py    review PNGs of the top-ranked cases
"""
