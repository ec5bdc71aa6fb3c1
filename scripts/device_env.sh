# Sourced by the scripts/gpu_*.sh that start Jupyter kernels on the GPU machine: installs the
# jupyter stack, which travels as wheels in .whl/ (the device tool's README), into /tmp/site.
# Logs to $LOG (a file; /dev/null when unset, as when sourced by hand).
LOG=${LOG:-/dev/null}
if [ -d .whl ] && ! python3 -c "import nbclient, ipykernel, plotly, ipywidgets" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >> "$LOG" 2>&1 || { echo "wheels did not install" | tee -a "$LOG"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
# Bytecode, as a pip install leaves it on a reader's machine: without it every child process
# compiled ~1,600 modules from source (transformers, peft, bitsandbytes: 5-7 s per process
# start in the H200 profile of 3ff62994f25e). Files already compiled cost a stat each.
t0=$(date +%s)
python3 -m compileall -q -j 0 /tmp/site "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
  > /dev/null 2>&1 || true
echo "bytecode compiled in $(( $(date +%s) - t0 )) s (PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset})" >> "$LOG"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, plotly, nbclient; print('torch', torch.__version__, 'plotly', plotly.__version__, 'nbclient', nbclient.__version__)"; } >> "$LOG" 2>&1
