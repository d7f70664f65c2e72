#!/bin/bash
# GPU checks in one go (issue 4's GPU rows, issue 5's CUDA run), each stage time-boxed so a short lease gets all:
#   1. cost benchmark on CUDA (same small plans and batch as benchmarks/results/cost_cpu.md; eager, nnU-Net's AMP)
#   2. quality benchmark v2 (benchmarks/PROTOCOL.md) with nnU-Net's default 2d plans: 2 labeled cases, seeds 0-1,
#      2000 iterations, 5 runs at once (QUALITY_BENCHMARK=inia19 for the real-anatomy benchmark)
#   3. AsyCo through nnUNetv2_train with torch.compile (nnU-Net's CUDA default) and AMP, 1 epoch, then predict
#   4. fullres3d (issue 21): 3d_fullres on nnU-Net's default plans (synthetic 3D), torch.compile + AMP: nnU-Net vs
#      AsyCo default vs AsyCo micro-batch mode (compile time, step and peak-memory ratios, the automatic choice),
#      then nnUNetv2_predict; about 8 minutes. Alone: STAGES=fullres3d bash benchmarks/gpu_checks.sh
# Logs and results are packed into $OUT/gpu_results.tar.gz (default OUT=/tmp/asyco_gpu_out); work files go to $WORK.
# Needs the package with the bench extra. On a machine without package access, put wheels in .whl/
# (see benchmarks/README section "GPU checks") and they are installed to /tmp/site first.
set -u
OUT=${OUT:-/tmp/asyco_gpu_out}
WORK=${WORK:-/tmp/asyco_gpu_work}
RES="$WORK/results"
mkdir -p "$OUT" "$RES"
export PYTHONUNBUFFERED=1 nnUNet_def_n_proc=8
trap 'tar czf "$OUT/gpu_results.tar.gz" -C "$WORK" results' EXIT

STAGES=${STAGES:-cost quality compile fullres3d}  # a subset reruns only those
if [ -d .whl ] && [ ! -d /tmp/site/nnunetv2 ]; then
    python3 - <<'EOF' || exit 1
import tarfile
with tarfile.open(".whl/sitk.tar.xz") as t:
    t.extractall("/tmp/site", filter="fully_trusted")
EOF
    python3 -m pip install -q --no-index --no-deps --no-compile --no-build-isolation --target /tmp/site \
        .whl/*.whl . > "$RES/install.txt" 2>&1 || { tail -20 "$RES/install.txt"; exit 1; }
    cp -r .whl/extra/* /tmp/site/  # pure-Python packages without a wheel (sdist-only on PyPI)
    # after the interpreter's own site-packages (a .pth, not PYTHONPATH, which would go before the stdlib)
    echo /tmp/site > "$(python3 -c 'import site; print(site.getsitepackages()[0])')/asyco_gpu_site.pth"
fi
[ -d /tmp/site/bin ] && export PATH=/tmp/site/bin:$PATH
PY=$(command -v python3)
{ nvidia-smi; $PY -c "import torch, nnunetv2_asyco; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } \
    > "$RES/device.txt" 2>&1
tail -2 "$RES/device.txt"

stage() {  # stage <name> <seconds> <command...>: output to $RES/<name>.log; its whole process group ends at the limit
    local name=$1 limit=$2; shift 2
    case " $STAGES " in *" $name "*) ;; *) return ;; esac
    local t0=$SECONDS
    setsid "$@" > "$RES/$name.log" 2>&1 &
    local pid=$!
    ( sleep "$limit"; kill -TERM -- -$pid 2>/dev/null; sleep 5; kill -KILL -- -$pid 2>/dev/null ) &
    local watchdog=$!
    wait $pid
    local rc=$?
    kill $watchdog 2>/dev/null
    kill -KILL -- -$pid 2>/dev/null
    echo "$name: exit $rc after $((SECONDS - t0)) s"
}

stage cost 200 env nnUNet_compile=false $PY benchmarks/cost/run_cost.py --work "$WORK/cost" --device cuda \
    --steps 20 --patch 64 --batch 12 --max-features 256 --results "$RES"
# five trainings at once: each small 2d network leaves most of the GPU idle (launch-bound)
stage quality ${QUALITY_LIMIT:-480} $PY benchmarks/quality/run_quality.py --benchmark ${QUALITY_BENCHMARK:-synthetic} \
    --work "$WORK/quality" --results "$RES/quality" \
    --default-plans --device cuda --n-proc 8 --n-proc-da 2 --torch-threads 2 --parallel 5 \
    --n-labeled ${QUALITY_N_LABELED:-2} --seeds ${QUALITY_SEEDS:-0 1} --iterations 2000 \
    --methods ${QUALITY_METHODS:-full labeled_only mean_teacher cps asyco}
Q="$WORK/quality"
# the labeled subset of (2 labeled, seed 0) lives in that run's own preprocessed root (run_quality.py)
stage compile 150 env nnUNet_compile=true nnUNet_raw=$Q/nnUNet_raw nnUNet_preprocessed=$Q/preprocessed_per_subset/n002_s0 \
    nnUNet_results=$WORK/compile_results nnUNet_n_proc_DA=8 nnUNet_extTrainer="$(nnUNetv2_asyco_trainer_dir)" \
    bash -c "nnUNetv2_train 991 2d 0 -tr nnUNetTrainerAsyCo_1epoch -device cuda && \
             mkdir -p $WORK/ts2 && cp $Q/nnUNet_raw/Dataset991_AsyCoQuality/imagesTs/test_00[01]_0000.nii.gz $WORK/ts2/ && \
             nnUNetv2_predict -i $WORK/ts2 -o $WORK/compile_pred -d 991 -c 2d -f 0 -tr nnUNetTrainerAsyCo_1epoch \
                 -device cuda -npp 1 -nps 1 && ls $WORK/compile_pred"
cp "$WORK"/compile_results/Dataset991_AsyCoQuality/*/fold_0/training_log_*.txt "$RES/compile_training_log.txt" 2>/dev/null
stage fullres3d ${FULLRES3D_LIMIT:-500} $PY benchmarks/cost/fullres3d.py --work "$WORK/fullres3d" \
    --results "$RES/fullres3d" --device cuda --n-proc 8 --steps 10
grep -h "Epoch time\|compile\|Pseudo\|Error" "$RES/compile.log" | tail -6
grep -h "done\|FAIL\|Error" "$RES/quality.log" | tail -6
tail -12 "$RES/cost.log" 2>/dev/null
cat "$RES/fullres3d/fullres3d.md" 2>/dev/null || tail -20 "$RES/fullres3d.log" 2>/dev/null
